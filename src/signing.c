/*-------------------------------------------------------------------------
 *
 * signing.c
 *	  Standard Webhooks signatures for otp_link deliveries (outbound; the
 *	  inbound signature checks are in verify.c).
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
