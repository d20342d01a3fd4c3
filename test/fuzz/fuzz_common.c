/*-------------------------------------------------------------------------
 *
 * fuzz_common.c
 *	  Helpers shared by the libFuzzer targets of test/fuzz: exact-size
 *	  copies of the input, splitting it into strings, form decoding.
 *
 *-------------------------------------------------------------------------
 */
#include "fuzz_common.h"

#include <string.h>

/*
 * fuzz_fail: report a failed property and abort.
 */
void
fuzz_fail(const char *what, const char *file, int line)
{
	fprintf(stderr, "fuzz property failed: %s (%s:%d)\n", what, file, line);
	abort();
}

/*
 * fuzz_memdup: copy data into a heap buffer of exactly size bytes (no
 * terminator).
 */
char *
fuzz_memdup(const uint8_t *data, size_t size)
{
	char	   *buf = malloc(size > 0 ? size : 1);

	if (buf == NULL)
		abort();
	if (size > 0)
		memcpy(buf, data, size);
	return buf;
}

/*
 * fuzz_strndup: copy data into a NUL-terminated heap buffer of exactly
 * size + 1 bytes.  A NUL inside data simply ends the C string early.
 */
char *
fuzz_strndup(const uint8_t *data, size_t size)
{
	char	   *buf = malloc(size + 1);

	if (buf == NULL)
		abort();
	if (size > 0)
		memcpy(buf, data, size);
	buf[size] = '\0';
	return buf;
}

/*
 * fuzz_split: cut data at NUL bytes into at most nparts strings, each in
 * its own exact-size buffer; the last part keeps any further NULs (so it
 * ends at the first one).  Parts the input does not reach are NULL.
 * Returns the number of parts present.
 */
int
fuzz_split(const uint8_t *data, size_t size, char **parts, int nparts)
{
	const uint8_t *p = data;
	const uint8_t *end = data + size;
	int			n = 0;

	while (n < nparts)
	{
		const uint8_t *nul;

		if (n == nparts - 1 || (nul = memchr(p, '\0', end - p)) == NULL)
		{
			parts[n++] = fuzz_strndup(p, end - p);
			break;
		}
		parts[n++] = fuzz_strndup(p, nul - p);
		p = nul + 1;
	}
	for (int i = n; i < nparts; i++)
		parts[i] = NULL;
	return n;
}

/*
 * fuzz_free_parts: free what fuzz_split allocated.
 */
void
fuzz_free_parts(char **parts, int nparts)
{
	for (int i = 0; i < nparts; i++)
		free(parts[i]);
}

/* hex digit value, or -1; only upper case is what otp_form_urlencode emits */
static int
upper_hex_value(char c)
{
	if (c >= '0' && c <= '9')
		return c - '0';
	if (c >= 'A' && c <= 'F')
		return c - 'A' + 10;
	return -1;
}

/*
 * fuzz_form_decode: decode enc[0..len), the output of otp_form_urlencode,
 * into a malloc'd buffer (*out, *outlen).  Returns false when enc holds a
 * byte outside [A-Za-z0-9-_.~+%] or a '%' not followed by two upper-case
 * hex digits, or when a byte is escaped that did not need to be (the
 * encoding is then not canonical).
 */
bool
fuzz_form_decode(const char *enc, size_t len, char **out, size_t *outlen)
{
	char	   *dst = malloc(len + 1);
	size_t		n = 0;
	size_t		i;

	if (dst == NULL)
		abort();
	for (i = 0; i < len; i++)
	{
		char		c = enc[i];

		if ((c >= 'A' && c <= 'Z') || (c >= 'a' && c <= 'z') ||
			(c >= '0' && c <= '9') || c == '-' || c == '_' || c == '.' ||
			c == '~')
			dst[n++] = c;
		else if (c == '+')
			dst[n++] = ' ';
		else if (c == '%')
		{
			int			hi,
						lo;
			unsigned char b;

			if (len - i < 3)
				goto bad;
			hi = upper_hex_value(enc[i + 1]);
			lo = upper_hex_value(enc[i + 2]);
			if (hi < 0 || lo < 0)
				goto bad;
			b = (unsigned char) (hi * 16 + lo);
			/* bytes kept as they are or sent as '+' are never escaped */
			if ((b >= 'A' && b <= 'Z') || (b >= 'a' && b <= 'z') ||
				(b >= '0' && b <= '9') || b == '-' || b == '_' || b == '.' ||
				b == '~' || b == ' ')
				goto bad;
			dst[n++] = (char) b;
			i += 2;
		}
		else
			goto bad;
	}
	dst[n] = '\0';
	*out = dst;
	*outlen = n;
	return true;

bad:
	free(dst);
	return false;
}
