/*-------------------------------------------------------------------------
 *
 * worker.h
 *	  The background worker's files: retry.c, queue.c, sweep.c,
 *	  destination.c, outbound.c and worker.c.  Layer 3 (worker side): includes
 *	  otp_link.h, spi.h, json.h and shmem.h; never api.h.
 *
 *-------------------------------------------------------------------------
 */
#ifndef OTP_LINK_WORKER_H
#define OTP_LINK_WORKER_H

#include "access/htup.h"
#include "access/tupdesc.h"
#include "utils/guc.h"
#include "utils/timestamp.h"

#include "otp_link.h"
#include "spi.h"
#include "json.h"
#include "shmem.h"

/* the loop's state, owned by worker.c and passed to queue.c; times are otp_mono_us() */
typedef struct OtpWorkerLoop
{
	MemoryContext cxt;			/* reset each round; parent of requests */
	int64		next_claim;		/* claim when now >= this */
	int64		next_sweep;
	int64		next_record;	/* record unrecorded results when now >= this */
	int			record_failures;	/* consecutive failed recording rounds */
	bool		recording;		/* otp_queue_round() is recording */
	List	   *unrecorded;		/* finished requests (TopMemoryContext) */
} OtpWorkerLoop;

/* the worker's lock_timeout, and its pause between recording attempts */
#define OTP_WORKER_LOCK_TIMEOUT	"100ms"
#define OTP_RECORD_RETRY_US		((int64) 100000)
/* results wait at most this long to be recorded in a batch, or this many */
#define OTP_RECORD_DELAY_US		((int64) 2000)
#define OTP_RECORD_BATCH		64
/* a destination held back at its share is looked at again within this */
#define OTP_HELD_BACK_RECHECK_MS	250

/* retry.c */
extern bool otp_link_check_retry_schedule(char **newval, void **extra,
										  GucSource source);
extern void otp_link_assign_retry_schedule(const char *newval, void *extra);
extern void otp_retry_seed(void);
extern int64 otp_retry_delay_ms(int attempts);

/* queue.c */
extern void otp_worker_begin_tx(const char *activity);
extern void otp_worker_end_tx(void);
extern bool otp_extension_ready(void);
extern void otp_queue_round(OtpWorkerLoop *loop, bool record, int slots);

/* destination.c */
extern int	otp_dest_limits(Datum **keys, Datum **limits, Datum **pris,
							int *default_limit, int *default_pri,
							int *unproven_budget, int *held_back);
extern void otp_dest_started(OtpHttpRequest *req);
extern bool otp_dest_finished(OtpHttpRequest *req);
extern int64 otp_dest_next_probe_us(void);

/* outbound.c */
extern OtpHttpRequest *otp_build_request(MemoryContext parent, HeapTuple tup,
										 TupleDesc desc);

/* sweep.c */
extern bool otp_sweep(void);

/* worker.c */
extern PGDLLEXPORT void otp_link_worker_main(Datum arg);

#endif							/* OTP_LINK_WORKER_H */
