/*-------------------------------------------------------------------------
 *
 * fuzz_urlencode.c
 *	  libFuzzer target for otp_form_urlencode and otp_whatsapp_url
 *	  (src/text.c): form encoding and the wa.me link.
 *
 * Each input is used twice:
 *	- all of it, any bytes, is form-encoded after a prefix already in the
 *	  StringInfo: the prefix is kept, the output only holds
 *	  [A-Za-z0-9-_.~+%], every '%' is followed by two upper-case hex
 *	  digits, only bytes that need it are escaped, and decoding gives the
 *	  input back;
 *	- cut at NUL bytes into phone digits, prompt and code, it builds a
 *	  wa.me link: "https://wa.me/<phone>?text=" followed by the encoding of
 *	  "<prompt> [<code>] - DO NOT CHANGE THIS MESSAGE" (no prompt and no
 *	  space when the prompt is empty).
 *
 *-------------------------------------------------------------------------
 */
#include "fuzz_common.h"

#include <string.h>

#define PREFIX "text="
#define WA_PREFIX "https://wa.me/"
#define WA_TEXT "?text="
#define WA_SUFFIX "] - DO NOT CHANGE THIS MESSAGE"

/*
 * check_urlencode: encode src[0..len) after PREFIX and check the output.
 */
static void
check_urlencode(const char *src, size_t len)
{
	StringInfoData buf;
	char	   *decoded;
	size_t		decoded_len;

	initStringInfo(&buf);
	appendStringInfoString(&buf, PREFIX);
	otp_form_urlencode(&buf, src, len);

	FUZZ_CHECK(buf.len >= (int) strlen(PREFIX));
	FUZZ_CHECK(memcmp(buf.data, PREFIX, strlen(PREFIX)) == 0);
	FUZZ_CHECK(buf.data[buf.len] == '\0');
	FUZZ_CHECK(fuzz_form_decode(buf.data + strlen(PREFIX),
								buf.len - strlen(PREFIX),
								&decoded, &decoded_len));
	FUZZ_CHECK(decoded_len == len);
	FUZZ_CHECK(len == 0 || memcmp(decoded, src, len) == 0);
	free(decoded);
	pfree(buf.data);
}

/*
 * check_whatsapp_url: build the link from the parts and take it apart.
 */
static void
check_whatsapp_url(const char *phone, const char *prompt, const char *code)
{
	char	   *url = otp_whatsapp_url(phone, prompt, code);
	size_t		url_len = strlen(url);
	size_t		phone_len = strlen(phone);
	size_t		head_len = strlen(WA_PREFIX) + phone_len + strlen(WA_TEXT);
	StringInfoData expect;
	char	   *decoded;
	size_t		decoded_len;

	FUZZ_CHECK(url_len >= head_len);
	FUZZ_CHECK(strncmp(url, WA_PREFIX, strlen(WA_PREFIX)) == 0);
	FUZZ_CHECK(strncmp(url + strlen(WA_PREFIX), phone, phone_len) == 0);
	FUZZ_CHECK(strncmp(url + strlen(WA_PREFIX) + phone_len, WA_TEXT,
					   strlen(WA_TEXT)) == 0);

	initStringInfo(&expect);
	if (*prompt)
	{
		appendStringInfoString(&expect, prompt);
		appendStringInfoChar(&expect, ' ');
	}
	appendStringInfoChar(&expect, '[');
	appendStringInfoString(&expect, code);
	appendStringInfoString(&expect, WA_SUFFIX);

	FUZZ_CHECK(fuzz_form_decode(url + head_len, url_len - head_len,
								&decoded, &decoded_len));
	FUZZ_CHECK(decoded_len == (size_t) expect.len);
	FUZZ_CHECK(memcmp(decoded, expect.data, decoded_len) == 0);
	free(decoded);
	pfree(expect.data);
	pfree(url);
}

int
LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	char	   *all = fuzz_memdup(data, size);
	char	   *parts[3];

	check_urlencode(all, size);
	free(all);

	/* phone \0 prompt \0 code; absent parts are empty strings */
	fuzz_split(data, size, parts, 3);
	for (int i = 0; i < 3; i++)
		if (parts[i] == NULL)
			parts[i] = fuzz_strndup(data, 0);
	check_whatsapp_url(parts[0], parts[1], parts[2]);
	fuzz_free_parts(parts, 3);
	return 0;
}
