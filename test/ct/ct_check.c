/*-------------------------------------------------------------------------
 *
 * ct_check.c
 *	  Check that otp_timingsafe_equal() runs in constant time, on the very
 *	  object file that goes into otp_link.so (src/code.o).
 *
 * The secret bytes are marked undefined for Valgrind's memcheck
 * (VALGRIND_MAKE_MEM_UNDEFINED).  memcheck then reports every conditional
 * branch, and every memory address, that depends on them: exactly what
 * would make the time of the comparison depend on where the inputs
 * differ.  The boolean result is marked defined again before it is used,
 * since the answer itself may of course depend on the secrets.
 *
 * "ct_check safe" compares with otp_timingsafe_equal and must give no
 * memcheck error; "ct_check leaky" compares with memcmp() and must give
 * some (this proves the check can fail).  Run by test/t/031_constant_time.pl.
 *
 *-------------------------------------------------------------------------
 */
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <valgrind/memcheck.h>

/* from src/code.c (the rest of code.o is not called here) */
extern bool otp_timingsafe_equal(const void *a, const void *b, size_t len);

#define LEN 32

/* memcmp through a pointer, so the compiler cannot fold it */
static int	(*volatile leaky_cmp) (const void *, const void *, size_t) = memcmp;

/*
 * compare: a against b with the chosen function; the inputs are secret
 * (undefined for memcheck), the answer is public.
 */
static bool
compare(bool safe, unsigned char *a, unsigned char *b)
{
	bool		eq;

	VALGRIND_MAKE_MEM_UNDEFINED(a, LEN);
	VALGRIND_MAKE_MEM_UNDEFINED(b, LEN);
	if (safe)
		eq = otp_timingsafe_equal(a, b, LEN);
	else
		eq = (leaky_cmp(a, b, LEN) == 0);
	VALGRIND_MAKE_MEM_DEFINED(&eq, sizeof(eq));
	VALGRIND_MAKE_MEM_DEFINED(a, LEN);
	VALGRIND_MAKE_MEM_DEFINED(b, LEN);
	return eq;
}

int
main(int argc, char **argv)
{
	unsigned char a[LEN];
	unsigned char b[LEN];
	bool		safe;
	int			failures = 0;
	/* equal (-1), then a difference at the first, a middle and the last byte */
	static const int positions[] = {-1, 0, LEN / 2, LEN - 1};
	int			i;

	if (argc != 2 || (strcmp(argv[1], "safe") != 0 && strcmp(argv[1], "leaky") != 0))
	{
		fprintf(stderr, "usage: %s safe|leaky\n", argv[0]);
		return 2;
	}
	safe = strcmp(argv[1], "safe") == 0;

	for (i = 0; i < (int) (sizeof(positions) / sizeof(positions[0])); i++)
	{
		int			pos = positions[i];

		memset(a, 0x5a, LEN);
		memset(b, 0x5a, LEN);
		if (pos >= 0)
			b[pos] ^= 0x01;
		if (compare(safe, a, b) != (pos < 0))
		{
			fprintf(stderr, "wrong answer with a difference at byte %d\n", pos);
			failures++;
		}
	}
	printf("%s: %d wrong answers\n", argv[1], failures);
	return failures ? 1 : 0;
}
