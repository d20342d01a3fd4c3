/*-------------------------------------------------------------------------
 *
 * options.c
 *	  Validation of an instance's options and texts, and of the parts of a
 *	  generate call that override them: allowed keys, lengths, URLs, header
 *	  values, limits, the {link}/{code} placeholders of messages and
 *	  link_url.  Also otp_link_destination_allowed (the SSRF rule as SQL).
 *
 * Every check fails with a stable SQLSTATE (docs/sqlstates.md) before
 * anything is written; nothing here touches a table.
 *
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include <netinet/in.h>

#include "mb/pg_wchar.h"

#include "utils/builtins.h"

#include "utils/inet.h"

#include "otp_link.h"
#include "api.h"

PG_FUNCTION_INFO_V1(otp_link_destination_allowed);

const char *const otp_message_keys[] = {"prompt", "success", "failed", "expired", NULL};
const char *const otp_callback_keys[] = {"success", "failed", "expired", NULL};
static const char *const option_keys[] = {"messages", "callback", "link_url",
"reply_endpoint", "limits", "click_url", NULL};
static const char *const limit_keys[] = {"generate_limit", "generate_window",
	"unknown_code_limit", "unknown_code_window", "block_duration", NULL
};
static const char *const reply_keys[] = {"type", "url", "token", NULL};
/* the gateway types' keys (docs/gateway-replies.md) */
static const char *const twilio_keys[] = {"type", "url", "account_sid",
"auth_token", "from", NULL};
static const char *const waha_keys[] = {"type", "url", "api_key", "session", NULL};
static const char *const green_api_keys[] = {"type", "url", "id_instance",
"api_token_instance", NULL};

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
 * otp_check_object_keys: ERROR (22023) unless j is a JSON object whose keys are
 * all in allowed and (if strings_only) whose values are strings or null.
 * what names the argument in the message.
 */
void
otp_check_object_keys(Jsonb *j, const char *what, const char *const *allowed,
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
				 strcmp(what, "options") == 0 ?
				 errhint("Pass an object such as {\"messages\": {\"prompt\": \"Log me in to {name}\"}}.") :
				 strcmp(what, "options.limits") == 0 ?
				 errhint("Pass an object such as {\"generate_limit\": 10}.") :
				 errhint("Pass an object such as {\"%s\": \"...\"}.", allowed[0])));

	it = JsonbIteratorInit(&j->root);
	while ((tok = JsonbIteratorNext(&it, &v, true)) != WJB_DONE)
	{
		const char *keyname = NULL;	/* the allowed key it is */

		if (tok != WJB_KEY)
			continue;
		for (i = 0; allowed[i]; i++)
			if (strlen(allowed[i]) == (size_t) v.val.string.len &&
				memcmp(v.val.string.val, allowed[i], v.val.string.len) == 0)
				keyname = allowed[i];
		if (keyname == NULL)
		{
			char	   *key = pnstrdup(v.val.string.val, v.val.string.len);

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
					 errmsg("%s.%s must be a string", what, keyname),
					 errhint("Every value in %s is a text or null.", what)));
	}
}

/*
 * otp_check_text_len: ERROR (22001) if s has more than max characters.
 */
void
otp_check_text_len(const char *s, int max, const char *what)
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
 * otp_check_url: ERROR (22023) unless url is an absolute http(s) URL.
 */
void
otp_check_url(const char *url, const char *what)
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
 * template_url_check: ERROR (22023) unless tmpl holds placeholder and is an
 * http(s) URL once sample is substituted; example is shown in the hint.
 */
static void
template_url_check(const char *tmpl, const char *placeholder, const char *sample,
				   const char *what, const char *example)
{
	StringInfoData buf;
	const char *p;

	if (tmpl == NULL)
		return;
	p = strstr(tmpl, placeholder);
	if (p == NULL)
		ereport(ERROR,
				(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
				 errmsg("%s must contain the placeholder %s", what, placeholder),
				 errhint("Use a URL such as %s.", example)));
	initStringInfo(&buf);
	appendBinaryStringInfo(&buf, tmpl, p - tmpl);
	appendStringInfoString(&buf, sample);
	appendStringInfoString(&buf, p + strlen(placeholder));
	otp_check_url(buf.data, what);
}

/*
 * template_render: tmpl with its first placeholder replaced by value,
 * palloc'd (tmpl itself when it has none).
 */
static char *
template_render(const char *tmpl, const char *placeholder, const char *value)
{
	StringInfoData buf;
	const char *p = strstr(tmpl, placeholder);

	initStringInfo(&buf);
	if (p == NULL)
	{
		appendStringInfoString(&buf, tmpl);
		return buf.data;
	}
	appendBinaryStringInfo(&buf, tmpl, p - tmpl);
	appendStringInfoString(&buf, value);
	appendStringInfoString(&buf, p + strlen(placeholder));
	return buf.data;
}

/*
 * otp_link_url_check: ERROR unless tmpl holds {token} and is an http(s) URL
 * once a token is substituted.
 */
void
otp_link_url_check(const char *tmpl, const char *what)
{
	template_url_check(tmpl, "{token}", "AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA",
					   what, "https://app.example/login?token={token}");
}

/*
 * otp_link_url_render: tmpl with its first {token} replaced by token,
 * palloc'd.
 */
char *
otp_link_url_render(const char *tmpl, const char *token)
{
	return template_render(tmpl, "{token}", token);
}

/*
 * otp_click_url_check: ERROR (22023) unless tmpl holds {uuid} and is an
 * http(s) URL once a link's uuid is substituted.
 */
void
otp_click_url_check(const char *tmpl, const char *what)
{
	template_url_check(tmpl, "{uuid}", "00000000-0000-0000-0000-000000000000",
					   what, "https://api.example/rpc/otp_link_open?uuid={uuid}");
}

/*
 * otp_click_url_render: tmpl with its first {uuid} replaced by uuid,
 * palloc'd.
 */
char *
otp_click_url_render(const char *tmpl, const char *uuid)
{
	return template_render(tmpl, "{uuid}", uuid);
}

/*
 * otp_reply_type_is_sent: whether the worker posts replies of a reply
 * endpoint of this type (the others are held for the application).
 */
bool
otp_reply_type_is_sent(const char *type)
{
	return type != NULL &&
		(strcmp(type, "whatsapp_cloud") == 0 || strcmp(type, "http") == 0 ||
		 strcmp(type, "twilio") == 0 || strcmp(type, "waha") == 0 ||
		 strcmp(type, "green_api") == 0);
}

/*
 * required_text: the string reply[key]; ERROR (22023) when it is missing or
 * empty, with hint.
 */
static char *
required_text(Jsonb *reply, const char *key, const char *type, const char *hint)
{
	char	   *v = otp_jsonb_get_text(reply, key);

	if (v == NULL || v[0] == '\0')
		ereport(ERROR,
				(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
				 errmsg("options.reply_endpoint.%s is required for type \"%s\"", key, type),
				 errhint("%s", hint)));
	return v;
}

/*
 * check_chars: ERROR (22023) unless s has 1 to max bytes, each one of the
 * characters accepted by ok(); what names it, allowed says in words which
 * characters are.  The value goes into a URL path or a request body.
 */
static void
check_chars(const char *s, int (*ok) (int), int max, const char *what,
			const char *allowed)
{
	const unsigned char *p;

	if (s == NULL)
		return;
	for (p = (const unsigned char *) s; *p; p++)
		if (!ok(*p))
			break;
	if (*p != '\0' || p == (const unsigned char *) s || p - (const unsigned char *) s > max)
		ereport(ERROR,
				(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
				 errmsg("%s must be 1 to %d characters: %s", what, max, allowed),
				 errhint("Copy it exactly as your provider shows it.")));
}

/* check_chars' classes, ASCII only whatever the locale */
static int
is_digit_char(int c)
{
	return c >= '0' && c <= '9';
}

static int
is_alnum_char(int c)
{
	return is_digit_char(c) || (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z');
}

static int
is_session_char(int c)
{
	return is_alnum_char(c) || c == '_' || c == '-' || c == '.';
}

/*
 * check_no_userinfo: ERROR (22023) when the http(s) URL url has userinfo
 * ("user:password@" before the host).  libcurl would send it as HTTP basic
 * authentication, and the password would be stored in a column that is
 * not a secret's and could be echoed into last_error.
 */
static void
check_no_userinfo(const char *url, const char *what)
{
	const char *auth = strstr(url, "://");
	size_t		len;

	if (auth == NULL)
		return;
	auth += 3;
	len = strcspn(auth, "/?#");
	if (memchr(auth, '@', len) != NULL)
		ereport(ERROR,
				(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
				 errmsg("%s must not contain a user name or password", what),
				 errdetail("Credentials in a URL (user:password@host) would be sent as HTTP basic authentication and stored where secrets are not."),
				 errhint("Remove the user:password@ part; give the gateway's credentials in their own fields.")));
}

/*
 * check_base_url: ERROR (22023) unless url is an http(s) URL without
 * userinfo that a path can be appended to (no query, no fragment).
 */
static void
check_base_url(const char *url, const char *what)
{
	if (url == NULL)
		return;
	otp_check_url(url, what);
	check_no_userinfo(url, what);
	if (strpbrk(url, "?#") != NULL)
		ereport(ERROR,
				(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
				 errmsg("%s must be a base URL without query or fragment: \"%s\"", what, url),
				 errdetail("The gateway's path is appended to it."),
				 errhint("Give the scheme, host and port only, e.g. https://waha.example:3000.")));
}

/*
 * check_gateway: the required fields of the twilio, waha and green_api
 * reply endpoints (docs/gateway-replies.md).  ERRORs (22023).
 */
static void
check_gateway(Jsonb *reply, const char *type)
{
	const char *what = "options.reply_endpoint.url";

	if (strcmp(type, "twilio") == 0)
	{
		char	   *sid = required_text(reply, "account_sid", type,
										"Use the Account SID of your Twilio console (AC followed by 32 hex digits).");
		char	   *from = otp_jsonb_get_text(reply, "from");

		if (strlen(sid) != 34 || strncmp(sid, "AC", 2) != 0 ||
			strspn(sid + 2, "0123456789abcdefABCDEF") != 32)
			ereport(ERROR,
					(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
					 errmsg("options.reply_endpoint.account_sid is not a Twilio Account SID"),
					 errhint("An Account SID is AC followed by 32 hex digits.")));
		check_header_value(required_text(reply, "auth_token", type,
										 "Use the Auth Token of your Twilio account."),
						   "options.reply_endpoint.auth_token");
		if (from)
			(void) otp_normalize_phone_or_error(pg_strncasecmp(from, "whatsapp:", 9) == 0 ?
												from + 9 : from,
												"options.reply_endpoint.from");
	}
	else if (strcmp(type, "waha") == 0)
	{
		(void) required_text(reply, "url", type,
							 "Give the base URL of your WAHA server, e.g. https://waha.example:3000.");
		check_header_value(required_text(reply, "api_key", type,
										 "Use the key WAHA requires in X-Api-Key (WAHA_API_KEY)."),
						   "options.reply_endpoint.api_key");
		check_chars(otp_jsonb_get_text(reply, "session"), is_session_char, 64,
					"options.reply_endpoint.session", "letters, digits, '_', '-' and '.'");
	}
	else
	{
		check_chars(required_text(reply, "id_instance", type,
								  "Use the idInstance of your GREEN-API console."),
					is_digit_char, 32, "options.reply_endpoint.id_instance", "digits");
		check_chars(required_text(reply, "api_token_instance", type,
								  "Use the apiTokenInstance of your GREEN-API console."),
					is_alnum_char, 256, "options.reply_endpoint.api_token_instance",
					"letters and digits");
	}
	check_base_url(otp_jsonb_get_text(reply, "url"), what);
}

/*
 * check_reply_endpoint: validate options.reply_endpoint: its keys for its
 * type, the URL and token of whatsapp_cloud and http, the fields of the
 * gateway types.  ERRORs (22023).
 */
static void
check_reply_endpoint(Jsonb *reply)
{
	char	   *type;
	const char *const *keys = reply_keys;

	type = otp_jsonb_get_text(reply, "type");
	if (type && strcmp(type, "twilio") == 0)
		keys = twilio_keys;
	else if (type && strcmp(type, "waha") == 0)
		keys = waha_keys;
	else if (type && strcmp(type, "green_api") == 0)
		keys = green_api_keys;
	otp_check_object_keys(reply, "options.reply_endpoint", keys, true);
	check_header_value(otp_jsonb_get_text(reply, "token"),
					   "options.reply_endpoint.token");
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
		otp_check_url(url, "options.reply_endpoint.url");
		check_no_userinfo(url, "options.reply_endpoint.url");
		if (strcmp(type, "whatsapp_cloud") == 0 &&
			otp_jsonb_get_text(reply, "token") == NULL)
			ereport(ERROR,
					(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
					 errmsg("options.reply_endpoint.token is required for type \"whatsapp_cloud\""),
					 errhint("Use the access token of your WhatsApp Cloud API app.")));
	}
	else if (otp_reply_type_is_sent(type))
		check_gateway(reply, type);
	else
		ereport(ERROR,
				(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
				 errmsg("unknown reply endpoint type \"%s\"", type),
				 errhint("Use \"none\", \"whatsapp_cloud\", \"http\", \"twilio\", \"waha\" or \"green_api\".")));
}

/*
 * otp_check_options: validate otp_link_instance_create's options object.
 */
void
otp_check_options(Jsonb *options)
{
	Jsonb	   *messages;
	Jsonb	   *callback;
	Jsonb	   *reply;
	Jsonb	   *limits;
	int			i;

	otp_check_object_keys(options, "options", option_keys, false);

	messages = otp_jsonb_get_object(options, "messages", "options");
	if (messages)
	{
		const char *texts[3];

		otp_check_object_keys(messages, "options.messages", otp_message_keys, true);
		for (i = 0; otp_message_keys[i]; i++)
			otp_check_text_len(otp_jsonb_get_text(messages, otp_message_keys[i]),
						   OTP_MAX_TEXT_CHARS, "message text");
		for (i = 0; i < 3; i++)
			texts[i] = otp_jsonb_get_text(messages, otp_message_keys[i + 1]);
		otp_check_texts(otp_jsonb_get_text(messages, "prompt"), texts,
					otp_jsonb_get_text(options, "link_url"), NULL, true);
	}
	callback = otp_jsonb_get_object(options, "callback", "options");
	if (callback)
	{
		otp_check_object_keys(callback, "options.callback", otp_callback_keys, true);
		for (i = 0; otp_callback_keys[i]; i++)
			otp_check_url(otp_jsonb_get_text(callback, otp_callback_keys[i]), "callback URL");
	}
	otp_link_url_check(otp_jsonb_get_text(options, "link_url"), "options.link_url");

	reply = otp_jsonb_get_object(options, "reply_endpoint", "options");
	if (reply)
		check_reply_endpoint(reply);
	otp_click_url_check(otp_jsonb_get_text(options, "click_url"), "options.click_url");

	limits = otp_jsonb_get_object(options, "limits", "options");
	if (limits)
	{
		otp_check_object_keys(limits, "options.limits", limit_keys, false);
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

/*
 * otp_resolve_text: the first non-NULL of the link's, the instance's and the
 * built-in value.
 */
const char *
otp_resolve_text(Jsonb *given, Jsonb *inst, const char *key, const char *dflt)
{
	char	   *v = otp_jsonb_get_text(given, key);

	if (v == NULL)
		v = otp_jsonb_get_text(inst, key);
	return v ? v : dflt;
}

/*
 * utf8_chars: characters of the first len bytes of s, valid UTF-8 (as
 * every server string is in a UTF-8 database): the bytes that do not
 * continue a character, as pg_mbstrlen would count them.
 */
static int
utf8_chars(const char *s, size_t len)
{
	const unsigned char *p = (const unsigned char *) s;
	int			n = 0;
	size_t		i;

	for (i = 0; i < len; i++)
		n += (p[i] & 0xC0) != 0x80;
	return n;
}

/*
 * rendered_chars: characters of tmpl once rendered (otp_render_template)
 * with name, a link of link_len characters and a code.  In UTF-8 counted
 * piece by piece without rendering, up to the first count past
 * OTP_MAX_TEXT_CHARS (a million {link}s must not wrap the sum and pass);
 * in other encodings rendered and counted with pg_mbstrlen.  Allocates in
 * CurrentMemoryContext (other encodings only); cannot ERROR.
 */
static int
rendered_chars(const char *tmpl, const char *name, int link_len)
{
	const char *p = tmpl;
	int			n = 0;

	if (GetDatabaseEncoding() != PG_UTF8)
	{
		StringInfoData buf;
		char	   *fake_link = palloc(link_len + 1);

		memset(fake_link, 'x', link_len);
		fake_link[link_len] = '\0';
		initStringInfo(&buf);
		otp_render_template(&buf, tmpl, fake_link, name, "AAAAAAAA");
		return pg_mbstrlen(buf.data);
	}
	/* the pieces otp_render_template would copy, counted */
	while (*p)
	{
		const char *brace = strchr(p, '{');

		if (brace == NULL)
			return n + utf8_chars(p, strlen(p));
		n += utf8_chars(p, brace - p);
		if (strncmp(brace, "{link}", 6) == 0)
			n += link_len;
		else if (strncmp(brace, "{name}", 6) == 0)
			n += name ? utf8_chars(name, strlen(name)) : 0;
		else if (strncmp(brace, "{code}", 6) == 0)
			n += OTP_CODE_LEN;
		else
		{
			n++;				/* a '{' of no placeholder, as it is */
			p = brace + 1;
			continue;
		}
		p = brace + 6;
		/* too long already: stop before a sum of placeholders can wrap */
		if (n > OTP_MAX_TEXT_CHARS)
			return n;
	}
	return n;
}

/*
 * otp_check_texts: ERROR unless a link's texts can be sent (22023, 22001):
 * {link} only in the success text, and there only with a link URL (unless
 * link_url_may_come: an instance's options, where generate may still pass
 * one); every text within WhatsApp's limit once rendered with name and the
 * longest link; the prompt leaves room for the code and its warning.
 * prompt and texts[0..2] (success, failed, expired) may be NULL: not given.
 * Shared by otp_link_generate and the instance options' check, so that an
 * instance whose texts no generate could use is refused when it is made.
 */
void
otp_check_texts(const char *prompt, const char *const *texts, const char *link_url,
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
					 errmsg("message.%s cannot contain {link}", otp_message_keys[i + 1]),
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
							otp_message_keys[i + 1], OTP_MAX_TEXT_CHARS),
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
