/*-------------------------------------------------------------------------
 *
 * outbound.c
 *	  Outbound requests: turns one claimed delivery row into an
 *	  OtpHttpRequest (URL, body, headers, Standard Webhooks signature or
 *	  reply endpoint's token) for http.c to send.
 *
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include "utils/memutils.h"

#include "otp_link.h"
#include "worker.h"

/*
 * signature_with: the "v1,<base64>" signature of req's body with the
 * whsec_ secret, or NULL when the secret is not valid.  palloc'd; cannot
 * ERROR except on out of memory.
 */
static char *
signature_with(OtpHttpRequest *req, const char *secret, const char *webhook_id,
			   int64 ts)
{
	int			keylen;
	uint8	   *key = secret ? otp_webhook_key(secret, &keylen) : NULL;
	char	   *sig;

	if (key == NULL)
		return NULL;
	sig = otp_webhook_signature(key, keylen, webhook_id, ts, req->body, req->bodylen);
	explicit_bzero(key, keylen);
	return sig;
}

/*
 * sign_webhook: the Standard Webhooks headers (webhook-id, -timestamp,
 * -signature) of req, signed with the instance's whsec_ secret (and, while
 * a rotation's grace period runs, also with the previous one: Standard
 * Webhooks allows several space-separated signatures), and the optional
 * bearer token; a secret that is not valid makes req invalid.  Allocates in
 * CurrentMemoryContext (the request's); cannot ERROR except on out of
 * memory.
 */
static void
sign_webhook(OtpHttpRequest *req, char *secret, char *previous,
			 char *webhook_id, char *token)
{
	int64		ts = (int64) time(NULL);
	char	   *sig = signature_with(req, secret, webhook_id, ts);
	char	   *old = previous ? signature_with(req, previous, webhook_id, ts) : NULL;

	if (sig == NULL)
	{
		req->outcome = OTP_HTTP_INVALID;
		strlcpy(req->errbuf, "the instance secret is not a valid whsec_ secret", sizeof(req->errbuf));
	}
	else
	{
		if (old != NULL)
			sig = psprintf("%s %s", sig, old);
		req->headers[req->nheaders++] = psprintf("webhook-id: %s", webhook_id);
		req->headers[req->nheaders++] = psprintf("webhook-timestamp: " INT64_FORMAT, ts);
		req->headers[req->nheaders++] = psprintf("webhook-signature: %s", sig);
		if (token != NULL && token[0] != '\0')
		{
			req->headers[req->nheaders++] = psprintf("Authorization: Bearer %s", token);
			req->redact = token;
		}
	}
}

/*
 * otp_build_request: turn one claimed row into an OtpHttpRequest in its own
 * memory context (a child of the loop context, moved under
 * TopMemoryContext by the caller once the claim committed), with its
 * headers and, for signed deliveries, its Standard Webhooks signature.  Runs inside the
 * claim transaction (signing needs a resource owner).  Returns NULL after
 * queueing a local "dead"/"invalid" result when the row cannot be sent.
 */
OtpHttpRequest *
otp_build_request(MemoryContext parent, HeapTuple tup, TupleDesc desc)
{
	MemoryContext cxt;
	MemoryContext old;
	OtpHttpRequest *req;
	bool		isnull;
	char	   *mode;
	char	   *secret;
	char	   *previous;
	char	   *token;
	char	   *webhook_id;

	/* under the loop context until the claim commits: an ERROR frees it */
	cxt = AllocSetContextCreate(parent, "otp_link request",
								ALLOCSET_SMALL_SIZES);
	old = MemoryContextSwitchTo(cxt);

	req = palloc0(sizeof(OtpHttpRequest));
	req->cxt = cxt;
	req->id = DatumGetInt64(SPI_getbinval(tup, desc, 1, &isnull));
	req->attempts = DatumGetInt32(SPI_getbinval(tup, desc, 2, &isnull));
	webhook_id = SPI_getvalue(tup, desc, 3);
	req->url = SPI_getvalue(tup, desc, 4);
	req->body = SPI_getvalue(tup, desc, 5);
	req->bodylen = req->body ? strlen(req->body) : 0;
	mode = SPI_getvalue(tup, desc, 6);
	secret = SPI_getvalue(tup, desc, 7);
	token = SPI_getvalue(tup, desc, 8);
	previous = SPI_getvalue(tup, desc, 9);
	req->dest = SPI_getvalue(tup, desc, 10);

	req->outcome = OTP_HTTP_PENDING;
	req->retry_after_s = -1;
	req->headers[req->nheaders++] = "Content-Type: application/json";
	req->headers[req->nheaders++] = "Accept: application/json";

	if (strcmp(mode, "none") == 0)
	{
		req->outcome = OTP_HTTP_INVALID;
		strlcpy(req->errbuf, "the instance has no usable reply_endpoint", sizeof(req->errbuf));
	}
	else if (strcmp(mode, "cloud") == 0)
	{
		if (token == NULL || token[0] == '\0')
		{
			req->outcome = OTP_HTTP_INVALID;
			strlcpy(req->errbuf, "the whatsapp_cloud reply_endpoint has no token", sizeof(req->errbuf));
		}
		else
		{
			req->headers[req->nheaders++] = psprintf("Authorization: Bearer %s", token);
			req->redact = token;
		}
	}
	else
		sign_webhook(req, secret, previous, webhook_id, token);
	if (secret)
		explicit_bzero(secret, strlen(secret));
	if (previous)
		explicit_bzero(previous, strlen(previous));

	MemoryContextSwitchTo(old);
	return req;
}
