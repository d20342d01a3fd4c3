/*-------------------------------------------------------------------------
 *
 * fuzz_phone.c
 *	  libFuzzer target for otp_normalize_phone (src/text.c): phone numbers
 *	  and WhatsApp chat ids to digits.
 *
 * The input is the phone string (it ends at its first NUL, as a C string
 * would).  Properties checked:
 *	- the answer matches a reference written as a pattern: after removing
 *	  one "@c.us" or "@s.whatsapp.net" suffix (any case), the rest is
 *	  " *\+?[0-9 ().-]*" with 8 to 15 digits;
 *	- an accepted number is 8-15 digits and a NUL, fits the 16-byte buffer
 *	  text.c is given, and is exactly the digits of the input in order.
 *
 *-------------------------------------------------------------------------
 */
#include "fuzz_common.h"

#include <string.h>

#define DSTLEN 16

/*
 * has_suffix: s[0..len) ends with suffix, compared case-insensitively,
 * and has at least one byte before it.
 */
static bool
has_suffix(const char *s, size_t len, const char *suffix)
{
	size_t		slen = strlen(suffix);

	return len > slen && pg_strcasecmp(s + len - slen, suffix) == 0;
}

/*
 * reference_valid: the pattern in the header comment; *ndigits gets the
 * number of digits.
 */
static bool
reference_valid(const char *s, int *ndigits)
{
	size_t		len = strlen(s);
	size_t		i = 0;

	if (has_suffix(s, len, "@c.us"))
		len -= strlen("@c.us");
	else if (has_suffix(s, len, "@s.whatsapp.net"))
		len -= strlen("@s.whatsapp.net");

	*ndigits = 0;
	while (i < len && s[i] == ' ')
		i++;
	if (i < len && s[i] == '+')
		i++;
	for (; i < len; i++)
	{
		if (isdigit((unsigned char) s[i]))
			(*ndigits)++;
		else if (strchr(" ().-", s[i]) == NULL)
			return false;
	}
	return *ndigits >= 8 && *ndigits <= 15;
}

int
LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	char	   *input = fuzz_strndup(data, size);
	char	   *dst = malloc(DSTLEN);
	int			ndigits;
	bool		ok;

	if (dst == NULL)
		abort();
	ok = otp_normalize_phone(input, dst, DSTLEN);
	FUZZ_CHECK(ok == reference_valid(input, &ndigits));
	if (ok)
	{
		size_t		n = strlen(dst);
		const char *p;
		size_t		k = 0;

		FUZZ_CHECK(n >= 8 && n <= 15);
		FUZZ_CHECK((int) n == ndigits);
		/* dst is the input's digits, in order (the suffixes hold none) */
		for (p = input; *p; p++)
		{
			if (isdigit((unsigned char) *p))
			{
				FUZZ_CHECK(k < n && dst[k] == *p);
				k++;
			}
		}
		FUZZ_CHECK(k == n);
	}
	free(dst);
	free(input);
	return 0;
}
