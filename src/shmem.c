/*-------------------------------------------------------------------------
 *
 * shmem.c
 *	  State shared between backends and the worker: the worker's latch and
 *	  identity, the wake-up at COMMIT of a transaction that queued a
 *	  delivery, the cluster-wide budget of unknown codes, and the
 *	  registration of the worker and of the shared memory.  The
 *	  transaction callbacks also hand the counters a transaction kept to
 *	  metrics.c at COMMIT (and drop them on abort).
 *
 * Locking: OtpLinkShared.mutex (a spinlock) guards every field but the
 * counters (atomics); it is held for a few instructions only, never across
 * a call that can ERROR.
 *
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include "access/xact.h"
#include "commands/dbcommands.h"

#include "executor/spi.h"

#include "pgstat.h"
#include "postmaster/bgworker.h"

#include "storage/ipc.h"

#include "otp_link.h"
#include "json.h"
#include "shmem.h"

OtpLinkShared *otp_shared = NULL;
static shmem_request_hook_type prev_shmem_request_hook = NULL;
static shmem_startup_hook_type prev_shmem_startup_hook = NULL;

/* backend side of the commit-time wake-up */
static bool xact_cb_registered = false;
static bool wake_pending = false;
bool		otp_am_worker = false;	/* this process is the worker */

/* ----------------------------------------------------------------
 * Shared memory and registration
 * ----------------------------------------------------------------
 */

/*
 * otp_link_shmem_request: ask for our few bytes of shared memory.
 */
static void
otp_link_shmem_request(void)
{
	if (prev_shmem_request_hook)
		prev_shmem_request_hook();
	RequestAddinShmemSpace(MAXALIGN(sizeof(OtpLinkShared)));
}

/*
 * otp_link_shmem_init: create or attach the shared state (postmaster, also
 * after a crash restart).  ERRORs only if shared memory is exhausted.
 */
void
otp_link_shmem_init(void)
{
	bool		found;

	if (prev_shmem_startup_hook)
		prev_shmem_startup_hook();

	LWLockAcquire(AddinShmemInitLock, LW_EXCLUSIVE);
	otp_shared = ShmemInitStruct("otp_link", sizeof(OtpLinkShared), &found);
	if (!found)
	{
		SpinLockInit(&otp_shared->mutex);
		otp_shared->worker_proc = NULL;
		otp_shared->db_missing_logged = false;
		otp_shared->worker_db = InvalidOid;
		otp_shared->worker_pid = 0;
		otp_shared->worker_last_round = 0;
		otp_shared->guess_tokens = -1;	/* full at first use */
		otp_shared->guess_refilled = 0;
		otp_shared->guess_empty_logged = false;
		otp_metrics_init();
	}
	LWLockRelease(AddinShmemInitLock);
}

/*
 * otp_link_register_worker: install the shared memory hooks and register
 * the static background worker.  Called from _PG_init only while
 * shared_preload_libraries is processed.
 */
void
otp_link_register_worker(void)
{
	BackgroundWorker worker;

	prev_shmem_request_hook = shmem_request_hook;
	shmem_request_hook = otp_link_shmem_request;
	prev_shmem_startup_hook = shmem_startup_hook;
	shmem_startup_hook = otp_link_shmem_init;

	memset(&worker, 0, sizeof(worker));
	worker.bgw_flags = BGWORKER_SHMEM_ACCESS | BGWORKER_BACKEND_DATABASE_CONNECTION;
	/* primaries only: a standby starts it when promoted */
	worker.bgw_start_time = BgWorkerStart_RecoveryFinished;
	worker.bgw_restart_time = OTP_WORKER_RESTART_S;
	strlcpy(worker.bgw_library_name, "otp_link", BGW_MAXLEN);
	strlcpy(worker.bgw_function_name, "otp_link_worker_main", BGW_MAXLEN);
	strlcpy(worker.bgw_name, "otp_link worker", BGW_MAXLEN);
	strlcpy(worker.bgw_type, "otp_link worker", BGW_MAXLEN);
	worker.bgw_main_arg = (Datum) 0;
	worker.bgw_notify_pid = 0;
	RegisterBackgroundWorker(&worker);
}

/* ----------------------------------------------------------------
 * Wake-up at COMMIT (runs in ordinary backends)
 * ----------------------------------------------------------------
 */

/*
 * wake_worker: set the worker's latch, if a worker runs.  Never ERRORs.
 */
static void
wake_worker(void)
{
	PGPROC	   *proc;

	if (otp_shared == NULL)
		return;
	SpinLockAcquire(&otp_shared->mutex);
	proc = otp_shared->worker_proc;
	SpinLockRelease(&otp_shared->mutex);
	if (proc != NULL)
		SetLatch(&proc->procLatch);
}

/*
 * otp_link_xact_callback: at COMMIT, wake the worker if this transaction
 * queued a delivery and add its counters to shared memory; forget both on
 * abort or PREPARE (a prepared transaction's deliveries are found by the
 * worker's fallback timer; its counts are not kept).  Never ERRORs.
 */
static void
otp_link_xact_callback(XactEvent event, void *arg)
{
	switch (event)
	{
		case XACT_EVENT_COMMIT:
			otp_metrics_at_commit();
			if (wake_pending)
			{
				wake_pending = false;
				wake_worker();
			}
			break;
		case XACT_EVENT_ABORT:
		case XACT_EVENT_PREPARE:
			otp_metrics_at_abort();
			wake_pending = false;
			break;
		default:
			break;
	}
}

/*
 * otp_link_subxact_callback: a subtransaction's counters go to its parent
 * when it commits and are dropped when it aborts (metrics.c).
 */
static void
otp_link_subxact_callback(SubXactEvent event, SubTransactionId mySubid,
						  SubTransactionId parentSubid, void *arg)
{
	if (event == SUBXACT_EVENT_COMMIT_SUB)
		otp_metrics_at_subxact(true);
	else if (event == SUBXACT_EVENT_ABORT_SUB)
		otp_metrics_at_subxact(false);
}

/*
 * otp_link_xact_callbacks: register the transaction callbacks, once per
 * process (the lists live in TopMemoryContext).  Can ERROR only on
 * out-of-memory.
 */
void
otp_link_xact_callbacks(void)
{
	if (xact_cb_registered)
		return;
	RegisterXactCallback(otp_link_xact_callback, NULL);
	RegisterSubXactCallback(otp_link_subxact_callback, NULL);
	xact_cb_registered = true;
}

/*
 * warn_not_served: WARNING, once per statement, that the deliveries this
 * statement queues will wait: no worker serves this database (the library
 * is not preloaded, or otp_link.database names another database).  The
 * caller sees it where it looks, not only the server log.  Can ERROR only
 * on out-of-memory.
 */
static void
warn_not_served(void)
{
	static TimestampTz warned_for = 0;
	TimestampTz stmt = GetCurrentStatementStartTimestamp();
	char	   *dbname;

	if (stmt == warned_for)
		return;
	if (!otp_link_preloaded || otp_shared == NULL)
	{
		warned_for = stmt;
		ereport(WARNING,
				(errcode(ERRCODE_OBJECT_NOT_IN_PREREQUISITE_STATE),
				 errmsg("otp_link is not in shared_preload_libraries: deliveries stay queued"),
				 errhint("Add otp_link to shared_preload_libraries and restart the server to start the delivery worker.")));
		return;
	}
	dbname = get_database_name(MyDatabaseId);
	if (dbname != NULL && strcmp(dbname, otp_link_database) != 0)
	{
		warned_for = stmt;
		ereport(WARNING,
				(errcode(ERRCODE_OBJECT_NOT_IN_PREREQUISITE_STATE),
				 errmsg("otp_link worker serves database \"%s\": deliveries queued in database \"%s\" stay queued",
						otp_link_database, dbname),
				 errhint("Set otp_link.database = '%s' and restart the server, or use otp_link in database \"%s\".",
						 dbname, otp_link_database)));
	}
}

/*
 * otp_link_wake_worker_at_commit: ask for the worker to be woken when the
 * current transaction commits.  Cheap; call it for every queued delivery.
 * Registers the XactCallback once per backend (TopMemoryContext).  Warns
 * the caller (once per statement) when no worker will serve the
 * deliveries.  Can ERROR only on out-of-memory.
 */
void
otp_link_wake_worker_at_commit(void)
{
	if (otp_am_worker)
		return;					/* it claims again on its own */
	otp_link_xact_callbacks();
	wake_pending = true;
	warn_not_served();
}

/* ----------------------------------------------------------------
 * Shared state read by backends: the worker's health and the budget of
 * unknown codes
 * ----------------------------------------------------------------
 */

/*
 * guess_refill: top up the unknown-code bucket for the time since it was
 * last topped up, at otp_link.unknown_code_rate per minute, up to one
 * minute's worth.  Caller holds the mutex; never ERRORs.
 */
static void
guess_refill(TimestampTz now)
{
	double		cap = otp_link_unknown_code_rate;

	if (otp_shared->guess_tokens < 0)
		otp_shared->guess_tokens = cap;
	else if (now > otp_shared->guess_refilled)
		otp_shared->guess_tokens =
			Min(cap, otp_shared->guess_tokens +
				(double) (now - otp_shared->guess_refilled) / 60e6 * cap);
	otp_shared->guess_refilled = now;
}

/*
 * otp_unknown_code_allowed: whether a message's code may be looked up now.
 * The server as a whole answers at most otp_link.unknown_code_rate unknown
 * codes per minute (0: no limit).  This budget lives in shared memory, not
 * in a table, so an attempt rolled back afterwards (a caller with
 * otp_link_inbox guessing inside subtransactions it aborts) still spends
 * it.  While it is spent, no code is looked up: messages are "blocked"
 * until it refills.  With spend, takes one unknown code from it.  True
 * without shared memory (not preloaded).  Never ERRORs; logs once per
 * exhaustion.
 */
bool
otp_unknown_code_allowed(bool spend)
{
	bool		allowed;
	bool		log_it = false;

	if (otp_shared == NULL || otp_link_unknown_code_rate <= 0)
		return true;
	SpinLockAcquire(&otp_shared->mutex);
	guess_refill(GetCurrentTimestamp());
	if (spend)
		otp_shared->guess_tokens = Max(0.0, otp_shared->guess_tokens - 1);
	allowed = otp_shared->guess_tokens >= 1;
	if (!allowed && !otp_shared->guess_empty_logged)
		log_it = otp_shared->guess_empty_logged = true;
	else if (allowed)
		otp_shared->guess_empty_logged = false;
	SpinLockRelease(&otp_shared->mutex);
	if (log_it)
		ereport(LOG,
				(errmsg("otp_link: more than %d unknown codes in a minute on this server; messages are answered \"blocked\" until the budget refills",
						otp_link_unknown_code_rate),
				 errhint("Someone may be guessing codes. Look at otp_link.messages_seen; raise otp_link.unknown_code_rate if the traffic is legitimate.")));
	return allowed;
}

PG_FUNCTION_INFO_V1(otp_link_worker);

/*
 * otp_link_worker() RETURNS jsonb: whether a delivery worker serves this
 * database, with its pid and the end of its last round; readable by
 * otp_link_admin (pg_stat_activity hides backend_type from roles without
 * pg_read_all_stats).  Never ERRORs.
 */
Datum
otp_link_worker(PG_FUNCTION_ARGS)
{
	OtpJsonb	jb;
	bool		running = false;
	int			pid = 0;
	TimestampTz last = 0;

	if (otp_shared != NULL)
	{
		SpinLockAcquire(&otp_shared->mutex);
		running = otp_shared->worker_proc != NULL &&
			otp_shared->worker_db == MyDatabaseId;
		pid = otp_shared->worker_pid;
		last = otp_shared->worker_last_round;
		SpinLockRelease(&otp_shared->mutex);
	}
	otp_jb_begin(&jb);
	otp_jb_bool(&jb, "preloaded", otp_shared != NULL);
	otp_jb_str(&jb, "database", otp_link_database);
	otp_jb_bool(&jb, "running", running);
	otp_jb_int(&jb, "pid", running ? pid : 0);
	otp_jb_str(&jb, "last_round", running && last ? otp_format_timestamp(last) : NULL);
	PG_RETURN_JSONB_P(otp_jb_finish(&jb));
}
