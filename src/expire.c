/*-------------------------------------------------------------------------
 *
 * expire.c
 *	  otp_link_expire: ends the links whose time is up, queueing their
 *	  "expired" replies and callbacks in the same transaction.
 *
 * Locking: rows are taken with FOR UPDATE SKIP LOCKED, so a link being
 * consumed is left for the next sweep.
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
 * (to callback.expired, else callback.failed), all in one statement.
 * ----------------------------------------------------------------
 */
Datum
otp_link_expire(PG_FUNCTION_ARGS)
{
	static SPIPlanPtr plan = NULL;
	Datum		limit;
	int64		n;
	bool		isnull;

	if (PG_ARGISNULL(0) || PG_GETARG_INT32(0) < 1)
		ereport(ERROR,
				(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
				 errmsg("max_links must be a positive integer"),
				 errhint("Call it again until it returns 0 to expire more.")));
	limit = PG_GETARG_DATUM(0);
	otp_spi_connect();
	otp_prepare(&plan,
				"WITH due AS ("
				"  SELECT id FROM otp_link.links WHERE status = 'pending' AND expires_at <= now() "
				"  ORDER BY expires_at LIMIT $1 FOR UPDATE SKIP LOCKED), "
				"l AS ("
				"  UPDATE otp_link.links x SET status = 'expired', reason = 'expired', finished_at = now() "
				"  FROM due WHERE x.id = due.id RETURNING x.*), "
				"q AS ("
				"  INSERT INTO otp_link.deliveries (instance_id, link_id, kind, event, destination, payload) "
				"  SELECT l.instance_id, l.id, 'callback', 'otp_link.expired', "
				"    coalesce(l.callbacks->>'expired', l.callbacks->>'failed'), "
				"    jsonb_build_object('type', 'otp_link.expired', 'timestamp', " ISO("now()") ", "
				"      'data', " LINK_DATA_SQL " || jsonb_build_object('sender', NULL::text)) "
				"  FROM l JOIN otp_link.instances i ON i.id = l.instance_id "
				"  WHERE coalesce(l.callbacks->>'expired', l.callbacks->>'failed') IS NOT NULL "
				"  RETURNING 1) "
				"SELECT (SELECT count(*) FROM l), (SELECT count(*) FROM q)",
				1, (Oid[]) {INT4OID});
	if (otp_spi_execute(plan, &limit, NULL, 0) != SPI_OK_SELECT)
		elog(ERROR, "expiry sweep failed");
	n = DatumGetInt64(SPI_getbinval(SPI_tuptable->vals[0], SPI_tuptable->tupdesc, 1, &isnull));
	otp_metric_add(OTP_M_LINKS_EXPIRED, (uint64) n);
	if (DatumGetInt64(SPI_getbinval(SPI_tuptable->vals[0], SPI_tuptable->tupdesc, 2, &isnull)) > 0)
		otp_link_wake_worker_at_commit();
	SPI_finish();
	PG_RETURN_INT32((int32) n);
}
