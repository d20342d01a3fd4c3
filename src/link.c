/*-------------------------------------------------------------------------
 *
 * link.c
 *	  Links, the first half: otp_link_generate (validate, resolve texts,
 *	  rate limit, code and insert, response, the optional click link),
 *	  otp_link_whatsapp_url, otp_link_status and otp_link_cancel.
 *
 * The plain code exists only in the generate response; tables hold SHA-256
 * digests.
 *
 * Locking: generate takes the (instance, rate_key) advisory lock before it
 * counts the links of that key, so concurrent calls cannot both pass the
 * limit.  cancel is one UPDATE of a pending link (its row lock only).
 *
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include "access/xact.h"
#include "catalog/namespace.h"
#include "mb/pg_wchar.h"

#include "utils/builtins.h"
#include "utils/lsyscache.h"
#include "utils/timestamp.h"

#include "otp_link.h"
#include "api.h"

PG_FUNCTION_INFO_V1(otp_link_whatsapp_url);
PG_FUNCTION_INFO_V1(otp_link_generate);
PG_FUNCTION_INFO_V1(otp_link_status);
PG_FUNCTION_INFO_V1(otp_link_cancel);

#define MAX_METADATA_BYTES	16384
#define CODE_ATTEMPTS		16

/* ----------------------------------------------------------------
 * otp_link_whatsapp_url(phone text, prompt text, code text) RETURNS text
 * ----------------------------------------------------------------
 */
Datum
otp_link_whatsapp_url(PG_FUNCTION_ARGS)
{
	char	   *phone = text_to_cstring(PG_GETARG_TEXT_PP(0));
	char	   *prompt = text_to_cstring(PG_GETARG_TEXT_PP(1));
	char	   *code = text_to_cstring(PG_GETARG_TEXT_PP(2));
	char	   *digits = otp_normalize_phone_or_error(phone, "phone number");
	char	   *prompt_utf8;

	if (!otp_code_is_valid(code))
		ereport(ERROR,
				(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
				 errmsg("invalid code: \"%s\"", code),
				 errhint("A code is eight upper-case letters A-Z, e.g. RDYFQUBX.")));
	prompt_utf8 = pg_server_to_any(prompt, strlen(prompt), PG_UTF8);
	PG_RETURN_TEXT_P(cstring_to_text(otp_whatsapp_url(digits, prompt_utf8, code)));
}

/*
 * check_rate_limit: ERROR PT429 when (instance, rate_key) already has
 * limit links within window seconds.  First takes a transaction-level
 * advisory lock on the pair, then counts in a separate statement under the
 * latest snapshot: a caller that waited for the lock counts the link its
 * predecessor committed, whatever the isolation level.  Links are stamped
 * and counted with the statement's time, not the transaction's: a link made
 * late in an old transaction must not look older than it is and fall out
 * of the window early.
 */
static void
check_rate_limit(Datum instance, const char *rate_key, Jsonb *inst_options)
{
	static SPIPlanPtr plan = NULL;
	Oid			types[3] = {UUIDOID, TEXTOID, INT4OID};
	Datum		values[3];
	int			limit = otp_instance_limit(inst_options, "generate_limit",
										   otp_link_generate_limit);
	int			window = otp_instance_limit(inst_options, "generate_window",
											otp_link_generate_window_s);
	int64		count;
	bool		isnull;

	otp_advisory_lock(DatumGetCString(DirectFunctionCall1(uuid_out, instance)),
					  rate_key, OTP_LOCK_RATE_KEY);
	values[0] = instance;
	values[1] = CStringGetTextDatum(rate_key);
	values[2] = Int32GetDatum(window);
	otp_prepare(&plan,
				"SELECT count(*) FROM otp_link.links WHERE instance_id = $1 AND rate_key = $2 "
				"AND created_at > statement_timestamp() - make_interval(secs => $3)",
				3, types);
	if (otp_spi_execute_latest(plan, values, NULL, 1) != SPI_OK_SELECT)
		elog(ERROR, "rate limit query failed");
	count = DatumGetInt64(SPI_getbinval(SPI_tuptable->vals[0],
										SPI_tuptable->tupdesc, 1, &isnull));
	if (count >= limit)
		ereport(ERROR,
				(errcode(OTP_ERRCODE_RATE_LIMITED),
				 errmsg("too many links for rate key \"%s\"", rate_key),
				 errdetail("%lld links were generated for this rate key in the last %d seconds; the limit is %d.",
						   (long long) count, window, limit),
				 errhint("Wait before asking for another link.")));
}

/* what one otp_link_generate call carries from step to step */
typedef struct GenerateState
{
	Datum		instance;		/* the instance's uuid */
	int32		expires;
	char	   *name;
	Jsonb	   *message;
	Jsonb	   *callback;
	char	   *phone;
	char	   *binding;
	char	   *link_url;
	char	   *rate_key;
	Jsonb	   *metadata;
	char	   *click_url;		/* template with {uuid}, or NULL */
	char	   *inst_phone;
	Jsonb	   *inst_options;
	const char *prompt;
	const char *texts[4];		/* success, failed, expired, NULL */
	Jsonb	   *callbacks;		/* links.callbacks */
	char	   *id;				/* of the inserted link */
	char	   *created;
	char	   *expires_at;
	char	   *wa_link;		/* the whatsapp_link of the inserted code */
} GenerateState;

static void generate_args_keys(FunctionCallInfo fcinfo, GenerateState *st);

/*
 * generate_args: read and check the arguments of otp_link_generate into
 * st, in argument order.  Allocates in CurrentMemoryContext.  ERRORs
 * (23502, 22023, 22001...) on the first bad argument.
 */
static void
generate_args(FunctionCallInfo fcinfo, GenerateState *st)
{
	if (PG_ARGISNULL(0))
		ereport(ERROR,
				(errcode(ERRCODE_NULL_VALUE_NOT_ALLOWED),
				 errmsg("instance must not be null"),
				 errhint("Pass the uuid returned by otp_link_instance_create.")));
	st->instance = PG_GETARG_DATUM(0);
	st->expires = PG_ARGISNULL(1) ? 1800 : PG_GETARG_INT32(1);
	if (st->expires <= 0 || st->expires > OTP_MAX_EXPIRES)
		ereport(ERROR,
				(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
				 errmsg("expires must be between 1 and %d seconds, not %d",
						OTP_MAX_EXPIRES, st->expires),
				 errhint("Omit it for the default of 1800 seconds (30 minutes).")));
	if (!PG_ARGISNULL(2))
	{
		st->name = text_to_cstring(PG_GETARG_TEXT_PP(2));
		otp_check_text_len(st->name, OTP_MAX_NAME_CHARS, "name");
		if (st->name[0] == '\0')
			st->name = NULL;	/* "" is no name: "login at  [CODE]" helps nobody */
	}
	if (!PG_ARGISNULL(3))
	{
		st->message = PG_GETARG_JSONB_P(3);
		otp_check_object_keys(st->message, "message", otp_message_keys, true);
	}
	if (!PG_ARGISNULL(4))
	{
		st->callback = PG_GETARG_JSONB_P(4);
		otp_check_object_keys(st->callback, "callback", otp_callback_keys, true);
	}
	if (!PG_ARGISNULL(5))
		st->phone = otp_normalize_phone_or_error(text_to_cstring(PG_GETARG_TEXT_PP(5)),
												 "phone number");
	generate_args_keys(fcinfo, st);
}

/*
 * generate_args_keys: the rest of generate_args (binding, link_url,
 * rate_key, metadata, click_url: an argument only the 1.1 declaration has).  Allocates in CurrentMemoryContext; ERRORs on a bad
 * argument.
 */
static void
generate_args_keys(FunctionCallInfo fcinfo, GenerateState *st)
{
	if (!PG_ARGISNULL(6))
	{
		st->binding = text_to_cstring(PG_GETARG_TEXT_PP(6));
		if (strlen(st->binding) < 16 || strlen(st->binding) > OTP_MAX_KEY_LEN)
			ereport(ERROR,
					(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
					 errmsg("binding must be 16 to %d bytes long", OTP_MAX_KEY_LEN),
					 errhint("Use a random value of at least 128 bits kept in the browser, e.g. a cookie.")));
	}
	if (!PG_ARGISNULL(7))
	{
		st->link_url = text_to_cstring(PG_GETARG_TEXT_PP(7));
		otp_link_url_check(st->link_url, "link_url");
	}
	if (!PG_ARGISNULL(8))
	{
		st->rate_key = text_to_cstring(PG_GETARG_TEXT_PP(8));
		if (strlen(st->rate_key) > OTP_MAX_KEY_LEN)
			ereport(ERROR,
					(errcode(ERRCODE_STRING_DATA_RIGHT_TRUNCATION),
					 errmsg("rate_key is longer than %d bytes", OTP_MAX_KEY_LEN),
					 errhint("Use a short identifier of the asker, e.g. \"ip:203.0.113.5\" or \"user:42\".")));
	}
	if (PG_NARGS() > 10 && !PG_ARGISNULL(10))
	{
		st->click_url = text_to_cstring(PG_GETARG_TEXT_PP(10));
		otp_click_url_check(st->click_url, "click_url");
	}
	if (!PG_ARGISNULL(9))
	{
		st->metadata = PG_GETARG_JSONB_P(9);
		if (VARSIZE(st->metadata) > MAX_METADATA_BYTES)
			ereport(ERROR,
					(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
					 errmsg("metadata is larger than %d bytes", MAX_METADATA_BYTES),
					 errhint("Keep an identifier in metadata and the rest in your own tables.")));
	}
}

/*
 * links_have_clicks: whether otp_link.links has the click columns of 1.1
 * (between installing this library and ALTER EXTENSION UPDATE a database
 * still has the 1.0 table).  Syscache lookups; never ERRORs.
 */
static bool
links_have_clicks(void)
{
	Oid			nsp = get_namespace_oid("otp_link", true);
	Oid			rel = OidIsValid(nsp) ? get_relname_relid("links", nsp) : InvalidOid;

	return OidIsValid(rel) && get_attnum(rel, "open_link") != InvalidAttrNumber;
}

/*
 * generate_wa_link: the wa.me link of st's prompt and code (UTF-8),
 * palloc'd.  Can ERROR only on encoding conversion of the prompt.
 */
static char *
generate_wa_link(GenerateState *st, const char *code)
{
	StringInfoData buf;
	char	   *prompt_utf8;

	initStringInfo(&buf);
	otp_render_template(&buf, st->prompt, NULL, st->name, code);
	prompt_utf8 = pg_server_to_any(buf.data, strlen(buf.data), PG_UTF8);
	return otp_whatsapp_url(st->inst_phone, prompt_utf8, code);
}

/*
 * generate_texts: resolve the prompt and the three messages (argument,
 * then the instance's options, then the default) and the callback URLs
 * into st->callbacks, and check them.  Must be connected to SPI (the
 * instance was read).  Allocates in CurrentMemoryContext; ERRORs (22023)
 * on a bad text or URL.
 */
static void
generate_texts(GenerateState *st)
{
	Jsonb	   *inst_messages;
	Jsonb	   *inst_callback;
	OtpJsonb	jb;
	int			i;

	inst_messages = otp_jsonb_get_object(st->inst_options, "messages", "options");
	inst_callback = otp_jsonb_get_object(st->inst_options, "callback", "options");
	if (st->link_url == NULL)
		st->link_url = otp_jsonb_get_text(st->inst_options, "link_url");
	if (st->click_url == NULL)
		st->click_url = otp_jsonb_get_text(st->inst_options, "click_url");
	if (st->click_url && !links_have_clicks())
		st->click_url = NULL;	/* a 1.0 schema: no click link until the update */

	st->prompt = otp_resolve_text(st->message, inst_messages, "prompt",
								  st->name ? "Give me link to login at {name}" : "Give me link to login");
	st->texts[0] = otp_resolve_text(st->message, inst_messages, "success",
									st->link_url ? "Here is your login link: {link}" :
									"Your WhatsApp number is verified.");
	st->texts[1] = otp_resolve_text(st->message, inst_messages, "failed",
									"Login failed, please try again later.");
	st->texts[2] = otp_resolve_text(st->message, inst_messages, "expired",
									"The link has expired, please ask for a new one.");
	st->texts[3] = NULL;
	otp_check_texts(st->prompt, st->texts, st->link_url, st->name, false);

	otp_jb_begin(&jb);
	for (i = 0; otp_callback_keys[i]; i++)
	{
		const char *url = otp_resolve_text(st->callback, inst_callback,
										   otp_callback_keys[i], NULL);

		otp_check_url(url, "callback URL");
		if (url)
			otp_jb_str(&jb, otp_callback_keys[i], url);
	}
	st->callbacks = otp_jb_finish(&jb);
}

/*
 * generate_row: fill the INSERT's parameters $1..$12 from st (all but $2,
 * the code's digest): created_at is the statement's timestamp, as
 * statement_timestamp() gives it, expires_at that plus st->expires
 * seconds.  Allocates in CurrentMemoryContext; cannot ERROR.
 */
static void
generate_row(GenerateState *st, Datum *values, char *nulls)
{
	OtpJsonb	jb;
	TimestampTz created = GetCurrentStatementStartTimestamp();

	otp_jb_begin(&jb);
	otp_jb_str(&jb, "prompt", st->prompt);
	otp_jb_str(&jb, "success", st->texts[0]);
	otp_jb_str(&jb, "failed", st->texts[1]);
	otp_jb_str(&jb, "expired", st->texts[2]);
	values[3] = JsonbPGetDatum(otp_jb_finish(&jb));
	values[4] = JsonbPGetDatum(st->callbacks);

	memset(nulls, ' ', 14);
	values[0] = st->instance;
	values[2] = st->name ? CStringGetTextDatum(st->name) : (Datum) 0;
	nulls[2] = st->name ? ' ' : 'n';
	values[5] = st->phone ? CStringGetTextDatum(st->phone) : (Datum) 0;
	nulls[5] = st->phone ? ' ' : 'n';
	values[6] = st->binding ? PointerGetDatum(otp_sha256_bytea(st->binding, strlen(st->binding))) : (Datum) 0;
	nulls[6] = st->binding ? ' ' : 'n';
	values[7] = st->link_url ? CStringGetTextDatum(st->link_url) : (Datum) 0;
	nulls[7] = st->link_url ? ' ' : 'n';
	values[8] = st->rate_key ? CStringGetTextDatum(st->rate_key) : (Datum) 0;
	nulls[8] = st->rate_key ? ' ' : 'n';
	values[9] = st->metadata ? JsonbPGetDatum(st->metadata) : (Datum) 0;
	nulls[9] = st->metadata ? ' ' : 'n';
	values[10] = TimestampTzGetDatum(created);
	values[11] = TimestampTzGetDatum(created + (int64) st->expires * USECS_PER_SEC);
	st->created = otp_format_timestamp(created);
	st->expires_at = otp_format_timestamp(DatumGetTimestampTz(values[11]));
}

/*
 * the INSERT of generate ($13: the new link's id); a click link adds
 * clicks = 0 and the wa.me link ($14).  Without RETURNING: SPI_processed
 * says whether the row went in (0: the code's digest was taken).
 */
#define GENERATE_INSERT(cols, vals) \
	"INSERT INTO otp_link.links (id, instance_id, code_hash, name, messages, callbacks, " \
	"phone, binding_hash, link_url, rate_key, metadata, created_at, expires_at" cols ") " \
	"VALUES ($13, $1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12" vals ") " \
	"ON CONFLICT (code_hash) DO NOTHING"

/*
 * generate_insert: insert the link with a fresh code in code, drawing
 * again while the code's digest is taken (collisions are rare); sets
 * st->id, created, expires_at and wa_link, and calls SPI_finish.  With a
 * click URL the row also gets clicks = 0 and its wa.me link (open_link),
 * for otp_link_open.  Allocates in CurrentMemoryContext.  ERRORs (53000)
 * when no free code was found, or on database errors.
 */
static void
generate_insert(GenerateState *st, char *code)
{
	static SPIPlanPtr ins_plan = NULL;
	static SPIPlanPtr click_plan = NULL;
	Oid			ins_types[14] = {UUIDOID, BYTEAOID, TEXTOID, JSONBOID, JSONBOID,
		TEXTOID, BYTEAOID, TEXTOID, TEXTOID, JSONBOID, TIMESTAMPTZOID,
	TIMESTAMPTZOID, UUIDOID, TEXTOID};
	Datum		values[14];
	char		nulls[14];
	pg_uuid_t  *id = palloc(sizeof(pg_uuid_t));
	int			attempt;
	SPIPlanPtr	plan;

	generate_row(st, values, nulls);
	otp_random_uuid(id);
	values[12] = UUIDPGetDatum(id);
	if (st->click_url)
		plan = otp_prepare(&click_plan, GENERATE_INSERT(", clicks, open_link", ", 0, $14"),
						   14, ins_types);
	else
		plan = otp_prepare(&ins_plan, GENERATE_INSERT("", ""), 13, ins_types);

	for (attempt = 0; attempt < CODE_ATTEMPTS; attempt++)
	{
		int			ret;

		otp_random_code(code);
		values[1] = PointerGetDatum(otp_sha256_bytea(code, OTP_CODE_LEN));
		st->wa_link = generate_wa_link(st, code);
		values[13] = CStringGetTextDatum(st->wa_link);
		ret = otp_spi_execute(plan, values, nulls, 0);
		if (ret != SPI_OK_INSERT)
			elog(ERROR, "link insert failed: %s", SPI_result_code_string(ret));
		if (SPI_processed == 1)
		{
			st->id = otp_uuid_text(id);
			break;
		}
	}
	SPI_finish();
	if (st->id == NULL)
		ereport(ERROR,
				(errcode(ERRCODE_INSUFFICIENT_RESOURCES),
				 errmsg("could not find a free code after %d attempts", CODE_ATTEMPTS),
				 errhint("Purge old links (otp_link.retention) so that codes are freed.")));
}

/*
 * generate_response: the jsonb that otp_link_generate returns, with the
 * plain code, the wa.me link and (with a click URL) the click link.
 * Allocates in CurrentMemoryContext; cannot ERROR except on out of memory.
 */
static Jsonb *
generate_response(GenerateState *st, const char *code)
{
	OtpJsonb	jb;

	otp_jb_begin(&jb);
	otp_jb_str(&jb, "uuid", st->id);
	otp_jb_str(&jb, "code", code);
	otp_jb_str(&jb, "chat_id", psprintf("%s@c.us", st->inst_phone));
	otp_jb_str(&jb, "status", "pending");
	otp_jb_str(&jb, "otp_type", "link");
	otp_jb_str(&jb, "expires_at", st->expires_at);
	otp_jb_str(&jb, "created_at", st->created);
	otp_jb_str(&jb, "whatsapp_link", st->wa_link);
	if (st->click_url)
		otp_jb_str(&jb, "click_link", otp_click_url_render(st->click_url, st->id));
	return otp_jb_finish(&jb);	/* copies the strings, code included */
}

/* ----------------------------------------------------------------
 * otp_link_generate(instance uuid, expires integer, name text,
 *		message jsonb, callback jsonb, phone text, binding text,
 *		link_url text, rate_key text, metadata jsonb
 *		[, click_url text: 1.1]) RETURNS jsonb
 *
 * Steps: check the arguments, read the instance, resolve and check the
 * texts, apply the rate limit, insert the link with a fresh code, answer.
 * Allocates in the function's memory context; ERRORs with the SQLSTATEs of
 * docs/sqlstates.md.
 * ----------------------------------------------------------------
 */
Datum
otp_link_generate(PG_FUNCTION_ARGS)
{
	GenerateState st;
	char	   *inst_name;
	char		code[OTP_CODE_LEN + 1];
	Jsonb	   *result;

	memset(&st, 0, sizeof(st));
	generate_args(fcinfo, &st);

	if (!otp_instance_lookup(st.instance, &st.inst_phone, &inst_name,
							 &st.inst_options))
		otp_error_no_instance(st.instance);
	if (st.name == NULL)
		st.name = inst_name;

	otp_spi_connect();
	generate_texts(&st);
	if (st.rate_key)
		check_rate_limit(st.instance, st.rate_key, st.inst_options);
	generate_insert(&st, code);
	otp_metric_add(OTP_M_LINKS_GENERATED, 1);

	result = generate_response(&st, code);
	explicit_bzero(code, sizeof(code));
	PG_RETURN_JSONB_P(result);
}

/*
 * otp_status_json: the status object of link id (a uuid Datum), built with
 * SPI (caller connected).  Returns NULL when the link does not exist.
 * extra_key/extra_val add one more key (e.g. "cancelled": true).
 */
Jsonb *
otp_status_json(Datum id, const char *extra_key, const char *extra_val)
{
	static SPIPlanPtr plan = NULL;
	Oid			types[1] = {UUIDOID};
	Datum		values[1];
	OtpJsonb	jb;
	char	   *row[12];
	int			i;

	values[0] = id;
	otp_prepare(&plan,
				"SELECT l.id::text, "
				"CASE WHEN l.status = 'pending' AND l.expires_at <= now() THEN 'expired' ELSE l.status END, "
				"i.phone || '@c.us', l.chat_id, "
				"to_char(l.created_at AT TIME ZONE 'UTC', 'YYYY-MM-DD\"T\"HH24:MI:SS\"+00:00\"'), "
				"to_char(l.expires_at AT TIME ZONE 'UTC', 'YYYY-MM-DD\"T\"HH24:MI:SS\"+00:00\"'), "
				"to_char(l.finished_at AT TIME ZONE 'UTC', 'YYYY-MM-DD\"T\"HH24:MI:SS\"+00:00\"'), "
				"l.reason, l.messages_received::text, "
				"(l.redeemed_at IS NOT NULL)::text, l.metadata::text, "
				"(l.phone IS NOT NULL)::text "
				"FROM otp_link.links l JOIN otp_link.instances i ON i.id = l.instance_id "
				"WHERE l.id = $1",
				1, types);
	if (otp_spi_execute(plan, values, NULL, 1) != SPI_OK_SELECT)
		elog(ERROR, "status lookup failed");
	if (SPI_processed == 0)
		return NULL;
	for (i = 0; i < 12; i++)
		row[i] = otp_spi_text(i + 1);

	otp_jb_begin(&jb);
	otp_jb_str(&jb, "uuid", row[0]);
	otp_jb_str(&jb, "status", row[1]);
	otp_jb_str(&jb, "otp_type", "link");
	otp_jb_str(&jb, "chat_id", row[2]);
	otp_jb_str(&jb, "verified_chat_id", row[3]);
	otp_jb_str(&jb, "created_at", row[4]);
	otp_jb_str(&jb, "expires_at", row[5]);
	otp_jb_str(&jb, "finished_at", row[6]);
	otp_jb_str(&jb, "reason", row[7]);
	otp_jb_raw(&jb, "messages_received", row[8]);
	otp_jb_raw(&jb, "redeemed", row[9]);
	otp_jb_raw(&jb, "phone_bound", row[11]);
	otp_jb_raw(&jb, "metadata", row[10]);
	if (extra_key)
		otp_jb_raw(&jb, extra_key, extra_val);
	return otp_jb_finish(&jb);
}

/*
 * no_such_link: ERROR P0002 for link id.
 */
static void
no_such_link(Datum id)
{
	ereport(ERROR,
			(errcode(OTP_ERRCODE_NOT_FOUND),
			 errmsg("link %s does not exist",
					DatumGetCString(DirectFunctionCall1(uuid_out, id))),
			 errhint("Pass the uuid returned by otp_link_generate.")));
}

/* ----------------------------------------------------------------
 * otp_link_status(uuid uuid) RETURNS jsonb
 * ----------------------------------------------------------------
 */
Datum
otp_link_status(PG_FUNCTION_ARGS)
{
	Jsonb	   *result;

	if (PG_ARGISNULL(0))
		ereport(ERROR,
				(errcode(ERRCODE_NULL_VALUE_NOT_ALLOWED),
				 errmsg("uuid must not be null"),
				 errhint("Pass the uuid returned by otp_link_generate.")));
	otp_spi_connect();
	result = otp_status_json(PG_GETARG_DATUM(0), NULL, NULL);
	if (result == NULL)
		no_such_link(PG_GETARG_DATUM(0));
	SPI_finish();
	PG_RETURN_JSONB_P(result);
}

/* ----------------------------------------------------------------
 * otp_link_cancel(uuid uuid) RETURNS jsonb
 *
 * A pending link becomes failed with reason "cancelled"; no reply and no
 * callback are queued (the application asked for it).  Any other link is
 * left as it is.  The result is the status object with "cancelled".
 * ----------------------------------------------------------------
 */
Datum
otp_link_cancel(PG_FUNCTION_ARGS)
{
	static SPIPlanPtr plan = NULL;
	Oid			types[1] = {UUIDOID};
	Datum		values[1];
	Jsonb	   *result;
	bool		cancelled;

	if (PG_ARGISNULL(0))
		ereport(ERROR,
				(errcode(ERRCODE_NULL_VALUE_NOT_ALLOWED),
				 errmsg("uuid must not be null"),
				 errhint("Pass the uuid returned by otp_link_generate.")));
	values[0] = PG_GETARG_DATUM(0);
	otp_spi_connect();
	otp_prepare(&plan,
				"UPDATE otp_link.links SET status = 'failed', reason = 'cancelled', "
				"finished_at = now() WHERE id = $1 AND status = 'pending' "
				"AND expires_at > now()",
				1, types);
	if (otp_spi_execute(plan, values, NULL, 1) != SPI_OK_UPDATE)
		elog(ERROR, "cancel failed");
	cancelled = (SPI_processed == 1);
	if (cancelled)
		otp_metric_add(OTP_M_LINKS_FAILED, 1);
	result = otp_status_json(values[0], "cancelled", cancelled ? "true" : "false");
	if (result == NULL)
		no_such_link(values[0]);
	SPI_finish();
	PG_RETURN_JSONB_P(result);
}
