/*-------------------------------------------------------------------------
 *
 * verify.c
 *	  Inbound signatures: checks of the signatures WhatsApp gateways put on
 *	  the webhooks they post to us.
 *
 *	  otp_link_verify_hmac			   an HMAC of the raw body, hex or base64,
 *									   optionally after a prefix: Meta's
 *									   X-Hub-Signature-256 ("sha256=<hex>"),
 *									   WAHA's X-Webhook-Hmac (sha512, hex)
 *	  otp_link_verify_meta_signature   Meta's scheme, kept from 1.0
 *	  otp_link_verify_twilio_signature Twilio's X-Twilio-Signature: base64
 *									   HMAC-SHA1 of the URL followed by each
 *									   POST parameter's name and value, the
 *									   parameters sorted by name
 *
 * The computed and the given MACs are compared in constant time, as raw
 * bytes.  An empty secret is an error (22023), not a mismatch: anyone can
 * sign with it.  A missing or malformed signature is simply false.  Only
 * PostgreSQL's own HMAC (common/hmac.h) and base64 are used; with
 * OpenSSL, pg_hmac_create() needs a resource owner, which every SQL call
 * has.
 *
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include "common/base64.h"
#include "common/hmac.h"
#include "common/sha2.h"
#include "fmgr.h"
#include "utils/builtins.h"
#include "utils/jsonb.h"

#include "otp_link.h"

PG_FUNCTION_INFO_V1(otp_link_verify_hmac);
PG_FUNCTION_INFO_V1(otp_link_verify_meta_signature);
PG_FUNCTION_INFO_V1(otp_link_verify_twilio_signature);

#define MAX_DIGEST_LEN	PG_SHA512_DIGEST_LENGTH
#define GATEWAY_HINT	"Pass the gateway's secret; with PostgREST, check that the setting holding it is set."

/* the HMAC algorithms a caller may name */
typedef struct HmacAlgorithm
{
	const char *name;
	pg_cryptohash_type type;
	int			len;			/* digest length in bytes */
} HmacAlgorithm;

static const HmacAlgorithm algorithms[] = {
	{"sha1", PG_SHA1, 20},
	{"sha256", PG_SHA256, PG_SHA256_DIGEST_LENGTH},
	{"sha512", PG_SHA512, PG_SHA512_DIGEST_LENGTH},
};

/* a piece of the signed message */
typedef struct Piece
{
	const char *data;
	size_t		len;
} Piece;

/*
 * find_algorithm: the algorithm called name (any case).  ERRORs 22023 for
 * any other name.
 */
static const HmacAlgorithm *
find_algorithm(const char *name)
{
	for (int i = 0; i < (int) lengthof(algorithms); i++)
		if (pg_strcasecmp(name, algorithms[i].name) == 0)
			return &algorithms[i];
	ereport(ERROR,
			(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
			 errmsg("unknown HMAC algorithm \"%s\"", name),
			 errhint("Use sha1, sha256 or sha512.")));
	pg_unreachable();
}

/*
 * check_encoding: true for "base64", false for "hex" (any case).  ERRORs
 * 22023 for any other name.
 */
static bool
check_encoding(const char *name)
{
	if (pg_strcasecmp(name, "base64") == 0)
		return true;
	if (pg_strcasecmp(name, "hex") != 0)
		ereport(ERROR,
				(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
				 errmsg("unknown signature encoding \"%s\"", name),
				 errhint("Use hex or base64.")));
	return false;
}

/*
 * check_secret: ERROR 22023 when the secret is empty; what names it in
 * the message, hint is the hint.
 */
static void
check_secret(text *secret, const char *what, const char *hint)
{
	if (VARSIZE_ANY_EXHDR(secret) == 0)
		ereport(ERROR,
				(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
				 errmsg("%s must not be empty", what),
				 errdetail("With an empty secret anyone can compute the signature, so nothing would be verified."),
				 errhint("%s", hint)));
}

/* hex_value: 0-15 for a hex digit (either case), -1 otherwise */
static int
hex_value(char c)
{
	if (c >= '0' && c <= '9')
		return c - '0';
	if (c >= 'a' && c <= 'f')
		return c - 'a' + 10;
	if (c >= 'A' && c <= 'F')
		return c - 'A' + 10;
	return -1;
}

/*
 * decode_mac: decode the given MAC sig[0..len) (hex or base64) into out;
 * true when it is well formed and exactly want bytes long.  Allocates
 * nothing; cannot ERROR.
 */
static bool
decode_mac(const char *sig, int len, bool base64, int want, uint8 *out)
{
	char		buf[MAX_DIGEST_LEN * 2];

	if (!base64)
	{
		if (len != 2 * want)
			return false;
		for (int i = 0; i < want; i++)
		{
			int			hi = hex_value(sig[2 * i]);
			int			lo = hex_value(sig[2 * i + 1]);

			if (hi < 0 || lo < 0)
				return false;
			out[i] = (uint8) (hi << 4 | lo);
		}
		return true;
	}
	if (len == 0 || pg_b64_dec_len(len) > (int) sizeof(buf))
		return false;
	if (pg_b64_decode(sig, len, (PG_B64_BYTE *) buf, sizeof(buf)) != want)
		return false;
	memcpy(out, buf, want);
	return true;
}

/*
 * compute_hmac: HMAC of the concatenated pieces with key, into digest
 * (alg->len bytes).  ERRORs (XX000) if the HMAC implementation fails.
 */
static void
compute_hmac(const HmacAlgorithm *alg, text *key, const Piece *pieces, int npieces,
			 uint8 *digest)
{
	pg_hmac_ctx *ctx = pg_hmac_create(alg->type);
	bool		ok = ctx != NULL &&
		pg_hmac_init(ctx, (const uint8 *) VARDATA_ANY(key), VARSIZE_ANY_EXHDR(key)) >= 0;

	for (int i = 0; ok && i < npieces; i++)
		ok = pg_hmac_update(ctx, (const uint8 *) pieces[i].data, pieces[i].len) >= 0;
	if (ok)
		ok = pg_hmac_final(ctx, digest, alg->len) >= 0;
	pg_hmac_free(ctx);
	if (!ok)
		ereport(ERROR,
				(errcode(ERRCODE_INTERNAL_ERROR),
				 errmsg("could not compute HMAC-%s", alg->name)));
}

/*
 * mac_matches: whether sig (NULL: false) is prefix followed by the
 * encoded HMAC of the pieces with key.  Constant time in the MAC's bytes.
 * ERRORs as compute_hmac.
 */
static bool
mac_matches(const HmacAlgorithm *alg, bool base64, const char *prefix, text *sig,
			text *key, const Piece *pieces, int npieces)
{
	uint8		digest[MAX_DIGEST_LEN];
	uint8		given[MAX_DIGEST_LEN];
	const char *s;
	int			len;
	size_t		plen = prefix ? strlen(prefix) : 0;
	bool		ok;

	if (sig == NULL)
		return false;
	s = VARDATA_ANY(sig);
	len = VARSIZE_ANY_EXHDR(sig);
	if ((size_t) len < plen || memcmp(s, prefix, plen) != 0)
		return false;
	if (!decode_mac(s + plen, len - (int) plen, base64, alg->len, given))
		return false;
	compute_hmac(alg, key, pieces, npieces, digest);
	ok = otp_timingsafe_equal(digest, given, alg->len);
	explicit_bzero(digest, sizeof(digest));
	return ok;
}

/*
 * body_mac_matches: mac_matches for the SQL arguments (payload text,
 * signature text, secret text, ...) of a body HMAC: the signature (NULL:
 * false) of the whole payload.  ERRORs as compute_hmac.
 */
static bool
body_mac_matches(FunctionCallInfo fcinfo, const HmacAlgorithm *alg, bool base64,
				 const char *prefix)
{
	text	   *payload = PG_GETARG_TEXT_PP(0);
	Piece		body = {VARDATA_ANY(payload), VARSIZE_ANY_EXHDR(payload)};

	return mac_matches(alg, base64, prefix, PG_ARGISNULL(1) ? NULL : PG_GETARG_TEXT_PP(1),
					   PG_GETARG_TEXT_PP(2), &body, 1);
}

/* ----------------------------------------------------------------
 * otp_link_verify_hmac(payload text, signature text, secret text,
 *		algorithm text DEFAULT 'sha256', encoding text DEFAULT 'hex',
 *		prefix text DEFAULT NULL) RETURNS boolean
 *
 * True when signature is prefix followed by the HMAC of payload (the body
 * exactly as received) keyed with secret, hex (either case) or base64.
 * ERRORs 22004 when an argument other than signature and prefix is NULL,
 * 22023 for an empty secret or an unknown algorithm or encoding.
 * ----------------------------------------------------------------
 */
Datum
otp_link_verify_hmac(PG_FUNCTION_ARGS)
{
	const HmacAlgorithm *alg;
	bool		base64;

	if (PG_ARGISNULL(0) || PG_ARGISNULL(2) || PG_ARGISNULL(3) || PG_ARGISNULL(4))
		ereport(ERROR,
				(errcode(ERRCODE_NULL_VALUE_NOT_ALLOWED),
				 errmsg("payload, secret, algorithm and encoding must not be null"),
				 errhint("Pass the raw request body and the gateway's secret.")));
	check_secret(PG_GETARG_TEXT_PP(2), "secret", GATEWAY_HINT);
	alg = find_algorithm(text_to_cstring(PG_GETARG_TEXT_PP(3)));
	base64 = check_encoding(text_to_cstring(PG_GETARG_TEXT_PP(4)));
	PG_RETURN_BOOL(body_mac_matches(fcinfo, alg, base64,
									PG_ARGISNULL(5) ? NULL : text_to_cstring(PG_GETARG_TEXT_PP(5))));
}

/* ----------------------------------------------------------------
 * otp_link_verify_meta_signature(payload text, signature text, app_secret
 *		text) RETURNS boolean
 *
 * Meta's X-Hub-Signature-256 on WhatsApp Cloud API webhooks: "sha256=" and
 * the hex HMAC-SHA256 of the raw body keyed with the app secret.  As
 * otp_link_verify_hmac(payload, signature, app_secret, 'sha256', 'hex',
 * 'sha256='), with 1.0's messages: 22004 when payload or app_secret is
 * NULL, 22023 when app_secret is empty.
 * ----------------------------------------------------------------
 */
Datum
otp_link_verify_meta_signature(PG_FUNCTION_ARGS)
{
	if (PG_ARGISNULL(0) || PG_ARGISNULL(2))
		ereport(ERROR,
				(errcode(ERRCODE_NULL_VALUE_NOT_ALLOWED),
				 errmsg("payload and app_secret must not be null"),
				 errhint("Pass the raw request body and your Meta app secret.")));
	check_secret(PG_GETARG_TEXT_PP(2), "app_secret",
				 "Pass your Meta app secret; with PostgREST, check that the setting holding it is set.");
	PG_RETURN_BOOL(body_mac_matches(fcinfo, find_algorithm("sha256"), false, "sha256="));
}

/* a form parameter: its name and one value (a name may repeat) */
typedef struct FormParam
{
	JsonbValue	name;
	JsonbValue	value;
	int			order;			/* position in params, for a stable sort */
} FormParam;

/* string_cmp: bytewise order of two JSON strings (code point order) */
static int
string_cmp(const JsonbValue *x, const JsonbValue *y)
{
	int			c = memcmp(x->val.string.val, y->val.string.val,
						   Min(x->val.string.len, y->val.string.len));

	if (c != 0)
		return c;
	if (x->val.string.len != y->val.string.len)
		return x->val.string.len < y->val.string.len ? -1 : 1;
	return 0;
}

/*
 * form_param_cmp: Twilio's order, as its libraries compute it: by name,
 * and the values of a repeated name sorted too (twilio-python's
 * RequestValidator.compute_signature, twilio-node's toFormUrlEncodedParam).
 */
static int
form_param_cmp(const void *a, const void *b)
{
	const FormParam *x = (const FormParam *) a;
	const FormParam *y = (const FormParam *) b;
	int			c = string_cmp(&x->name, &y->name);

	if (c == 0)
		c = string_cmp(&x->value, &y->value);
	return c != 0 ? c : x->order - y->order;
}

/*
 * bad_params: ERROR 22023 about the params object.
 */
pg_noreturn static void
bad_params(const char *why)
{
	ereport(ERROR,
			(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
			 errmsg("params %s", why),
			 errhint("Pass the POST parameters as a JSON object of strings, e.g. {\"From\": \"whatsapp:+14155238886\", \"Body\": \"...\"}; a repeated parameter as an array of strings.")));
}

/*
 * form_params: the name/value pairs of the object params, a name with an
 * array value once per element, sorted by name and value; *n of them,
 * palloc'd.  ERRORs 22023 unless params is an object
 * whose values are strings or arrays of strings.
 */
static FormParam *
form_params(Jsonb *params, int *n)
{
	JsonbIterator *it;
	JsonbValue	v;
	JsonbValue	key = {0};
	JsonbIteratorToken tok;
	int			cap = 16;
	FormParam  *out = palloc(sizeof(FormParam) * cap);

	if (!JB_ROOT_IS_OBJECT(params) || JB_ROOT_IS_SCALAR(params))
		bad_params("must be a JSON object");
	*n = 0;
	it = JsonbIteratorInit(&params->root);
	while ((tok = JsonbIteratorNext(&it, &v, true)) != WJB_DONE)
	{
		int			nelems = 1;

		if (tok == WJB_KEY)
			key = v;
		if (tok != WJB_VALUE)
			continue;
		if (v.type == jbvBinary && JsonContainerIsArray(v.val.binary.data))
			nelems = JsonContainerSize(v.val.binary.data);
		else if (v.type != jbvString)
			bad_params("values must be strings or arrays of strings");
		for (int i = 0; i < nelems; i++)
		{
			JsonbValue *e = v.type == jbvString ? &v :
				getIthJsonbValueFromContainer(v.val.binary.data, i);

			if (e->type != jbvString)
				bad_params("values must be strings or arrays of strings");
			if (*n == cap)
				out = repalloc(out, sizeof(FormParam) * (cap *= 2));
			out[*n].name = key;
			out[*n].value = *e;
			out[*n].order = *n;
			(*n)++;
		}
	}
	qsort(out, *n, sizeof(FormParam), form_param_cmp);
	return out;
}

/*
 * other_port_url: url (len bytes, not NUL-terminated) with its port
 * removed when it has one, or with the scheme's default port (:443 for
 * https, :80 otherwise) added when it has none: Twilio's libraries accept
 * a signature of either, "since signature generation on the back end is
 * inconsistent" (twilio-node's validateRequest).  NULL when url has no
 * "scheme://host".  palloc'd; cannot ERROR except on out of memory.
 */
static char *
other_port_url(const char *url, int len)
{
	char	   *u = pnstrdup(url, len);
	char	   *auth = strstr(u, "://");
	char	   *end;
	char	   *host;
	char	   *colon;

	if (auth == NULL || auth == u)
		return NULL;
	auth += 3;
	end = auth + strcspn(auth, "/?#");
	host = auth;
	for (char *p = auth; p < end; p++)
		if (*p == '@')
			host = p + 1;
	if (host == end)
		return NULL;
	colon = NULL;
	for (char *p = (*host == '[' ? host + strcspn(host, "]") : host); p < end; p++)
		if (*p == ':')
			colon = p;
	if (colon != NULL)
		return psprintf("%.*s%s", (int) (colon - u), u, end);
	return psprintf("%.*s%s%s", (int) (end - u), u,
					pg_strncasecmp(u, "https://", 8) == 0 ? ":443" : ":80", end);
}

/* ----------------------------------------------------------------
 * otp_link_verify_twilio_signature(url text, params jsonb, signature text,
 *		auth_token text, algorithm text DEFAULT 'sha1') RETURNS boolean
 *
 * Twilio's X-Twilio-Signature: the base64 HMAC (SHA-1 unless a webhook
 * rule says SHA-256) keyed with the auth token of url (the full URL
 * Twilio called, query string included) followed by every POST parameter,
 * sorted by name (the values of a repeated one sorted too), each as its
 * name immediately followed by its value.  As Twilio's libraries do, the
 * signature of url with its port removed, or with the scheme's default
 * port added, is accepted too.
 * ERRORs 22004 when url, params, auth_token or algorithm is NULL, 22023
 * for an empty auth_token, an unknown algorithm, or params that are not an
 * object of strings (or arrays of strings).
 * ----------------------------------------------------------------
 */
Datum
otp_link_verify_twilio_signature(PG_FUNCTION_ARGS)
{
	text	   *url;
	text	   *sig;
	char	   *other;
	FormParam  *params;
	Piece	   *pieces;
	const HmacAlgorithm *alg;
	int			n;
	bool		ok;

	if (PG_ARGISNULL(0) || PG_ARGISNULL(1) || PG_ARGISNULL(3) || PG_ARGISNULL(4))
		ereport(ERROR,
				(errcode(ERRCODE_NULL_VALUE_NOT_ALLOWED),
				 errmsg("url, params, auth_token and algorithm must not be null"),
				 errhint("Pass the URL Twilio called, its POST parameters as a JSON object and your auth token.")));
	check_secret(PG_GETARG_TEXT_PP(3), "auth_token", GATEWAY_HINT);
	alg = find_algorithm(text_to_cstring(PG_GETARG_TEXT_PP(4)));
	params = form_params(PG_GETARG_JSONB_P(1), &n);

	url = PG_GETARG_TEXT_PP(0);
	pieces = palloc(sizeof(Piece) * (1 + 2 * n));
	pieces[0].data = VARDATA_ANY(url);
	pieces[0].len = VARSIZE_ANY_EXHDR(url);
	for (int i = 0; i < n; i++)
	{
		pieces[1 + 2 * i].data = params[i].name.val.string.val;
		pieces[1 + 2 * i].len = params[i].name.val.string.len;
		pieces[2 + 2 * i].data = params[i].value.val.string.val;
		pieces[2 + 2 * i].len = params[i].value.val.string.len;
	}
	sig = PG_ARGISNULL(2) ? NULL : PG_GETARG_TEXT_PP(2);
	ok = mac_matches(alg, true, NULL, sig, PG_GETARG_TEXT_PP(3), pieces, 1 + 2 * n);
	other = ok ? NULL : other_port_url(pieces[0].data, pieces[0].len);
	if (other != NULL)
	{
		pieces[0].data = other;
		pieces[0].len = strlen(other);
		ok = mac_matches(alg, true, NULL, sig, PG_GETARG_TEXT_PP(3), pieces, 1 + 2 * n);
	}
	PG_RETURN_BOOL(ok);
}
