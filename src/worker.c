/*-------------------------------------------------------------------------
 *
 * worker.c
 *	  The otp_link background worker: reliable, signed delivery of
 *	  otp_link.deliveries, the expiry sweep and the retention purge.
 *
 * One worker per cluster, registered from shared_preload_libraries, serves
 * the database named by otp_link.database.  Each round of its loop:
 *
 *	1. collects the HTTP requests that finished (http.c) and records their
 *	   results in ONE short transaction (a batched UPDATE);
 *	2. every otp_link.sweep_interval, calls otp_link.otp_link_expire() (when
 *	   it exists) and purges old deliveries and message ids in bounded
 *	   batches, each in its own short transaction;
 *	3. when slots are free and something is due (or a committing backend
 *	   woke it), claims due deliveries in ONE short transaction, putting a
 *	   lease (locked_until) on them and counting the attempt, then starts
 *	   their requests after the commit: no transaction is ever open during
 *	   network I/O;
 *	4. sleeps on its latch and on libcurl's sockets until a socket is ready,
 *	   libcurl's timer fires, the next delivery is due, the next sweep is due,
 *	   or a backend commits a new delivery.
 *
 * A backend that inserts a queued delivery calls
 * otp_link_wake_worker_at_commit(); at COMMIT an XactCallback sets the
 * worker's latch (the worker's PGPROC is kept in shared memory).
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

#include <math.h>

#include "access/xact.h"
#include "catalog/namespace.h"
#include "catalog/pg_namespace.h"
#include "catalog/pg_type.h"
#include "commands/dbcommands.h"
#include "commands/extension.h"
#include "commands/trigger.h"
#include "common/pg_prng.h"
#include "executor/spi.h"
#include "fmgr.h"
#include "mb/pg_wchar.h"
#include "miscadmin.h"
#include "pgstat.h"
#include "postmaster/bgworker.h"
#include "postmaster/interrupt.h"
#include "storage/ipc.h"
#include "storage/latch.h"
#include "storage/lwlock.h"
#include "storage/proc.h"
#include "storage/shmem.h"
#include "storage/spin.h"
#include "tcop/tcopprot.h"
#include "utils/array.h"
#include "utils/builtins.h"
#include "utils/elog.h"
#include "utils/guc.h"
#include "utils/jsonb.h"
#include "utils/lsyscache.h"
#include "utils/memutils.h"
#include "utils/resowner.h"
#include "utils/snapmgr.h"
#include "utils/syscache.h"
#include "utils/timestamp.h"

#include "otp_link.h"
#include "api.h"

#define OTP_WORKER_RESTART_S	5		/* bgw_restart_time */
#define OTP_LEASE_MARGIN_MS		60000	/* lease = timeout + this */
#define OTP_RETRY_AFTER_CAP_MS	((int64) 86400 * 1000)	/* honour at most 1 day */
#define OTP_PURGE_BATCH			1000	/* rows deleted per transaction */
#define OTP_PURGE_MAX_BATCHES	20		/* transactions per sweep and table */
#define OTP_MAX_SCHEDULE		64		/* entries of retry_schedule */
#define OTP_MAX_DELAY_MS		((int64) 30 * 86400 * 1000)

PG_FUNCTION_INFO_V1(otp_link_delivery_requeue);
PG_FUNCTION_INFO_V1(otp_link_deliveries_wake);

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

static OtpLinkShared *otp_shared = NULL;
static shmem_request_hook_type prev_shmem_request_hook = NULL;
static shmem_startup_hook_type prev_shmem_startup_hook = NULL;

/* parsed otp_link.retry_schedule (the GUC's "extra", freed by guc.c) */
typedef struct RetrySchedule
{
	int			n;
	int64		delay_ms[FLEXIBLE_ARRAY_MEMBER];
} RetrySchedule;

static RetrySchedule *retry_schedule = NULL;

/* backend side of the commit-time wake-up */
static bool xact_cb_registered = false;
static bool wake_pending = false;
static bool not_served_logged = false;
static bool am_worker = false;	/* this process is the worker */

/* worker state */
static MemoryContext loop_cxt = NULL;
static Oid	ext_oid_seen = InvalidOid;	/* extension whose leases we cleared */
static TimestampTz next_claim = 0;	/* claim when now >= this */
static TimestampTz next_sweep = 0;
static List *unrecorded = NIL;	/* finished requests (TopMemoryContext) */
static pg_prng_state prng;
static emit_log_hook_type prev_emit_log_hook = NULL;

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
 * queued a delivery; forget the request on abort or PREPARE (a prepared
 * transaction's deliveries are found by the worker's fallback timer).
 */
static void
otp_link_xact_callback(XactEvent event, void *arg)
{
	switch (event)
	{
		case XACT_EVENT_COMMIT:
			if (wake_pending)
			{
				wake_pending = false;
				wake_worker();
			}
			break;
		case XACT_EVENT_ABORT:
		case XACT_EVENT_PREPARE:
			wake_pending = false;
			break;
		default:
			break;
	}
}

/*
 * otp_link_wake_worker_at_commit: ask for the worker to be woken when the
 * current transaction commits.  Cheap; call it for every queued delivery.
 * Registers the XactCallback once per backend (TopMemoryContext).  Logs once
 * per backend, at LOG level (server log only), when no worker will serve
 * the deliveries.  Can ERROR only on out-of-memory.
 */
void
otp_link_wake_worker_at_commit(void)
{
	if (am_worker)
		return;					/* it claims again on its own */
	if (!xact_cb_registered)
	{
		RegisterXactCallback(otp_link_xact_callback, NULL);
		xact_cb_registered = true;
	}
	wake_pending = true;

	if (!not_served_logged)
	{
		not_served_logged = true;
		if (!otp_link_preloaded || otp_shared == NULL)
			ereport(LOG,
					(errcode(ERRCODE_OBJECT_NOT_IN_PREREQUISITE_STATE),
					 errmsg("otp_link is not in shared_preload_libraries: deliveries stay queued"),
					 errhint("Add otp_link to shared_preload_libraries and restart the server to start the delivery worker.")));
		else
		{
			char	   *dbname = get_database_name(MyDatabaseId);

			if (dbname != NULL && strcmp(dbname, otp_link_database) != 0)
				ereport(LOG,
						(errcode(ERRCODE_OBJECT_NOT_IN_PREREQUISITE_STATE),
						 errmsg("otp_link worker serves database \"%s\": deliveries queued in database \"%s\" stay queued",
								otp_link_database, dbname)));
		}
	}
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

/* ----------------------------------------------------------------
 * otp_link.retry_schedule
 * ----------------------------------------------------------------
 */

/*
 * otp_link_check_retry_schedule: GUC check hook; parses "0, 500ms, 5s,
 * 5min, 2h, 1d" (a bare number is seconds) into a guc_malloc'd RetrySchedule
 * passed as *extra.  Returns false, with a detail, on a malformed value.
 */
bool
otp_link_check_retry_schedule(char **newval, void **extra, GucSource source)
{
	RetrySchedule *sched;
	const char *p = *newval;
	int			n = 0;

	sched = (RetrySchedule *) guc_malloc(LOG, offsetof(RetrySchedule, delay_ms) +
												 OTP_MAX_SCHEDULE * sizeof(int64));
	if (sched == NULL)
		return false;

	for (;;)
	{
		char	   *end;
		double		v;
		double		mult;
		const char *unit;
		int			ulen;

		while (*p == ' ' || *p == '\t')
			p++;
		if (*p == '\0' && n == 0)
			break;
		errno = 0;
		v = strtod(p, &end);
		if (end == p || errno != 0 || v < 0 || isnan(v))
		{
			GUC_check_errdetail("Each entry must be a non-negative number with an optional unit (ms, s, min, h, d).");
			guc_free(sched);
			return false;
		}
		p = end;
		while (*p == ' ' || *p == '\t')
			p++;
		unit = p;
		while ((*p >= 'a' && *p <= 'z') || (*p >= 'A' && *p <= 'Z'))
			p++;
		ulen = p - unit;
		if (ulen == 0 || (ulen == 1 && pg_strncasecmp(unit, "s", 1) == 0))
			mult = 1000;
		else if (ulen == 2 && pg_strncasecmp(unit, "ms", 2) == 0)
			mult = 1;
		else if (ulen == 3 && pg_strncasecmp(unit, "min", 3) == 0)
			mult = 60000;
		else if (ulen == 1 && pg_strncasecmp(unit, "h", 1) == 0)
			mult = 3600000;
		else if (ulen == 1 && pg_strncasecmp(unit, "d", 1) == 0)
			mult = 86400000;
		else
		{
			GUC_check_errdetail("Unknown unit \"%.*s\"; use ms, s, min, h or d.", ulen, unit);
			guc_free(sched);
			return false;
		}
		if (v * mult > (double) OTP_MAX_DELAY_MS)
		{
			GUC_check_errdetail("A delay may not exceed 30 days.");
			guc_free(sched);
			return false;
		}
		if (n >= OTP_MAX_SCHEDULE)
		{
			GUC_check_errdetail("At most %d entries are allowed.", OTP_MAX_SCHEDULE);
			guc_free(sched);
			return false;
		}
		sched->delay_ms[n++] = (int64) (v * mult + 0.5);
		while (*p == ' ' || *p == '\t')
			p++;
		if (*p == '\0')
			break;
		if (*p != ',')
		{
			GUC_check_errdetail("Entries must be separated by commas.");
			guc_free(sched);
			return false;
		}
		p++;
	}
	if (n == 0)
	{
		GUC_check_errdetail("At least one entry is required.");
		guc_free(sched);
		return false;
	}
	sched->n = n;
	*extra = sched;
	return true;
}

/*
 * otp_link_assign_retry_schedule: GUC assign hook; installs the parsed
 * schedule.
 */
void
otp_link_assign_retry_schedule(const char *newval, void *extra)
{
	retry_schedule = (RetrySchedule *) extra;
}

/*
 * retry_delay_ms: delay before the attempt after failed attempt number
 * "attempts" (1-based), jittered by +-10% (0 stays 0); -1 when the schedule
 * is exhausted and the delivery is dead.
 */
static int64
retry_delay_ms(int attempts)
{
	int64		d;

	if (retry_schedule == NULL || attempts < 1 || attempts >= retry_schedule->n)
		return -1;
	d = retry_schedule->delay_ms[attempts];
	if (d > 0)
	{
		double		f = 0.9 + 0.2 * pg_prng_double(&prng);

		d = (int64) (d * f);
		if (d < 0)
			d = 0;
	}
	return d;
}

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

/*
 * begin_tx / end_tx: a short transaction with SPI and a snapshot.
 */
static void
begin_tx(const char *activity)
{
	SetCurrentStatementStartTimestamp();
	StartTransactionCommand();
	if (SPI_connect() != SPI_OK_CONNECT)
		ereport(ERROR,
				(errcode(ERRCODE_INTERNAL_ERROR),
				 errmsg("otp_link worker could not connect to SPI")));
	PushActiveSnapshot(GetTransactionSnapshot());
	pgstat_report_activity(STATE_RUNNING, activity);
}

static void
end_tx(void)
{
	SPI_finish();
	PopActiveSnapshot();
	CommitTransactionCommand();
	pgstat_report_stat(false);
	pgstat_report_activity(STATE_IDLE, NULL);
}

/*
 * schema_trusted: whether the schema the name otp_link now leads to is the
 * extension's own schema (ext_nsp) and is owned by a superuser.  The worker
 * runs as a superuser and reaches its tables and otp_link_expire() through
 * that name; a schema renamed away and replaced, or given to an ordinary
 * role, must not be used.  Logs a WARNING once per change of verdict.
 * Syscache lookups only; can ERROR only on catalog corruption.
 */
static bool
schema_trusted(Oid ext_nsp)
{
	static bool warned = false;
	Oid			nsp = get_namespace_oid("otp_link", true);
	HeapTuple	tup;
	Oid			owner = InvalidOid;

	if (OidIsValid(nsp) && nsp == ext_nsp)
	{
		tup = SearchSysCache1(NAMESPACEOID, ObjectIdGetDatum(nsp));
		if (HeapTupleIsValid(tup))
		{
			owner = ((Form_pg_namespace) GETSTRUCT(tup))->nspowner;
			ReleaseSysCache(tup);
		}
		if (OidIsValid(owner) && superuser_arg(owner))
		{
			warned = false;
			return true;
		}
	}
	if (!warned)
		ereport(WARNING,
				(errcode(ERRCODE_INSUFFICIENT_PRIVILEGE),
				 errmsg("otp_link worker does not serve database \"%s\": schema \"otp_link\" is not the extension's schema or is not owned by a superuser",
						get_database_name(MyDatabaseId)),
				 errhint("Give schema otp_link back to a superuser (ALTER SCHEMA otp_link OWNER TO postgres) after checking what it holds.")));
	warned = true;
	return false;
}

/*
 * extension_ready: whether the extension exists in this database and its
 * schema can be trusted (inside a transaction).  The first time it is seen
 * by this process (or after it was re-created), clears the leases a
 * previous incarnation left behind: no request of ours is in flight for
 * them.
 */
static bool
extension_ready(void)
{
	static Oid	ext_nsp = InvalidOid;
	Oid			ext = get_extension_oid("otp_link", true);

	if (!OidIsValid(ext))
	{
		ext_oid_seen = InvalidOid;
		return false;
	}
	if (ext != ext_oid_seen)
	{
		int			rc;
		bool		isnull;

		rc = SPI_execute_with_args("SELECT extnamespace FROM pg_catalog.pg_extension WHERE oid = $1",
								   1, (Oid[]) {OIDOID}, (Datum[]) {ObjectIdGetDatum(ext)},
								   NULL, true, 1);
		if (rc != SPI_OK_SELECT || SPI_processed != 1)
			return false;
		ext_nsp = DatumGetObjectId(SPI_getbinval(SPI_tuptable->vals[0],
												 SPI_tuptable->tupdesc, 1, &isnull));
		if (!schema_trusted(ext_nsp))
			return false;
		rc = SPI_execute("UPDATE otp_link.deliveries SET locked_until = NULL "
						 "WHERE status = 'queued' AND locked_until IS NOT NULL",
						 false, 0);
		if (rc != SPI_OK_UPDATE)
			ereport(ERROR,
					(errcode(ERRCODE_INTERNAL_ERROR),
					 errmsg("otp_link worker could not clear stale leases: %s",
							SPI_result_code_string(rc))));
		if (SPI_processed > 0)
			ereport(LOG,
					(errcode(ERRCODE_SUCCESSFUL_COMPLETION),
					 errmsg("otp_link worker released %llu stale delivery leases",
							(unsigned long long) SPI_processed)));
		ext_oid_seen = ext;
		return true;
	}
	return schema_trusted(ext_nsp);
}

/*
 * clean_text: a copy of s (at most len bytes) that is safe to store as
 * text: valid in the server encoding, no control characters, and with
 * every occurrence of secret replaced by "[redacted]".  palloc'd in
 * CurrentMemoryContext.
 */
static char *
clean_text(const char *s, size_t len, const char *secret)
{
	StringInfoData buf;
	char	   *copy = pnstrdup(s, len);
	size_t		n = strlen(copy);
	size_t		i;
	bool		valid;

	valid = pg_verifymbstr(copy, n, true);
	for (i = 0; i < n; i++)
	{
		unsigned char c = (unsigned char) copy[i];

		if (c < 0x20 || c == 0x7f)
			copy[i] = ' ';
		else if (c >= 0x80 && !valid)
			copy[i] = '?';
	}

	if (secret == NULL || secret[0] == '\0' || strstr(copy, secret) == NULL)
		return copy;

	initStringInfo(&buf);
	{
		const char *p = copy;
		const char *hit;
		size_t		slen = strlen(secret);

		while ((hit = strstr(p, secret)) != NULL)
		{
			appendBinaryStringInfo(&buf, p, hit - p);
			appendStringInfoString(&buf, "[redacted]");
			p = hit + slen;
		}
		appendStringInfoString(&buf, p);
	}
	pfree(copy);
	return buf.data;
}

/* ----------------------------------------------------------------
 * Worker: recording results
 * ----------------------------------------------------------------
 */

/*
 * run_kept: execute sql with args through a statement prepared on first use
 * and kept for the life of the worker process (otp_prepare_opts; the plan
 * cache re-plans it after DDL on the tables, e.g. an extension update).
 * The worker's three statements of every round (claim, record, next due)
 * are thus parsed once, not once per round.  cursor_options
 * CURSOR_OPT_CUSTOM_PLAN plans every execution anew: the record statement
 * needs that, since a generic plan made while the queue was short (a hash
 * join over every queued row) stays in use when it is long, and then costs
 * O(queue) per round (measured: 20,000 callbacks took 7.4 s instead of
 * 3.5 s).  Must be called inside begin_tx()/end_tx(); leaves SPI's
 * procedure context current, as SPI_execute_with_args does.  Can ERROR.
 */
static int
run_kept(SPIPlanPtr *plan, const char *sql, int nargs, Oid *argtypes,
		 Datum *args, bool read_only, long count, int cursor_options)
{
	otp_prepare_opts(plan, sql, nargs, argtypes, cursor_options);
	return SPI_execute_plan(*plan, args, NULL, read_only, count);
}

/*
 * record_results: write the outcome of the finished requests in
 * "unrecorded" in one transaction (one UPDATE over unnest()ed arrays), then
 * free the requests.  Retries get their next_attempt_at from the schedule
 * (or a later Retry-After); next_claim is pulled forward to the earliest.
 * Allocates in CurrentMemoryContext (the loop context).  Can ERROR on
 * database errors; the requests are then freed by the caller's cleanup and
 * their leases expire, so they are sent again (at-least-once).
 */
static void
record_results(void)
{
	int			n = list_length(unrecorded);
	Datum	   *ids = palloc(n * sizeof(Datum));
	Datum	   *statuses = palloc(n * sizeof(Datum));
	Datum	   *nexts = palloc(n * sizeof(Datum));
	bool	   *nexts_null = palloc(n * sizeof(bool));
	Datum	   *https = palloc(n * sizeof(Datum));
	bool	   *https_null = palloc(n * sizeof(bool));
	Datum	   *errs = palloc(n * sizeof(Datum));
	bool	   *errs_null = palloc(n * sizeof(bool));
	Datum	   *atts = palloc(n * sizeof(Datum));
	TimestampTz now = GetCurrentTimestamp();
	int			i = 0;
	int			dims[1];
	int			lbs[1] = {1};
	Oid			argtypes[6] = {INT8ARRAYOID, TEXTARRAYOID, TIMESTAMPTZARRAYOID,
	INT4ARRAYOID, TEXTARRAYOID, INT4ARRAYOID};
	Datum		args[6];
	ListCell   *lc;
	int			rc;

	foreach(lc, unrecorded)
	{
		OtpHttpRequest *req = (OtpHttpRequest *) lfirst(lc);
		const char *status = "dead";
		bool		retry = false;
		char	   *err = NULL;

		switch (req->outcome)
		{
			case OTP_HTTP_RESPONSE:
				if (req->http_status >= 200 && req->http_status < 300)
					status = "delivered";
				else if (req->http_status == 429 || req->http_status == 408 ||
						 req->http_status >= 500)
					retry = true;
				else
					status = "dead";	/* 410, other 4xx, 3xx: never retried */
				if (req->http_status < 200 || req->http_status >= 300)
				{
					char	   *body = clean_text(req->response, req->response_len,
												  req->redact);

					err = psprintf("HTTP %d%s%s%s", req->http_status,
								   req->http_status == 410 ? " (gone: the endpoint asked to stop)" : "",
								   body[0] ? ": " : "", body);
				}
				break;
			case OTP_HTTP_TRANSPORT_ERROR:
				retry = true;
				err = clean_text(req->errbuf, strlen(req->errbuf), req->redact);
				break;
			case OTP_HTTP_REFUSED:
			case OTP_HTTP_INVALID:
			default:
				status = "dead";
				err = clean_text(req->errbuf, strlen(req->errbuf), req->redact);
				break;
		}

		nexts_null[i] = true;
		nexts[i] = (Datum) 0;
		if (retry)
		{
			int64		delay = retry_delay_ms(req->attempts);

			if (delay < 0)
				status = "dead";
			else
			{
				TimestampTz at;

				/* cap the seconds before multiplying: a huge value must not wrap */
				if (req->retry_after_s > 0)
				{
					int64		ra_ms = Min(req->retry_after_s,
											OTP_RETRY_AFTER_CAP_MS / 1000) * 1000;

					if (ra_ms > delay)
						delay = ra_ms;
				}
				at = TimestampTzPlusMilliseconds(now, delay);
				status = "queued";
				nexts[i] = TimestampTzGetDatum(at);
				nexts_null[i] = false;
				if (at < next_claim)
					next_claim = at;
			}
		}

		if (strcmp(status, "dead") == 0)
			ereport(LOG,
					(errcode(ERRCODE_SUCCESSFUL_COMPLETION),
					 errmsg("otp_link delivery " INT64_FORMAT " is dead after %d attempt(s): %s",
							req->id, req->attempts, err ? err : "")));
		else
			elog(DEBUG1, "otp_link delivery " INT64_FORMAT " attempt %d: %s (%d, %.1f ms)",
				 req->id, req->attempts, status, req->http_status,
				 req->elapsed_us / 1000.0);

		ids[i] = Int64GetDatum(req->id);
		statuses[i] = CStringGetTextDatum(status);
		https[i] = Int32GetDatum(req->http_status);
		https_null[i] = (req->http_status == 0);
		errs[i] = err ? CStringGetTextDatum(err) : (Datum) 0;
		errs_null[i] = (err == NULL);
		atts[i] = Int32GetDatum(req->attempts);
		i++;
	}

	dims[0] = n;
	args[0] = PointerGetDatum(construct_array(ids, n, INT8OID, 8, FLOAT8PASSBYVAL, TYPALIGN_DOUBLE));
	args[1] = PointerGetDatum(construct_array(statuses, n, TEXTOID, -1, false, TYPALIGN_INT));
	args[2] = PointerGetDatum(construct_md_array(nexts, nexts_null, 1, dims, lbs,
												 TIMESTAMPTZOID, 8, FLOAT8PASSBYVAL, TYPALIGN_DOUBLE));
	args[3] = PointerGetDatum(construct_md_array(https, https_null, 1, dims, lbs,
												 INT4OID, 4, true, TYPALIGN_INT));
	args[4] = PointerGetDatum(construct_md_array(errs, errs_null, 1, dims, lbs,
												 TEXTOID, -1, false, TYPALIGN_INT));
	args[5] = PointerGetDatum(construct_array(atts, n, INT4OID, 4, true, TYPALIGN_INT));

	begin_tx("otp_link: recording delivery results");
	if (extension_ready())
	{
		static SPIPlanPtr plan = NULL;

		rc = run_kept(&plan,
					  "UPDATE otp_link.deliveries d "
					  "   SET status = r.status, "
					  "       next_attempt_at = coalesce(r.next_at, d.next_attempt_at), "
					  "       locked_until = NULL, "
					  "       last_http_status = r.http, "
					  "       last_error = r.err, "
					  "       updated_at = pg_catalog.now(), "
					  "       delivered_at = CASE WHEN r.status = 'delivered' "
					  "                      THEN pg_catalog.now() ELSE d.delivered_at END "
					  "  FROM ROWS FROM (pg_catalog.unnest($1), pg_catalog.unnest($2), "
					  "                  pg_catalog.unnest($3), pg_catalog.unnest($4), "
					  "                  pg_catalog.unnest($5), pg_catalog.unnest($6)) "
					  "       AS r(id, status, next_at, http, err, attempts) "
					  " WHERE d.id = r.id AND d.status = 'queued' AND d.attempts = r.attempts",
					  6, argtypes, args, false, 0, CURSOR_OPT_CUSTOM_PLAN);
		if (rc != SPI_OK_UPDATE)
			ereport(ERROR,
					(errcode(ERRCODE_INTERNAL_ERROR),
					 errmsg("otp_link worker could not record delivery results: %s",
							SPI_result_code_string(rc))));
	}
	end_tx();

	foreach(lc, unrecorded)
		MemoryContextDelete(((OtpHttpRequest *) lfirst(lc))->cxt);
	list_free(unrecorded);
	unrecorded = NIL;
}

/* ----------------------------------------------------------------
 * Worker: claiming and sending
 * ----------------------------------------------------------------
 */

/*
 * Columns returned by the claim query:
 *	1 id, 2 attempts, 3 webhook_id, 4 url, 5 body, 6 mode
 *	('signed' | 'cloud' | 'none'), 7 secret, 8 token
 */
static const char *claim_sql =
"WITH c AS ("
"  SELECT id FROM otp_link.deliveries"
"   WHERE status = 'queued' AND next_attempt_at <= pg_catalog.now()"
"     AND (locked_until IS NULL OR locked_until < pg_catalog.now())"
"   ORDER BY next_attempt_at"
"   LIMIT $1"
"   FOR UPDATE SKIP LOCKED) "
"UPDATE otp_link.deliveries d"
"   SET locked_until = pg_catalog.now() + $2 * interval '1 millisecond',"
"       attempts = d.attempts + 1,"
"       updated_at = pg_catalog.now()"
"  FROM c, otp_link.instances i,"
"       LATERAL (SELECT i.options -> 'reply_endpoint' AS ep) e,"
"       LATERAL (SELECT CASE pg_catalog.jsonb_typeof(e.ep)"
"                       WHEN 'object' THEN e.ep ->> 'type'"
"                       WHEN 'string' THEN e.ep #>> '{}' END AS t) et"
" WHERE d.id = c.id AND i.id = d.instance_id "
"RETURNING d.id, d.attempts, d.webhook_id,"
"   CASE WHEN d.kind = 'callback' THEN d.destination ELSE e.ep ->> 'url' END,"
"   CASE WHEN d.kind = 'reply' AND et.t = 'whatsapp_cloud' THEN"
"        pg_catalog.jsonb_build_object('messaging_product', 'whatsapp',"
"            'recipient_type', 'individual', 'to', d.destination, 'type', 'text',"
"            'text', pg_catalog.jsonb_build_object('body', d.payload ->> 'body'))::text"
"        ELSE d.payload::text END,"
"   CASE WHEN d.kind = 'callback' THEN 'signed'"
"        WHEN et.t = 'whatsapp_cloud' THEN 'cloud'"
"        WHEN et.t = 'http' THEN 'signed'"
"        ELSE 'none' END,"
"   i.secret,"
"   CASE WHEN d.kind = 'reply' THEN e.ep ->> 'token' END";

/*
 * build_request: turn one claimed row into an OtpHttpRequest in its own
 * memory context (a child of the loop context, moved under
 * TopMemoryContext by the caller once the claim committed), with its
 * headers and, for
 * signed deliveries, its Standard Webhooks signature.  Runs inside the
 * claim transaction (signing needs a resource owner).  Returns NULL after
 * queueing a local "dead"/"invalid" result when the row cannot be sent.
 */
static OtpHttpRequest *
build_request(HeapTuple tup, TupleDesc desc)
{
	MemoryContext cxt;
	MemoryContext old;
	OtpHttpRequest *req;
	bool		isnull;
	char	   *mode;
	char	   *secret;
	char	   *token;
	char	   *webhook_id;

	/* under the loop context until the claim commits: an ERROR frees it */
	cxt = AllocSetContextCreate(loop_cxt, "otp_link request",
								ALLOCSET_SMALL_SIZES);
	old = MemoryContextSwitchTo(cxt);

	req = palloc0(sizeof(OtpHttpRequest));
	req->cxt = cxt;
	req->id = DatumGetInt64(SPI_getbinval(tup, desc, 1, &isnull));
	req->attempts = DatumGetInt32(SPI_getbinval(tup, desc, 2, &isnull));
	webhook_id = SPI_getvalue(tup, desc, 3);
	req->url = SPI_getvalue(tup, desc, 4);
	req->body = SPI_getvalue(tup, desc, 5);
	req->bodylen = req->body ? strlen(req->body) : 0;
	mode = SPI_getvalue(tup, desc, 6);
	secret = SPI_getvalue(tup, desc, 7);
	token = SPI_getvalue(tup, desc, 8);

	req->outcome = OTP_HTTP_PENDING;
	req->retry_after_s = -1;
	req->headers[req->nheaders++] = "Content-Type: application/json";
	req->headers[req->nheaders++] = "Accept: application/json";

	if (strcmp(mode, "none") == 0)
	{
		req->outcome = OTP_HTTP_INVALID;
		strlcpy(req->errbuf, "the instance has no usable reply_endpoint", sizeof(req->errbuf));
	}
	else if (strcmp(mode, "cloud") == 0)
	{
		if (token == NULL || token[0] == '\0')
		{
			req->outcome = OTP_HTTP_INVALID;
			strlcpy(req->errbuf, "the whatsapp_cloud reply_endpoint has no token", sizeof(req->errbuf));
		}
		else
		{
			req->headers[req->nheaders++] = psprintf("Authorization: Bearer %s", token);
			req->redact = token;
		}
	}
	else
	{
		int			keylen;
		uint8	   *key = otp_webhook_key(secret, &keylen);
		int64		ts = (int64) time(NULL);

		if (key == NULL)
		{
			req->outcome = OTP_HTTP_INVALID;
			strlcpy(req->errbuf, "the instance secret is not a valid whsec_ secret", sizeof(req->errbuf));
		}
		else
		{
			char	   *sig = otp_webhook_signature(key, keylen, webhook_id, ts,
													req->body, req->bodylen);

			explicit_bzero(key, keylen);
			req->headers[req->nheaders++] = psprintf("webhook-id: %s", webhook_id);
			req->headers[req->nheaders++] = psprintf("webhook-timestamp: " INT64_FORMAT, ts);
			req->headers[req->nheaders++] = psprintf("webhook-signature: %s", sig);
			if (token != NULL && token[0] != '\0')
			{
				req->headers[req->nheaders++] = psprintf("Authorization: Bearer %s", token);
				req->redact = token;
			}
		}
	}
	if (secret)
		explicit_bzero(secret, strlen(secret));

	MemoryContextSwitchTo(old);
	return req;
}

/*
 * claim_and_send: claim up to "slots" due deliveries in one short
 * transaction, then (after COMMIT) start their requests.  Sets next_claim:
 * now when the batch was full (more may be due), else the earliest
 * next_attempt_at still queued.  Can ERROR on database errors (nothing has
 * been sent then).
 */
static void
claim_and_send(int slots)
{
	static SPIPlanPtr claim_plan = NULL;
	static SPIPlanPtr next_plan = NULL;
	List	   *reqs = NIL;
	ListCell   *lc;
	TimestampTz now = GetCurrentTimestamp();
	TimestampTz fallback = TimestampTzPlusMilliseconds(now, otp_link_sweep_interval_ms);

	begin_tx("otp_link: claiming deliveries");
	if (!extension_ready())
		next_claim = fallback;
	else
	{
		Oid			argtypes[2] = {INT4OID, INT8OID};
		Datum		args[2];
		int			rc;
		uint64		i;
		uint64		claimed;

		args[0] = Int32GetDatum(slots);
		args[1] = Int64GetDatum((int64) otp_link_timeout_ms + OTP_LEASE_MARGIN_MS);
		rc = run_kept(&claim_plan, claim_sql, 2, argtypes, args, false, 0, 0);
		if (rc != SPI_OK_UPDATE_RETURNING)
			ereport(ERROR,
					(errcode(ERRCODE_INTERNAL_ERROR),
					 errmsg("otp_link worker could not claim deliveries: %s",
							SPI_result_code_string(rc))));
		claimed = SPI_processed;
		for (i = 0; i < claimed; i++)
		{
			OtpHttpRequest *req = build_request(SPI_tuptable->vals[i],
												SPI_tuptable->tupdesc);
			MemoryContext old = MemoryContextSwitchTo(loop_cxt);

			/* the list must survive SPI_finish() */
			reqs = lappend(reqs, req);
			MemoryContextSwitchTo(old);
		}

		if (claimed >= (uint64) slots)
			next_claim = now;
		else
		{
			/*
			 * Not read-only: SPI then increments the command counter and
			 * takes a new snapshot, which sees the leases the claim just
			 * took.  Read-only, it ran on the first snapshot, saw the claimed
			 * rows as due and pushed next_claim a second ahead for nothing.
			 */
			rc = run_kept(&next_plan,
						  "SELECT pg_catalog.min(next_attempt_at) FROM otp_link.deliveries"
						  " WHERE status = 'queued'"
						  "   AND (locked_until IS NULL OR locked_until < pg_catalog.now())",
						  0, NULL, NULL, false, 1, 0);
			next_claim = fallback;
			if (rc == SPI_OK_SELECT && SPI_processed == 1)
			{
				bool		isnull;
				Datum		d = SPI_getbinval(SPI_tuptable->vals[0],
											  SPI_tuptable->tupdesc, 1, &isnull);

				if (!isnull)
				{
					TimestampTz due = DatumGetTimestampTz(d);

					/* due but not claimed: row-locked by someone; look again soon */
					if (due <= now)
						due = TimestampTzPlusMilliseconds(now, 1000);
					next_claim = Min(due, fallback);
				}
			}
		}
	}
	end_tx();

	/* the transaction is closed: now talk to the network */
	foreach(lc, reqs)
	{
		OtpHttpRequest *req = (OtpHttpRequest *) lfirst(lc);
		MemoryContext old;

		/* the request now outlives the round */
		MemoryContextSetParent(req->cxt, TopMemoryContext);
		old = MemoryContextSwitchTo(TopMemoryContext);

		if (req->outcome != OTP_HTTP_PENDING || !otp_http_start(req))
			unrecorded = lappend(unrecorded, req);
		MemoryContextSwitchTo(old);
	}
}

/* ----------------------------------------------------------------
 * Worker: sweep and purge
 * ----------------------------------------------------------------
 */

/*
 * call_expire: SELECT otp_link.otp_link_expire() when it exists and can be
 * called without arguments; inside a subtransaction, so a failure is logged
 * as a WARNING and does not stop deliveries.  Runs inside a transaction.
 */
static void
call_expire(void)
{
	MemoryContext oldcxt = CurrentMemoryContext;
	ResourceOwner oldowner = CurrentResourceOwner;
	int			rc;

	rc = SPI_execute("SELECT p.pronargs = p.pronargdefaults FROM pg_catalog.pg_proc p"
					 " WHERE p.oid = coalesce("
					 "   pg_catalog.to_regprocedure('otp_link.otp_link_expire(integer)'),"
					 "   pg_catalog.to_regprocedure('otp_link.otp_link_expire()'))",
					 true, 1);
	if (rc != SPI_OK_SELECT || SPI_processed != 1)
		return;
	{
		bool		isnull;
		Datum		ok = SPI_getbinval(SPI_tuptable->vals[0], SPI_tuptable->tupdesc, 1, &isnull);

		if (isnull || !DatumGetBool(ok))
			return;
	}

	BeginInternalSubTransaction(NULL);
	MemoryContextSwitchTo(oldcxt);
	PG_TRY();
	{
		SPI_execute("SELECT otp_link.otp_link_expire()", false, 0);
		ReleaseCurrentSubTransaction();
		MemoryContextSwitchTo(oldcxt);
		CurrentResourceOwner = oldowner;
	}
	PG_CATCH();
	{
		ErrorData  *edata;

		MemoryContextSwitchTo(oldcxt);
		edata = CopyErrorData();
		FlushErrorState();
		RollbackAndReleaseCurrentSubTransaction();
		MemoryContextSwitchTo(oldcxt);
		CurrentResourceOwner = oldowner;
		ereport(WARNING,
				(errcode(edata->sqlerrcode),
				 errmsg("otp_link worker: otp_link_expire() failed: %s", edata->message)));
		FreeErrorData(edata);
	}
	PG_END_TRY();
}

/*
 * purge: delete rows matching sql (a DELETE with LIMIT OTP_PURGE_BATCH in a
 * subquery, one interval parameter in seconds) in at most
 * OTP_PURGE_MAX_BATCHES short transactions.  Returns false when the
 * extension is gone.  Can ERROR on database errors.
 */
static bool
purge(const char *activity, const char *sql, int age_s)
{
	int			b;

	for (b = 0; b < OTP_PURGE_MAX_BATCHES; b++)
	{
		Oid			argtypes[1] = {INT8OID};
		Datum		args[1] = {Int64GetDatum((int64) age_s)};
		uint64		deleted = 0;
		bool		ready;

		begin_tx(activity);
		ready = extension_ready();
		if (ready)
		{
			if (SPI_execute_with_args(sql, 1, argtypes, args, NULL, false, 0) == SPI_OK_DELETE)
				deleted = SPI_processed;
		}
		end_tx();
		if (!ready)
			return false;
		if (deleted < OTP_PURGE_BATCH)
			break;
		CHECK_FOR_INTERRUPTS();
	}
	return true;
}

/*
 * sweep: expire overdue links and purge old rows.  Each step is its own
 * short transaction.  Can ERROR on database errors.
 */
static void
sweep(void)
{
	bool		ready;

	begin_tx("otp_link: expiry sweep");
	ready = extension_ready();
	if (ready)
		call_expire();
	end_tx();
	if (!ready)
		return;

	if (otp_link_retention_s > 0 &&
		!purge("otp_link: purging deliveries",
			   "DELETE FROM otp_link.deliveries WHERE id IN ("
			   " SELECT id FROM otp_link.deliveries"
			   "  WHERE status IN ('delivered', 'dead')"
			   "    AND updated_at < pg_catalog.now() - $1 * interval '1 second'"
			   "  LIMIT 1000 FOR UPDATE SKIP LOCKED)",
			   otp_link_retention_s))
		return;

	/*
	 * Held replies nobody took (they hold one-time links), finished links
	 * (created more than the retention plus the longest TTL ago, found by
	 * the BRIN index on created_at), and idle sender counters.
	 */
	if (otp_link_retention_s > 0 &&
		(!purge("otp_link: purging held replies",
				"DELETE FROM otp_link.deliveries WHERE id IN ("
				" SELECT id FROM otp_link.deliveries"
				"  WHERE status = 'held'"
				"    AND created_at < pg_catalog.now() - $1 * interval '1 second'"
				"  LIMIT 1000 FOR UPDATE SKIP LOCKED)",
				otp_link_retention_s) ||
		 !purge("otp_link: purging links",
				"DELETE FROM otp_link.links WHERE id IN ("
				" SELECT id FROM otp_link.links"
				"  WHERE created_at < pg_catalog.now() - ($1 + 86400) * interval '1 second'"
				"    AND status <> 'pending'"
				"  LIMIT 1000 FOR UPDATE SKIP LOCKED)",
				otp_link_retention_s)))
		return;

	if (!purge("otp_link: purging sender counters",
			   "DELETE FROM otp_link.senders WHERE chat_id IN ("
			   " SELECT chat_id FROM otp_link.senders"
			   "  WHERE window_start < pg_catalog.now() - $1 * interval '1 second'"
			   "    AND (blocked_until IS NULL OR blocked_until < pg_catalog.now())"
			   "  LIMIT 1000 FOR UPDATE SKIP LOCKED)",
			   otp_link_message_retention_s))
		return;

	purge("otp_link: purging message ids",
		  "DELETE FROM otp_link.messages_seen WHERE message_id IN ("
		  " SELECT message_id FROM otp_link.messages_seen"
		  "  WHERE seen_at < pg_catalog.now() - $1 * interval '1 second'"
		  "  LIMIT 1000 FOR UPDATE SKIP LOCKED)",
		  otp_link_message_retention_s);
}

/* ----------------------------------------------------------------
 * Worker: main loop
 * ----------------------------------------------------------------
 */

/*
 * wait_for_work: sleep until the latch is set, a libcurl socket is ready,
 * libcurl's timer fires, or the next claim/sweep is due.  The WaitEventSet
 * is built in the loop context each round (the set of sockets changes).
 */
static void
wait_for_work(void)
{
	TimestampTz now = GetCurrentTimestamp();
	long		timeout;
	long		t;
	WaitEventSet *set;
	WaitEvent  *events;
	int			nevents;
	int			n;
	int			i;

	timeout = (next_sweep > now) ? (long) ((next_sweep - now + 999) / 1000) : 0;
	if (otp_http_inflight() < otp_link_max_concurrency)
	{
		t = (next_claim > now) ? (long) ((next_claim - now + 999) / 1000) : 0;
		timeout = Min(timeout, t);
	}
	t = otp_http_timeout_ms();
	if (t >= 0)
		timeout = Min(timeout, t);
	if (unrecorded != NIL)
		timeout = 0;

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
			next_claim = 0;		/* a backend committed a delivery */
		}
		else if (events[i].events & (WL_SOCKET_READABLE | WL_SOCKET_WRITEABLE))
			otp_http_socket_ready(events[i].fd, events[i].events);
	}
	FreeWaitEventSet(set);
}

/*
 * one_round: collect finished requests, record them, sweep when due, claim
 * when due and slots are free.
 */
static void
one_round(void)
{
	List	   *finished;
	TimestampTz now;
	int			slots;

	finished = otp_http_collect();
	if (finished != NIL)
	{
		MemoryContext old = MemoryContextSwitchTo(TopMemoryContext);

		unrecorded = list_concat(unrecorded, finished);
		MemoryContextSwitchTo(old);
	}
	if (unrecorded != NIL)
		record_results();

	now = GetCurrentTimestamp();
	if (now >= next_sweep)
	{
		/* set first: a failing sweep must not be retried at once */
		next_sweep = TimestampTzPlusMilliseconds(now, otp_link_sweep_interval_ms);
		sweep();
		/* the sweep may have queued callbacks (our own wake-ups are ignored) */
		next_claim = 0;
	}

	slots = otp_link_max_concurrency - otp_http_inflight();
	if (slots > 0 && GetCurrentTimestamp() >= next_claim)
		claim_and_send(slots);

	if (otp_shared != NULL)
	{
		SpinLockAcquire(&otp_shared->mutex);
		otp_shared->worker_last_round = GetCurrentTimestamp();
		SpinLockRelease(&otp_shared->mutex);
	}
}

/*
 * otp_link_worker_main: entry point of the background worker.  Connects to
 * otp_link.database, publishes its latch, and loops until SIGTERM or
 * postmaster death.  An ERROR in a round is logged, the transaction
 * aborted, and the loop goes on after a short pause; requests whose result
 * could not be recorded are sent again when their lease expires.
 */
void
otp_link_worker_main(Datum arg)
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

	am_worker = true;
	pgstat_report_appname("otp_link worker");
	SetConfigOption("search_path", "pg_catalog, pg_temp", PGC_SUSET, PGC_S_OVERRIDE);
	/* a row lock held elsewhere must not stall every delivery */
	SetConfigOption("lock_timeout", "10s", PGC_SUSET, PGC_S_OVERRIDE);
	pg_prng_seed(&prng, (uint64) GetCurrentTimestamp() ^ ((uint64) MyProcPid << 32));

	loop_cxt = AllocSetContextCreate(TopMemoryContext, "otp_link worker loop",
									 ALLOCSET_DEFAULT_SIZES);
	otp_http_init();

	ereport(LOG,
			(errcode(ERRCODE_SUCCESSFUL_COMPLETION),
			 errmsg("otp_link worker started for database \"%s\"", otp_link_database)));

	for (;;)
	{
		MemoryContextReset(loop_cxt);
		MemoryContextSwitchTo(loop_cxt);

		PG_TRY();
		{
			/* SIGTERM exits here (FATAL); a cancel is an ERROR caught below */
			CHECK_FOR_INTERRUPTS();
			if (ConfigReloadPending)
			{
				ConfigReloadPending = false;
				ProcessConfigFile(PGC_SIGHUP);
				otp_http_reconfigure();
				next_claim = 0;
				next_sweep = Min(next_sweep,
								 TimestampTzPlusMilliseconds(GetCurrentTimestamp(),
															 otp_link_sweep_interval_ms));
			}
			one_round();
		}
		PG_CATCH();
		{
			ListCell   *lc;

			HOLD_INTERRUPTS();
			MemoryContextSwitchTo(loop_cxt);
			EmitErrorReport();
			FlushErrorState();
			AbortOutOfAnyTransaction();
			pgstat_report_activity(STATE_IDLE, NULL);
			/* their leases expire: they are sent again */
			foreach(lc, unrecorded)
				MemoryContextDelete(((OtpHttpRequest *) lfirst(lc))->cxt);
			list_free(unrecorded);
			unrecorded = NIL;
			next_claim = TimestampTzPlusMilliseconds(GetCurrentTimestamp(), 1000);
			RESUME_INTERRUPTS();

			/* do not spin on a persistent error */
			(void) WaitLatch(MyLatch, WL_LATCH_SET | WL_TIMEOUT | WL_EXIT_ON_PM_DEATH,
							 1000L, PG_WAIT_EXTENSION);
			ResetLatch(MyLatch);
		}
		PG_END_TRY();

		MemoryContextSwitchTo(loop_cxt);
		wait_for_work();
	}
}

/* ----------------------------------------------------------------
 * SQL: otp_link.otp_link_deliveries_wake() trigger
 * ----------------------------------------------------------------
 */

/*
 * otp_link_deliveries_wake: statement-level AFTER trigger on
 * otp_link.deliveries; wakes the worker when the transaction commits.
 * ERRORs if not called as a trigger.
 */
Datum
otp_link_deliveries_wake(PG_FUNCTION_ARGS)
{
	if (!CALLED_AS_TRIGGER(fcinfo))
		ereport(ERROR,
				(errcode(ERRCODE_E_R_I_E_TRIGGER_PROTOCOL_VIOLATED),
				 errmsg("otp_link_deliveries_wake() must be called as a trigger")));
	otp_link_wake_worker_at_commit();
	return PointerGetDatum(NULL);
}

/* ----------------------------------------------------------------
 * SQL: otp_link.otp_link_delivery_requeue(id bigint)
 * ----------------------------------------------------------------
 */

/*
 * otp_link_delivery_requeue: put a dead delivery back in the queue
 * (attempts reset to 0, due now) and wake the worker at commit.  Returns
 * {"id", "status", "requeued"}; a delivery that is not dead is left alone
 * (requeued false).  ERRORs with PT404 (HTTP 404 in PostgREST) if there is no such
 * delivery.  The result is allocated in the caller's context.
 */
Datum
otp_link_delivery_requeue(PG_FUNCTION_ARGS)
{
	int64		id = PG_GETARG_INT64(0);
	Oid			argtypes[1] = {INT8OID};
	Datum		args[1];
	Oid			argtypes2[2];
	Datum		args2[2];
	Datum		result;
	bool		isnull;
	int			rc;
	bool		requeued;

	args[0] = Int64GetDatum(id);
	if (SPI_connect() != SPI_OK_CONNECT)
		ereport(ERROR,
				(errcode(ERRCODE_INTERNAL_ERROR),
				 errmsg("could not connect to SPI")));

	rc = SPI_execute_with_args("UPDATE otp_link.deliveries"
							   "   SET status = 'queued', attempts = 0,"
							   "       next_attempt_at = pg_catalog.now(), locked_until = NULL,"
							   "       updated_at = pg_catalog.now()"
							   " WHERE id = $1 AND status = 'dead'",
							   1, argtypes, args, NULL, false, 0);
	if (rc != SPI_OK_UPDATE)
		ereport(ERROR,
				(errcode(ERRCODE_INTERNAL_ERROR),
				 errmsg("could not requeue delivery " INT64_FORMAT ": %s",
						id, SPI_result_code_string(rc))));
	requeued = (SPI_processed == 1);

	argtypes2[0] = INT8OID;
	argtypes2[1] = BOOLOID;
	args2[0] = Int64GetDatum(id);
	args2[1] = BoolGetDatum(requeued);
	rc = SPI_execute_with_args("SELECT pg_catalog.jsonb_build_object('id', id, 'status', status,"
							   " 'attempts', attempts, 'requeued', $2)"
							   "  FROM otp_link.deliveries WHERE id = $1",
							   2, argtypes2, args2, NULL, false, 1);
	if (rc != SPI_OK_SELECT || SPI_processed != 1)
		ereport(ERROR,
				(errcode(MAKE_SQLSTATE('P', 'T', '4', '0', '4')),
				 errmsg("delivery " INT64_FORMAT " does not exist", id)));
	result = SPI_getbinval(SPI_tuptable->vals[0], SPI_tuptable->tupdesc, 1, &isnull);
	result = SPI_datumTransfer(result, false, -1);
	SPI_finish();

	if (requeued)
		otp_link_wake_worker_at_commit();

	PG_RETURN_DATUM(result);
}
