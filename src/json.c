/*-------------------------------------------------------------------------
 *
 * json.c
 *	  JSON for the SQL-callable functions: one writer (otp_jb_*, which
 *	  builds a Jsonb object directly, as jsonb_build_object does) and the
 *	  readers of text and object values in a Jsonb.
 *
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include "utils/builtins.h"

#include "otp_link.h"
#include "json.h"

/*
 * jb_key: push key (referenced, not copied) into the object under
 * construction.  Allocates in CurrentMemoryContext; cannot ERROR short of
 * running out of memory.
 */
static void
jb_key(OtpJsonb *b, const char *key)
{
	JsonbValue	v;

	v.type = jbvString;
	v.val.string.val = unconstify(char *, key);
	v.val.string.len = strlen(key);
	pushJsonbValue(&b->state, WJB_KEY, &v);
}

/*
 * otp_jb_begin, otp_jb_str, otp_jb_finish: build a Jsonb object directly,
 * as jsonb_build_object does, instead of printing JSON text and parsing it
 * again with jsonb_in.  The parse state and the result are palloc'd in the
 * current context.  Keys and string values are referenced, not copied,
 * until otp_jb_finish: they must live until then.  Keys must be distinct
 * (a later one would replace an earlier one, as in jsonb_in); cannot ERROR
 * short of running out of memory.
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

	jb_key(b, key);
	if (val == NULL)
		v.type = jbvNull;
	else
	{
		v.type = jbvString;
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

	jb_key(b, key);
	v.type = jbvBool;
	v.val.boolean = val;
	pushJsonbValue(&b->state, WJB_VALUE, &v);
}

void
otp_jb_int(OtpJsonb *b, const char *key, int64 val)
{
	JsonbValue	v;

	jb_key(b, key);
	v.type = jbvNumeric;
	v.val.numeric = int64_to_numeric(val);
	pushJsonbValue(&b->state, WJB_VALUE, &v);
}

/*
 * otp_jb_raw: the JSON text raw (a column's text output: a number, a
 * boolean, an object...) as the value under key; NULL gives null.  The
 * value is the same as jsonb_in would make of raw in place.  Allocates in
 * CurrentMemoryContext; ERRORs (22P02) if raw is not JSON.
 */
void
otp_jb_raw(OtpJsonb *b, const char *key, const char *raw)
{
	JsonbValue	v;
	Jsonb	   *j;

	jb_key(b, key);
	if (raw == NULL)
	{
		v.type = jbvNull;
		pushJsonbValue(&b->state, WJB_VALUE, &v);
		return;
	}
	j = DatumGetJsonbP(DirectFunctionCall1(jsonb_in, CStringGetDatum(raw)));
	if (JB_ROOT_IS_SCALAR(j))
	{
		if (!JsonbExtractScalar(&j->root, &v))
			elog(ERROR, "could not extract a scalar from jsonb");
	}
	else
	{
		v.type = jbvBinary;
		v.val.binary.data = &j->root;
		v.val.binary.len = VARSIZE(j) - VARHDRSZ;
	}
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
