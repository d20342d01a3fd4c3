/*-------------------------------------------------------------------------
 *
 * fuzz_template.c
 *	  libFuzzer target for otp_render_template and otp_template_has
 *	  (src/text.c): the reply texts with {link}, {name} and {code}.
 *
 * The input is cut at NUL bytes into template, link, name and code; parts
 * the input does not reach are NULL (rendered as nothing).  Properties
 * checked:
 *	- the output matches a reference renderer, after a prefix already in
 *	  the StringInfo that is kept;
 *	- values are never expanded again: rendering "<{name}>" gives "<",
 *	  the name exactly (even one holding "{link}"), ">";
 *	- otp_template_has(tmpl, "{link}") is true exactly when rendering with
 *	  a one-byte link instead of no link changes the output, and the output
 *	  then grows by one byte per "{link}" in the template.
 *
 *-------------------------------------------------------------------------
 */
#include "fuzz_common.h"

#include <string.h>

#define PREFIX "reply: "

/*
 * reference_render: tmpl with each "{link}", "{name}", "{code}" replaced,
 * scanning the template once left to right.
 */
static void
reference_render(StringInfo dst, const char *tmpl, const char *link,
				 const char *name, const char *code)
{
	static const char *const placeholders[] = {"{link}", "{name}", "{code}"};
	const char *values[3];
	size_t		i = 0;
	size_t		len = strlen(tmpl);

	values[0] = link;
	values[1] = name;
	values[2] = code;
	while (i < len)
	{
		int			k;

		for (k = 0; k < 3; k++)
			if (len - i >= 6 && memcmp(tmpl + i, placeholders[k], 6) == 0)
				break;
		if (k < 3)
		{
			if (values[k])
				appendStringInfoString(dst, values[k]);
			i += 6;
		}
		else
			appendStringInfoChar(dst, tmpl[i++]);
	}
}

/* count_link: occurrences of "{link}" in s (they cannot overlap) */
static int
count_link(const char *s)
{
	int			n = 0;

	while ((s = strstr(s, "{link}")) != NULL)
	{
		n++;
		s += 6;
	}
	return n;
}

/* render: otp_render_template into a fresh StringInfo; returns its data */
static char *
render(const char *tmpl, const char *link, const char *name,
	   const char *code)
{
	StringInfoData buf;

	initStringInfo(&buf);
	otp_render_template(&buf, tmpl, link, name, code);
	FUZZ_CHECK(buf.data[buf.len] == '\0');
	FUZZ_CHECK(strlen(buf.data) == (size_t) buf.len);
	return buf.data;
}

int
LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	char	   *parts[4];
	const char *tmpl,
			   *link,
			   *name,
			   *code;
	StringInfoData out;
	StringInfoData ref;
	char	   *a,
			   *b;

	fuzz_split(data, size, parts, 4);
	tmpl = parts[0];
	link = parts[1];
	name = parts[2];
	code = parts[3];

	/* against the reference, appending after a prefix */
	initStringInfo(&out);
	appendStringInfoString(&out, PREFIX);
	otp_render_template(&out, tmpl, link, name, code);
	initStringInfo(&ref);
	appendStringInfoString(&ref, PREFIX);
	reference_render(&ref, tmpl, link, name, code);
	FUZZ_CHECK(out.len == ref.len);
	FUZZ_CHECK(strcmp(out.data, ref.data) == 0);
	pfree(out.data);
	pfree(ref.data);

	/* a value is copied literally: the name (or the template) as a name */
	a = render("<{name}>", "LINK", name ? name : tmpl, "CODE");
	FUZZ_CHECK(strlen(a) == strlen(name ? name : tmpl) + 2);
	FUZZ_CHECK(a[0] == '<' && a[strlen(a) - 1] == '>');
	FUZZ_CHECK(strncmp(a + 1, name ? name : tmpl, strlen(a) - 2) == 0);
	pfree(a);

	/* otp_template_has agrees with what rendering does */
	a = render(tmpl, NULL, name, code);
	b = render(tmpl, "L", name, code);
	FUZZ_CHECK(otp_template_has(tmpl, "{link}") == (strcmp(a, b) != 0));
	FUZZ_CHECK(strlen(b) - strlen(a) == (size_t) count_link(tmpl));
	pfree(a);
	pfree(b);

	fuzz_free_parts(parts, 4);
	return 0;
}
