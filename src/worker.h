/*-------------------------------------------------------------------------
 *
 * worker.h
 *	  The background worker's files: retry.c, queue.c, sweep.c,
 *	  outbound.c and worker.c.  Layer 3 (worker side): includes
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

/* the loop's state, owned by worker.c and passed to queue.c */
typedef struct OtpWorkerLoop
{
	MemoryContext cxt;			/* reset each round; parent of requests */
	TimestampTz next_claim;		/* claim when now >= this */
	TimestampTz next_sweep;
	List	   *unrecorded;		/* finished requests (TopMemoryContext) */
} OtpWorkerLoop;

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
extern void otp_queue_record(OtpWorkerLoop *loop);
extern void otp_queue_claim_and_send(OtpWorkerLoop *loop, int slots);

/* outbound.c */
extern OtpHttpRequest *otp_build_request(MemoryContext parent, HeapTuple tup,
										 TupleDesc desc);

/* sweep.c */
extern bool otp_sweep(void);

/* worker.c */
extern PGDLLEXPORT void otp_link_worker_main(Datum arg);

#endif							/* OTP_LINK_WORKER_H */
