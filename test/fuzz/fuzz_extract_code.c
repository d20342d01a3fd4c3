/*-------------------------------------------------------------------------
 *
 * fuzz_extract_code.c
 *	  libFuzzer target for otp_extract_code (src/text.c): finding the code
 *	  in the body of a WhatsApp message.
 *
 * The input is the message body, any bytes.  Properties checked:
 *	- a code found is eight upper-case ASCII letters and a NUL, written
 *	  into a buffer of exactly OTP_CODE_LEN + 1 bytes;
 *	- the answer matches a reference written differently: the first '['
 *	  whose text up to the next ']' is, once spaces are trimmed at both
 *	  ends, eight ASCII letters (any case);
 *	- the code appears case-insensitively in the input between brackets.
 *
 *-------------------------------------------------------------------------
 */
#include "fuzz_common.h"

#include <string.h>

static bool
is_ascii_letter(char c)
{
	return (c >= 'A' && c <= 'Z') || (c >= 'a' && c <= 'z');
}

/*
 * reference_extract: the first "[ *<8 letters> *]" of body, upper-cased
 * into dst; false if there is none.
 */
static bool
reference_extract(const char *body, size_t len, char *dst)
{
	size_t		open;

	for (open = 0; open < len; open++)
	{
		const char *close;
		size_t		from,
					to;

		if (body[open] != '[')
			continue;
		close = memchr(body + open + 1, ']', len - open - 1);
		if (close == NULL)
			return false;		/* no ']' after this '[' nor any later one */
		from = open + 1;
		to = close - body;
		while (from < to && body[from] == ' ')
			from++;
		while (to > from && body[to - 1] == ' ')
			to--;
		if (to - from == OTP_CODE_LEN)
		{
			size_t		i;

			for (i = 0; i < OTP_CODE_LEN; i++)
				if (!is_ascii_letter(body[from + i]))
					break;
			if (i == OTP_CODE_LEN)
			{
				for (i = 0; i < OTP_CODE_LEN; i++)
					dst[i] = (char) toupper((unsigned char) body[from + i]);
				dst[OTP_CODE_LEN] = '\0';
				return true;
			}
		}
	}
	return false;
}

/*
 * appears_bracketed: code occurs case-insensitively in body, preceded by
 * '[' and optional spaces.
 */
static bool
appears_bracketed(const char *body, size_t len, const char *code)
{
	size_t		i;

	for (i = 0; i + OTP_CODE_LEN <= len; i++)
	{
		size_t		j = i;

		if (pg_strncasecmp(body + i, code, OTP_CODE_LEN) != 0)
			continue;
		while (j > 0 && body[j - 1] == ' ')
			j--;
		if (j > 0 && body[j - 1] == '[')
			return true;
	}
	return false;
}

int
LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	char	   *body = fuzz_memdup(data, size);
	char	   *code = malloc(OTP_CODE_LEN + 1);
	char		ref[OTP_CODE_LEN + 1];
	bool		found;

	if (code == NULL)
		abort();
	found = otp_extract_code(body, size, code);
	FUZZ_CHECK(found == reference_extract(body, size, ref));
	if (found)
	{
		FUZZ_CHECK(code[OTP_CODE_LEN] == '\0');
		for (int i = 0; i < OTP_CODE_LEN; i++)
			FUZZ_CHECK(code[i] >= 'A' && code[i] <= 'Z');
		FUZZ_CHECK(strcmp(code, ref) == 0);
		FUZZ_CHECK(appears_bracketed(body, size, code));
	}
	free(code);
	free(body);
	return 0;
}
