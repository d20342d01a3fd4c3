/*-------------------------------------------------------------------------
 *
 * webhook.c
 *	  Webhook payloads: the WhatsApp Cloud API walker of
 *	  otp_link_consume_webhook(payload) (1.0), and the format-driven
 *	  otp_link_consume_webhook(payload, format), which finds the messages of
 *	  any gateway's payload with the SQL/JSON path expressions of a row of
 *	  otp_link.webhook_formats.  Each message found goes to otp_consume
 *	  (consume.c), leniently: a message that is not ours is "ignored".
 *
 * The Cloud API walker checks the whole payload before consuming any of
 * it (a malformed payload is refused with 22023).  The format-driven one
 * never refuses a payload for one message: a message whose sender, text or
 * id is missing or not a string is skipped and named in the result's
 * "skipped" list, and the others are consumed.  A gateway that retries a
 * refused payload would otherwise retry it for ever.
 *
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include "utils/builtins.h"
#include "utils/json.h"

#include "otp_link.h"
#include "consume.h"

PG_FUNCTION_INFO_V1(otp_link_consume_webhook);
PG_FUNCTION_INFO_V1(otp_link_consume_webhook_format);

/*
 * jsonb_field: the value of key in container, or NULL.
 */
static JsonbValue *
jsonb_field(JsonbContainer *c, const char *key)
{
	return getKeyJsonValueFromContainer(c, key, strlen(key), NULL);
}

/*
 * jsonb_array_container: the container of v if it is an array, else ERROR
 * 22023 naming path.  NULL when v is NULL and optional.
 */
static JsonbContainer *
jsonb_array_container(JsonbValue *v, const char *path, bool optional)
{
	if (v == NULL && optional)
		return NULL;
	if (v == NULL || v->type != jbvBinary || !JsonContainerIsArray(v->val.binary.data))
		ereport(ERROR,
				(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
				 errmsg("malformed WhatsApp webhook payload: %s is not an array", path),
				 errhint("Pass the body WhatsApp Cloud API posts: {\"object\": \"whatsapp_business_account\", \"entry\": [{\"changes\": [{\"value\": {\"messages\": [...]}}]}]}.")));
	return v->val.binary.data;
}

/*
 * jsonb_object_container: like jsonb_array_container for objects.
 */
static JsonbContainer *
jsonb_object_container(JsonbValue *v, const char *path, bool optional)
{
	if (v == NULL && optional)
		return NULL;
	if (v == NULL || v->type != jbvBinary || !JsonContainerIsObject(v->val.binary.data))
		ereport(ERROR,
				(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
				 errmsg("malformed WhatsApp webhook payload: %s is not an object", path),
				 errhint("Pass the body WhatsApp Cloud API posts: {\"object\": \"whatsapp_business_account\", \"entry\": [{\"changes\": [{\"value\": {\"messages\": [...]}}]}]}.")));
	return v->val.binary.data;
}

/*
 * jsonb_string: the string in v (palloc'd), NULL when absent; ERROR when
 * present but not a string.
 */
static char *
jsonb_string(JsonbValue *v, const char *path)
{
	if (v == NULL || v->type == jbvNull)
		return NULL;
	if (v->type != jbvString)
		ereport(ERROR,
				(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
				 errmsg("malformed WhatsApp webhook payload: %s is not a string", path)));
	return pnstrdup(v->val.string.val, v->val.string.len);
}

/*
 * webhook_instance: the instance whose phone is the business number of a
 * webhook change, if any; sets *instance and returns true when found.
 * Connects to SPI and finishes.  Allocates in CurrentMemoryContext; ERRORs
 * on database errors.
 */
static bool
webhook_instance(const char *business, Datum *instance)
{
	static SPIPlanPtr inst_plan = NULL;
	char		digits[16];
	Datum		arg;
	bool		found = false;

	if (!otp_normalize_phone(business, digits, sizeof(digits)))
		return false;
	arg = CStringGetTextDatum(digits);
	otp_spi_connect();
	otp_prepare(&inst_plan,
				"SELECT id FROM otp_link.instances WHERE phone = $1",
				1, (Oid[]) {TEXTOID});
	if (otp_spi_execute(inst_plan, &arg, NULL, 1) != SPI_OK_SELECT)
		elog(ERROR, "instance lookup failed");
	if (SPI_processed == 1)
	{
		*instance = DirectFunctionCall1(uuid_in,
										CStringGetDatum(SPI_getvalue(SPI_tuptable->vals[0],
																	 SPI_tuptable->tupdesc, 1)));
		found = true;
	}
	SPI_finish();
	return found;
}

/*
 * webhook_messages: the text messages of one change's value.messages; in
 * pass 0 only their shape is checked, in pass 1 each is consumed and its
 * result appended to out (*count counts them).  Allocates in
 * CurrentMemoryContext.  ERRORs (22023) on a malformed message, and as
 * consume does.
 */
static void
webhook_messages(JsonbContainer *msgs, int pass, bool has_instance,
				 Datum instance, StringInfo out, int *count)
{
	int			nm;

	for (nm = 0; nm < (int) JsonContainerSize(msgs); nm++)
	{
		JsonbContainer *mc = jsonb_object_container(getIthJsonbValueFromContainer(msgs, nm),
													"messages[]", false);
		char	   *type = jsonb_string(jsonb_field(mc, "type"), "messages[].type");
		char	   *from = jsonb_string(jsonb_field(mc, "from"), "messages[].from");
		char	   *id = jsonb_string(jsonb_field(mc, "id"), "messages[].id");
		JsonbContainer *text;
		char	   *body = NULL;
		ConsumeResult res;

		if (type == NULL || strcmp(type, "text") != 0)
			continue;
		text = jsonb_object_container(jsonb_field(mc, "text"), "messages[].text", false);
		body = jsonb_string(jsonb_field(text, "body"), "messages[].text.body");
		if (from == NULL || body == NULL)
			ereport(ERROR,
					(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
					 errmsg("malformed WhatsApp webhook payload: a text message lacks \"from\" or \"text.body\""),
					 errhint("Every text message has from, id, type and text.body.")));
		if (pass == 0)
			continue;
		res = otp_consume(from, body, strlen(body), id, has_instance, instance, true);
		if ((*count)++ > 0)
			appendStringInfoString(out, ", ");
		appendStringInfoString(out,
							   DatumGetCString(DirectFunctionCall1(jsonb_out,
																   JsonbPGetDatum(otp_consume_result_json(&res, from, id)))));
	}
}

/*
 * webhook_change: one element of entry[].changes: its business number
 * (value.metadata.display_phone_number) chooses the instance in pass 1,
 * then its messages go to webhook_messages.  A change without messages
 * (status updates and the like) is skipped.  Allocates in
 * CurrentMemoryContext; ERRORs (22023) on a malformed change.
 */
static void
webhook_change(JsonbValue *change, int pass, StringInfo out, int *count)
{
	JsonbContainer *cc = jsonb_object_container(change, "entry[].changes[]", false);
	JsonbContainer *value = jsonb_object_container(jsonb_field(cc, "value"),
												   "entry[].changes[].value", true);
	JsonbContainer *meta;
	JsonbContainer *msgs;
	char	   *business = NULL;
	bool		has_instance = false;
	Datum		instance = (Datum) 0;

	if (value == NULL)
		return;
	meta = jsonb_object_container(jsonb_field(value, "metadata"),
								  "entry[].changes[].value.metadata", true);
	if (meta)
		business = jsonb_string(jsonb_field(meta, "display_phone_number"),
								"value.metadata.display_phone_number");
	msgs = jsonb_array_container(jsonb_field(value, "messages"),
								 "entry[].changes[].value.messages", true);
	if (msgs == NULL)
		return;					/* status updates and the like */

	if (pass == 1 && business)
		has_instance = webhook_instance(business, &instance);
	webhook_messages(msgs, pass, has_instance, instance, out, count);
}

/* ----------------------------------------------------------------
 * otp_link_consume_webhook(payload jsonb) RETURNS jsonb
 *
 * Walks entry[].changes[].value.messages[]; text messages are consumed
 * (from, text.body, id), the instance found by the business number in
 * value.metadata.display_phone_number when it is registered.  Status
 * updates and non-text messages are ignored.  Returns {"messages": n,
 * "results": [...]}.  The whole payload is checked before any message is
 * consumed, so a malformed one writes nothing.
 * ----------------------------------------------------------------
 */
Datum
otp_link_consume_webhook(PG_FUNCTION_ARGS)
{
	Jsonb	   *payload;
	JsonbContainer *entries;
	StringInfoData out;
	int			pass;
	int			count = 0;
	int			ne;

	if (PG_ARGISNULL(0))
		ereport(ERROR,
				(errcode(ERRCODE_NULL_VALUE_NOT_ALLOWED),
				 errmsg("payload must not be null"),
				 errhint("Pass the JSON body WhatsApp Cloud API posted.")));
	payload = PG_GETARG_JSONB_P(0);
	if (!JB_ROOT_IS_OBJECT(payload) || JB_ROOT_IS_SCALAR(payload))
		ereport(ERROR,
				(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
				 errmsg("malformed WhatsApp webhook payload: not a JSON object"),
				 errhint("Pass the body WhatsApp Cloud API posts: {\"object\": \"whatsapp_business_account\", \"entry\": [...]}.")));
	entries = jsonb_array_container(jsonb_field(&payload->root, "entry"), "entry", false);

	initStringInfo(&out);
	appendStringInfoString(&out, "{\"results\": [");

	/* pass 0 checks the shape, pass 1 consumes */
	for (pass = 0; pass < 2; pass++)
	{
		int			nentries = JsonContainerSize(entries);

		for (ne = 0; ne < nentries; ne++)
		{
			JsonbValue *entry = getIthJsonbValueFromContainer(entries, ne);
			JsonbContainer *ec = jsonb_object_container(entry, "entry[]", false);
			JsonbContainer *changes = jsonb_array_container(jsonb_field(ec, "changes"),
															"entry[].changes", true);
			int			nc;

			for (nc = 0; changes && nc < (int) JsonContainerSize(changes); nc++)
				webhook_change(getIthJsonbValueFromContainer(changes, nc), pass,
							   &out, &count);
		}
	}
	appendStringInfo(&out, "], \"messages\": %d}", count);
	PG_RETURN_JSONB_P(DatumGetJsonbP(DirectFunctionCall1(jsonb_in, CStringGetDatum(out.data))));
}

/* ----------------------------------------------------------------
 * Format-driven payloads (otp_link.webhook_formats)
 * ----------------------------------------------------------------
 */

/* one message found in a payload by a format's paths */
typedef struct FoundMessage
{
	int			batch;			/* 1-based ordinal of its batch */
	int			index;			/* 1-based ordinal in its batch */
	const char *receiver_type;	/* "string", "other", or NULL if absent */
	char	   *receiver;
	const char *sender_type;
	char	   *sender;
	const char *text_type;
	char	   *text;
	const char *id_type;
	char	   *id;
} FoundMessage;

/*
 * The messages of payload $1 by format $2: its batches, the messages of
 * each batch that pass text_filter, and in each the first item of the
 * receiver (evaluated on the batch), sender, text and message id paths
 * (evaluated on the message).  Silent mode: a structural error in the
 * payload makes a path yield nothing, it never raises.  The sequences go
 * through jsonb_path_query_array and jsonb_array_elements rather than the
 * set-returning jsonb_path_query, whose estimate of 1000 rows a level made
 * the plan look costly enough to be JIT-compiled on every call.
 */
#define FOUND_SQL \
	"SELECT b.n::int4, m.n::int4, " \
	"jsonb_path_query_first(b.v, f.receiver, '{}', true), " \
	"jsonb_path_query_first(m.v, f.sender, '{}', true), " \
	"jsonb_path_query_first(m.v, f.text, '{}', true), " \
	"jsonb_path_query_first(m.v, f.message_id, '{}', true), f.address_prefix " \
	"FROM otp_link.webhook_formats f " \
	"CROSS JOIN LATERAL jsonb_array_elements(jsonb_path_query_array($1, f.batches, '{}', true)) " \
	"WITH ORDINALITY AS b(v, n) " \
	"CROSS JOIN LATERAL jsonb_array_elements(jsonb_path_query_array(b.v, f.messages, '{}', true)) " \
	"WITH ORDINALITY AS m(v, n) " \
	"WHERE f.name = $2 " \
	"AND (f.text_filter IS NULL OR jsonb_path_match(m.v, f.text_filter, '{}', true)) " \
	"ORDER BY b.n, m.n"

/*
 * found_value: column col of row as a found value: *type is NULL when SQL
 * NULL (the path found nothing), "string" with *value the string
 * (palloc'd in CurrentMemoryContext), or "other".  Cannot ERROR short of
 * memory.
 */
static void
found_value(uint64 row, int col, const char **type, char **value)
{
	bool		isnull;
	Datum		d = SPI_getbinval(SPI_tuptable->vals[row], SPI_tuptable->tupdesc, col, &isnull);
	Jsonb	   *j;
	JsonbValue	v;

	*type = NULL;
	*value = NULL;
	if (isnull)
		return;
	j = DatumGetJsonbP(d);
	if (JB_ROOT_IS_SCALAR(j) && JsonbExtractScalar(&j->root, &v) && v.type == jbvString)
	{
		*type = "string";
		*value = pnstrdup(v.val.string.val, v.val.string.len);
	}
	else
		*type = "other";
}

/*
 * format_messages: the messages format finds in payload, palloc'd in
 * CurrentMemoryContext (*n of them), and the format's address prefix in
 * *prefix (NULL if none).  Connects to SPI and finishes.  ERRORs (22023)
 * when there is no such format.
 */
static FoundMessage *
format_messages(Jsonb *payload, text *format, int *n, char **prefix)
{
	static SPIPlanPtr plan = NULL;
	static SPIPlanPtr exists = NULL;
	Datum		args[2] = {JsonbPGetDatum(payload), PointerGetDatum(format)};
	FoundMessage *found;
	uint64		row;
	bool		isnull;

	otp_spi_connect();
	otp_prepare(&plan, FOUND_SQL, 2, (Oid[]) {JSONBOID, TEXTOID});
	if (otp_spi_execute(plan, args, NULL, 0) != SPI_OK_SELECT)
		elog(ERROR, "could not read the webhook payload");
	*n = (int) SPI_processed;
	*prefix = NULL;
	found = palloc0(sizeof(FoundMessage) * Max(*n, 1));
	for (row = 0; row < SPI_processed; row++)
	{
		FoundMessage *f = &found[row];

		f->batch = DatumGetInt32(SPI_getbinval(SPI_tuptable->vals[row], SPI_tuptable->tupdesc, 1, &isnull));
		f->index = DatumGetInt32(SPI_getbinval(SPI_tuptable->vals[row], SPI_tuptable->tupdesc, 2, &isnull));
		found_value(row, 3, &f->receiver_type, &f->receiver);
		found_value(row, 4, &f->sender_type, &f->sender);
		found_value(row, 5, &f->text_type, &f->text);
		found_value(row, 6, &f->id_type, &f->id);
		*prefix = otp_spi_text_row(row, 7);
	}
	if (*n == 0)
	{
		otp_prepare(&exists, "SELECT 1 FROM otp_link.webhook_formats WHERE name = $1",
					1, (Oid[]) {TEXTOID});
		if (otp_spi_execute(exists, &args[1], NULL, 1) != SPI_OK_SELECT)
			elog(ERROR, "could not look up the webhook format");
		if (SPI_processed == 0)
			ereport(ERROR,
					(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
					 errmsg("unknown webhook format \"%s\"", text_to_cstring(format)),
					 errhint("SELECT name FROM otp_link.webhook_formats lists them; an administrator adds one with INSERT INTO otp_link.webhook_formats.")));
	}
	SPI_finish();
	return found;
}

/*
 * malformed: why message f cannot be consumed, or NULL when it can.
 * Pure; cannot ERROR.
 */
static const char *
malformed(const FoundMessage *f)
{
	if (f->sender_type == NULL)
		return "no sender";
	if (strcmp(f->sender_type, "string") != 0)
		return "the sender is not a string";
	if (f->text_type == NULL)
		return "no text";
	if (strcmp(f->text_type, "string") != 0)
		return "the text is not a string";
	if (f->id_type && strcmp(f->id_type, "string") != 0)
		return "the message id is not a string";
	if (f->receiver_type && strcmp(f->receiver_type, "string") != 0)
		return "the receiving number is not a string";
	return NULL;
}

/*
 * strip_prefix: s without a leading prefix (compared case-insensitively),
 * or s itself.  NULL stays NULL.  Allocates nothing; cannot ERROR.
 */
static const char *
strip_prefix(const char *s, const char *prefix)
{
	size_t		len = prefix ? strlen(prefix) : 0;

	if (s && len > 0 && pg_strncasecmp(s, prefix, len) == 0)
		return s + len;
	return s;
}

/*
 * append_json: append j's text to buf, after a comma unless first.
 * Allocates in CurrentMemoryContext; cannot ERROR short of memory.
 */
static void
append_json(StringInfo buf, Jsonb *j, bool first)
{
	if (!first)
		appendStringInfoString(buf, ", ");
	appendStringInfoString(buf, DatumGetCString(DirectFunctionCall1(jsonb_out,
																	JsonbPGetDatum(j))));
}

/*
 * skipped_json: the entry of the "skipped" list for message f.
 */
static Jsonb *
skipped_json(const FoundMessage *f, const char *why)
{
	OtpJsonb	jb;

	otp_jb_begin(&jb);
	otp_jb_int(&jb, "batch", f->batch);
	otp_jb_int(&jb, "index", f->index);
	otp_jb_str(&jb, "message_id",
			   f->id_type && strcmp(f->id_type, "string") == 0 ? f->id : NULL);
	otp_jb_str(&jb, "reason", why);
	return otp_jb_finish(&jb);
}

/* ----------------------------------------------------------------
 * otp_link_consume_webhook(payload jsonb, format text) RETURNS jsonb
 *
 * Consumes every text message that the format (a row of
 * otp_link.webhook_formats) finds in payload; the instance is the one whose
 * phone is the receiving number, when the format has one and it is
 * registered.  Returns {"format", "messages": n, "results": [...],
 * "skipped": [{"batch", "index", "message_id", "reason"}]}.  ERRORs 22004
 * on NULL arguments and 22023 for an unknown format; never for one
 * message.
 * ----------------------------------------------------------------
 */
Datum
otp_link_consume_webhook_format(PG_FUNCTION_ARGS)
{
	FoundMessage *found;
	char	   *prefix;
	int			n;
	int			nres = 0;
	int			nskip = 0;
	const char *last_receiver = NULL;
	bool		has_instance = false;
	Datum		instance = (Datum) 0;
	StringInfoData res;
	StringInfoData skip;
	StringInfoData out;

	if (PG_ARGISNULL(0) || PG_ARGISNULL(1))
		ereport(ERROR,
				(errcode(ERRCODE_NULL_VALUE_NOT_ALLOWED),
				 errmsg("payload and format must not be null"),
				 errhint("Pass the JSON body the gateway posted and the name of its format, e.g. 'twilio'.")));
	found = format_messages(PG_GETARG_JSONB_P(0), PG_GETARG_TEXT_PP(1), &n, &prefix);

	initStringInfo(&res);
	initStringInfo(&skip);
	for (int i = 0; i < n; i++)
	{
		FoundMessage *f = &found[i];
		const char *why = malformed(f);
		const char *sender = strip_prefix(f->sender, prefix);
		const char *receiver = strip_prefix(f->receiver, prefix);
		ConsumeResult r;

		if (why)
		{
			otp_metric_message("malformed");
			append_json(&skip, skipped_json(f, why), nskip++ == 0);
			continue;
		}
		/* one lookup per receiving number in a row */
		if (receiver == NULL)
			has_instance = false;
		else if (last_receiver == NULL || strcmp(receiver, last_receiver) != 0)
			has_instance = webhook_instance(receiver, &instance);
		last_receiver = receiver;
		r = otp_consume(sender, f->text, strlen(f->text), f->id, has_instance,
						instance, true);
		append_json(&res, otp_consume_result_json(&r, sender, f->id), nres++ == 0);
	}
	initStringInfo(&out);
	appendStringInfoString(&out, "{\"format\": ");
	escape_json(&out, text_to_cstring(PG_GETARG_TEXT_PP(1)));
	appendStringInfo(&out, ", \"messages\": %d, \"results\": [%s], \"skipped\": [%s]}",
					 nres, res.data, skip.data);
	PG_RETURN_JSONB_P(DatumGetJsonbP(DirectFunctionCall1(jsonb_in, CStringGetDatum(out.data))));
}
