/*-------------------------------------------------------------------------
 *
 * click.c
 *	  Click-through: otp_link_open(uuid), the target of a link's click link
 *	  (generate's click_url).  It counts the click on the link and answers
 *	  its wa.me link; over PostgREST, as a 302 redirect to it.
 *
 * A click link is usually opened from an e-mail or a text message, that is
 * with a GET, and PostgREST runs every GET in a READ ONLY transaction.  So
 * otp_link_open records the click even in a read-only transaction: for the
 * one UPDATE of the one link's click columns it lifts the read-only flag
 * (not on a standby, where nothing can be written, and not in a
 * serializable transaction, whose read-only optimisations a write would
 * break).  That UPDATE is all it writes.
 *
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include "access/xact.h"
#include "access/xlog.h"

#include "utils/builtins.h"
#include "utils/json.h"

#include "otp_link.h"
#include "api.h"

PG_FUNCTION_INFO_V1(otp_link_open);

/*
 * click_record: count one click on link id if it has a click link and is
 * still pending; its wa.me link, or NULL (nothing written) when it has no
 * click link, does not exist or is no longer pending (*gone then says
 * whether it is a click link that ended).  Caller is connected to SPI.
 * ERRORs on database errors.
 */
static char *
click_record(Datum id, bool *gone)
{
	static SPIPlanPtr plan = NULL;
	static SPIPlanPtr probe = NULL;
	Oid			types[1] = {UUIDOID};
	Datum		values[1];

	values[0] = id;
	otp_prepare(&plan,
				"UPDATE otp_link.links SET clicks = clicks + 1, "
				"first_clicked_at = coalesce(first_clicked_at, now()) "
				"WHERE id = $1 AND clicks IS NOT NULL AND status = 'pending' "
				"AND expires_at > now() RETURNING open_link, clicks = 1",
				1, types);
	if (otp_spi_execute(plan, values, NULL, 1) != SPI_OK_UPDATE_RETURNING)
		elog(ERROR, "click update failed");
	if (SPI_processed == 1)
	{
		bool		isnull;

		otp_metric_add(OTP_M_CLICKS, 1);
		if (DatumGetBool(SPI_getbinval(SPI_tuptable->vals[0], SPI_tuptable->tupdesc,
									   2, &isnull)))
			otp_metric_add(OTP_M_LINKS_CLICKED, 1);
		return otp_spi_text(1);
	}

	otp_prepare(&probe,
				"SELECT 1 FROM otp_link.links WHERE id = $1 AND clicks IS NOT NULL",
				1, types);
	if (otp_spi_execute(probe, values, NULL, 1) != SPI_OK_SELECT)
		elog(ERROR, "click lookup failed");
	*gone = (SPI_processed == 1);
	return NULL;
}

/*
 * click_record_anyway: click_record, also inside a READ ONLY transaction
 * (PostgREST's GET) on a primary, by lifting XactReadOnly for that one
 * statement and restoring it whatever happens.  ERRORs (25006) on a
 * standby and in a serializable read-only transaction.
 */
static char *
click_record_anyway(Datum id, bool *gone)
{
	bool		read_only = XactReadOnly;
	char	   *link;

	if (!read_only)
		return click_record(id, gone);
	if (RecoveryInProgress())
		ereport(ERROR,
				(errcode(ERRCODE_READ_ONLY_SQL_TRANSACTION),
				 errmsg("otp_link_open cannot record a click on a standby"),
				 errhint("Send otp_link_open to the primary server.")));
	if (IsolationIsSerializable())
		ereport(ERROR,
				(errcode(ERRCODE_READ_ONLY_SQL_TRANSACTION),
				 errmsg("otp_link_open cannot record a click in a serializable read-only transaction"),
				 errhint("Call it in a READ COMMITTED or REPEATABLE READ transaction.")));
	XactReadOnly = false;
	PG_TRY();
	{
		link = click_record(id, gone);
	}
	PG_FINALLY();
	{
		XactReadOnly = read_only;
	}
	PG_END_TRY();
	return link;
}

/*
 * set_redirect: response.status 302 and response.headers with Location
 * (and Cache-Control: no-store, so that no cache answers a click without
 * counting it) for the rest of the transaction, the way PostgREST reads
 * them.  ERRORs only on out of memory.
 */
static void
set_redirect(const char *location)
{
	StringInfoData buf;

	initStringInfo(&buf);
	appendStringInfoString(&buf, "[{\"Location\": ");
	escape_json(&buf, location);
	appendStringInfoString(&buf, "}, {\"Cache-Control\": \"no-store\"}]");
	DirectFunctionCall3(set_config_by_name,
						CStringGetTextDatum("response.status"),
						CStringGetTextDatum("302"), BoolGetDatum(true));
	DirectFunctionCall3(set_config_by_name,
						CStringGetTextDatum("response.headers"),
						CStringGetTextDatum(buf.data), BoolGetDatum(true));
}

/* ----------------------------------------------------------------
 * otp_link_open(uuid uuid) RETURNS text
 *
 * Counts a click on a pending link that has a click link (first time and
 * count) and returns its whatsapp_link, setting PostgREST's response to a
 * 302 redirect to it.  Knowing the uuid is what entitles the caller: it
 * learns that one link's whatsapp_link and nothing else.  ERRORs: 22004
 * (null), PT404 (no such link, or a link made without a click link),
 * PT410 (the link is no longer pending), 25006 (standby, serializable
 * read-only transaction).
 * ----------------------------------------------------------------
 */
Datum
otp_link_open(PG_FUNCTION_ARGS)
{
	char	   *link;
	bool		gone = false;

	if (PG_ARGISNULL(0))
		ereport(ERROR,
				(errcode(ERRCODE_NULL_VALUE_NOT_ALLOWED),
				 errmsg("uuid must not be null"),
				 errhint("Open the click link returned by otp_link_generate.")));
	otp_spi_connect();
	link = click_record_anyway(PG_GETARG_DATUM(0), &gone);
	SPI_finish();
	if (link == NULL && gone)
		ereport(ERROR,
				(errcode(OTP_ERRCODE_GONE),
				 errmsg("link %s is no longer pending",
						DatumGetCString(DirectFunctionCall1(uuid_out, PG_GETARG_DATUM(0)))),
				 errhint("Ask for a new link.")));
	if (link == NULL)
		ereport(ERROR,
				(errcode(OTP_ERRCODE_NOT_FOUND),
				 errmsg("link %s does not exist or has no click link",
						DatumGetCString(DirectFunctionCall1(uuid_out, PG_GETARG_DATUM(0)))),
				 errhint("Open the click link returned by otp_link_generate.")));
	set_redirect(link);
	PG_RETURN_TEXT_P(cstring_to_text(link));
}
