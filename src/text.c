/*-------------------------------------------------------------------------
 *
 * text.c
 *	  Link and message text: URL encoding, the wa.me link, phone numbers,
 *	  callback URL checks, code extraction and template rendering.
 *
 * These functions do no catalog or table access and never ERROR on bad
 * input: they report it through their return value so the caller can
 * raise the right SQLSTATE.  Output goes to a caller-supplied StringInfo
 * or buffer; only otp_whatsapp_url pallocs its result.
 *
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include "utils/memutils.h"

#include "otp_link.h"

#define WA_SUFFIX "] - DO NOT CHANGE THIS MESSAGE"

static const char hexdigits[] = "0123456789ABCDEF";

/*
 * otp_form_urlencode: append src[0..len) to dst encoded as an HTML form
 * would: A-Z a-z 0-9 - _ . ~ as they are, space as '+', every other byte
 * as %XX (upper-case hex).  The input is expected to be UTF-8 already.
 */
void
otp_form_urlencode(StringInfo dst, const char *src, size_t len)
{
	while (len > 0)
	{
		size_t		chunk = Min(len, 4096);
		char	   *p;
		size_t		i;

		/* room for every byte as %XX: then write in place */
		enlargeStringInfo(dst, (int) (chunk * 3));
		p = dst->data + dst->len;
		for (i = 0; i < chunk; i++)
		{
			unsigned char c = (unsigned char) src[i];

			if ((c >= 'A' && c <= 'Z') || (c >= 'a' && c <= 'z') ||
				(c >= '0' && c <= '9') || c == '-' || c == '_' || c == '.' ||
				c == '~')
				*p++ = (char) c;
			else if (c == ' ')
				*p++ = '+';
			else
			{
				*p++ = '%';
				*p++ = hexdigits[c >> 4];
				*p++ = hexdigits[c & 0x0F];
			}
		}
		*p = '\0';
		dst->len = p - dst->data;
		src += chunk;
		len -= chunk;
	}
}

/*
 * otp_whatsapp_url: "https://wa.me/<digits>?text=<prompt> [<code>] - DO NOT
 * CHANGE THIS MESSAGE", form-encoded; an empty prompt leaves the text
 * starting at the bracket.  prompt must be UTF-8.  Returns a palloc'd
 * string.
 */
char *
otp_whatsapp_url(const char *phone_digits, const char *prompt,
				 const char *code)
{
	StringInfoData buf;
	size_t		plen = strlen(prompt);

	initStringInfo(&buf);
	appendStringInfoString(&buf, "https://wa.me/");
	appendStringInfoString(&buf, phone_digits);
	appendStringInfoString(&buf, "?text=");
	if (plen > 0)
	{
		otp_form_urlencode(&buf, prompt, plen);
		appendStringInfoChar(&buf, '+');
	}
	otp_form_urlencode(&buf, "[", 1);
	otp_form_urlencode(&buf, code, strlen(code));
	otp_form_urlencode(&buf, WA_SUFFIX, strlen(WA_SUFFIX));
	return buf.data;
}

/*
 * otp_normalize_phone: turn "201234567890@c.us", "+20 123 456-7890",
 * "(20) 123.456.7890" or plain digits into 8-15 digits in dst (dstlen >=
 * 16): a WhatsApp number, which is E.164 without the '+'.  Separators
 * allowed: space, '-', '.', '(', ')' and one leading '+'.  Two national
 * spellings are converted: the international call prefix "00" in front
 * (without a '+') is dropped, and so is a trunk prefix written "(0)" after
 * the country code ("+20 (0) 155 ...").  Any other number starting with 0
 * is a national number and refused, like anything else malformed: returns
 * false.  Never allocates, never ERRORs.
 */
bool
otp_normalize_phone(const char *input, char *dst, size_t dstlen)
{
	const char *p = input;
	const char *end = input + strlen(input);
	char		digits[18];
	size_t		n = 0;
	size_t		skip = 0;
	bool		plus = false;

	Assert(dstlen >= 16);

	/* WhatsApp ids: <digits>@c.us or <digits>@s.whatsapp.net */
	if (end - p > 5 && pg_strcasecmp(end - 5, "@c.us") == 0)
		end -= 5;
	else if (end - p > 15 && pg_strcasecmp(end - 15, "@s.whatsapp.net") == 0)
		end -= 15;

	while (p < end && *p == ' ')
		p++;
	if (p < end && *p == '+')
	{
		plus = true;
		p++;
	}
	for (; p < end; p++)
	{
		if (*p >= '0' && *p <= '9')
		{
			if (n >= sizeof(digits) - 1)
				return false;
			digits[n++] = *p;
		}
		else if (*p == '(' && n > 0 && end - p >= 3 && p[1] == '0' && p[2] == ')')
			p += 2;				/* "(0)": a trunk prefix after the country code */
		else if (*p != ' ' && *p != '-' && *p != '.' && *p != '(' && *p != ')')
			return false;
	}
	digits[n] = '\0';
	if (!plus && n > 2 && digits[0] == '0' && digits[1] == '0')
		skip = 2;				/* "00": the international call prefix */
	if (n - skip < 8 || n - skip > 15 || digits[skip] == '0')
		return false;
	memcpy(dst, digits + skip, n - skip + 1);
	(void) dstlen;
	return true;
}

/*
 * otp_extract_code: find the first "[XXXXXXXX]" (eight ASCII letters, any
 * case, optional spaces inside the brackets) in body[0..len) and write it
 * upper-cased with a NUL into dst (OTP_CODE_LEN + 1 bytes).  Returns false
 * when the body holds no code; a body without '[' costs one memchr.
 */
bool
otp_extract_code(const char *body, size_t len, char *dst)
{
	const char *p = body;
	const char *end = body + len;

	while ((p = memchr(p, '[', end - p)) != NULL)
	{
		const char *q = p + 1;
		int			n = 0;

		while (q < end && *q == ' ')
			q++;
		while (q < end && n < OTP_CODE_LEN &&
			   ((*q >= 'A' && *q <= 'Z') || (*q >= 'a' && *q <= 'z')))
		{
			dst[n++] = (*q >= 'a') ? (*q - 'a' + 'A') : *q;
			q++;
		}
		while (q < end && *q == ' ')
			q++;
		if (n == OTP_CODE_LEN && q < end && *q == ']')
		{
			dst[OTP_CODE_LEN] = '\0';
			return true;
		}
		p++;
	}
	return false;
}

/*
 * url_check_host: check the host of a URL's authority, from host up to
 * hostend (userinfo already skipped): a bracketed IPv6 literal or host
 * name characters.  Sets *rest to what follows the host.  Returns NULL
 * when fine, else a static English sentence.  No allocation.
 */
static const char *
url_check_host(const char *host, const char *hostend, const char **rest)
{
	const char *p;

	if (host < hostend && *host == '[')
	{
		const char *close = memchr(host, ']', hostend - host);

		if (close == NULL || close == host + 1)
			return "The URL has a malformed IPv6 host.";
		*rest = close + 1;
		return NULL;
	}
	p = host;
	while (p < hostend && *p != ':')
	{
		if (!(isalnum((unsigned char) *p) || *p == '-' || *p == '.' ||
			  *p == '_' || (unsigned char) *p >= 0x80))
			return "The URL's host contains characters a host name cannot have.";
		p++;
	}
	if (p == host)
		return "The URL has no host.";
	*rest = p;
	return NULL;
}

/*
 * url_check_port: check what follows a URL's host up to hostend: ":" and
 * a port from 1 to 65535.  Returns NULL when fine, else a static English
 * sentence.  No allocation.
 */
static const char *
url_check_port(const char *p, const char *hostend)
{
	int			digits = 0;
	long		port = 0;

	if (*p != ':')
		return "The URL has characters after its host.";
	for (p++; p < hostend; p++, digits++)
	{
		if (!isdigit((unsigned char) *p) || digits >= 5)
			return "The URL's port is not a number.";
		port = port * 10 + (*p - '0');
	}
	if (digits == 0 || port < 1 || port > 65535)
		return "The URL's port is not between 1 and 65535.";
	return NULL;
}

/*
 * otp_url_is_http: true if url is an absolute http:// or https:// URL with
 * a host, an optional numeric port, no whitespace or control characters
 * and at most OTP_MAX_URL_LEN bytes.  On false, *why (if not NULL) points
 * to a static English sentence.
 */
bool
otp_url_is_http(const char *url, const char **why)
{
	size_t		len = strlen(url);
	const char *p;
	const char *host;
	const char *hostend;
	const char *at;
	const char *err;
	size_t		i;

	if (len > OTP_MAX_URL_LEN)
	{
		if (why)
			*why = "The URL is longer than 2048 bytes.";
		return false;
	}
	for (i = 0; i < len; i++)
	{
		unsigned char c = (unsigned char) url[i];

		if (c <= 0x20 || c == 0x7F)
		{
			if (why)
				*why = "The URL contains whitespace or control characters.";
			return false;
		}
	}
	if (pg_strncasecmp(url, "https://", 8) == 0)
		p = url + 8;
	else if (pg_strncasecmp(url, "http://", 7) == 0)
		p = url + 7;
	else
	{
		if (why)
			*why = "The URL does not start with http:// or https://.";
		return false;
	}

	/* authority ends at the first '/', '?' or '#' */
	hostend = p + strcspn(p, "/?#");
	/* skip userinfo */
	host = p;
	while ((at = memchr(host, '@', hostend - host)) != NULL)
		host = at + 1;

	err = url_check_host(host, hostend, &p);
	if (err == NULL && p < hostend)
		err = url_check_port(p, hostend);
	if (err != NULL)
	{
		if (why)
			*why = err;
		return false;
	}
	return true;
}

/*
 * otp_template_has: true if tmpl contains placeholder (e.g. "{link}").
 */
bool
otp_template_has(const char *tmpl, const char *placeholder)
{
	return tmpl != NULL && strstr(tmpl, placeholder) != NULL;
}

/*
 * otp_render_template: append tmpl to dst with {link}, {name} and {code}
 * replaced by the given values (NULL renders as nothing).  One pass: a
 * value is copied literally and never expanded again, so a name holding
 * "{link}" stays "{link}".  Other braces are copied as they are.
 */
void
otp_render_template(StringInfo dst, const char *tmpl, const char *link,
					const char *name, const char *code)
{
	const char *p = tmpl;

	while (*p)
	{
		const char *brace = strchr(p, '{');

		if (brace == NULL)
		{
			appendStringInfoString(dst, p);
			return;
		}
		appendBinaryStringInfo(dst, p, brace - p);
		if (strncmp(brace, "{link}", 6) == 0)
		{
			if (link)
				appendStringInfoString(dst, link);
			p = brace + 6;
		}
		else if (strncmp(brace, "{name}", 6) == 0)
		{
			if (name)
				appendStringInfoString(dst, name);
			p = brace + 6;
		}
		else if (strncmp(brace, "{code}", 6) == 0)
		{
			if (code)
				appendStringInfoString(dst, code);
			p = brace + 6;
		}
		else
		{
			appendStringInfoChar(dst, '{');
			p = brace + 1;
		}
	}
}
