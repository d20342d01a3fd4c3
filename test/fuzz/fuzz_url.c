/*-------------------------------------------------------------------------
 *
 * fuzz_url.c
 *	  libFuzzer target for otp_url_is_http (src/text.c): the check on
 *	  callback URLs.
 *
 * The input is the URL (it ends at its first NUL).  Properties checked:
 *	- the answer does not depend on whether a reason is asked for; a
 *	  refusal gives a sentence, an acceptance leaves *why alone;
 *	- the answer matches a reference written apart from text.c: at most
 *	  OTP_MAX_URL_LEN bytes, no whitespace or control bytes, http:// or
 *	  https:// (any case), and in the authority (up to the first '/', '?'
 *	  or '#'), after its last '@', a non-empty bracketed literal or a host
 *	  name of letters, digits, '-', '.', '_' and non-ASCII bytes, then
 *	  nothing or ':' and a port from 1 to 65535;
 *	- the case of the scheme does not matter;
 *	- once the scheme is complete, appending "/a" does not change the
 *	  answer (the host and port end at the first '/', '?' or '#').
 *
 *-------------------------------------------------------------------------
 */
#include "fuzz_common.h"

#include <string.h>

/* scheme_len: length of a leading http:// or https:// (any case), or 0 */
static size_t
scheme_len(const char *url)
{
	if (pg_strncasecmp(url, "https://", 8) == 0)
		return 8;
	if (pg_strncasecmp(url, "http://", 7) == 0)
		return 7;
	return 0;
}

/*
 * authority_valid: host[0..end), the authority after any userinfo, is a
 * host and an optional port as the header comment says.
 */
static bool
authority_valid(const char *host, const char *end)
{
	const char *p = host;
	const char *port_start;
	long		port = 0;

	if (p < end && *p == '[')
	{
		const char *close = memchr(p, ']', end - p);

		if (close == NULL || close == p + 1)
			return false;
		p = close + 1;
	}
	else
	{
		while (p < end && *p != ':')
		{
			unsigned char c = (unsigned char) *p++;

			if (!(isalnum(c) || c == '-' || c == '.' || c == '_' || c >= 0x80))
				return false;
		}
		if (p == host)
			return false;
	}
	if (p == end)
		return true;
	if (*p != ':')
		return false;
	port_start = ++p;
	if (end - port_start < 1 || end - port_start > 5 ||
		strspn(port_start, "0123456789") < (size_t) (end - port_start))
		return false;
	for (; p < end; p++)
		port = port * 10 + (*p - '0');
	return port >= 1 && port <= 65535;
}

/*
 * reference_valid: the rule of the header comment, as a whole.
 */
static bool
reference_valid(const char *url)
{
	size_t		len = strlen(url);
	size_t		slen = scheme_len(url);
	const char *auth;
	const char *auth_end;
	const char *host;

	if (len > OTP_MAX_URL_LEN || slen == 0)
		return false;
	for (size_t i = 0; i < len; i++)
		if ((unsigned char) url[i] <= 0x20 || (unsigned char) url[i] == 0x7F)
			return false;
	auth = url + slen;
	auth_end = auth + strcspn(auth, "/?#");
	host = auth_end;
	while (host > auth && host[-1] != '@')
		host--;
	return authority_valid(host, auth_end);
}

/*
 * check_one: otp_url_is_http on url, with and without a reason; returns
 * the answer.
 */
static bool
check_one(const char *url)
{
	static const char sentinel[] = "unchanged";
	const char *why = sentinel;
	bool		ok = otp_url_is_http(url, &why);

	FUZZ_CHECK(otp_url_is_http(url, NULL) == ok);
	if (ok)
		FUZZ_CHECK(why == sentinel);
	else
	{
		FUZZ_CHECK(why != sentinel && why != NULL);
		FUZZ_CHECK(strlen(why) > 0 && why[strlen(why) - 1] == '.');
	}
	return ok;
}

int
LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	char	   *url = fuzz_strndup(data, size);
	size_t		len = strlen(url);
	size_t		slen = scheme_len(url);
	bool		ok = check_one(url);

	FUZZ_CHECK(ok == reference_valid(url));

	if (slen > 0)
	{
		char	   *other = fuzz_strndup((const uint8_t *) url, len);
		char	   *longer = malloc(len + 3);

		/* flip the case of the scheme */
		for (size_t i = 0; i < slen; i++)
			other[i] = isupper((unsigned char) other[i]) ?
				tolower((unsigned char) other[i]) :
				toupper((unsigned char) other[i]);
		FUZZ_CHECK(check_one(other) == ok);

		/* append a path */
		if (longer == NULL)
			abort();
		memcpy(longer, url, len);
		memcpy(longer + len, "/a", 3);
		if (len + 2 <= OTP_MAX_URL_LEN)
			FUZZ_CHECK(check_one(longer) == ok);
		else
			FUZZ_CHECK(!check_one(longer));
		free(longer);
		free(other);
	}
	free(url);
	return 0;
}
