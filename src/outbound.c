/*-------------------------------------------------------------------------
 *
 * outbound.c
 *	  Outbound requests: turns one claimed delivery row into an
 *	  OtpHttpRequest (URL, body, headers, Standard Webhooks signature or
 *	  reply endpoint's token) for http.c to send.  Replies through the
 *	  gateways (Twilio, WAHA, GREEN-API) get the request each gateway's
 *	  documentation shows (docs/gateway-replies.md).
 *
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include "common/base64.h"
#include "mb/pg_wchar.h"
#include "utils/builtins.h"
#include "utils/json.h"
#include "utils/memutils.h"

#include "otp_link.h"
#include "worker.h"

/*
 * add_secret: have secret (NULL or empty: nothing) scrubbed from req's
 * results (queue.c's clean_text), as given and JSON-escaped: a gateway may
 * echo it in a JSON answer.  The forms are palloc'd in
 * CurrentMemoryContext (the request's); cannot ERROR except on out of
 * memory.
 */
static void
add_secret(OtpHttpRequest *req, char *secret)
{
	StringInfoData esc;

	if (secret == NULL || secret[0] == '\0' || req->nredact >= OTP_HTTP_MAX_REDACT)
		return;
	req->redact[req->nredact++] = secret;
	initStringInfo(&esc);
	escape_json(&esc, secret);
	/* without its quotes; only when it differs from the secret */
	esc.data[esc.len - 1] = '\0';
	if (strcmp(esc.data + 1, secret) != 0 && req->nredact < OTP_HTTP_MAX_REDACT)
		req->redact[req->nredact++] = esc.data + 1;
}

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
			add_secret(req, token);
		}
	}
}

/* ----------------------------------------------------------------
 * Replies through the gateways (twilio, waha, green_api)
 *
 * The readers below never ERROR: a reply row with odd data (stored before
 * the checks, or written by hand) makes its request invalid, it does not
 * fail the worker's round.
 * ----------------------------------------------------------------
 */

/* gw_value: the value of key in object j, or NULL */
static JsonbValue *
gw_value(Jsonb *j, const char *key)
{
	if (j == NULL || !JB_ROOT_IS_OBJECT(j) || JB_ROOT_IS_SCALAR(j))
		return NULL;
	return getKeyJsonValueFromContainer(&j->root, key, strlen(key), NULL);
}

/* gw_text: the string value of key in j, palloc'd, or NULL */
static char *
gw_text(Jsonb *j, const char *key)
{
	JsonbValue *v = gw_value(j, key);

	if (v == NULL || v->type != jbvString)
		return NULL;
	return pnstrdup(v->val.string.val, v->val.string.len);
}

/* gw_object: the object value of key in j as a Jsonb, or NULL */
static Jsonb *
gw_object(Jsonb *j, const char *key)
{
	JsonbValue *v = gw_value(j, key);

	if (v == NULL || v->type != jbvBinary || !JsonContainerIsObject(v->val.binary.data))
		return NULL;
	return JsonbValueToJsonb(v);
}

/*
 * gw_url: the endpoint's url (or dflt) without trailing slashes, with
 * path appended; palloc'd.
 */
static char *
gw_url(Jsonb *ep, const char *dflt, const char *path)
{
	char	   *base = gw_text(ep, "url");
	size_t		len;

	if (base == NULL || base[0] == '\0')
		base = pstrdup(dflt);
	len = strlen(base);
	while (len > 0 && base[len - 1] == '/')
		base[--len] = '\0';
	return psprintf("%s%s", base, path);
}

/* gw_json_body: the request body of a JSON object built in jb */
static void
gw_json_body(OtpHttpRequest *req, OtpJsonb *jb)
{
	Jsonb	   *j = otp_jb_finish(jb);

	req->body = JsonbToCString(NULL, &j->root, VARSIZE(j));
	req->bodylen = strlen(req->body);
}

/* gw_form_field: append "&name=value" (no '&' first), form-encoded */
static void
gw_form_field(StringInfo buf, const char *name, const char *prefix,
			  const char *value)
{
	char	   *utf8 = pg_server_to_any(value, strlen(value), PG_UTF8);

	if (buf->len > 0)
		appendStringInfoChar(buf, '&');
	appendStringInfo(buf, "%s=", name);
	otp_form_urlencode(buf, prefix, strlen(prefix));
	otp_form_urlencode(buf, utf8, strlen(utf8));
}

/*
 * gw_twilio: POST {url}/2010-04-01/Accounts/{AccountSid}/Messages.json,
 * form-encoded To, From (whatsapp:+<digits>) and Body, HTTP basic auth
 * with the Account SID and the Auth Token.  The credentials go out as
 * base64, but a gateway may echo them decoded: the token, "sid:token" and
 * the base64 are all redacted.
 */
static void
gw_twilio(OtpHttpRequest *req, Jsonb *ep, const char *to, const char *from,
		  const char *text)
{
	char	   *sid = gw_text(ep, "account_sid");
	char	   *token = gw_text(ep, "auth_token");
	char	   *given = gw_text(ep, "from");
	char		digits[16];
	char	   *cred;
	char	   *b64;
	int			len;
	StringInfoData form;

	if (sid == NULL || token == NULL)
	{
		req->outcome = OTP_HTTP_INVALID;
		strlcpy(req->errbuf, "the twilio reply_endpoint has no account_sid or auth_token",
				sizeof(req->errbuf));
		return;
	}
	if (given && otp_normalize_phone(pg_strncasecmp(given, "whatsapp:", 9) == 0 ?
									 given + 9 : given, digits, sizeof(digits)))
		from = digits;
	req->url = gw_url(ep, "https://api.twilio.com",
					  psprintf("/2010-04-01/Accounts/%s/Messages.json", sid));
	initStringInfo(&form);
	gw_form_field(&form, "To", "whatsapp:+", to);
	gw_form_field(&form, "From", "whatsapp:+", from);
	gw_form_field(&form, "Body", "", text);
	req->body = form.data;
	req->bodylen = form.len;

	cred = psprintf("%s:%s", sid, token);
	len = pg_b64_enc_len(strlen(cred));
	b64 = palloc(len + 1);
	len = pg_b64_encode((const PG_B64_BYTE *) cred, strlen(cred), b64, len);
	b64[Max(len, 0)] = '\0';
	req->headers[0] = "Content-Type: application/x-www-form-urlencoded";
	req->headers[req->nheaders++] = psprintf("Authorization: Basic %s", b64);
	add_secret(req, b64);
	add_secret(req, cred);
	add_secret(req, token);
}

/*
 * gw_waha: POST {url}/api/sendText with {"session", "chatId", "text"} and
 * the X-Api-Key header.
 */
static void
gw_waha(OtpHttpRequest *req, Jsonb *ep, const char *to, const char *text)
{
	char	   *key = gw_text(ep, "api_key");
	char	   *session = gw_text(ep, "session");
	OtpJsonb	jb;

	req->url = gw_url(ep, "", "/api/sendText");
	otp_jb_begin(&jb);
	otp_jb_str(&jb, "session", session ? session : "default");
	otp_jb_str(&jb, "chatId", psprintf("%s@c.us", to));
	otp_jb_str(&jb, "text", text);
	gw_json_body(req, &jb);
	if (key != NULL && key[0] != '\0')
	{
		req->headers[req->nheaders++] = psprintf("X-Api-Key: %s", key);
		add_secret(req, key);
	}
}

/*
 * gw_green_api: POST {url}/waInstance{idInstance}/sendMessage/
 * {apiTokenInstance} with {"chatId", "message"}.  The token is part of the
 * URL, which is never logged; it is redacted from responses all the same.
 */
static void
gw_green_api(OtpHttpRequest *req, Jsonb *ep, const char *to, const char *text)
{
	char	   *id = gw_text(ep, "id_instance");
	char	   *token = gw_text(ep, "api_token_instance");
	OtpJsonb	jb;

	if (id == NULL || token == NULL)
	{
		req->outcome = OTP_HTTP_INVALID;
		strlcpy(req->errbuf, "the green_api reply_endpoint has no id_instance or api_token_instance",
				sizeof(req->errbuf));
		return;
	}
	req->url = gw_url(ep, "https://api.green-api.com",
					  psprintf("/waInstance%s/sendMessage/%s", id, token));
	otp_jb_begin(&jb);
	otp_jb_str(&jb, "chatId", psprintf("%s@c.us", to));
	otp_jb_str(&jb, "message", text);
	gw_json_body(req, &jb);
	add_secret(req, token);
}

/*
 * build_gateway: when reply (column 10 of the claim: the reply endpoint,
 * recipient, instance number and text) names a gateway type, set req's
 * URL, body and headers for it and return true; false for the other
 * types.  Allocates in CurrentMemoryContext; ERRORs only on out of memory
 * (the JSON text is the claim query's own).
 */
static bool
build_gateway(OtpHttpRequest *req, const char *reply)
{
	Jsonb	   *j;
	Jsonb	   *ep;
	char	   *type;
	char	   *to;
	char	   *from;
	char	   *text;

	if (reply == NULL)
		return false;
	j = DatumGetJsonbP(DirectFunctionCall1(jsonb_in, CStringGetDatum(reply)));
	ep = gw_object(j, "endpoint");
	type = gw_text(ep, "type");
	if (type == NULL || (strcmp(type, "twilio") != 0 && strcmp(type, "waha") != 0 &&
						 strcmp(type, "green_api") != 0))
		return false;
	to = gw_text(j, "to");
	from = gw_text(j, "from");
	text = gw_text(j, "body");
	if (to == NULL || from == NULL || text == NULL)
	{
		req->outcome = OTP_HTTP_INVALID;
		strlcpy(req->errbuf, "the reply has no recipient or no text", sizeof(req->errbuf));
	}
	else if (strcmp(type, "twilio") == 0)
		gw_twilio(req, ep, to, from, text);
	else if (strcmp(type, "waha") == 0)
		gw_waha(req, ep, to, text);
	else
		gw_green_api(req, ep, to, text);
	return true;
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
	char	   *reply;

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
	reply = SPI_getvalue(tup, desc, 11);

	req->outcome = OTP_HTTP_PENDING;
	req->retry_after_s = -1;
	req->headers[req->nheaders++] = "Content-Type: application/json";
	req->headers[req->nheaders++] = "Accept: application/json";

	if (strcmp(mode, "none") == 0 && build_gateway(req, reply))
		 /* a gateway's request */ ;
	else if (strcmp(mode, "none") == 0)
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
			add_secret(req, token);
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
