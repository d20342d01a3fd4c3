/*-------------------------------------------------------------------------
 *
 * shmem.h
 *	  State shared by backends and the worker (shmem.c).  Layer 2:
 *	  includes only otp_link.h (shmem.c also uses json.h).
 *
 *-------------------------------------------------------------------------
 */
#ifndef OTP_LINK_SHMEM_H
#define OTP_LINK_SHMEM_H

#include "storage/proc.h"
#include "storage/spin.h"
#include "utils/timestamp.h"

#include "otp_link.h"

#define OTP_WORKER_RESTART_S	5		/* bgw_restart_time */

/*
 * Shared state.  mutex guards every field: the worker's latch and identity
 * (so that backends can wake it and report on it), and the cluster-wide
 * budget of unknown codes (a token bucket, see otp_unknown_code_allowed).
 */
typedef struct OtpLinkShared
{
	slock_t		mutex;
	PGPROC	   *worker_proc;	/* NULL while no worker runs */
	bool		db_missing_logged;	/* "database does not exist" said once */
	Oid			worker_db;		/* the database the worker serves */
	int			worker_pid;
	TimestampTz worker_last_round;	/* end of the worker's last round */
	double		guess_tokens;	/* unknown codes still allowed now */
	TimestampTz guess_refilled; /* when guess_tokens was last topped up */
	bool		guess_empty_logged; /* "budget exhausted" said once */
} OtpLinkShared;

extern OtpLinkShared *otp_shared;
extern bool otp_am_worker;		/* this process is the worker */

extern void otp_link_register_worker(void);
extern void otp_link_shmem_init(void);
extern void otp_link_wake_worker_at_commit(void);
extern bool otp_unknown_code_allowed(bool spend);

#endif							/* OTP_LINK_SHMEM_H */
