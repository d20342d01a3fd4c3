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
 * jb_pair: the next pair of the object under construction, its key set
 * (referenced, not copied).  Allocates in CurrentMemoryContext once more
 * than OTP_JB_INLINE pairs are given; cannot ERROR short of running out of
 * memory.
 */
static JsonbValue *
jb_pair(OtpJsonb *b, const char *key)
{
	JsonbPair  *p;

	if (b->npairs == b->maxpairs)
	{
		JsonbPair  *more = palloc(2 * b->maxpairs * sizeof(JsonbPair));

		memcpy(more, b->pairs, b->npairs * sizeof(JsonbPair));
		b->pairs = more;
		b->maxpairs *= 2;
	}
	p = &b->pairs[b->npairs];
	p->key.type = jbvString;
	p->key.val.string.val = unconstify(char *, key);
	p->key.val.string.len = strlen(key);
	p->order = b->npairs++;
	return &p->value;
}

/*
 * otp_jb_begin, otp_jb_str, otp_jb_finish: build a Jsonb object directly,
 * as jsonb_build_object does, instead of printing JSON text and parsing it
 * again with jsonb_in.  The pairs are collected in b (palloc'd in the
 * current context beyond OTP_JB_INLINE of them), the result is palloc'd
 * in the current context.  Keys and string values are referenced, not
 * copied, until otp_jb_finish: they must live until then.  Keys should be
 * distinct (a later one replaces an earlier one, as in jsonb_in); cannot
 * ERROR short of running out of memory.
 */
void
otp_jb_begin(OtpJsonb *b)
{
	b->pairs = b->inline_pairs;
	b->npairs = 0;
	b->maxpairs = OTP_JB_INLINE;
	b->nested = false;
}

void
otp_jb_str(OtpJsonb *b, const char *key, const char *val)
{
	JsonbValue *v = jb_pair(b, key);

	if (val == NULL)
		v->type = jbvNull;
	else
	{
		v->type = jbvString;
		v->val.string.val = unconstify(char *, val);
		v->val.string.len = strlen(val);
	}
}

/*
 * otp_jb_bool, otp_jb_int: a boolean or integer value under key.
 */
void
otp_jb_bool(OtpJsonb *b, const char *key, bool val)
{
	JsonbValue *v = jb_pair(b, key);

	v->type = jbvBool;
	v->val.boolean = val;
}

void
otp_jb_int(OtpJsonb *b, const char *key, int64 val)
{
	JsonbValue *v = jb_pair(b, key);

	v->type = jbvNumeric;
	v->val.numeric = int64_to_numeric(val);
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
	JsonbValue *v = jb_pair(b, key);
	Jsonb	   *j;

	if (raw == NULL)
	{
		v->type = jbvNull;
		return;
	}
	j = DatumGetJsonbP(DirectFunctionCall1(jsonb_in, CStringGetDatum(raw)));
	if (JB_ROOT_IS_SCALAR(j))
	{
		if (!JsonbExtractScalar(&j->root, v))
			elog(ERROR, "could not extract a scalar from jsonb");
	}
	else
	{
		v->type = jbvBinary;
		v->val.binary.data = &j->root;
		v->val.binary.len = VARSIZE(j) - VARHDRSZ;
		b->nested = true;
	}
}

/*
 * jb_pair_before: whether pair a sorts before pair b in a Jsonb object:
 * shorter keys first, then bytewise (as lengthCompareJsonbPair), and of
 * two equal keys the later given one first (the one that is kept).
 */
static bool
jb_pair_before(const JsonbPair *a, const JsonbPair *b)
{
	int			cmp;

	if (a->key.val.string.len != b->key.val.string.len)
		return a->key.val.string.len < b->key.val.string.len;
	cmp = memcmp(a->key.val.string.val, b->key.val.string.val,
				 a->key.val.string.len);
	return cmp != 0 ? cmp < 0 : a->order > b->order;
}

/*
 * jb_entry_len: the bytes that the value v (a string, a boolean or null)
 * takes in a Jsonb container's data, and its JEntry type bits in *type.
 * Any other type is a caller's bug: elog ERROR.
 */
static uint32
jb_entry_len(const JsonbValue *v, uint32 *type)
{
	switch (v->type)
	{
		case jbvString:
			*type = JENTRY_ISSTRING;
			return v->val.string.len;
		case jbvBool:
			*type = v->val.boolean ? JENTRY_ISBOOL_TRUE : JENTRY_ISBOOL_FALSE;
			return 0;
		case jbvNull:
			*type = JENTRY_ISNULL;
			return 0;
		default:
			elog(ERROR, "unexpected jsonb value type %d", (int) v->type);
	}
	return 0;					/* keep the compiler quiet */
}

/*
 * jb_write_flat: the Jsonb of an object of n sorted, distinct pairs whose
 * values are strings, booleans or nulls, written directly in the layout
 * that JsonbValueToJsonb gives it (convertJsonbObject: the header, the
 * JEntries of the keys then of the values, each a length or, every
 * JB_OFFSET_STRIDE entries, the end offset; then the keys' and the
 * strings' bytes), without its intermediate buffer.  palloc'd; ERRORs
 * (54000) if the object is too large for a Jsonb.
 */
static Jsonb *
jb_write_flat(const JsonbPair *pairs, int n)
{
	Size		size = VARHDRSZ + sizeof(uint32) + 2 * n * sizeof(JEntry);
	Jsonb	   *res;
	JEntry	   *entries;
	char	   *data;
	uint32		total = 0;
	int			i;

	for (i = 0; i < n; i++)
		size += pairs[i].key.val.string.len +
			(pairs[i].value.type == jbvString ? pairs[i].value.val.string.len : 0);
	if (size - VARHDRSZ - sizeof(uint32) > JENTRY_OFFLENMASK)
		ereport(ERROR,
				(errcode(ERRCODE_PROGRAM_LIMIT_EXCEEDED),
				 errmsg("total size of jsonb object elements exceeds the maximum of %d bytes",
						JENTRY_OFFLENMASK)));
	res = palloc(size);
	SET_VARSIZE(res, size);
	res->root.header = n | JB_FOBJECT;
	entries = res->root.children;
	data = (char *) &entries[2 * n];
	for (i = 0; i < 2 * n; i++)
	{
		const JsonbValue *v = i < n ? &pairs[i].key : &pairs[i - n].value;
		uint32		type;
		uint32		len = jb_entry_len(v, &type);

		if (len > 0)
			memcpy(data + total, v->val.string.val, len);
		total += len;
		entries[i] = (i % JB_OFFSET_STRIDE) == 0 ?
			type | total | JENTRY_HAS_OFF : type | len;
	}
#ifdef USE_ASSERT_CHECKING
	{
		JsonbValue	obj;
		Jsonb	   *ref;

		obj.type = jbvObject;
		obj.val.object.nPairs = n;
		obj.val.object.pairs = unconstify(JsonbPair *, pairs);
		ref = JsonbValueToJsonb(&obj);
		Assert(VARSIZE(ref) == size && memcmp(ref, res, size) == 0);
	}
#endif
	return res;
}

/*
 * otp_jb_finish: the Jsonb of the pairs given, palloc'd.  Scalar values
 * only (the usual case): the pairs are sorted and made unique here, as
 * pushJsonbValue would, and written by jb_write_flat (strings, booleans
 * and nulls) or JsonbValueToJsonb (with numbers).  With a
 * container among the values (otp_jb_raw of an object or array), through
 * pushJsonbValue, which unpacks it.
 */
Jsonb *
otp_jb_finish(OtpJsonb *b)
{
	JsonbValue	obj;
	int			i;
	int			j;
	int			n;

	if (b->nested)
	{
		JsonbParseState *state = NULL;

		pushJsonbValue(&state, WJB_BEGIN_OBJECT, NULL);
		for (i = 0; i < b->npairs; i++)
		{
			pushJsonbValue(&state, WJB_KEY, &b->pairs[i].key);
			pushJsonbValue(&state, WJB_VALUE, &b->pairs[i].value);
		}
		return JsonbValueToJsonb(pushJsonbValue(&state, WJB_END_OBJECT, NULL));
	}

	/* insertion sort: objects of a few keys */
	for (i = 1; i < b->npairs; i++)
	{
		JsonbPair	p = b->pairs[i];

		for (j = i; j > 0 && jb_pair_before(&p, &b->pairs[j - 1]); j--)
			b->pairs[j] = b->pairs[j - 1];
		b->pairs[j] = p;
	}
	/* of equal keys keep the first, the one given last */
	n = 0;
	for (i = 0; i < b->npairs; i++)
		if (n == 0 ||
			b->pairs[i].key.val.string.len != b->pairs[n - 1].key.val.string.len ||
			memcmp(b->pairs[i].key.val.string.val, b->pairs[n - 1].key.val.string.val,
				   b->pairs[i].key.val.string.len) != 0)
			b->pairs[n++] = b->pairs[i];

	for (i = 0; i < n; i++)
		if (b->pairs[i].value.type == jbvNumeric)
			break;
	if (i == n)
		return jb_write_flat(b->pairs, n);
	obj.type = jbvObject;
	obj.val.object.nPairs = n;
	obj.val.object.pairs = b->pairs;
	return JsonbValueToJsonb(&obj);
}

/*
 * format_ymdhms: "YYYY-MM-DDTHH:MI:SS+00:00" of a year 1 to 9999, palloc'd;
 * what psprintf would write, in a tenth of the instructions.
 */
static char *
format_ymdhms(int year, int mon, int mday, int hour, int min, int sec)
{
	char	   *out = palloc(sizeof("YYYY-MM-DDTHH:MI:SS+00:00"));
	char	   *p = out;

#define TWO_DIGITS(v) (*p++ = '0' + (v) / 10, *p++ = '0' + (v) % 10)
	TWO_DIGITS(year / 100);
	TWO_DIGITS(year % 100);
	*p++ = '-';
	TWO_DIGITS(mon);
	*p++ = '-';
	TWO_DIGITS(mday);
	*p++ = 'T';
	TWO_DIGITS(hour);
	*p++ = ':';
	TWO_DIGITS(min);
	*p++ = ':';
	TWO_DIGITS(sec);
#undef TWO_DIGITS
	strcpy(p, "+00:00");
	return out;
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
	if (tm.tm_year < 1 || tm.tm_year > 9999)	/* BC or five digits */
		return psprintf("%04d-%02d-%02dT%02d:%02d:%02d+00:00",
						tm.tm_year, tm.tm_mon, tm.tm_mday,
						tm.tm_hour, tm.tm_min, tm.tm_sec);
	return format_ymdhms(tm.tm_year, tm.tm_mon, tm.tm_mday,
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
