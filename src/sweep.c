/*-------------------------------------------------------------------------
 *
 * sweep.c
 *	  The worker's periodic sweep: calls otp_link.otp_link_expire() and
 *	  purges old deliveries and message ids in bounded batches, each batch
 *	  in its own short transaction.
 *
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include "pgstat.h"

#include "commands/extension.h"
#include "utils/inval.h"

#include "otp_link.h"
#include "worker.h"

#define OTP_PURGE_BATCH			1000	/* rows deleted per transaction */
#define OTP_EXPIRE_BATCH		10000	/* otp_link_expire()'s default max_links */
#define OTP_PURGE_MAX_BATCHES	20		/* transactions per sweep and table */

/* ----------------------------------------------------------------
 * Worker: sweep and purge
 * ----------------------------------------------------------------
 */

/*
 * call_expire: SELECT otp_link.otp_link_expire() when it exists and can be
 * called without arguments; inside a subtransaction, so a failure is logged
 * as a WARNING (at DEBUG1 when the extension was dropped or re-created
 * meanwhile) and does not stop deliveries.  Runs inside a transaction.
 * Returns how many links it expired (0 when it could not be called).
 */
static int64
call_expire(void)
{
	MemoryContext oldcxt = CurrentMemoryContext;
	ResourceOwner oldowner = CurrentResourceOwner;
	int			rc;
	int64		expired = 0;
	Oid			ext = get_extension_oid("otp_link", true);

	rc = SPI_execute("SELECT p.pronargs = p.pronargdefaults FROM pg_catalog.pg_proc p"
					 " WHERE p.oid = coalesce("
					 "   pg_catalog.to_regprocedure('otp_link.otp_link_expire(integer)'),"
					 "   pg_catalog.to_regprocedure('otp_link.otp_link_expire()'))",
					 true, 1);
	if (rc != SPI_OK_SELECT || SPI_processed != 1)
		return 0;
	{
		bool		isnull;
		Datum		ok = SPI_getbinval(SPI_tuptable->vals[0], SPI_tuptable->tupdesc, 1, &isnull);

		if (isnull || !DatumGetBool(ok))
			return 0;
	}

	BeginInternalSubTransaction(NULL);
	MemoryContextSwitchTo(oldcxt);
	PG_TRY();
	{
		if (SPI_execute("SELECT otp_link.otp_link_expire()::bigint", false, 0) == SPI_OK_SELECT &&
			SPI_processed == 1)
		{
			bool		isnull;
			Datum		n = SPI_getbinval(SPI_tuptable->vals[0], SPI_tuptable->tupdesc, 1, &isnull);

			expired = isnull ? 0 : DatumGetInt64(n);
		}
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
		/* DROP (and CREATE) EXTENSION committed meanwhile: nothing wrong */
		AcceptInvalidationMessages();
		ereport(get_extension_oid("otp_link", true) == ext ? WARNING : DEBUG1,
				(errcode(edata->sqlerrcode),
				 errmsg("otp_link worker: otp_link_expire() failed: %s", edata->message)));
		FreeErrorData(edata);
	}
	PG_END_TRY();
	return expired;
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

		otp_worker_begin_tx(activity);
		ready = otp_extension_ready();
		if (ready)
		{
			if (SPI_execute_with_args(sql, 1, argtypes, args, NULL, false, 0) == SPI_OK_DELETE)
				deleted = SPI_processed;
		}
		otp_worker_end_tx();
		if (!ready)
			return false;
		if (deleted < OTP_PURGE_BATCH)
			break;
		CHECK_FOR_INTERRUPTS();
	}
	return true;
}

/*
 * otp_sweep: expire overdue links and purge old rows.  Each step is its own
 * short transaction.  Returns true when the expiry took a full batch: more
 * links are likely overdue, and the caller sweeps again at once (after
 * sending what is due), so a large backlog expires at the sweep's own rate,
 * not a batch per sweep_interval; the purges wait until it is done.  Can
 * ERROR on database errors.
 */
bool
otp_sweep(void)
{
	bool		ready;
	int64		expired = 0;

	otp_worker_begin_tx("otp_link: expiry sweep");
	ready = otp_extension_ready();
	if (ready)
		expired = call_expire();
	otp_worker_end_tx();
	if (!ready)
		return false;
	if (expired >= OTP_EXPIRE_BATCH)
		return true;

	if (otp_link_retention_s > 0 &&
		!purge("otp_link: purging deliveries",
			   "DELETE FROM otp_link.deliveries WHERE id IN ("
			   " SELECT id FROM otp_link.deliveries"
			   "  WHERE status IN ('delivered', 'dead')"
			   "    AND updated_at < pg_catalog.now() - $1 * interval '1 second'"
			   "  LIMIT 1000 FOR UPDATE SKIP LOCKED)",
			   otp_link_retention_s))
		return false;

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
		return false;

	if (!purge("otp_link: purging sender counters",
			   "DELETE FROM otp_link.senders WHERE chat_id IN ("
			   " SELECT chat_id FROM otp_link.senders"
			   "  WHERE window_start < pg_catalog.now() - $1 * interval '1 second'"
			   "    AND (blocked_until IS NULL OR blocked_until < pg_catalog.now())"
			   "  LIMIT 1000 FOR UPDATE SKIP LOCKED)",
			   otp_link_message_retention_s))
		return false;

	purge("otp_link: purging message ids",
		  "DELETE FROM otp_link.messages_seen WHERE message_id IN ("
		  " SELECT message_id FROM otp_link.messages_seen"
		  "  WHERE seen_at < pg_catalog.now() - $1 * interval '1 second'"
		  "  LIMIT 1000 FOR UPDATE SKIP LOCKED)",
		  otp_link_message_retention_s);
	return false;
}
