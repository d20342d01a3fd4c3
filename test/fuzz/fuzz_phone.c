/*-------------------------------------------------------------------------
 *
 * fuzz_phone.c
 *	  libFuzzer target for otp_normalize_phone (src/text.c): phone numbers
 *	  and WhatsApp chat ids to digits.
 *
 * The input is the phone string (it ends at its first NUL, as a C string
 * would).  Properties checked:
 *	- the answer matches a reference: after removing one "@c.us" or
 *	  "@s.whatsapp.net" suffix (any case), the rest is " *\+?[0-9 ().-]*";
 *	  its digits, less a "(0)" trunk prefix after the first digit and, with
 *	  no '+', a leading "00", are 8 to 15 and do not start with 0;
 *	- an accepted number is those digits and a NUL, and fits the 16-byte
 *	  buffer text.c is given.
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
 * reference_valid: the rules in the header comment; the expected digits go
 * to want (at least strlen(s) + 1 bytes).
 */
static bool
reference_valid(const char *s, char *want)
{
	size_t		len = strlen(s);
	size_t		i = 0;
	size_t		n = 0;
	bool		plus = false;

	if (has_suffix(s, len, "@c.us"))
		len -= strlen("@c.us");
	else if (has_suffix(s, len, "@s.whatsapp.net"))
		len -= strlen("@s.whatsapp.net");

	while (i < len && s[i] == ' ')
		i++;
	if (i < len && s[i] == '+')
	{
		plus = true;
		i++;
	}
	for (; i < len; i++)
	{
		if (isdigit((unsigned char) s[i]))
			want[n++] = s[i];
		else if (n > 0 && len - i >= 3 && strncmp(s + i, "(0)", 3) == 0)
			i += 2;
		else if (strchr(" ().-", s[i]) == NULL)
			return false;
	}
	want[n] = '\0';
	if (!plus && n > 2 && want[0] == '0' && want[1] == '0')
	{
		memmove(want, want + 2, n - 1);
		n -= 2;
	}
	return n >= 8 && n <= 15 && want[0] != '0';
}

int
LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	char	   *input = fuzz_strndup(data, size);
	char	   *dst = malloc(DSTLEN);
	char	   *want = malloc(size + 1);
	bool		ok;

	if (dst == NULL || want == NULL)
		abort();
	ok = otp_normalize_phone(input, dst, DSTLEN);
	FUZZ_CHECK(ok == reference_valid(input, want));
	if (ok)
	{
		size_t		n = strlen(dst);

		FUZZ_CHECK(n >= 8 && n <= 15);
		FUZZ_CHECK(strcmp(dst, want) == 0);
	}
	free(want);
	free(dst);
	free(input);
	return 0;
}
