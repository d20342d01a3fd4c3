/*-------------------------------------------------------------------------
 *
 * queue.c
 *	  The worker's SQL on otp_link.deliveries: claim due rows, record the
 *	  results of finished requests, and the transaction helpers the worker
 *	  uses; also the SQL-callable otp_link_delivery_requeue and the trigger
 *	  function otp_link_deliveries_wake (backend side).
 *
 * Locking: the claim takes due rows with FOR UPDATE SKIP LOCKED and puts a
 * lease (locked_until) on them in one short transaction, committed before
 * any request is sent; results are recorded in another short transaction
 * after the requests finished.  No transaction is open during network I/O.
 * The worker runs with lock_timeout, so a row held by a backend delays it
 * only briefly.
 *
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include "access/relation.h"
#include "catalog/namespace.h"
#include "catalog/pg_namespace.h"

#include "commands/dbcommands.h"
#include "commands/extension.h"

#include "mb/pg_wchar.h"

#include "pgstat.h"

#include "storage/bufmgr.h"

#include "utils/builtins.h"

#include "utils/guc.h"
#include "utils/lsyscache.h"
#include "utils/memutils.h"

#include "utils/snapmgr.h"
#include "utils/syscache.h"

#include "otp_link.h"
#include "worker.h"

#define OTP_LEASE_MARGIN_MS		60000	/* lease = timeout + this */
#define OTP_RETRY_AFTER_CAP_MS	((int64) 86400 * 1000)	/* honour at most 1 day */

PG_FUNCTION_INFO_V1(otp_link_delivery_requeue);
PG_FUNCTION_INFO_V1(otp_link_deliveries_wake);
static Oid	ext_oid_seen = InvalidOid;	/* extension whose leases we cleared */

/*
 * otp_worker_begin_tx / otp_worker_end_tx: a short transaction with SPI and a snapshot.
 */
void
otp_worker_begin_tx(const char *activity)
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

void
otp_worker_end_tx(void)
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
 * otp_extension_ready: whether the extension exists in this database and its
 * schema can be trusted (inside a transaction).  The first time it is seen
 * by this process (or after it was re-created), clears the leases a
 * previous incarnation left behind: no request of ours is in flight for
 * them.
 */
bool
otp_extension_ready(void)
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

/* the shortest piece of a secret scrubbed where the text is cut */
#define REDACT_MIN_PIECE	4

/*
 * mark_secret: set mask[i] for every byte of text[0..n) that is part of
 * an occurrence of secret, or of a prefix of it (REDACT_MIN_PIECE bytes or
 * more) that the end of the text cut off.  Allocates nothing.
 */
static void
mark_secret(const char *text, size_t n, const char *secret, bool *mask)
{
	size_t		slen = strlen(secret);
	const char *p = text;
	const char *hit;

	while ((hit = strstr(p, secret)) != NULL)
	{
		memset(mask + (hit - text), true, slen);
		p = hit + 1;
	}
	for (size_t k = Min(slen - 1, n); k >= REDACT_MIN_PIECE; k--)
		if (memcmp(text + n - k, secret, k) == 0)
		{
			memset(mask + n - k, true, k);
			break;
		}
}

/*
 * clean_text: a copy of s (at most len bytes) that is safe to store as
 * text: every occurrence of each of the nsecrets secrets, and a start of
 * one cut off at the end of s (the response cap cuts bodies), replaced by
 * "[redacted]"; then valid in the server encoding, without control
 * characters.  palloc'd in CurrentMemoryContext; cannot ERROR except on
 * out of memory.
 */
static char *
clean_text(const char *s, size_t len, char *const *secrets, int nsecrets)
{
	StringInfoData buf;
	char	   *copy = pnstrdup(s, len);
	size_t		n = strlen(copy);
	bool	   *mask = palloc0(n + 1);
	bool		valid;

	for (int i = 0; i < nsecrets; i++)
		if (secrets[i] != NULL && secrets[i][0] != '\0')
			mark_secret(copy, n, secrets[i], mask);
	initStringInfo(&buf);
	for (size_t i = 0; i < n; i++)
	{
		if (!mask[i])
			appendStringInfoChar(&buf, copy[i]);
		else if (i == 0 || !mask[i - 1])
			appendStringInfoString(&buf, "[redacted]");
	}
	pfree(mask);
	pfree(copy);

	valid = pg_verifymbstr(buf.data, buf.len, true);
	for (int i = 0; i < buf.len; i++)
	{
		unsigned char c = (unsigned char) buf.data[i];

		if (c < 0x20 || c == 0x7f)
			buf.data[i] = ' ';
		else if (c >= 0x80 && !valid)
			buf.data[i] = '?';
	}
	return buf.data;
}

/* ----------------------------------------------------------------
 * Worker: recording results
 * ----------------------------------------------------------------
 */

/* which plans run_fixed() rules out besides sequential scans */
#define FIXED_NO_JOINS		0x01	/* hash and merge joins off as well */

/* a statement of the worker's rounds, its plan and what it was made for */
typedef struct FixedPlan
{
	SPIPlanPtr	plan;			/* NULL until first used */
	BlockNumber blocks;			/* otp_link.deliveries' size when planned */
} FixedPlan;

/* otp_link.deliveries' size, measured once per round (otp_queue_round) */
static BlockNumber round_blocks = 0;

/*
 * deliveries_blocks: the size of otp_link.deliveries in pages now, 0 when
 * it does not exist.  Takes the AccessShareLock the statements about to
 * run on it take anyway.  Can ERROR only on a lock timeout.
 */
static BlockNumber
deliveries_blocks(void)
{
	Oid			nsp = get_namespace_oid("otp_link", true);
	Oid			relid = OidIsValid(nsp) ? get_relname_relid("deliveries", nsp) : InvalidOid;
	Relation	rel = OidIsValid(relid) ? try_relation_open(relid, AccessShareLock) : NULL;
	BlockNumber n;

	if (rel == NULL)
		return 0;
	n = RelationGetNumberOfBlocks(rel);
	relation_close(rel, AccessShareLock);
	return n;
}

/*
 * run_fixed: execute sql with args through a statement prepared on first
 * use and kept for the life of the worker process (otp_prepare_opts), so
 * that the worker's statements of every round (claim, record, next due)
 * are parsed once, not once per round.  Its one generic plan is made (and
 * remade after an invalidation, e.g. DDL or an extension update) with
 * sequential scans off, and with hash and merge joins off too when flags
 * has FIXED_NO_JOINS, so that the rows of otp_link.deliveries are reached
 * through its indexes whatever the statistics say.  The plan is made anew
 * when the table has doubled or halved since (round_blocks): the statements are planned
 * on first use, often while the table is nearly empty, and a plan made
 * then (a full scan of a "tiny" table or of one of its indexes) was kept
 * while the table grew, until an ANALYZE, and read every row of it each
 * round.  The settings hold only while the statement is planned and run
 * (a GUC nest level).  Must be called inside
 * otp_worker_begin_tx()/otp_worker_end_tx(); leaves SPI's procedure
 * context current, as SPI_execute_with_args does.  Not read-only: SPI
 * takes a new snapshot for each statement.  Can ERROR.
 */
static int
run_fixed(FixedPlan *fp, const char *sql, int nargs, Oid *argtypes,
		  Datum *args, long count, int flags)
{
	BlockNumber blocks = round_blocks;
	int			guc_level;
	int			rc;

	if (fp->plan != NULL &&
		(blocks / 2 > fp->blocks || blocks < fp->blocks / 2))
	{
		SPI_freeplan(fp->plan);
		fp->plan = NULL;
	}
	if (fp->plan == NULL)
		fp->blocks = blocks;
	guc_level = NewGUCNestLevel();

	(void) set_config_option("enable_seqscan", "off", PGC_SUSET, PGC_S_SESSION,
							 GUC_ACTION_SAVE, true, 0, false);
	if (flags & FIXED_NO_JOINS)
	{
		(void) set_config_option("enable_hashjoin", "off", PGC_SUSET, PGC_S_SESSION,
								 GUC_ACTION_SAVE, true, 0, false);
		(void) set_config_option("enable_mergejoin", "off", PGC_SUSET, PGC_S_SESSION,
								 GUC_ACTION_SAVE, true, 0, false);
	}
	otp_prepare_opts(&fp->plan, sql, nargs, argtypes, CURSOR_OPT_GENERIC_PLAN);
	rc = SPI_execute_plan(fp->plan, args, NULL, false, count);
	AtEOXact_GUC(true, guc_level);
	return rc;
}

/* the columns of the recording UPDATE, one array element per request */
typedef struct ResultArrays
{
	Datum	   *ids;
	Datum	   *statuses;
	Datum	   *nexts;
	bool	   *nexts_null;
	Datum	   *https;
	bool	   *https_null;
	Datum	   *errs;
	bool	   *errs_null;
	Datum	   *atts;
} ResultArrays;

/*
 * result_status: the status a finished request leaves its delivery in
 * ("delivered" or "dead"; *retry when it may be tried again) and the error
 * text for last_error in *err (NULL when none).  Allocates in
 * CurrentMemoryContext; cannot ERROR.
 */
static const char *
result_status(OtpHttpRequest *req, bool *retry, char **err)
{
	const char *status = "dead";

	*retry = false;
	*err = NULL;
	switch (req->outcome)
	{
		case OTP_HTTP_RESPONSE:
			if (req->http_status >= 200 && req->http_status < 300)
				status = "delivered";
			else if (req->http_status == 429 || req->http_status == 408 ||
					 req->http_status >= 500)
				*retry = true;
			else
				status = "dead";	/* 410, other 4xx, 3xx: never retried */
			if (req->http_status < 200 || req->http_status >= 300)
			{
				char	   *body = clean_text(req->response, req->response_len,
											  req->redact, req->nredact);

				*err = psprintf("HTTP %d%s%s%s", req->http_status,
								req->http_status == 410 ? " (gone: the endpoint asked to stop)" : "",
								body[0] ? ": " : "", body);
			}
			break;
		case OTP_HTTP_TRANSPORT_ERROR:
			*retry = true;
			*err = clean_text(req->errbuf, strlen(req->errbuf), req->redact, req->nredact);
			break;
		case OTP_HTTP_REFUSED:
		case OTP_HTTP_INVALID:
		default:
			status = "dead";
			*err = clean_text(req->errbuf, strlen(req->errbuf), req->redact, req->nredact);
			break;
	}
	return status;
}

/*
 * result_row: element i of the arrays for one finished request: its
 * status, the time of its next attempt when retried (from the schedule or
 * a later Retry-After; loop->next_claim is pulled forward to it), its
 * HTTP status and error.  Logs a dead delivery.  Allocates in
 * CurrentMemoryContext; cannot ERROR.
 */
static void
result_row(ResultArrays *a, int i, OtpHttpRequest *req, TimestampTz now,
		   OtpWorkerLoop *loop)
{
	bool		retry;
	char	   *err;
	const char *status = result_status(req, &retry, &err);

	a->nexts_null[i] = true;
	a->nexts[i] = (Datum) 0;
	if (retry)
	{
		int64		delay = otp_retry_delay_ms(req->attempts);

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
			a->nexts[i] = TimestampTzGetDatum(at);
			a->nexts_null[i] = false;
			loop->next_claim = Min(loop->next_claim, otp_mono_us() + delay * 1000);
		}
	}

	if (req->result_logged)
		;						/* a retried recording: logged already */
	else if (strcmp(status, "dead") == 0)
		ereport(LOG,
				(errcode(ERRCODE_SUCCESSFUL_COMPLETION),
				 errmsg("otp_link delivery " INT64_FORMAT " is dead after %d attempt(s): %s",
						req->id, req->attempts, err ? err : "")));
	else
		elog(DEBUG1, "otp_link delivery " INT64_FORMAT " attempt %d: %s (%d, %.1f ms)",
			 req->id, req->attempts, status, req->http_status,
			 req->elapsed_us / 1000.0);
	if (!req->result_logged)
		otp_metric_attempt(req->outcome, req->http_status, status);
	req->result_logged = true;

	a->ids[i] = Int64GetDatum(req->id);
	a->statuses[i] = CStringGetTextDatum(status);
	a->https[i] = Int32GetDatum(req->http_status);
	a->https_null[i] = (req->http_status == 0);
	a->errs[i] = err ? CStringGetTextDatum(err) : (Datum) 0;
	a->errs_null[i] = (err == NULL);
	a->atts[i] = Int32GetDatum(req->attempts);
}

/*
 * The recording statement: lock the result rows that nobody else holds
 * (SKIP LOCKED: a row locked elsewhere, e.g. by an administrator's open
 * transaction, must not stall the worker), update those (only rows still
 * queued with the same attempt count: a requeue in between wins), and
 * return the ids of the rows it skipped, to be recorded in a later round.
 * A row deleted meanwhile (otp_link_instance_delete, an administrator) is
 * not skipped but done with: 1.1.0 kept it and tried again every 0.1 s for
 * the life of the worker.
 * Each row is found through the primary key alone (the lateral lock, then
 * the join on id): the status and attempt count are checked on the locked
 * row, not in the UPDATE's WHERE, where the partial index of queued rows
 * would match and tempt the planner to walk every queued row.
 */
#define RECORD_SQL \
"WITH r AS (" \
"  SELECT * FROM ROWS FROM (pg_catalog.unnest($1), pg_catalog.unnest($2), " \
"                           pg_catalog.unnest($3), pg_catalog.unnest($4), " \
"                           pg_catalog.unnest($5), pg_catalog.unnest($6)) " \
"         AS r(id, status, next_at, http, err, attempts)), " \
"l AS (SELECT r.*, x.cur_status, x.cur_attempts FROM r CROSS JOIN LATERAL (" \
"       SELECT d.status AS cur_status, d.attempts AS cur_attempts" \
"         FROM otp_link.deliveries d WHERE d.id = r.id" \
"          FOR UPDATE SKIP LOCKED) x), " \
"u AS (UPDATE otp_link.deliveries d " \
"         SET status = l.status, " \
"             next_attempt_at = coalesce(l.next_at, d.next_attempt_at), " \
"             locked_until = NULL, " \
"             last_http_status = l.http, " \
"             last_error = l.err, " \
"             updated_at = pg_catalog.now(), " \
"             delivered_at = CASE WHEN l.status = 'delivered' " \
"                            THEN pg_catalog.now() ELSE d.delivered_at END " \
"        FROM l " \
"       WHERE d.id = l.id " \
"         AND l.cur_status = 'queued' AND l.cur_attempts = l.attempts) " \
"SELECT r.id FROM r WHERE r.id NOT IN (SELECT l.id FROM l)" \
"   AND EXISTS (SELECT FROM otp_link.deliveries d WHERE d.id = r.id)"

/*
 * record_rows: the one statement that writes the n results in a
 * (RECORD_SQL), inside the round's transaction.  Returns the number of
 * rows it skipped because another transaction held them, and their ids in
 * *skipped (palloc'd in CurrentMemoryContext).  Not inlined, so that a
 * profile of the worker shows it apart.  ERRORs on database errors.
 */
static pg_noinline int
record_rows(ResultArrays *a, int n, int64 **skipped)
{
	static FixedPlan plan;
	int			dims[1];
	int			lbs[1] = {1};
	Oid			argtypes[6] = {INT8ARRAYOID, TEXTARRAYOID, TIMESTAMPTZARRAYOID,
	INT4ARRAYOID, TEXTARRAYOID, INT4ARRAYOID};
	Datum		args[6];
	int			rc;
	MemoryContext outer = CurrentMemoryContext;
	uint64		k;

	dims[0] = n;
	args[0] = PointerGetDatum(construct_array(a->ids, n, INT8OID, 8, FLOAT8PASSBYVAL, TYPALIGN_DOUBLE));
	args[1] = PointerGetDatum(construct_array(a->statuses, n, TEXTOID, -1, false, TYPALIGN_INT));
	args[2] = PointerGetDatum(construct_md_array(a->nexts, a->nexts_null, 1, dims, lbs,
												 TIMESTAMPTZOID, 8, FLOAT8PASSBYVAL, TYPALIGN_DOUBLE));
	args[3] = PointerGetDatum(construct_md_array(a->https, a->https_null, 1, dims, lbs,
												 INT4OID, 4, true, TYPALIGN_INT));
	args[4] = PointerGetDatum(construct_md_array(a->errs, a->errs_null, 1, dims, lbs,
												 TEXTOID, -1, false, TYPALIGN_INT));
	args[5] = PointerGetDatum(construct_array(a->atts, n, INT4OID, 4, true, TYPALIGN_INT));

	/*
	 * A nested loop over primary-key probes, whatever the statistics say.
	 * Planned anew each round (1.1.0) it cost 1-2.4 ms a round; a generic
	 * plan made on stale statistics (a burst not yet analyzed) chose a hash
	 * join or a sequential scan that read every queued row each round.
	 */
	rc = run_fixed(&plan, RECORD_SQL, 6, argtypes, args, 0, FIXED_NO_JOINS);
	if (rc != SPI_OK_SELECT)
		ereport(ERROR,
				(errcode(ERRCODE_INTERNAL_ERROR),
				 errmsg("otp_link worker could not record delivery results: %s",
						SPI_result_code_string(rc))));
	*skipped = MemoryContextAlloc(outer, Max(SPI_processed, 1) * sizeof(int64));
	for (k = 0; k < SPI_processed; k++)
	{
		bool		isnull;

		(*skipped)[k] = DatumGetInt64(SPI_getbinval(SPI_tuptable->vals[k],
													SPI_tuptable->tupdesc, 1, &isnull));
	}
	MemoryContextSwitchTo(outer);
	return (int) SPI_processed;
}

/*
 * results_arrays: the recording statement's arrays for the finished
 * requests in loop->unrecorded (result_row), in CurrentMemoryContext.
 * Returns their number.
 */
static int
results_arrays(OtpWorkerLoop *loop, ResultArrays *a)
{
	int			n = list_length(loop->unrecorded);
	TimestampTz now = GetCurrentTimestamp();
	int			i = 0;
	ListCell   *lc;

	a->ids = palloc(n * sizeof(Datum));
	a->statuses = palloc(n * sizeof(Datum));
	a->nexts = palloc(n * sizeof(Datum));
	a->nexts_null = palloc(n * sizeof(bool));
	a->https = palloc(n * sizeof(Datum));
	a->https_null = palloc(n * sizeof(bool));
	a->errs = palloc(n * sizeof(Datum));
	a->errs_null = palloc(n * sizeof(bool));
	a->atts = palloc(n * sizeof(Datum));
	foreach(lc, loop->unrecorded)
		result_row(a, i++, (OtpHttpRequest *) lfirst(lc), now, loop);
	return n;
}

/*
 * results_recorded: after the round's COMMIT, free the requests recorded;
 * those whose rows another transaction held (skipped) stay in
 * loop->unrecorded for a later round.  Cannot ERROR except on out of
 * memory.
 */
static void
results_recorded(OtpWorkerLoop *loop, int64 *skipped, int nskipped)
{
	List	   *kept = NIL;
	ListCell   *lc;
	MemoryContext old;

	/* the list outlives the round */
	old = MemoryContextSwitchTo(TopMemoryContext);
	foreach(lc, loop->unrecorded)
	{
		OtpHttpRequest *req = (OtpHttpRequest *) lfirst(lc);
		int			i;

		for (i = 0; i < nskipped; i++)
			if (skipped[i] == req->id)
				break;
		if (i < nskipped)
			kept = lappend(kept, req);
		else
			MemoryContextDelete(req->cxt);
	}
	list_free(loop->unrecorded);
	loop->unrecorded = kept;
	MemoryContextSwitchTo(old);
}

/* ----------------------------------------------------------------
 * Worker: claiming and sending
 * ----------------------------------------------------------------
 */

/*
 * The destinations that have queued deliveries: a loose index scan of
 * deliveries_dest_due_idx, one probe per destination, whatever the number
 * of rows queued for each.
 */
#define DEST_KEYS \
"WITH RECURSIVE k(key) AS (" \
"   (SELECT d.dest_key FROM otp_link.deliveries d WHERE d.status = 'queued'" \
"     ORDER BY d.dest_key LIMIT 1)" \
"   UNION ALL" \
"   SELECT (SELECT d.dest_key FROM otp_link.deliveries d" \
"            WHERE d.status = 'queued' AND d.dest_key > k.key" \
"            ORDER BY d.dest_key LIMIT 1)" \
"     FROM k WHERE k.key IS NOT NULL) "

/*
 * The rows a claim takes (1.1 schema): from each destination, its due rows
 * in next_attempt_at order, at most its limit (lim.n for the destinations
 * listed in $3/$4/$7, else $5: what its share, its breaker and the budget
 * of unproven destinations allow, see destination.c), none of the rows
 * this worker still holds ($6); then, over all destinations, first the
 * first row of each, then the second of each, and so on, up to $1 rows;
 * within a round, destinations that answer quickly first (lim.pri, else
 * $8), then the oldest row; rows of unproven destinations (pri > 0) at
 * most $9 in all.  A destination's backlog thus never sits ahead
 * of another's work.  The limits are joined (a hash join), not searched
 * per destination.  (The ORDER BY names dest_key, which the equality makes
 * redundant, so that the plan uses the (dest_key, next_attempt_at) index.)
 */
#define CLAIM_CHOOSE \
DEST_KEYS ", lim AS (" \
"  SELECT * FROM ROWS FROM (pg_catalog.unnest($3::text[]), pg_catalog.unnest($4::int4[])," \
"                           pg_catalog.unnest($7::int4[])) AS u(key, n, pri)), " \
"r AS (" \
"  SELECT x.id, x.tid, x.rn, x.next_attempt_at, COALESCE(lim.pri, $8) AS pri" \
"    FROM k LEFT JOIN lim ON lim.key = k.key CROSS JOIN LATERAL (" \
"     SELECT s.id, s.tid, s.next_attempt_at," \
"            pg_catalog.row_number() OVER (ORDER BY s.next_attempt_at) AS rn" \
"       FROM (SELECT d.id, d.ctid AS tid, d.next_attempt_at FROM otp_link.deliveries d" \
"              WHERE d.dest_key = k.key AND d.status = 'queued'" \
"                AND d.next_attempt_at <= pg_catalog.now()" \
"                AND (d.locked_until IS NULL OR d.locked_until < pg_catalog.now())" \
"                AND d.id <> ALL ($6)" \
"              ORDER BY d.dest_key, d.next_attempt_at" \
"              LIMIT COALESCE(lim.n, $5)" \
"              FOR UPDATE SKIP LOCKED) s) x" \
"   WHERE k.key IS NOT NULL), " \
"u AS (" \
"  SELECT r.*, pg_catalog.row_number() OVER (PARTITION BY r.pri > 0" \
"                                ORDER BY r.rn, r.pri, r.next_attempt_at) AS n" \
"    FROM r), " \
"c AS (" \
"  SELECT u.tid FROM u WHERE u.pri = 0 OR u.n <= $9" \
"   ORDER BY u.rn, u.pri, u.next_attempt_at" \
"   LIMIT $1) "

/* the rows a claim takes on a 1.0 schema: the due rows, oldest first */
#define CLAIM_CHOOSE_10 \
"WITH c AS (" \
"  SELECT ctid AS tid FROM otp_link.deliveries" \
"   WHERE status = 'queued' AND next_attempt_at <= pg_catalog.now()" \
"     AND (locked_until IS NULL OR locked_until < pg_catalog.now())" \
"   ORDER BY next_attempt_at" \
"   LIMIT $1" \
"   FOR UPDATE SKIP LOCKED) "

/*
 * The claim's UPDATE changes only columns no index covers (locked_until,
 * attempts; updated_at is left to the recording), so with the free space
 * the table's fillfactor keeps it is a HOT update: no index entries.  It
 * finds the rows c chose by the tuple ids their lock returned ("ctid = ANY
 * (ARRAY(...))", a TID scan, whatever the statistics say; nobody can
 * update a row this transaction has locked).  A row updated by another
 * transaction that committed after this statement's snapshot was taken
 * is locked in its new version, which the UPDATE's snapshot does not see:
 * it is neither claimed nor counted, and waits for the next round (found
 * by an outside review; no attempt is lost or doubled).  Joined to c by
 * id, the plan made while the table was nearly empty hash-joined c with a
 * sequential scan of the whole table, every round until an ANALYZE; with
 * sequential scans off, with a full scan of another index.
 *
 * Columns returned by the claim query:
 *	1 id, 2 attempts, 3 webhook_id, 4 url, 5 body, 6 mode
 *	('signed' | 'cloud' | 'none'), 7 secret, 8 token, 9 the previous
 *	secret while its grace period runs, 10 the destination key (a 1.0
 *	schema has neither: NULL), 11 for replies: {"endpoint", "to", "from",
 *	"body"} as JSON text, from which outbound.c builds the gateway types
 *	(twilio, waha, green_api)
 */
#define CLAIM_SQL(choose, previous_secret, dest) \
choose \
"UPDATE otp_link.deliveries d" \
"   SET locked_until = pg_catalog.now() + $2 * interval '1 millisecond'," \
"       attempts = d.attempts + 1" \
"  FROM otp_link.instances i," \
"       LATERAL (SELECT i.options -> 'reply_endpoint' AS ep) e," \
"       LATERAL (SELECT CASE pg_catalog.jsonb_typeof(e.ep)" \
"                       WHEN 'object' THEN e.ep ->> 'type'" \
"                       WHEN 'string' THEN e.ep #>> '{}' END AS t) et" \
" WHERE d.ctid = ANY (ARRAY(SELECT c.tid FROM c)) AND i.id = d.instance_id " \
"RETURNING d.id, d.attempts, d.webhook_id," \
"   CASE WHEN d.kind = 'callback' THEN d.destination ELSE e.ep ->> 'url' END," \
"   CASE WHEN d.kind = 'reply' AND et.t = 'whatsapp_cloud' THEN" \
"        pg_catalog.jsonb_build_object('messaging_product', 'whatsapp'," \
"            'recipient_type', 'individual', 'to', d.destination, 'type', 'text'," \
"            'text', pg_catalog.jsonb_build_object('body', d.payload ->> 'body'))::text" \
"        ELSE d.payload::text END," \
"   CASE WHEN d.kind = 'callback' THEN 'signed'" \
"        WHEN et.t = 'whatsapp_cloud' THEN 'cloud'" \
"        WHEN et.t = 'http' THEN 'signed'" \
"        ELSE 'none' END," \
"   i.secret," \
"   CASE WHEN d.kind = 'reply' THEN e.ep ->> 'token' END, " previous_secret ", " dest ", " \
"   CASE WHEN d.kind = 'reply' THEN pg_catalog.jsonb_build_object('endpoint', e.ep," \
"        'to', d.destination, 'from', i.phone, 'body', d.payload -> 'body')::text END"

static const char *claim_sql_10 = CLAIM_SQL(CLAIM_CHOOSE_10, "NULL::text", "NULL::text");
static const char *claim_sql =
CLAIM_SQL(CLAIM_CHOOSE,
		  "CASE WHEN i.previous_secret_until > pg_catalog.now() THEN i.previous_secret END",
		  "d.dest_key");

/*
 * schema_is_11: whether otp_link.deliveries has the dest_key column of 1.1
 * (between installing this library and ALTER EXTENSION UPDATE a database
 * still has the 1.0 tables).  Syscache lookups; never ERRORs while the
 * extension exists.
 */
static bool
schema_is_11(void)
{
	Oid			nsp = get_namespace_oid("otp_link", true);
	Oid			rel = OidIsValid(nsp) ? get_relname_relid("deliveries", nsp) : InvalidOid;

	return OidIsValid(rel) && get_attnum(rel, "dest_key") != InvalidAttrNumber;
}

/*
 * held_ids: the ids of the deliveries this worker holds (in flight, or
 * finished and not yet recorded), as an int8[] in CurrentMemoryContext.
 * A claim never takes them again, even when their lease has expired (a
 * long recording outage, a clock step, a stopped process): each attempt is
 * sent once.
 */
static ArrayType *
held_ids(OtpWorkerLoop *loop)
{
	List	   *reqs = list_concat(otp_http_inflight_list(), loop->unrecorded);
	Datum	   *ids = palloc(Max(list_length(reqs), 1) * sizeof(Datum));
	int			n = 0;
	ListCell   *lc;

	foreach(lc, reqs)
		ids[n++] = Int64GetDatum(((OtpHttpRequest *) lfirst(lc))->id);
	return construct_array(ids, n, INT8OID, 8, FLOAT8PASSBYVAL, TYPALIGN_DOUBLE);
}

/* what a claim round passes to its statements, built once per round */
typedef struct ClaimArgs
{
	Datum		keys;			/* text[]: the destinations tracked */
	Datum		limits;			/* int4[]: their limits */
	Datum		pris;			/* int4[]: their claim priorities */
	Datum		blocked;		/* text[]: those whose limit is 0 */
	Datum		held;			/* int8[]: held_ids() */
	int			default_limit;	/* of a destination not listed */
	int			default_pri;
	int			unproven_budget;	/* rows of unproven ones in all */
	int			held_back;		/* healthy destinations given nothing */
} ClaimArgs;

/*
 * claim_args: the destinations' limits (destination.c) and the held ids as
 * SQL arrays, in CurrentMemoryContext.
 */
static void
claim_args(OtpWorkerLoop *loop, ClaimArgs *ca)
{
	Datum	   *keys;
	Datum	   *limits;
	Datum	   *pris;
	Datum	   *blocked;
	int			n = otp_dest_limits(&keys, &limits, &pris, &ca->default_limit,
									&ca->default_pri, &ca->unproven_budget,
									&ca->held_back);
	int			nb = 0;
	int			i;

	blocked = palloc(Max(n, 1) * sizeof(Datum));
	for (i = 0; i < n; i++)
		if (DatumGetInt32(limits[i]) == 0)
			blocked[nb++] = keys[i];
	ca->keys = PointerGetDatum(construct_array(keys, n, TEXTOID, -1, false, TYPALIGN_INT));
	ca->limits = PointerGetDatum(construct_array(limits, n, INT4OID, 4, true, TYPALIGN_INT));
	ca->pris = PointerGetDatum(construct_array(pris, n, INT4OID, 4, true, TYPALIGN_INT));
	ca->blocked = PointerGetDatum(construct_array(blocked, nb, TEXTOID, -1, false, TYPALIGN_INT));
	ca->held = PointerGetDatum(held_ids(loop));
}

/*
 * claim_rows: claim up to "slots" due deliveries (FOR UPDATE SKIP LOCKED,
 * a lease of timeout + margin, the attempt counted; on a 1.1 schema fairly
 * between destinations, see CLAIM_CHOOSE) and build their requests.
 * Runs inside the round's transaction; the list and requests live in
 * loop->cxt.  Not inlined, so that a profile shows it apart.  ERRORs on
 * database errors.
 */
static pg_noinline List *
claim_rows(OtpWorkerLoop *loop, int slots, bool v11, ClaimArgs *ca)
{
	static FixedPlan claim_plan;
	static FixedPlan claim_plan_10;
	Oid			argtypes[9] = {INT4OID, INT8OID, TEXTARRAYOID, INT4ARRAYOID,
	INT4OID, INT8ARRAYOID, INT4ARRAYOID, INT4OID, INT4OID};
	Datum		args[9];
	List	   *reqs = NIL;
	int			rc;
	uint64		i;
	uint64		claimed;

	args[0] = Int32GetDatum(slots);
	args[1] = Int64GetDatum((int64) otp_link_timeout_ms + OTP_LEASE_MARGIN_MS);
	args[2] = ca->keys;
	args[3] = ca->limits;
	args[4] = Int32GetDatum(ca->default_limit);
	args[5] = ca->held;
	args[6] = ca->pris;
	args[7] = Int32GetDatum(ca->default_pri);
	args[8] = Int32GetDatum(ca->unproven_budget);
	/* hash joins stay: the limits of thousands of destinations are joined */
	rc = run_fixed(v11 ? &claim_plan : &claim_plan_10,
				   v11 ? claim_sql : claim_sql_10, v11 ? 9 : 2, argtypes, args,
				   0, 0);
	if (rc != SPI_OK_UPDATE_RETURNING)
		ereport(ERROR,
				(errcode(ERRCODE_INTERNAL_ERROR),
				 errmsg("otp_link worker could not claim deliveries: %s",
						SPI_result_code_string(rc))));
	claimed = SPI_processed;
	for (i = 0; i < claimed; i++)
	{
		OtpHttpRequest *req = otp_build_request(loop->cxt, SPI_tuptable->vals[i],
												SPI_tuptable->tupdesc);
		MemoryContext old = MemoryContextSwitchTo(loop->cxt);

		/* the list must survive SPI_finish() */
		reqs = lappend(reqs, req);
		MemoryContextSwitchTo(old);
	}
	return reqs;
}

/*
 * next_due: when (wall clock) the next delivery this worker could claim is
 * due, at the latest fallback (a second ahead when one is due now but
 * row-locked by someone).  On a 1.1 schema, destinations whose limit is 0
 * (paused, or at their share) and the held rows are left out.  Runs inside
 * the claim's transaction; allocates in SPI's context.  Can ERROR on
 * database errors.
 */
static TimestampTz
next_due(TimestampTz now, TimestampTz fallback, bool v11, ClaimArgs *ca)
{
	static FixedPlan next_plan;
	static FixedPlan next_plan_10;
	Oid			argtypes[2] = {TEXTARRAYOID, INT8ARRAYOID};
	Datum		args[2];
	TimestampTz next = fallback;
	int			rc;

	/*
	 * Not read-only: SPI then increments the command counter and takes a
	 * new snapshot, which sees the leases the claim just took.  Read-only,
	 * it ran on the first snapshot, saw the claimed rows as due and pushed
	 * next_claim a second ahead for nothing.
	 */
	args[0] = ca->blocked;
	args[1] = ca->held;
	if (v11)
		rc = run_fixed(&next_plan,
					   DEST_KEYS
					   "SELECT pg_catalog.min(x.t) FROM k CROSS JOIN LATERAL ("
					   "  SELECT d.next_attempt_at AS t FROM otp_link.deliveries d"
					   "   WHERE d.dest_key = k.key AND d.status = 'queued'"
					   "     AND (d.locked_until IS NULL OR d.locked_until < pg_catalog.now())"
					   "     AND d.id <> ALL ($2)"
					   "   ORDER BY d.dest_key, d.next_attempt_at LIMIT 1) x"
					   " WHERE k.key IS NOT NULL"
					   "   AND NOT EXISTS (SELECT FROM pg_catalog.unnest($1::text[]) b(key)"
					   "                    WHERE b.key = k.key)",
					   2, argtypes, args, 1, 0);
	else
		rc = run_fixed(&next_plan_10,
					   "SELECT pg_catalog.min(next_attempt_at) FROM otp_link.deliveries"
					   " WHERE status = 'queued'"
					   "   AND (locked_until IS NULL OR locked_until < pg_catalog.now())",
					   0, NULL, NULL, 1, 0);
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
			next = Min(due, fallback);
		}
	}
	return next;
}

/*
 * start_requests: after the claim's COMMIT, hand the requests to http.c;
 * one that cannot start goes straight to loop->unrecorded.  The requests
 * move under TopMemoryContext (they outlive the round).  Cannot ERROR
 * except on out of memory.
 */
static void
start_requests(OtpWorkerLoop *loop, List *reqs)
{
	ListCell   *lc;

	foreach(lc, reqs)
	{
		OtpHttpRequest *req = (OtpHttpRequest *) lfirst(lc);
		MemoryContext old;

		/* the request now outlives the round */
		MemoryContextSetParent(req->cxt, TopMemoryContext);
		old = MemoryContextSwitchTo(TopMemoryContext);

		if (req->outcome != OTP_HTTP_PENDING || !otp_http_start(req))
			loop->unrecorded = lappend(loop->unrecorded, req);
		else
			otp_dest_started(req);
		MemoryContextSwitchTo(old);
	}
}

/*
 * otp_queue_round: one short transaction that records the finished
 * requests in loop->unrecorded (when "record") and claims up to "slots"
 * due deliveries (when slots > 0); after its COMMIT, the recorded requests
 * are freed and the claimed ones started.  One commit a round, not two:
 * the worker's throughput to a fast receiver is bounded by its rounds.
 * Sets loop->next_claim when it claims: now when the batch was full (more
 * may be due), else when the earliest delivery it may claim is due, at
 * the latest OTP_HELD_BACK_RECHECK_MS ahead while a healthy destination
 * was given nothing (its share or the budget was used up).
 * Allocates in CurrentMemoryContext (the loop context).  Can ERROR on
 * database errors: nothing is recorded or sent then; the requests stay in
 * loop->unrecorded (the caller retries later) and, since a claim never
 * takes a held row, are not sent again.
 */
void
otp_queue_round(OtpWorkerLoop *loop, bool record, int slots)
{
	ResultArrays a;
	int			n = record ? results_arrays(loop, &a) : 0;
	int64	   *skipped = NULL;
	int			nskipped = 0;
	List	   *reqs = NIL;
	TimestampTz now = GetCurrentTimestamp();
	int64		mono = otp_mono_us();
	TimestampTz fallback = TimestampTzPlusMilliseconds(now, otp_link_sweep_interval_ms);
	TimestampTz next = fallback;

	otp_worker_begin_tx(slots > 0 ? "otp_link: recording and claiming deliveries" :
						"otp_link: recording delivery results");
	if (otp_extension_ready())
	{
		round_blocks = deliveries_blocks();
		if (n > 0)
			nskipped = record_rows(&a, n, &skipped);
		if (slots > 0)
		{
			bool		v11 = schema_is_11();
			ClaimArgs	ca;

			claim_args(loop, &ca);
			reqs = claim_rows(loop, slots, v11, &ca);
			next = (list_length(reqs) >= slots) ? now : next_due(now, fallback, v11, &ca);
			/* next_due leaves them out; their slots come back meanwhile */
			if (ca.held_back > 0)
				next = Min(next, TimestampTzPlusMilliseconds(now, OTP_HELD_BACK_RECHECK_MS));
		}
	}
	otp_worker_end_tx();

	if (record)
		results_recorded(loop, skipped, nskipped);
	if (slots > 0)
	{
		/* the wall clock only measures the distance to next_attempt_at */
		loop->next_claim = mono + Max(next - now, 0);
		/* the transaction is closed: now talk to the network */
		start_requests(loop, reqs);
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
				 errmsg("delivery " INT64_FORMAT " does not exist", id),
				 errhint("Pass an id of otp_link.deliveries, e.g. of a dead delivery: SELECT id FROM otp_link.deliveries WHERE status = 'dead'.")));
	result = SPI_getbinval(SPI_tuptable->vals[0], SPI_tuptable->tupdesc, 1, &isnull);
	result = SPI_datumTransfer(result, false, -1);
	SPI_finish();

	if (requeued)
		otp_link_wake_worker_at_commit();

	PG_RETURN_DATUM(result);
}
