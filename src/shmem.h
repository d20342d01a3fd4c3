/*-------------------------------------------------------------------------
 *
 * shmem.h
 *	  State shared by backends and the worker (shmem.c) and the cumulative
 *	  counters kept in it (metrics.c).  Layer 2: includes only otp_link.h
 *	  (shmem.c and metrics.c also use json.h and spi.h).
 *
 *-------------------------------------------------------------------------
 */
#ifndef OTP_LINK_SHMEM_H
#define OTP_LINK_SHMEM_H

#include "port/atomics.h"
#include "storage/proc.h"
#include "storage/spin.h"
#include "utils/timestamp.h"

#include "otp_link.h"

#define OTP_WORKER_RESTART_S	5		/* bgw_restart_time */

/*
 * The cumulative counters (metrics.c), server-wide, since the server
 * started.  Each is a pg_atomic_uint64 in OtpLinkShared.counters; the
 * names and labels they are exposed under are in metrics.c's table, in
 * this order.
 */
#define OTP_TTV_BOUNDS	11		/* finite bounds of the time-to-verify buckets */

typedef enum OtpMetric
{
	OTP_M_LINKS_GENERATED,
	OTP_M_LINKS_VERIFIED,
	OTP_M_LINKS_FAILED,
	OTP_M_LINKS_EXPIRED,
	OTP_M_LINKS_CLICKED,		/* first click on a click link */
	OTP_M_CLICKS,				/* every click counted */
	OTP_M_LINKS_REDEEMED,
	OTP_M_MSG_FIRST,			/* messages by outcome: */
	OTP_M_MSG_VERIFIED = OTP_M_MSG_FIRST,
	OTP_M_MSG_ALREADY_VERIFIED,
	OTP_M_MSG_FAILED,
	OTP_M_MSG_EXPIRED,
	OTP_M_MSG_UNKNOWN_CODE,
	OTP_M_MSG_BLOCKED,
	OTP_M_MSG_DUPLICATE,
	OTP_M_MSG_IGNORED,
	OTP_M_MSG_MALFORMED,		/* skipped by a webhook format */
	OTP_M_DELIVERY_DELIVERED,	/* deliveries by result of an attempt: */
	OTP_M_DELIVERY_RETRIED,
	OTP_M_DELIVERY_DEAD,
	OTP_M_HTTP_2XX,				/* HTTP attempts by status class: */
	OTP_M_HTTP_3XX,
	OTP_M_HTTP_4XX,
	OTP_M_HTTP_5XX,
	OTP_M_HTTP_OTHER,			/* a status outside 200-599 */
	OTP_M_HTTP_TRANSPORT_ERROR,
	OTP_M_HTTP_REFUSED,
	OTP_M_HTTP_INVALID,
	OTP_M_TTV_BUCKET,			/* time to verify: one slot per bucket */
	OTP_M_TTV_SUM_US = OTP_M_TTV_BUCKET + OTP_TTV_BOUNDS + 1,	/* + Inf */
	OTP_M__COUNT
} OtpMetric;

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
	pg_atomic_uint64 counters[OTP_M__COUNT];	/* atomics, not the mutex */
} OtpLinkShared;

extern OtpLinkShared *otp_shared;
extern bool otp_am_worker;		/* this process is the worker */

extern void otp_link_register_worker(void);
extern void otp_link_shmem_init(void);
extern void otp_link_wake_worker_at_commit(void);
extern bool otp_unknown_code_allowed(bool spend);
extern void otp_link_xact_callbacks(void);

/* metrics.c: counted at COMMIT (otp_metric_add) or at once (_now) */
extern void otp_metric_add(OtpMetric m, uint64 n);
extern void otp_metric_add_now(OtpMetric m, uint64 n);
extern void otp_metric_message(const char *outcome);
extern void otp_metric_verified(double seconds);
extern void otp_metric_attempt(OtpHttpOutcome outcome, int http_status,
							   const char *status);
extern void otp_metrics_init(void);
extern void otp_metrics_at_commit(void);
extern void otp_metrics_at_abort(void);
extern void otp_metrics_at_subxact(bool commit);

#endif							/* OTP_LINK_SHMEM_H */
