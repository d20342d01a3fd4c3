/*-------------------------------------------------------------------------
 *
 * expire.c
 *	  otp_link_expire: ends the links whose time is up, queueing their
 *	  "expired" replies and callbacks in the same transaction.
 *
 * Locking: rows are taken with FOR UPDATE SKIP LOCKED, so a link being
 * consumed is left for the next sweep.  The cost per link is the non-HOT
 * UPDATE of links (see docs/performance.md, "Expiry sweep").
 *
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include "otp_link.h"
#include "api.h"

PG_FUNCTION_INFO_V1(otp_link_expire);

/* ----------------------------------------------------------------
 * otp_link_expire(max_links integer DEFAULT 10000) RETURNS integer
 *
 * Moves up to max_links overdue pending links to expired (oldest first,
 * skipping rows other sessions hold) and queues their expired callbacks
 * (to callback.expired, else callback.failed).
 *
 * Two statements: the first locks the due links (FOR UPDATE SKIP LOCKED)
 * and returns where their locked versions are; the second updates them by
 * those TIDs (a TID scan instead of a primary-key descent per link) and
 * returns only the columns the callback needs, not the whole row (the
 * callbacks are queued in expiry order, as the links were taken).  The
 * second statement takes a new snapshot in READ COMMITTED, so it sees the
 * versions the first one locked even when they were committed after the
 * first statement began (the lock follows the update chain); the locks
 * keep them in place until commit.  In REPEATABLE READ such a link makes
 * the first statement fail with a serialization error, as before.
 * ----------------------------------------------------------------
 */
Datum
otp_link_expire(PG_FUNCTION_ARGS)
{
	static SPIPlanPtr lock_plan = NULL;
	static SPIPlanPtr plan = NULL;
	Datum		arg;
	int64		n = 0;
	bool		isnull;

	if (PG_ARGISNULL(0) || PG_GETARG_INT32(0) < 1)
		ereport(ERROR,
				(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
				 errmsg("max_links must be a positive integer"),
				 errhint("Call it again until it returns 0 to expire more.")));
	arg = PG_GETARG_DATUM(0);
	otp_spi_connect();
	otp_prepare(&lock_plan,
				"SELECT pg_catalog.array_agg(ctid) FROM ("
				"  SELECT ctid FROM otp_link.links WHERE status = 'pending' AND expires_at <= now() "
				"  ORDER BY expires_at LIMIT $1 FOR UPDATE SKIP LOCKED) due",
				1, (Oid[]) {INT4OID});
	if (otp_spi_execute(lock_plan, &arg, NULL, 0) != SPI_OK_SELECT || SPI_processed != 1)
		elog(ERROR, "expiry sweep failed");
	arg = SPI_getbinval(SPI_tuptable->vals[0], SPI_tuptable->tupdesc, 1, &isnull);
	if (!isnull)
	{
		otp_prepare(&plan,
					"WITH l AS ("
					"  UPDATE otp_link.links x SET status = 'expired', reason = 'expired', finished_at = now() "
					"  WHERE x.ctid = ANY ($1) AND x.status = 'pending' "
					"  RETURNING x.id, x.instance_id, x.status, x.chat_id, x.name, x.reason, "
					"    x.created_at, x.expires_at, x.finished_at, x.metadata, "
					"    coalesce(x.callbacks->>'expired', x.callbacks->>'failed') AS destination), "
					"q AS ("
					"  INSERT INTO otp_link.deliveries (instance_id, link_id, kind, event, destination, payload) "
					"  SELECT l.instance_id, l.id, 'callback', 'otp_link.expired', l.destination, "
					"    jsonb_build_object('type', 'otp_link.expired', 'timestamp', " ISO("now()") ", "
					"      'data', " LINK_DATA_SQL " || jsonb_build_object('sender', NULL::text)) "
					"  FROM l JOIN otp_link.instances i ON i.id = l.instance_id "
					"  WHERE l.destination IS NOT NULL ORDER BY l.expires_at "
					"  RETURNING 1) "
					"SELECT (SELECT count(*) FROM l), (SELECT count(*) FROM q)",
					1, (Oid[]) {TIDARRAYOID});
		if (otp_spi_execute(plan, &arg, NULL, 0) != SPI_OK_SELECT)
			elog(ERROR, "expiry sweep failed");
		n = DatumGetInt64(SPI_getbinval(SPI_tuptable->vals[0], SPI_tuptable->tupdesc, 1, &isnull));
		otp_metric_add(OTP_M_LINKS_EXPIRED, (uint64) n);
		if (DatumGetInt64(SPI_getbinval(SPI_tuptable->vals[0], SPI_tuptable->tupdesc, 2, &isnull)) > 0)
			otp_link_wake_worker_at_commit();
	}
	SPI_finish();
	PG_RETURN_INT32((int32) n);
}
