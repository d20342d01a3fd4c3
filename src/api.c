/*-------------------------------------------------------------------------
 *
 * api.c
 *	  SQL-callable functions that create instances and links and report on
 *	  them: otp_link_instance_create, otp_link_generate,
 *	  otp_link_whatsapp_url, otp_link_status and otp_link_cancel.
 *
 * Every input is checked before anything is written, and every check fails
 * with a stable SQLSTATE (docs/sqlstates.md).  Table access goes through
 * SPI with plans prepared once per backend and kept (SPI_keepplan).  The
 * plain code exists only in the generate response; tables hold SHA-256
 * digests.
 *
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include <arpa/inet.h>
#include <netinet/in.h>
#include <sys/socket.h>

#include "access/genam.h"
#include "access/heapam.h"
#include "access/htup_details.h"
#include "access/stratnum.h"
#include "access/table.h"
#include "access/xact.h"
#include "catalog/namespace.h"
#include "catalog/pg_am.h"
#include "catalog/pg_namespace.h"
#include "catalog/pg_type.h"
#include "common/hashfn.h"
#include "executor/spi.h"
#include "fmgr.h"
#include "mb/pg_wchar.h"
#include "miscadmin.h"
#include "nodes/makefuncs.h"
#include "storage/bufmgr.h"
#include "storage/lock.h"
#include "utils/builtins.h"
#include "utils/fmgroids.h"
#include "utils/hsearch.h"
#include "utils/inet.h"
#include "utils/json.h"
#include "utils/jsonb.h"
#include "utils/numeric.h"
#include "utils/rel.h"
#include "utils/snapmgr.h"
#include "utils/syscache.h"
#include "utils/uuid.h"

#include "otp_link.h"
#include "api.h"

PG_FUNCTION_INFO_V1(otp_link_whatsapp_url);
PG_FUNCTION_INFO_V1(otp_link_instance_create);
PG_FUNCTION_INFO_V1(otp_link_generate);
PG_FUNCTION_INFO_V1(otp_link_status);
PG_FUNCTION_INFO_V1(otp_link_cancel);
PG_FUNCTION_INFO_V1(otp_link_instance_update);
PG_FUNCTION_INFO_V1(otp_link_destination_allowed);

#define MAX_METADATA_BYTES	16384
#define CODE_ATTEMPTS		16

static const char *const message_keys[] = {"prompt", "success", "failed", "expired", NULL};
static const char *const callback_keys[] = {"success", "failed", "expired", NULL};
static const char *const option_keys[] = {"messages", "callback", "link_url",
"reply_endpoint", "limits", NULL};
static const char *const limit_keys[] = {"generate_limit", "generate_window",
	"unknown_code_limit", "unknown_code_window", "block_duration", NULL
};
static const char *const reply_keys[] = {"type", "url", "token", NULL};

static void check_texts(const char *prompt, const char *const *texts,
						const char *link_url, const char *name,
						bool link_url_may_come);

/* ----------------------------------------------------------------
 * Helpers shared with consume.c
 * ----------------------------------------------------------------
 */

/*
 * otp_prepare: prepare query once per backend and keep the plan in *plan
 * (SPI_keepplan moves it under CacheMemoryContext).  Must be called while
 * connected to SPI; can ERROR on a bad query.  Like otp_spi_execute, it
 * returns with the caller's memory context current: SPI_prepare leaves
 * SPI's procedure context current, which SPI_finish frees.
 */
SPIPlanPtr
otp_prepare(SPIPlanPtr *plan, const char *query, int nargs, Oid *argtypes)
{
	return otp_prepare_opts(plan, query, nargs, argtypes, 0);
}

/*
 * otp_prepare_opts: otp_prepare with SPI_prepare_cursor's cursor_options,
 * e.g. CURSOR_OPT_CUSTOM_PLAN to keep the parsed statement but plan every
 * execution anew.
 */
SPIPlanPtr
otp_prepare_opts(SPIPlanPtr *plan, const char *query, int nargs, Oid *argtypes,
				 int cursor_options)
{
	if (*plan == NULL)
	{
		MemoryContext caller = CurrentMemoryContext;
		SPIPlanPtr	p = SPI_prepare_cursor(query, nargs, argtypes, cursor_options);

		MemoryContextSwitchTo(caller);

		if (p == NULL)
			ereport(ERROR,
					(errcode(ERRCODE_INTERNAL_ERROR),
					 errmsg("could not prepare \"%s\": %s",
							query, SPI_result_code_string(SPI_result))));
		SPI_keepplan(p);
		*plan = p;
	}
	return *plan;
}

/*
 * otp_check_schema: ERROR (42501) unless schema otp_link is owned by a
 * superuser.  Our SECURITY DEFINER functions reach their tables through
 * that name; had a schema that another role made first been adopted by an
 * install older than 1.1, that role could rename it and put look-alike
 * tables with triggers in its place, which would run as the owner of these
 * functions.  Syscache lookups only (called on every SQL call that touches
 * the tables, through otp_spi_connect and the instance read).
 */
void
otp_check_schema(void)
{
	Oid			nsp = get_namespace_oid("otp_link", true);
	Oid			owner = InvalidOid;
	HeapTuple	tup;

	if (OidIsValid(nsp))
	{
		tup = SearchSysCache1(NAMESPACEOID, ObjectIdGetDatum(nsp));
		if (HeapTupleIsValid(tup))
		{
			owner = ((Form_pg_namespace) GETSTRUCT(tup))->nspowner;
			ReleaseSysCache(tup);
		}
	}
	if (!OidIsValid(owner) || !superuser_arg(owner))
		ereport(ERROR,
				(errcode(ERRCODE_INSUFFICIENT_PRIVILEGE),
				 errmsg("schema \"otp_link\" is not owned by a superuser"),
				 errdetail("otp_link's functions run with their owner's rights and use the objects in that schema."),
				 errhint("A superuser should check what the schema holds, then ALTER SCHEMA otp_link OWNER TO postgres and ALTER EXTENSION otp_link UPDATE.")));
}

/*
 * otp_spi_connect: SPI_connect, then switch back to the caller's memory
 * context, so that what the caller pallocs (and otp_spi_text returns)
 * survives SPI_finish.  SPI runs its queries in contexts of its own.
 */
void
otp_spi_connect(void)
{
	MemoryContext caller = CurrentMemoryContext;

	otp_check_schema();

	if (SPI_connect() != SPI_OK_CONNECT)
		elog(ERROR, "SPI_connect failed");
	MemoryContextSwitchTo(caller);
}

/*
 * otp_spi_execute: SPI_execute_plan (never read-only: our functions are
 * VOLATILE and must see their own earlier writes), then back to the memory
 * context the caller was in, since SPI leaves its own procedure context
 * current and that one is freed by SPI_finish.
 */
int
otp_spi_execute(SPIPlanPtr plan, Datum *values, const char *nulls, long count)
{
	MemoryContext caller = CurrentMemoryContext;
	int			ret = SPI_execute_plan(plan, values, nulls, false, count);

	MemoryContextSwitchTo(caller);
	return ret;
}

/*
 * otp_spi_execute_latest: otp_spi_execute under the latest snapshot instead
 * of the transaction's, as the foreign-key checks do.  For limits: after
 * taking a lock that serializes the callers, the count must see every row
 * that earlier holders of the lock committed, also in REPEATABLE READ and
 * SERIALIZABLE transactions, whose own snapshot may predate those commits.
 */
int
otp_spi_execute_latest(SPIPlanPtr plan, Datum *values, const char *nulls,
					   long count)
{
	MemoryContext caller = CurrentMemoryContext;
	int			ret;

	ret = SPI_execute_snapshot(plan, values, nulls, GetLatestSnapshot(),
							   InvalidSnapshot, false, false, count);
	MemoryContextSwitchTo(caller);
	return ret;
}

/*
 * otp_advisory_lock: a transaction-level lock on (key1, key2) in the key
 * space named by space, so that callers counting the same thing wait for
 * each other.  It is an advisory lock tag, but with a fourth field (space)
 * that pg_advisory_lock() and its kin never use (they use 1 and 2): no
 * role can take or hold these locks from SQL to stall otp_link.  Visible
 * in pg_locks as locktype advisory, objsubid = space.  Can ERROR
 * (deadlock, lock_timeout, statement cancel).
 */
void
otp_advisory_lock(const char *key1, const char *key2, uint16 space)
{
	StringInfoData buf;
	uint64		h;
	LOCKTAG		tag;

	initStringInfo(&buf);
	appendStringInfo(&buf, "%s/%s", key1, key2 ? key2 : "");
	h = hash_bytes_extended((const unsigned char *) buf.data, buf.len, space);
	pfree(buf.data);
	SET_LOCKTAG_ADVISORY(tag, MyDatabaseId, (uint32) (h >> 32), (uint32) h, space);
	(void) LockAcquire(&tag, ExclusiveLock, false, false);
}

/*
 * otp_spi_text: column col of row row of SPI_tuptable as a C string
 * palloc'd in the current context, or NULL.
 */
char *
otp_spi_text_row(uint64 row, int col)
{
	bool		isnull;
	Datum		d = SPI_getbinval(SPI_tuptable->vals[row], SPI_tuptable->tupdesc,
								  col, &isnull);

	if (isnull)
		return NULL;
	return TextDatumGetCString(d);
}

char *
otp_spi_text(int col)
{
	return otp_spi_text_row(0, col);
}

/* JSON output: "key": value pairs appended to an object under construction */
void
otp_json_key(StringInfo buf, const char *key)
{
	if (buf->data[buf->len - 1] != '{')
		appendStringInfoChar(buf, ',');
	escape_json(buf, key);
	appendStringInfoChar(buf, ':');
}

void
otp_json_str(StringInfo buf, const char *key, const char *val)
{
	otp_json_key(buf, key);
	if (val)
		escape_json(buf, val);
	else
		appendStringInfoString(buf, "null");
}

void
otp_json_raw(StringInfo buf, const char *key, const char *raw)
{
	otp_json_key(buf, key);
	appendStringInfoString(buf, raw ? raw : "null");
}

/*
 * otp_json_finish: close the object in buf and parse it into a Jsonb
 * (palloc'd in the current context).
 */
Jsonb *
otp_json_finish(StringInfo buf)
{
	appendStringInfoChar(buf, '}');
	return DatumGetJsonbP(DirectFunctionCall1(jsonb_in, CStringGetDatum(buf->data)));
}

/*
 * otp_jb_begin, otp_jb_str, otp_jb_finish: build a Jsonb object of string
 * (or null) values directly, as jsonb_build_object does, instead of
 * printing JSON text and parsing it again with jsonb_in.  The parse state
 * and the result are palloc'd in the current context.  Keys must be
 * distinct (a later one would replace an earlier one); cannot ERROR short of
 * running out of memory.
 */
void
otp_jb_begin(OtpJsonb *b)
{
	b->state = NULL;
	pushJsonbValue(&b->state, WJB_BEGIN_OBJECT, NULL);
}

void
otp_jb_str(OtpJsonb *b, const char *key, const char *val)
{
	JsonbValue	v;

	v.type = jbvString;
	v.val.string.val = unconstify(char *, key);
	v.val.string.len = strlen(key);
	pushJsonbValue(&b->state, WJB_KEY, &v);
	if (val == NULL)
		v.type = jbvNull;
	else
	{
		v.val.string.val = unconstify(char *, val);
		v.val.string.len = strlen(val);
	}
	pushJsonbValue(&b->state, WJB_VALUE, &v);
}

/*
 * otp_jb_bool, otp_jb_int: a boolean or integer value under key.
 */
void
otp_jb_bool(OtpJsonb *b, const char *key, bool val)
{
	JsonbValue	v;

	v.type = jbvString;
	v.val.string.val = unconstify(char *, key);
	v.val.string.len = strlen(key);
	pushJsonbValue(&b->state, WJB_KEY, &v);
	v.type = jbvBool;
	v.val.boolean = val;
	pushJsonbValue(&b->state, WJB_VALUE, &v);
}

void
otp_jb_int(OtpJsonb *b, const char *key, int64 val)
{
	JsonbValue	v;

	v.type = jbvString;
	v.val.string.val = unconstify(char *, key);
	v.val.string.len = strlen(key);
	pushJsonbValue(&b->state, WJB_KEY, &v);
	v.type = jbvNumeric;
	v.val.numeric = int64_to_numeric(val);
	pushJsonbValue(&b->state, WJB_VALUE, &v);
}

Jsonb *
otp_jb_finish(OtpJsonb *b)
{
	return JsonbValueToJsonb(pushJsonbValue(&b->state, WJB_END_OBJECT, NULL));
}

/*
 * otp_format_timestamp: t in UTC as "YYYY-MM-DDTHH:MI:SS+00:00" (whole
 * seconds, the hosted API's format), palloc'd in the current context.
 * The same text as to_char(t AT TIME ZONE 'UTC', ...), without the
 * function call.  ERRORs on an infinite or out-of-range timestamp.
 */
char *
otp_format_timestamp(TimestampTz t)
{
	struct pg_tm tm;
	fsec_t		fsec;

	if (TIMESTAMP_NOT_FINITE(t) || timestamp2tm(t, NULL, &tm, &fsec, NULL, NULL) != 0)
		ereport(ERROR,
				(errcode(ERRCODE_DATETIME_VALUE_OUT_OF_RANGE),
				 errmsg("timestamp out of range")));
	return psprintf("%04d-%02d-%02dT%02d:%02d:%02d+00:00",
					tm.tm_year, tm.tm_mon, tm.tm_mday,
					tm.tm_hour, tm.tm_min, tm.tm_sec);
}

/*
 * otp_jsonb_get_text: the string value of key in object j, palloc'd; NULL
 * when absent or JSON null.  ERROR if the value is not a string.
 */
char *
otp_jsonb_get_text(Jsonb *j, const char *key)
{
	JsonbValue *v;

	if (j == NULL || !JB_ROOT_IS_OBJECT(j))
		return NULL;
	v = getKeyJsonValueFromContainer(&j->root, key, strlen(key), NULL);
	if (v == NULL || v->type == jbvNull)
		return NULL;
	if (v->type != jbvString)
		ereport(ERROR,
				(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
				 errmsg("value of \"%s\" must be a string", key)));
	return pnstrdup(v->val.string.val, v->val.string.len);
}

/*
 * otp_jsonb_get_object: the value of key in j if it is an object, as a new
 * Jsonb; NULL when absent or null.  ERROR (22023) when it is not an object.
 */
Jsonb *
otp_jsonb_get_object(Jsonb *j, const char *key, const char *what)
{
	JsonbValue *v;

	if (j == NULL || !JB_ROOT_IS_OBJECT(j))
		return NULL;
	v = getKeyJsonValueFromContainer(&j->root, key, strlen(key), NULL);
	if (v == NULL || v->type == jbvNull)
		return NULL;
	if (v->type != jbvBinary || !JsonContainerIsObject(v->val.binary.data))
		ereport(ERROR,
				(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
				 errmsg("%s.%s must be a JSON object", what, key),
				 errhint("See docs/sql-reference.md for the keys of %s.", key)));
	return JsonbValueToJsonb(v);
}

/*
 * limit_max: the largest value of options.limits.<key>, the same as the
 * setting of that name allows: 7 days for windows and durations (seconds),
 * 1000000 for counts.
 */
static int
limit_max(const char *key)
{
	if (strstr(key, "_window") || strcmp(key, "block_duration") == 0)
		return OTP_MAX_LIMIT_SECONDS;
	return OTP_MAX_LIMIT_COUNT;
}

/*
 * otp_jsonb_get_int_clamped: like otp_jsonb_get_int, for options stored
 * before 1.1 checked the bounds: a value above limit_max(key) counts as
 * that maximum, a value that is not a number as absent.  Never ERRORs on
 * what version 1.0 accepted.
 */
static int
otp_jsonb_get_int_clamped(Jsonb *j, const char *key, int dflt)
{
	JsonbValue *v;
	int64		n;

	if (j == NULL || !JB_ROOT_IS_OBJECT(j))
		return dflt;
	v = getKeyJsonValueFromContainer(&j->root, key, strlen(key), NULL);
	if (v == NULL || v->type != jbvNumeric)
		return dflt;
	n = DatumGetInt64(DirectFunctionCall1(numeric_int8,
										  NumericGetDatum(v->val.numeric)));
	return (int) Max(1, Min(n, (int64) limit_max(key)));
}

/*
 * otp_jsonb_get_int: integer value of key in j, or dflt when absent.
 * ERROR (22023) when present but not an integer from 1 to limit_max(key).
 */
int
otp_jsonb_get_int(Jsonb *j, const char *key, int dflt)
{
	JsonbValue *v;
	int64		n;
	int			max = limit_max(key);

	if (j == NULL || !JB_ROOT_IS_OBJECT(j))
		return dflt;
	v = getKeyJsonValueFromContainer(&j->root, key, strlen(key), NULL);
	if (v == NULL || v->type == jbvNull)
		return dflt;
	if (v->type != jbvNumeric)
		ereport(ERROR,
				(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
				 errmsg("limits.%s must be a number", key),
				 errhint("Write it as a JSON number, e.g. {\"%s\": 10}.", key)));
	n = DatumGetInt64(DirectFunctionCall1(numeric_int8,
										  NumericGetDatum(v->val.numeric)));
	if (n < 1 || n > max)
		ereport(ERROR,
				(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
				 errmsg("limits.%s must be between 1 and %d", key, max),
				 errhint("Durations are in seconds, at most 7 days, as the settings allow; counts are per window, at most 1000000.")));
	return (int) n;
}

/*
 * check_object_keys: ERROR (22023) unless j is a JSON object whose keys are
 * all in allowed and (if strings_only) whose values are strings or null.
 * what names the argument in the message.
 */
static void
check_object_keys(Jsonb *j, const char *what, const char *const *allowed,
				  bool strings_only)
{
	JsonbIterator *it;
	JsonbValue	v;
	JsonbIteratorToken tok;
	StringInfoData keys;
	int			i;

	if (!JB_ROOT_IS_OBJECT(j) || JB_ROOT_IS_SCALAR(j))
		ereport(ERROR,
				(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
				 errmsg("%s must be a JSON object", what),
				 errhint("Pass an object such as {\"%s\": \"...\"}.", allowed[0])));

	it = JsonbIteratorInit(&j->root);
	while ((tok = JsonbIteratorNext(&it, &v, true)) != WJB_DONE)
	{
		bool		known = false;
		char	   *key;

		if (tok != WJB_KEY)
			continue;
		key = pnstrdup(v.val.string.val, v.val.string.len);
		for (i = 0; allowed[i]; i++)
			if (strcmp(key, allowed[i]) == 0)
				known = true;
		if (!known)
		{
			initStringInfo(&keys);
			for (i = 0; allowed[i]; i++)
				appendStringInfo(&keys, "%s%s", i ? ", " : "", allowed[i]);
			ereport(ERROR,
					(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
					 errmsg("unknown key \"%s\" in %s", key, what),
					 errhint("The keys allowed in %s are: %s.", what, keys.data)));
		}
		tok = JsonbIteratorNext(&it, &v, true);
		if (strings_only && tok == WJB_VALUE &&
			v.type != jbvString && v.type != jbvNull)
			ereport(ERROR,
					(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
					 errmsg("%s.%s must be a string", what, key),
					 errhint("Every value in %s is a text or null.", what)));
	}
}

/*
 * check_text_len: ERROR (22001) if s has more than max characters.
 */
static void
check_text_len(const char *s, int max, const char *what)
{
	if (s && pg_mbstrlen(s) > max)
		ereport(ERROR,
				(errcode(ERRCODE_STRING_DATA_RIGHT_TRUNCATION),
				 errmsg("%s is longer than %d characters", what, max),
				 max == OTP_MAX_TEXT_CHARS ?
				 errhint("WhatsApp accepts text messages of at most %d characters.",
						 OTP_MAX_TEXT_CHARS) :
				 errhint("Shorten it to at most %d characters.", max)));
}

/*
 * check_url: ERROR (22023) unless url is an absolute http(s) URL.
 */
static void
check_url(const char *url, const char *what)
{
	const char *why = NULL;

	if (url && !otp_url_is_http(url, &why))
		ereport(ERROR,
				(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
				 errmsg("%s is not an absolute http(s) URL: \"%s\"", what, url),
				 errdetail("%s", why),
				 errhint("Use a URL such as https://example.com/otp/callback.")));
}

/*
 * check_header_value: ERROR (22023) if s, which becomes an HTTP header value,
 * holds a control character (CR and LF would start another header or
 * request) or is longer than OTP_MAX_HEADER_VALUE bytes.  The worker checks
 * again where it builds the request.
 */
static void
check_header_value(const char *s, const char *what)
{
	const unsigned char *p;

	if (s == NULL)
		return;
	if (strlen(s) > OTP_MAX_HEADER_VALUE)
		ereport(ERROR,
				(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
				 errmsg("%s is longer than %d bytes", what, OTP_MAX_HEADER_VALUE),
				 errhint("Pass the access token exactly as your provider issued it.")));
	for (p = (const unsigned char *) s; *p; p++)
		if (*p < 0x20 || *p == 0x7f)
			ereport(ERROR,
					(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
					 errmsg("%s contains a control character", what),
					 errdetail("It is sent as an HTTP header value, where control characters such as CR and LF are not allowed."),
					 errhint("Pass the access token exactly as your provider issued it, without line breaks.")));
}

/*
 * otp_error_no_instance: ERROR PT404 for instance id (a uuid Datum).
 */
void
otp_error_no_instance(Datum id)
{
	ereport(ERROR,
			(errcode(OTP_ERRCODE_NOT_FOUND),
			 errmsg("instance %s does not exist",
					DatumGetCString(DirectFunctionCall1(uuid_out, id))),
			 errhint("Pass the uuid returned by otp_link_instance_create.")));
}

/*
 * otp_normalize_phone_or_error: normalised digits of input (palloc'd), or
 * ERROR (22023) naming what.
 */
char *
otp_normalize_phone_or_error(const char *input, const char *what)
{
	char		digits[16];

	const char *p = input;

	while (*p == ' ' || *p == '(')
		p++;
	if (!otp_normalize_phone(input, digits, sizeof(digits)))
		ereport(ERROR,
				(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
				 errmsg("invalid %s: \"%s\"", what, input),
				 *p == '0' ?
				 errdetail("A number starting with 0 is a national number; WhatsApp numbers start with the country code.") :
				 errdetail("A phone number has 8 to 15 digits, not starting with 0, after removing '+', spaces, dashes, dots, parentheses and an @c.us suffix."),
				 *p == '0' ?
				 errhint("Write it with the country code instead of the leading 0, e.g. +20 155 373 0661 for 0155 373 0661.") :
				 errhint("Write it in international format, e.g. +20 155 373 0661.")));
	return pstrdup(digits);
}

/*
 * link_url_check: ERROR unless tmpl holds {token} and is an http(s) URL
 * once a token is substituted.
 */
static void
link_url_check(const char *tmpl, const char *what)
{
	StringInfoData buf;
	const char *p;

	if (tmpl == NULL)
		return;
	p = strstr(tmpl, "{token}");
	if (p == NULL)
		ereport(ERROR,
				(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
				 errmsg("%s must contain the placeholder {token}", what),
				 errhint("Use a URL such as https://app.example/login?token={token}.")));
	initStringInfo(&buf);
	appendBinaryStringInfo(&buf, tmpl, p - tmpl);
	appendStringInfoString(&buf, "AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA");
	appendStringInfoString(&buf, p + 7);
	check_url(buf.data, what);
}

/*
 * otp_link_url_render: tmpl with its first {token} replaced by token,
 * palloc'd.
 */
char *
otp_link_url_render(const char *tmpl, const char *token)
{
	StringInfoData buf;
	const char *p = strstr(tmpl, "{token}");

	initStringInfo(&buf);
	if (p == NULL)
	{
		appendStringInfoString(&buf, tmpl);
		return buf.data;
	}
	appendBinaryStringInfo(&buf, tmpl, p - tmpl);
	appendStringInfoString(&buf, token);
	appendStringInfoString(&buf, p + 7);
	return buf.data;
}

/*
 * check_options: validate otp_link_instance_create's options object.
 */
static void
check_options(Jsonb *options)
{
	Jsonb	   *messages;
	Jsonb	   *callback;
	Jsonb	   *reply;
	Jsonb	   *limits;
	char	   *type;
	int			i;

	check_object_keys(options, "options", option_keys, false);

	messages = otp_jsonb_get_object(options, "messages", "options");
	if (messages)
	{
		const char *texts[3];

		check_object_keys(messages, "options.messages", message_keys, true);
		for (i = 0; message_keys[i]; i++)
			check_text_len(otp_jsonb_get_text(messages, message_keys[i]),
						   OTP_MAX_TEXT_CHARS, "message text");
		for (i = 0; i < 3; i++)
			texts[i] = otp_jsonb_get_text(messages, message_keys[i + 1]);
		check_texts(otp_jsonb_get_text(messages, "prompt"), texts,
					otp_jsonb_get_text(options, "link_url"), NULL, true);
	}
	callback = otp_jsonb_get_object(options, "callback", "options");
	if (callback)
	{
		check_object_keys(callback, "options.callback", callback_keys, true);
		for (i = 0; callback_keys[i]; i++)
			check_url(otp_jsonb_get_text(callback, callback_keys[i]), "callback URL");
	}
	link_url_check(otp_jsonb_get_text(options, "link_url"), "options.link_url");

	reply = otp_jsonb_get_object(options, "reply_endpoint", "options");
	if (reply)
	{
		check_object_keys(reply, "options.reply_endpoint", reply_keys, true);
		check_header_value(otp_jsonb_get_text(reply, "token"),
						   "options.reply_endpoint.token");
		type = otp_jsonb_get_text(reply, "type");
		if (type == NULL || strcmp(type, "none") == 0)
			 /* nothing to check */ ;
		else if (strcmp(type, "whatsapp_cloud") == 0 || strcmp(type, "http") == 0)
		{
			char	   *url = otp_jsonb_get_text(reply, "url");

			if (url == NULL)
				ereport(ERROR,
						(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
						 errmsg("options.reply_endpoint.url is required for type \"%s\"", type),
						 errhint("Give the URL replies are posted to.")));
			check_url(url, "options.reply_endpoint.url");
			if (strcmp(type, "whatsapp_cloud") == 0 &&
				otp_jsonb_get_text(reply, "token") == NULL)
				ereport(ERROR,
						(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
						 errmsg("options.reply_endpoint.token is required for type \"whatsapp_cloud\""),
						 errhint("Use the access token of your WhatsApp Cloud API app.")));
		}
		else
			ereport(ERROR,
					(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
					 errmsg("unknown reply endpoint type \"%s\"", type),
					 errhint("Use \"none\", \"whatsapp_cloud\" or \"http\".")));
	}

	limits = otp_jsonb_get_object(options, "limits", "options");
	if (limits)
	{
		check_object_keys(limits, "options.limits", limit_keys, false);
		for (i = 0; limit_keys[i]; i++)
			(void) otp_jsonb_get_int(limits, limit_keys[i], 1);
	}
}

/*
 * otp_instance_limit: the instance's options.limits.<key>, or dflt.
 */
int
otp_instance_limit(Jsonb *options, const char *key, int dflt)
{
	Jsonb	   *limits;
	int			n;

	if (options == NULL)
		return dflt;
	limits = otp_jsonb_get_object(options, "limits", "options");
	n = otp_jsonb_get_int_clamped(limits, key, dflt);
	return n;
}

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

/* ----------------------------------------------------------------
 * otp_link_instance_create(phone text, name text, options jsonb)
 * ----------------------------------------------------------------
 */
Datum
otp_link_instance_create(PG_FUNCTION_ARGS)
{
	static SPIPlanPtr plan = NULL;
	char	   *digits;
	char	   *name = NULL;
	Jsonb	   *options;
	char	   *secret;
	Datum		values[4];
	char		nulls[4] = {' ', ' ', ' ', ' '};
	Oid			types[4] = {TEXTOID, TEXTOID, JSONBOID, TEXTOID};
	StringInfoData buf;
	char	   *id;
	char	   *created;
	int			ret;

	if (PG_ARGISNULL(0))
		ereport(ERROR,
				(errcode(ERRCODE_NULL_VALUE_NOT_ALLOWED),
				 errmsg("phone must not be null"),
				 errhint("Pass the instance's WhatsApp number, e.g. +20 155 373 0661.")));
	digits = otp_normalize_phone_or_error(text_to_cstring(PG_GETARG_TEXT_PP(0)),
										  "phone number");
	if (!PG_ARGISNULL(1))
	{
		name = text_to_cstring(PG_GETARG_TEXT_PP(1));
		check_text_len(name, OTP_MAX_NAME_CHARS, "name");
	}
	if (PG_ARGISNULL(2))
		options = DatumGetJsonbP(DirectFunctionCall1(jsonb_in, CStringGetDatum("{}")));
	else
		options = PG_GETARG_JSONB_P(2);
	check_options(options);
	secret = otp_random_secret();

	values[0] = CStringGetTextDatum(digits);
	values[1] = name ? CStringGetTextDatum(name) : (Datum) 0;
	nulls[1] = name ? ' ' : 'n';
	values[2] = JsonbPGetDatum(options);
	values[3] = CStringGetTextDatum(secret);

	otp_spi_connect();
	otp_prepare(&plan,
				"INSERT INTO otp_link.instances (phone, name, options, secret) "
				"VALUES ($1, $2, $3, $4) ON CONFLICT (phone) DO NOTHING "
				"RETURNING id::text, "
				"to_char(created_at AT TIME ZONE 'UTC', 'YYYY-MM-DD\"T\"HH24:MI:SS\"+00:00\"')",
				4, types);
	ret = otp_spi_execute(plan, values, nulls, 1);
	if (ret != SPI_OK_INSERT_RETURNING)
		elog(ERROR, "SPI_execute_plan failed: %s", SPI_result_code_string(ret));
	if (SPI_processed != 1)
		ereport(ERROR,
				(errcode(ERRCODE_UNIQUE_VIOLATION),
				 errmsg("an instance for phone number %s already exists", digits),
				 errhint("Look it up in otp_link.instances, or delete it first.")));
	id = otp_spi_text(1);
	created = otp_spi_text(2);
	SPI_finish();

	initStringInfo(&buf);
	appendStringInfoChar(&buf, '{');
	otp_json_str(&buf, "uuid", id);
	otp_json_str(&buf, "phone", digits);
	otp_json_str(&buf, "chat_id", psprintf("%s@c.us", digits));
	otp_json_str(&buf, "name", name);
	otp_json_str(&buf, "secret", secret);
	otp_json_str(&buf, "created_at", created);
	PG_RETURN_JSONB_P(otp_json_finish(&buf));
}

/*
 * resolve_text: the first non-NULL of the link's, the instance's and the
 * built-in value.
 */
static const char *
resolve_text(Jsonb *given, Jsonb *inst, const char *key, const char *dflt)
{
	char	   *v = otp_jsonb_get_text(given, key);

	if (v == NULL)
		v = otp_jsonb_get_text(inst, key);
	return v ? v : dflt;
}

/*
 * rendered_chars: characters of tmpl once rendered with a link of
 * link_len characters.
 */
static int
rendered_chars(const char *tmpl, const char *name, int link_len)
{
	StringInfoData buf;
	char	   *fake_link = palloc(link_len + 1);

	memset(fake_link, 'x', link_len);
	fake_link[link_len] = '\0';
	initStringInfo(&buf);
	otp_render_template(&buf, tmpl, fake_link, name, "AAAAAAAA");
	return pg_mbstrlen(buf.data);
}

/*
 * check_texts: ERROR unless a link's texts can be sent (22023, 22001):
 * {link} only in the success text, and there only with a link URL (unless
 * link_url_may_come: an instance's options, where generate may still pass
 * one); every text within WhatsApp's limit once rendered with name and the
 * longest link; the prompt leaves room for the code and its warning.
 * prompt and texts[0..2] (success, failed, expired) may be NULL: not given.
 * Shared by otp_link_generate and the instance options' check, so that an
 * instance whose texts no generate could use is refused when it is made.
 */
static void
check_texts(const char *prompt, const char *const *texts, const char *link_url,
			const char *name, bool link_url_may_come)
{
	int			link_len = link_url ? (int) strlen(link_url) + 36 : 0;
	int			i;

	if (prompt && otp_template_has(prompt, "{link}"))
		ereport(ERROR,
				(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
				 errmsg("the prompt cannot contain {link}"),
				 errdetail("The login link exists only once the code is verified."),
				 errhint("Use {link} in the success text.")));
	for (i = 1; i < 3; i++)
		if (texts[i] && otp_template_has(texts[i], "{link}"))
			ereport(ERROR,
					(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
					 errmsg("message.%s cannot contain {link}", message_keys[i + 1]),
					 errdetail("A login link is issued only when the code is verified."),
					 errhint("Use {link} in the success text only.")));
	if (link_url == NULL && !link_url_may_come &&
		texts[0] && otp_template_has(texts[0], "{link}"))
		ereport(ERROR,
				(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
				 errmsg("message text uses {link} but no link URL is known"),
				 errhint("Pass link_url (e.g. https://app.example/login?token={token}) or set link_url in the instance's options.")));
	for (i = 0; i < 3; i++)
		if (texts[i] && rendered_chars(texts[i], name, link_len) > OTP_MAX_TEXT_CHARS)
			ereport(ERROR,
					(errcode(ERRCODE_STRING_DATA_RIGHT_TRUNCATION),
					 errmsg("message.%s is longer than %d characters once rendered",
							message_keys[i + 1], OTP_MAX_TEXT_CHARS),
					 errhint("WhatsApp accepts text messages of at most %d characters.",
							 OTP_MAX_TEXT_CHARS)));
	/* the prompt plus " [XXXXXXXX] - DO NOT CHANGE THIS MESSAGE" */
	if (prompt && rendered_chars(prompt, name, 0) + 40 > OTP_MAX_TEXT_CHARS)
		ereport(ERROR,
				(errcode(ERRCODE_STRING_DATA_RIGHT_TRUNCATION),
				 errmsg("message.prompt is longer than %d characters once rendered",
						OTP_MAX_TEXT_CHARS - 40),
				 errhint("WhatsApp accepts text messages of at most %d characters, and the code and its warning take 40.",
						 OTP_MAX_TEXT_CHARS)));
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

/* ----------------------------------------------------------------
 * The instance row, read without the executor
 *
 * otp_link_generate needs one row of otp_link.instances per call.  Run
 * through SPI, that SELECT costs an executor start-up and shutdown, about a
 * tenth of a generate.  Instead, each backend remembers where each
 * instance's row was last found (its TID) and fetches the tuple at that
 * TID directly, under a fresh snapshot.  Only one version of a row with a
 * given id can be visible in a snapshot (the id is the primary key), so if
 * the tuple there is visible and has that id it is exactly the row the
 * SELECT would have returned; nothing is cached but its location.  When it
 * is not (updated, deleted, vacuumed away, another table after a
 * re-install), the row is looked up through the primary key index, and its
 * new TID remembered.
 * ----------------------------------------------------------------
 */
typedef struct InstanceHint
{
	pg_uuid_t	id;				/* hash key */
	ItemPointerData tid;		/* where the row was last seen */
} InstanceHint;

#define INSTANCE_HINTS_MAX	1024

static HTAB *instance_hints = NULL;
static Oid	instance_hints_relid = InvalidOid;
static AttrNumber instance_attnums[4];	/* id, phone, name, options; per call */

/*
 * instance_tuple_matches: tuple is the row of otp_link.instances with id;
 * if so, copies its phone, name and options into the current context.
 */
static bool
instance_tuple_matches(HeapTuple tuple, TupleDesc desc, pg_uuid_t *id,
					   char **phone, char **name, Jsonb **options)
{
	bool		isnull;
	Datum		d;

	d = heap_getattr(tuple, instance_attnums[0], desc, &isnull);
	if (isnull || memcmp(DatumGetUUIDP(d), id, sizeof(pg_uuid_t)) != 0)
		return false;
	d = heap_getattr(tuple, instance_attnums[1], desc, &isnull);
	*phone = isnull ? NULL : TextDatumGetCString(d);
	d = heap_getattr(tuple, instance_attnums[2], desc, &isnull);
	*name = isnull ? NULL : TextDatumGetCString(d);
	d = heap_getattr(tuple, instance_attnums[3], desc, &isnull);
	*options = isnull ? NULL : DatumGetJsonbPCopy(d);
	return true;
}

/*
 * otp_instance_lookup: phone, name and options of instance id (palloc'd in
 * the current context) as a SELECT run now would see them; false if there
 * is no such instance.  Takes AccessShareLock on otp_link.instances (kept
 * until the end of the transaction, as a SELECT's).  ERRORs if the table
 * is missing or not a heap table.
 */
bool
otp_instance_lookup(Datum id, char **phone, char **name, Jsonb **options)
{
	pg_uuid_t  *key = DatumGetUUIDP(id);
	Oid			relid;
	Relation	rel;
	TupleDesc	desc;
	Snapshot	snapshot;
	InstanceHint *hint;
	HeapTupleData tuple;
	Buffer		buf;
	bool		found = false;

	/* name lookup and lock together, as a SELECT's: no race with DDL */
	otp_check_schema();
	relid = RangeVarGetRelid(makeRangeVar("otp_link", "instances", -1),
							 AccessShareLock, true);
	if (!OidIsValid(relid))
		ereport(ERROR,
				(errcode(ERRCODE_UNDEFINED_TABLE),
				 errmsg("table otp_link.instances does not exist"),
				 errhint("Reinstall the extension otp_link.")));
	rel = table_open(relid, NoLock);
	if (rel->rd_rel->relam != HEAP_TABLE_AM_OID)
		ereport(ERROR,
				(errcode(ERRCODE_FEATURE_NOT_SUPPORTED),
				 errmsg("otp_link.instances must be a heap table")));
	desc = RelationGetDescr(rel);

	/*
	 * The columns, from the descriptor of this very call: an ALTER TABLE
	 * (say by an extension update) keeps the OID but may move, drop or
	 * retype them.
	 */
	{
		const char *cols[4] = {"id", "phone", "name", "options"};
		const Oid	types[4] = {UUIDOID, TEXTOID, TEXTOID, JSONBOID};
		int			i;
		int			j;

		for (i = 0; i < 4; i++)
		{
			instance_attnums[i] = InvalidAttrNumber;
			for (j = 0; j < desc->natts; j++)
			{
				Form_pg_attribute att = TupleDescAttr(desc, j);

				if (!att->attisdropped && att->atttypid == types[i] &&
					strcmp(NameStr(att->attname), cols[i]) == 0)
					instance_attnums[i] = att->attnum;
			}
			if (instance_attnums[i] == InvalidAttrNumber)
				ereport(ERROR,
						(errcode(ERRCODE_UNDEFINED_COLUMN),
						 errmsg("otp_link.instances has no column \"%s\" of type %s",
								cols[i], format_type_be(types[i])),
						 errhint("Reinstall the extension otp_link.")));
		}
	}

	if (instance_hints == NULL || instance_hints_relid != relid ||
		hash_get_num_entries(instance_hints) >= INSTANCE_HINTS_MAX)
	{
		HASHCTL		ctl;

		if (instance_hints)
			hash_destroy(instance_hints);
		instance_hints = NULL;
		ctl.keysize = sizeof(pg_uuid_t);
		ctl.entrysize = sizeof(InstanceHint);
		instance_hints = hash_create("otp_link instance hints", 64, &ctl,
									 HASH_ELEM | HASH_BLOBS);
		instance_hints_relid = relid;
	}

	/*
	 * As SPI does for a statement that is not read-only: first make the
	 * calling statement's own writes visible (e.g. an UPDATE of the
	 * instance ... RETURNING otp_link_generate(id)), then a snapshot.
	 */
	CommandCounterIncrement();
	snapshot = RegisterSnapshot(GetTransactionSnapshot());

	/* where the row was last seen */
	hint = (InstanceHint *) hash_search(instance_hints, key, HASH_FIND, NULL);
	/* VACUUM may have truncated the table below it (our lock keeps it now) */
	if (hint &&
		ItemPointerGetBlockNumber(&hint->tid) < RelationGetNumberOfBlocks(rel))
	{
		tuple.t_self = hint->tid;
		if (heap_fetch(rel, snapshot, &tuple, &buf, false))
		{
			found = instance_tuple_matches(&tuple, desc, key, phone, name, options);
			ReleaseBuffer(buf);
		}
	}

	/* else through the primary key */
	if (!found)
	{
		ScanKeyData skey;
		SysScanDesc scan;
		HeapTuple	tup;

		if (rel->rd_pkindex == InvalidOid)
			list_free(RelationGetIndexList(rel));	/* sets rd_pkindex */
		if (!OidIsValid(rel->rd_pkindex))
			elog(ERROR, "otp_link.instances has no primary key");
		ScanKeyInit(&skey, instance_attnums[0], BTEqualStrategyNumber,
					F_UUID_EQ, id);
		scan = systable_beginscan(rel, rel->rd_pkindex, true, snapshot, 1, &skey);
		tup = systable_getnext(scan);
		if (HeapTupleIsValid(tup) &&
			instance_tuple_matches(tup, desc, key, phone, name, options))
		{
			found = true;
			hint = (InstanceHint *) hash_search(instance_hints, key, HASH_ENTER, NULL);
			hint->tid = tup->t_self;
		}
		else if (hint)
			hash_search(instance_hints, key, HASH_REMOVE, NULL);
		systable_endscan(scan);
	}

	UnregisterSnapshot(snapshot);
	table_close(rel, NoLock);
	return found;
}

/* ----------------------------------------------------------------
 * otp_link_generate(instance uuid, expires integer, name text,
 *		message jsonb, callback jsonb, phone text, binding text,
 *		link_url text, rate_key text, metadata jsonb) RETURNS jsonb
 * ----------------------------------------------------------------
 */
Datum
otp_link_generate(PG_FUNCTION_ARGS)
{
	static SPIPlanPtr ins_plan = NULL;
	Oid			ins_types[11] = {UUIDOID, BYTEAOID, TEXTOID, JSONBOID, JSONBOID,
		TEXTOID, BYTEAOID, TEXTOID, TEXTOID, JSONBOID, INT4OID};
	Datum		values[11];
	char		nulls[11];
	int32		expires;
	char	   *name = NULL;
	Jsonb	   *message = NULL;
	Jsonb	   *callback = NULL;
	char	   *phone = NULL;
	char	   *binding = NULL;
	char	   *link_url = NULL;
	char	   *rate_key = NULL;
	Jsonb	   *metadata = NULL;
	char	   *inst_phone;
	char	   *inst_name;
	Jsonb	   *inst_options = NULL;
	Jsonb	   *inst_messages;
	Jsonb	   *inst_callback;
	const char *prompt;
	const char *texts[4];
	char	   *prompt_rendered;
	char	   *prompt_utf8;
	char		code[OTP_CODE_LEN + 1];
	StringInfoData buf;
	OtpJsonb	jb;
	Jsonb	   *result;
	char	   *id = NULL;
	char	   *created = NULL;
	char	   *expires_at = NULL;
	int			attempt;
	int			i;
	bool		isnull;

	/* ---- arguments ---- */
	if (PG_ARGISNULL(0))
		ereport(ERROR,
				(errcode(ERRCODE_NULL_VALUE_NOT_ALLOWED),
				 errmsg("instance must not be null"),
				 errhint("Pass the uuid returned by otp_link_instance_create.")));
	expires = PG_ARGISNULL(1) ? 1800 : PG_GETARG_INT32(1);
	if (expires <= 0 || expires > OTP_MAX_EXPIRES)
		ereport(ERROR,
				(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
				 errmsg("expires must be between 1 and %d seconds, not %d",
						OTP_MAX_EXPIRES, expires),
				 errhint("Omit it for the default of 1800 seconds (30 minutes).")));
	if (!PG_ARGISNULL(2))
	{
		name = text_to_cstring(PG_GETARG_TEXT_PP(2));
		check_text_len(name, OTP_MAX_NAME_CHARS, "name");
	}
	if (!PG_ARGISNULL(3))
	{
		message = PG_GETARG_JSONB_P(3);
		check_object_keys(message, "message", message_keys, true);
	}
	if (!PG_ARGISNULL(4))
	{
		callback = PG_GETARG_JSONB_P(4);
		check_object_keys(callback, "callback", callback_keys, true);
	}
	if (!PG_ARGISNULL(5))
		phone = otp_normalize_phone_or_error(text_to_cstring(PG_GETARG_TEXT_PP(5)),
											 "phone number");
	if (!PG_ARGISNULL(6))
	{
		binding = text_to_cstring(PG_GETARG_TEXT_PP(6));
		if (strlen(binding) < 16 || strlen(binding) > OTP_MAX_KEY_LEN)
			ereport(ERROR,
					(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
					 errmsg("binding must be 16 to %d bytes long", OTP_MAX_KEY_LEN),
					 errhint("Use a random value of at least 128 bits kept in the browser, e.g. a cookie.")));
	}
	if (!PG_ARGISNULL(7))
	{
		link_url = text_to_cstring(PG_GETARG_TEXT_PP(7));
		link_url_check(link_url, "link_url");
	}
	if (!PG_ARGISNULL(8))
	{
		rate_key = text_to_cstring(PG_GETARG_TEXT_PP(8));
		if (strlen(rate_key) > OTP_MAX_KEY_LEN)
			ereport(ERROR,
					(errcode(ERRCODE_STRING_DATA_RIGHT_TRUNCATION),
					 errmsg("rate_key is longer than %d bytes", OTP_MAX_KEY_LEN),
					 errhint("Use a short identifier of the asker, e.g. \"ip:203.0.113.5\" or \"user:42\".")));
	}
	if (!PG_ARGISNULL(9))
	{
		metadata = PG_GETARG_JSONB_P(9);
		if (VARSIZE(metadata) > MAX_METADATA_BYTES)
			ereport(ERROR,
					(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
					 errmsg("metadata is larger than %d bytes", MAX_METADATA_BYTES),
					 errhint("Keep an identifier in metadata and the rest in your own tables.")));
	}

	/* ---- the instance ---- */
	if (!otp_instance_lookup(PG_GETARG_DATUM(0), &inst_phone, &inst_name, &inst_options))
		otp_error_no_instance(PG_GETARG_DATUM(0));
	if (name == NULL)
		name = inst_name;

	otp_spi_connect();
	inst_messages = otp_jsonb_get_object(inst_options, "messages", "options");
	inst_callback = otp_jsonb_get_object(inst_options, "callback", "options");
	if (link_url == NULL)
		link_url = otp_jsonb_get_text(inst_options, "link_url");

	/* ---- texts ---- */
	prompt = resolve_text(message, inst_messages, "prompt",
						  name ? "Give me link to login at {name}" : "Give me link to login");
	texts[0] = resolve_text(message, inst_messages, "success",
							link_url ? "Here is your login link: {link}" :
							"Your WhatsApp number is verified.");
	texts[1] = resolve_text(message, inst_messages, "failed",
							"Login failed, please try again later.");
	texts[2] = resolve_text(message, inst_messages, "expired",
							"The link has expired, please ask for a new one.");
	check_texts(prompt, texts, link_url, name, false);

	/* ---- callbacks ---- */
	otp_jb_begin(&jb);
	for (i = 0; callback_keys[i]; i++)
	{
		const char *url = resolve_text(callback, inst_callback, callback_keys[i], NULL);

		check_url(url, "callback URL");
		if (url)
			otp_jb_str(&jb, callback_keys[i], url);
	}
	values[4] = JsonbPGetDatum(otp_jb_finish(&jb));

	if (rate_key)
		check_rate_limit(PG_GETARG_DATUM(0), rate_key, inst_options);

	otp_jb_begin(&jb);
	otp_jb_str(&jb, "prompt", prompt);
	otp_jb_str(&jb, "success", texts[0]);
	otp_jb_str(&jb, "failed", texts[1]);
	otp_jb_str(&jb, "expired", texts[2]);
	values[3] = JsonbPGetDatum(otp_jb_finish(&jb));

	memset(nulls, ' ', sizeof(nulls));
	values[0] = PG_GETARG_DATUM(0);
	values[2] = name ? CStringGetTextDatum(name) : (Datum) 0;
	nulls[2] = name ? ' ' : 'n';
	values[5] = phone ? CStringGetTextDatum(phone) : (Datum) 0;
	nulls[5] = phone ? ' ' : 'n';
	values[6] = binding ? PointerGetDatum(otp_sha256_bytea(binding, strlen(binding))) : (Datum) 0;
	nulls[6] = binding ? ' ' : 'n';
	values[7] = link_url ? CStringGetTextDatum(link_url) : (Datum) 0;
	nulls[7] = link_url ? ' ' : 'n';
	values[8] = rate_key ? CStringGetTextDatum(rate_key) : (Datum) 0;
	nulls[8] = rate_key ? ' ' : 'n';
	values[9] = metadata ? JsonbPGetDatum(metadata) : (Datum) 0;
	nulls[9] = metadata ? ' ' : 'n';
	values[10] = Int32GetDatum(expires);

	otp_prepare(&ins_plan,
				"INSERT INTO otp_link.links (id, instance_id, code_hash, name, messages, callbacks, "
				"phone, binding_hash, link_url, rate_key, metadata, created_at, expires_at) "
				"VALUES (gen_random_uuid(), $1, $2, $3, $4, $5, $6, $7, $8, $9, $10, "
				"statement_timestamp(), statement_timestamp() + make_interval(secs => $11)) "
				"ON CONFLICT (code_hash) DO NOTHING "
				"RETURNING id, created_at, expires_at",
				11, ins_types);

	/* a fresh code until one is not taken (collisions are rare) */
	for (attempt = 0; attempt < CODE_ATTEMPTS; attempt++)
	{
		int			ret;

		otp_random_code(code);
		values[1] = PointerGetDatum(otp_sha256_bytea(code, OTP_CODE_LEN));
		ret = otp_spi_execute(ins_plan, values, nulls, 1);
		if (ret != SPI_OK_INSERT_RETURNING)
			elog(ERROR, "link insert failed: %s", SPI_result_code_string(ret));
		if (SPI_processed == 1)
		{
			HeapTuple	tup = SPI_tuptable->vals[0];
			TupleDesc	desc = SPI_tuptable->tupdesc;

			id = DatumGetCString(DirectFunctionCall1(uuid_out,
													 SPI_getbinval(tup, desc, 1, &isnull)));
			created = otp_format_timestamp(DatumGetTimestampTz(SPI_getbinval(tup, desc, 2, &isnull)));
			expires_at = otp_format_timestamp(DatumGetTimestampTz(SPI_getbinval(tup, desc, 3, &isnull)));
			break;
		}
	}
	SPI_finish();
	if (id == NULL)
		ereport(ERROR,
				(errcode(ERRCODE_INSUFFICIENT_RESOURCES),
				 errmsg("could not find a free code after %d attempts", CODE_ATTEMPTS),
				 errhint("Purge old links (otp_link.retention) so that codes are freed.")));

	/* ---- the response ---- */
	initStringInfo(&buf);
	otp_render_template(&buf, prompt, NULL, name, code);
	prompt_rendered = buf.data;
	prompt_utf8 = pg_server_to_any(prompt_rendered, strlen(prompt_rendered), PG_UTF8);

	otp_jb_begin(&jb);
	otp_jb_str(&jb, "uuid", id);
	otp_jb_str(&jb, "code", code);
	otp_jb_str(&jb, "chat_id", psprintf("%s@c.us", inst_phone));
	otp_jb_str(&jb, "status", "pending");
	otp_jb_str(&jb, "otp_type", "link");
	otp_jb_str(&jb, "expires_at", expires_at);
	otp_jb_str(&jb, "created_at", created);
	otp_jb_str(&jb, "whatsapp_link", otp_whatsapp_url(inst_phone, prompt_utf8, code));
	result = otp_jb_finish(&jb);	/* copies the strings, code included */
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
	StringInfoData buf;
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

	initStringInfo(&buf);
	appendStringInfoChar(&buf, '{');
	otp_json_str(&buf, "uuid", row[0]);
	otp_json_str(&buf, "status", row[1]);
	otp_json_str(&buf, "otp_type", "link");
	otp_json_str(&buf, "chat_id", row[2]);
	otp_json_str(&buf, "verified_chat_id", row[3]);
	otp_json_str(&buf, "created_at", row[4]);
	otp_json_str(&buf, "expires_at", row[5]);
	otp_json_str(&buf, "finished_at", row[6]);
	otp_json_str(&buf, "reason", row[7]);
	otp_json_raw(&buf, "messages_received", row[8]);
	otp_json_raw(&buf, "redeemed", row[9]);
	otp_json_raw(&buf, "phone_bound", row[11]);
	otp_json_raw(&buf, "metadata", row[10]);
	if (extra_key)
		otp_json_raw(&buf, extra_key, extra_val);
	return otp_json_finish(&buf);
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
	result = otp_status_json(values[0], "cancelled", cancelled ? "true" : "false");
	if (result == NULL)
		no_such_link(values[0]);
	SPI_finish();
	PG_RETURN_JSONB_P(result);
}

/* ----------------------------------------------------------------
 * otp_link_instance_update(instance uuid, name text, options jsonb,
 *		rotate_secret boolean) RETURNS jsonb
 *
 * Replaces the name and/or the options (checked like instance_create's)
 * of an instance, and optionally gives it a new signing secret.  Links
 * already generated keep the texts and callbacks they were made with.
 * Returns the instance; "secret" only when it was rotated.
 * ----------------------------------------------------------------
 */
Datum
otp_link_instance_update(PG_FUNCTION_ARGS)
{
	static SPIPlanPtr plan = NULL;
	Oid			types[5] = {UUIDOID, TEXTOID, BOOLOID, JSONBOID, TEXTOID};
	Datum		values[5];
	char		nulls[5] = {' ', ' ', ' ', ' ', ' '};
	char	   *name = NULL;
	Jsonb	   *options = NULL;
	char	   *secret = NULL;
	bool		rotate = !PG_ARGISNULL(3) && PG_GETARG_BOOL(3);
	StringInfoData buf;
	char	   *row[4];
	int			i;

	if (PG_ARGISNULL(0))
		ereport(ERROR,
				(errcode(ERRCODE_NULL_VALUE_NOT_ALLOWED),
				 errmsg("instance must not be null"),
				 errhint("Pass the uuid returned by otp_link_instance_create.")));
	if (!PG_ARGISNULL(1))
	{
		name = text_to_cstring(PG_GETARG_TEXT_PP(1));
		check_text_len(name, OTP_MAX_NAME_CHARS, "name");
	}
	if (!PG_ARGISNULL(2))
	{
		options = PG_GETARG_JSONB_P(2);
		check_options(options);
	}
	if (rotate)
		secret = otp_random_secret();

	values[0] = PG_GETARG_DATUM(0);
	values[1] = name ? CStringGetTextDatum(name) : (Datum) 0;
	nulls[1] = name ? ' ' : 'n';
	values[2] = BoolGetDatum(name != NULL);
	values[3] = options ? JsonbPGetDatum(options) : (Datum) 0;
	nulls[3] = options ? ' ' : 'n';
	values[4] = secret ? CStringGetTextDatum(secret) : (Datum) 0;
	nulls[4] = secret ? ' ' : 'n';

	otp_spi_connect();
	otp_prepare(&plan,
				"UPDATE otp_link.instances SET "
				"name = CASE WHEN $3 THEN $2 ELSE name END, "
				"options = coalesce($4, options), secret = coalesce($5, secret) "
				"WHERE id = $1 RETURNING id::text, phone, name, "
				"to_char(created_at AT TIME ZONE 'UTC', 'YYYY-MM-DD\"T\"HH24:MI:SS\"+00:00\"')",
				5, types);
	if (otp_spi_execute(plan, values, nulls, 1) != SPI_OK_UPDATE_RETURNING)
		elog(ERROR, "instance update failed");
	if (SPI_processed == 0)
		otp_error_no_instance(values[0]);
	for (i = 0; i < 4; i++)
		row[i] = otp_spi_text(i + 1);
	SPI_finish();

	initStringInfo(&buf);
	appendStringInfoChar(&buf, '{');
	otp_json_str(&buf, "uuid", row[0]);
	otp_json_str(&buf, "phone", row[1]);
	otp_json_str(&buf, "chat_id", psprintf("%s@c.us", row[1]));
	otp_json_str(&buf, "name", row[2]);
	if (secret)
		otp_json_str(&buf, "secret", secret);
	otp_json_str(&buf, "created_at", row[3]);
	PG_RETURN_JSONB_P(otp_json_finish(&buf));
}

/* ----------------------------------------------------------------
 * otp_link_destination_allowed(address inet) RETURNS boolean
 *
 * Whether the worker, with otp_link.allow_private_networks off, would
 * connect to address: the very check it makes on each resolved address
 * (http.c), callable without any network traffic.
 * ----------------------------------------------------------------
 */
Datum
otp_link_destination_allowed(PG_FUNCTION_ARGS)
{
	inet	   *addr = PG_GETARG_INET_PP(0);
	struct sockaddr_storage ss;
	char		desc[64];

	memset(&ss, 0, sizeof(ss));
	if (ip_family(addr) == PGSQL_AF_INET)
	{
		struct sockaddr_in *sin = (struct sockaddr_in *) &ss;

		sin->sin_family = AF_INET;
		memcpy(&sin->sin_addr, ip_addr(addr), 4);
	}
	else
	{
		struct sockaddr_in6 *sin6 = (struct sockaddr_in6 *) &ss;

		sin6->sin6_family = AF_INET6;
		memcpy(&sin6->sin6_addr, ip_addr(addr), 16);
	}
	PG_RETURN_BOOL(otp_address_allowed((struct sockaddr *) &ss, desc, sizeof(desc)));
}
