/*-------------------------------------------------------------------------
 *
 * signing.c
 *	  Standard Webhooks signatures for otp_link deliveries.
 *
 * A delivery is signed as
 *
 *		webhook-signature: v1,<base64(HMAC-SHA256(key, "<id>.<timestamp>.<body>"))>
 *
 * where key is the base64-decoded part of the instance secret after the
 * "whsec_" prefix (https://www.standardwebhooks.com/).  Only PostgreSQL's
 * own HMAC (common/hmac.h) and base64 (common/base64.h) are used.
 *
 * With OpenSSL, pg_hmac_create() registers its context with the current
 * resource owner, so callers must have one (the worker signs inside its
 * claim transaction).
 *
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include "common/base64.h"
#include "common/hmac.h"
#include "common/sha2.h"
#include "fmgr.h"
#include "utils/builtins.h"

#include "otp_link.h"

#define WHSEC_PREFIX		"whsec_"
#define WHSEC_PREFIX_LEN	(sizeof(WHSEC_PREFIX) - 1)

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
 * otp_webhook_key: decode the key of a "whsec_<base64>" secret.
 *
 * Returns the key palloc'd in CurrentMemoryContext and sets *keylen, or NULL
 * when the secret is malformed (no prefix, bad base64, empty key).  Never
 * ERRORs except on out-of-memory.  The secret itself is never logged.
 */
uint8 *
otp_webhook_key(const char *secret, int *keylen)
{
	const char *b64;
	int			b64len;
	uint8	   *key;
	int			len;

	*keylen = 0;
	if (secret == NULL || strncmp(secret, WHSEC_PREFIX, WHSEC_PREFIX_LEN) != 0)
		return NULL;
	b64 = secret + WHSEC_PREFIX_LEN;
	b64len = strlen(b64);
	if (b64len == 0)
		return NULL;

	key = palloc(pg_b64_dec_len(b64len) + 1);
	len = pg_b64_decode(b64, b64len, (PG_B64_BYTE *) key, pg_b64_dec_len(b64len));
	if (len <= 0)
	{
		pfree(key);
		return NULL;
	}
	*keylen = len;
	return key;
}

/*
 * otp_webhook_signature: the value of the webhook-signature header.
 *
 * Computes "v1,<base64 HMAC-SHA256 of msg_id.timestamp.body>" with the
 * given decoded key.  The result is palloc'd in CurrentMemoryContext.
 * ERRORs (ERRCODE_INTERNAL_ERROR) if the HMAC implementation fails; needs a
 * CurrentResourceOwner when PostgreSQL is built with OpenSSL.
 */
char *
otp_webhook_signature(const uint8 *key, int keylen, const char *msg_id,
					  int64 timestamp, const char *body, size_t bodylen)
{
	pg_hmac_ctx *ctx;
	uint8		digest[PG_SHA256_DIGEST_LENGTH];
	char		ts[32];
	char	   *result;
	int			enclen;
	int			n;

	snprintf(ts, sizeof(ts), INT64_FORMAT, timestamp);

	ctx = pg_hmac_create(PG_SHA256);
	if (ctx == NULL)
		ereport(ERROR,
				(errcode(ERRCODE_OUT_OF_MEMORY),
				 errmsg("out of memory while computing a webhook signature")));

	if (pg_hmac_init(ctx, key, keylen) < 0 ||
		pg_hmac_update(ctx, (const uint8 *) msg_id, strlen(msg_id)) < 0 ||
		pg_hmac_update(ctx, (const uint8 *) ".", 1) < 0 ||
		pg_hmac_update(ctx, (const uint8 *) ts, strlen(ts)) < 0 ||
		pg_hmac_update(ctx, (const uint8 *) ".", 1) < 0 ||
		pg_hmac_update(ctx, (const uint8 *) body, bodylen) < 0 ||
		pg_hmac_final(ctx, digest, sizeof(digest)) < 0)
	{
		char	   *why = pstrdup(pg_hmac_error(ctx));

		pg_hmac_free(ctx);
		ereport(ERROR,
				(errcode(ERRCODE_INTERNAL_ERROR),
				 errmsg("could not compute a webhook signature: %s", why)));
	}
	pg_hmac_free(ctx);

	enclen = pg_b64_enc_len(sizeof(digest));
	result = palloc(3 + enclen + 1);
	memcpy(result, "v1,", 3);
	n = pg_b64_encode((const PG_B64_BYTE *) digest, sizeof(digest), result + 3, enclen);
	if (n < 0)
		ereport(ERROR,
				(errcode(ERRCODE_INTERNAL_ERROR),
				 errmsg("could not encode a webhook signature")));
	result[3 + n] = '\0';
	explicit_bzero(digest, sizeof(digest));
	return result;
}

/*
 * Inbound: Meta's X-Hub-Signature-256 header on WhatsApp Cloud API webhooks
 * is "sha256=<hex HMAC-SHA256 of the raw request body, keyed with the app
 * secret>".
 */
PG_FUNCTION_INFO_V1(otp_link_verify_meta_signature);

/*
 * otp_link_verify_meta_signature(payload text, signature text, app_secret
 * text) RETURNS boolean
 *
 * True when signature is the X-Hub-Signature-256 of payload (the body
 * exactly as received).  Comparison is in constant time; a NULL or
 * malformed signature is false.  ERRORs (22004) when payload or app_secret
 * is NULL and (22023) when app_secret is empty, since that is a
 * configuration mistake rather than a forgery, and verifying against it
 * would let anyone sign.
 */
Datum
otp_link_verify_meta_signature(PG_FUNCTION_ARGS)
{
	text	   *payload;
	text	   *secret;
	char	   *sig;
	pg_hmac_ctx *ctx;
	uint8		digest[PG_SHA256_DIGEST_LENGTH];
	uint8		given[PG_SHA256_DIGEST_LENGTH];
	int			i;

	if (PG_ARGISNULL(0) || PG_ARGISNULL(2))
		ereport(ERROR,
				(errcode(ERRCODE_NULL_VALUE_NOT_ALLOWED),
				 errmsg("payload and app_secret must not be null"),
				 errhint("Pass the raw request body and your Meta app secret.")));
	payload = PG_GETARG_TEXT_PP(0);
	secret = PG_GETARG_TEXT_PP(2);
	if (VARSIZE_ANY_EXHDR(secret) == 0)
		ereport(ERROR,
				(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
				 errmsg("app_secret must not be empty"),
				 errdetail("With an empty secret anyone can compute the signature, so nothing would be verified."),
				 errhint("Pass your Meta app secret; with PostgREST, check that the setting holding it is set.")));
	if (PG_ARGISNULL(1))
		PG_RETURN_BOOL(false);
	sig = text_to_cstring(PG_GETARG_TEXT_PP(1));

	if (strncmp(sig, "sha256=", 7) != 0 || strlen(sig) != 7 + 2 * sizeof(given))
		PG_RETURN_BOOL(false);
	for (i = 0; i < (int) sizeof(given); i++)
	{
		int			hi = hex_value(sig[7 + 2 * i]);
		int			lo = hex_value(sig[8 + 2 * i]);

		if (hi < 0 || lo < 0)
			PG_RETURN_BOOL(false);
		given[i] = (uint8) (hi << 4 | lo);
	}

	ctx = pg_hmac_create(PG_SHA256);
	if (ctx == NULL ||
		pg_hmac_init(ctx, (const uint8 *) VARDATA_ANY(secret), VARSIZE_ANY_EXHDR(secret)) < 0 ||
		pg_hmac_update(ctx, (const uint8 *) VARDATA_ANY(payload), VARSIZE_ANY_EXHDR(payload)) < 0 ||
		pg_hmac_final(ctx, digest, sizeof(digest)) < 0)
	{
		pg_hmac_free(ctx);
		ereport(ERROR,
				(errcode(ERRCODE_INTERNAL_ERROR),
				 errmsg("could not compute HMAC-SHA256")));
	}
	pg_hmac_free(ctx);
	PG_RETURN_BOOL(otp_timingsafe_equal(digest, given, sizeof(digest)));
}
