/*-------------------------------------------------------------------------
 *
 * worker.c
 *	  The otp_link background worker's loop, signals and latch.
 *
 * One worker per cluster, registered from shared_preload_libraries, serves
 * the database named by otp_link.database.  Each round of its loop:
 *
 *	1. collects the HTTP requests that finished (http.c) and records their
 *	   results in ONE short transaction (queue.c);
 *	2. every otp_link.sweep_interval, runs the sweep (sweep.c);
 *	3. when slots are free and something is due (or a committing backend
 *	   woke it), claims due deliveries in ONE short transaction and starts
 *	   their requests after the commit (queue.c, outbound.c): no
 *	   transaction is ever open during network I/O;
 *	4. sleeps on its latch and on libcurl's sockets until a socket is ready,
 *	   libcurl's timer fires, the next delivery is due, the next sweep is due,
 *	   or a backend commits a new delivery (shmem.c sets the latch).
 *
 * Delivery is at-least-once: the lease and the attempt count are committed
 * before the request is sent, and the result after it returns.  A worker that
 * dies between the two leaves a lease that its next incarnation clears at
 * start, so the delivery is sent again with the same webhook-id.
 *
 * Memory: the loop's allocations go to a context reset each round; each
 * request lives in its own small context, deleted when its result is
 * recorded.
 *
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include "pgstat.h"
#include "postmaster/bgworker.h"
#include "postmaster/interrupt.h"
#include "storage/ipc.h"

#include "tcop/tcopprot.h"

#include "utils/memutils.h"

#include "otp_link.h"
#include "worker.h"

/* worker state */
static OtpWorkerLoop loop;
static emit_log_hook_type prev_emit_log_hook = NULL;

/* ----------------------------------------------------------------
 * Worker: helpers
 * ----------------------------------------------------------------
 */

/*
 * worker_shmem_exit: forget the worker's latch when the worker exits.
 */
static void
worker_shmem_exit(int code, Datum arg)
{
	if (otp_shared == NULL)
		return;
	SpinLockAcquire(&otp_shared->mutex);
	if (otp_shared->worker_proc == MyProc)
	{
		otp_shared->worker_proc = NULL;
		otp_shared->worker_pid = 0;
	}
	SpinLockRelease(&otp_shared->mutex);
}

/*
 * missing_db_log_hook: emit_log_hook active while the worker connects; says
 * "database does not exist" once per postmaster lifetime instead of once
 * per restart (every OTP_WORKER_RESTART_S seconds).
 */
static void
missing_db_log_hook(ErrorData *edata)
{
	if (edata->sqlerrcode == ERRCODE_UNDEFINED_DATABASE && otp_shared != NULL)
	{
		if (otp_shared->db_missing_logged)
			edata->output_to_server = false;
		else
		{
			otp_shared->db_missing_logged = true;
			edata->hint = MemoryContextStrdup(ErrorContext,
											  "The otp_link worker retries every few seconds; create the database or change otp_link.database. This message is not repeated.");
		}
	}
	if (prev_emit_log_hook)
		prev_emit_log_hook(edata);
}

/* ----------------------------------------------------------------
 * Worker: main loop
 * ----------------------------------------------------------------
 */

/*
 * until_ms: milliseconds from now to the monotonic time t (0 when past).
 */
static long
until_ms(int64 t, int64 now)
{
	return t > now ? (long) Min((t - now + 999) / 1000, (int64) INT_MAX) : 0;
}

/*
 * wait_for_work: sleep until the latch is set, a libcurl socket is ready,
 * a request's deadline or libcurl's timer comes, or the next claim, sweep
 * or recording is due.  The WaitEventSet is built in the loop context each
 * round (the set of sockets changes).  Deadlines are monotonic: a step of
 * the wall clock does not move them.  Ready sockets are handed to libcurl
 * here, before otp_http_collect() times anything out.
 */
static void
wait_for_work(void)
{
	int64		now = otp_mono_us();
	long		timeout;
	long		t;
	WaitEventSet *set;
	WaitEvent  *events;
	int			nevents;
	int			n;
	int			i;

	timeout = until_ms(loop.next_sweep, now);
	if (otp_http_inflight() < otp_link_max_concurrency)
		timeout = Min(timeout, until_ms(loop.next_claim, now));
	t = otp_http_timeout_ms();
	if (t >= 0)
		timeout = Min(timeout, t);
	if (loop.unrecorded != NIL)
		timeout = Min(timeout, until_ms(loop.next_record, now));

	nevents = 2 + otp_http_nsockets();
	set = CreateWaitEventSet(CurrentResourceOwner, nevents);
	AddWaitEventToSet(set, WL_LATCH_SET, PGINVALID_SOCKET, MyLatch, NULL);
	AddWaitEventToSet(set, WL_EXIT_ON_PM_DEATH, PGINVALID_SOCKET, NULL, NULL);
	otp_http_add_wait_events(set);

	events = palloc(nevents * sizeof(WaitEvent));
	n = WaitEventSetWait(set, timeout, events, nevents, PG_WAIT_EXTENSION);
	for (i = 0; i < n; i++)
	{
		if (events[i].events & WL_LATCH_SET)
		{
			ResetLatch(MyLatch);
			loop.next_claim = 0;		/* a backend committed a delivery */
		}
		else if (events[i].events & (WL_SOCKET_READABLE | WL_SOCKET_WRITEABLE))
			otp_http_socket_ready(events[i].fd, events[i].events);
	}
	FreeWaitEventSet(set);
}

/*
 * take_finished: collect the requests that finished, tell destination.c
 * (claim again at once when one of them held back its destination), and
 * queue them for recording: within OTP_RECORD_DELAY_US of the first one,
 * or earlier with a claim or a full batch (one_round), so that a stream of
 * answers is recorded in batches, not a transaction per answer.
 */
static void
take_finished(void)
{
	List	   *finished = otp_http_collect();
	ListCell   *lc;
	MemoryContext old;

	if (finished == NIL)
		return;
	foreach(lc, finished)
		if (otp_dest_finished((OtpHttpRequest *) lfirst(lc)))
			loop.next_claim = 0;
	if (loop.unrecorded == NIL)
		loop.next_record = Max(loop.next_record, otp_mono_us() + OTP_RECORD_DELAY_US);
	old = MemoryContextSwitchTo(TopMemoryContext);
	loop.unrecorded = list_concat(loop.unrecorded, finished);
	MemoryContextSwitchTo(old);
}

/*
 * one_round: collect finished requests, sweep when due, then in one
 * transaction record the finished requests and claim when due and slots
 * are free.  Can ERROR (database errors); the caller's
 * recover_from_error() keeps what is not recorded.
 */
static void
one_round(void)
{
	int64		now;
	int64		probe;
	int			slots;
	bool		record;

	take_finished();

	now = otp_mono_us();
	if (now >= loop.next_sweep)
	{
		/* set first: a failing sweep must not be retried at once */
		loop.next_sweep = now + (int64) otp_link_sweep_interval_ms * 1000;
		/* a full expiry batch: sweep again next round, after the claim */
		if (otp_sweep())
			loop.next_sweep = now;
		/* the sweep may have queued callbacks (our own wake-ups are ignored) */
		loop.next_claim = 0;
	}

	now = otp_mono_us();
	slots = otp_link_max_concurrency - otp_http_inflight();
	if (slots <= 0 || now < loop.next_claim)
		slots = 0;
	/* due, or along with a claim or a full batch unless backing off */
	record = loop.unrecorded != NIL &&
		(now >= loop.next_record ||
		 (loop.record_failures == 0 &&
		  (slots > 0 || list_length(loop.unrecorded) >= OTP_RECORD_BATCH)));
	if (record || slots > 0)
	{
		loop.recording = record;
		otp_queue_round(&loop, record, slots);
		loop.recording = false;
		if (record)
		{
			loop.record_failures = 0;
			/* rows another transaction holds: try again a little later */
			loop.next_record = (loop.unrecorded != NIL) ?
				otp_mono_us() + OTP_RECORD_RETRY_US : 0;
		}
	}
	/* a paused destination's probe is a reason to claim */
	probe = otp_dest_next_probe_us();
	if (probe != 0 && probe < loop.next_claim)
		loop.next_claim = probe;

	if (otp_shared != NULL)
	{
		SpinLockAcquire(&otp_shared->mutex);
		otp_shared->worker_last_round = GetCurrentTimestamp();
		SpinLockRelease(&otp_shared->mutex);
	}
}

/*
 * worker_start: the worker's setup: signals, the connection to
 * otp_link.database, its identity in shared memory, safe settings
 * (search_path, lock_timeout), the loop context and libcurl.  Allocates in
 * TopMemoryContext; ERRORs (FATAL in a worker) when the database is
 * missing.
 */
static void
worker_start(void)
{
	pqsignal(SIGHUP, SignalHandlerForConfigReload);
	pqsignal(SIGTERM, die);
	BackgroundWorkerUnblockSignals();

	prev_emit_log_hook = emit_log_hook;
	emit_log_hook = missing_db_log_hook;
	BackgroundWorkerInitializeConnection(otp_link_database, NULL, 0);
	emit_log_hook = prev_emit_log_hook;

	if (otp_shared != NULL)
	{
		SpinLockAcquire(&otp_shared->mutex);
		otp_shared->worker_proc = MyProc;
		otp_shared->db_missing_logged = false;
		otp_shared->worker_db = MyDatabaseId;
		otp_shared->worker_pid = MyProcPid;
		otp_shared->worker_last_round = GetCurrentTimestamp();
		SpinLockRelease(&otp_shared->mutex);
	}
	on_shmem_exit(worker_shmem_exit, (Datum) 0);

	otp_am_worker = true;
	pgstat_report_appname("otp_link worker");
	SetConfigOption("search_path", "pg_catalog, pg_temp", PGC_SUSET, PGC_S_OVERRIDE);

	/*
	 * A lock held elsewhere must not stall sending: the loop waits for a
	 * lock at most this long (rows are taken with SKIP LOCKED; this bounds
	 * table locks), then retries in a later round.
	 */
	SetConfigOption("lock_timeout", OTP_WORKER_LOCK_TIMEOUT, PGC_SUSET, PGC_S_OVERRIDE);
	/* the worker's statements are short: compiling them costs more */
	SetConfigOption("jit", "off", PGC_SUSET, PGC_S_OVERRIDE);

	/* cluster-wide defaults must not make the worker's writes fail */
	SetConfigOption("default_transaction_isolation", "read committed",
					PGC_SUSET, PGC_S_OVERRIDE);
	SetConfigOption("default_transaction_read_only", "off",
					PGC_SUSET, PGC_S_OVERRIDE);
	otp_retry_seed();

	loop.cxt = AllocSetContextCreate(TopMemoryContext, "otp_link worker loop",
									 ALLOCSET_DEFAULT_SIZES);
	otp_http_init();
}

/*
 * reload_config: after SIGHUP, read the configuration again, reconfigure
 * libcurl and look for work at once.  Can ERROR like ProcessConfigFile.
 */
static void
reload_config(void)
{
	ConfigReloadPending = false;
	ProcessConfigFile(PGC_SIGHUP);
	otp_http_reconfigure();
	loop.next_claim = 0;
	loop.next_sweep = Min(loop.next_sweep,
						  otp_mono_us() + (int64) otp_link_sweep_interval_ms * 1000);
}

/*
 * recover_from_error: after an ERROR in a round: report it and abort the
 * transaction.  Finished requests not recorded stay in loop.unrecorded:
 * they are recorded in a later round (after 0.1 s, doubling up to 6.4 s
 * while recording fails), never sent again.  The next claim waits a
 * second, so as not to spin on a persistent error; requests in flight go
 * on meanwhile.  Called in PG_CATCH; cannot ERROR.
 */
static void
recover_from_error(void)
{
	int64		now;

	HOLD_INTERRUPTS();
	MemoryContextSwitchTo(loop.cxt);
	EmitErrorReport();
	FlushErrorState();
	AbortOutOfAnyTransaction();
	pgstat_report_activity(STATE_IDLE, NULL);
	now = otp_mono_us();
	if (loop.recording)
	{
		loop.recording = false;
		loop.record_failures = Min(loop.record_failures + 1, 6);
	}
	loop.next_record = now + (OTP_RECORD_RETRY_US << loop.record_failures);
	loop.next_claim = now + 1000000;
	RESUME_INTERRUPTS();
}

/*
 * otp_link_worker_main: entry point of the background worker.  Connects to
 * otp_link.database, publishes its latch, and loops until SIGTERM or
 * postmaster death.  An ERROR in a round is logged, the transaction
 * aborted, and the loop goes on; results that could not be recorded are
 * kept and recorded later.
 */
void
otp_link_worker_main(Datum arg)
{
	worker_start();

	ereport(LOG,
			(errcode(ERRCODE_SUCCESSFUL_COMPLETION),
			 errmsg("otp_link worker started for database \"%s\"", otp_link_database)));

	for (;;)
	{
		MemoryContextReset(loop.cxt);
		MemoryContextSwitchTo(loop.cxt);

		PG_TRY();
		{
			/* SIGTERM exits here (FATAL); a cancel is an ERROR caught below */
			CHECK_FOR_INTERRUPTS();
			if (ConfigReloadPending)
				reload_config();
			one_round();
		}
		PG_CATCH();
		{
			recover_from_error();
		}
		PG_END_TRY();

		MemoryContextSwitchTo(loop.cxt);
		wait_for_work();
	}
}
