/*-------------------------------------------------------------------------
 *
 * fuzz_common.h
 *	  Declarations shared by the libFuzzer targets of test/fuzz.
 *
 * The targets link src/text.c compiled as frontend code (-DFRONTEND):
 * palloc and StringInfo then come from PostgreSQL's frontend library
 * libpgcommon.a, where they are plain malloc wrappers, so that
 * AddressSanitizer sees every buffer text.c reads or writes.
 *
 * Every input is copied into heap buffers of its exact size before text.c
 * sees it: a read one byte too far is then an ASan error, not a silent read
 * of libFuzzer's own buffer.
 *
 *-------------------------------------------------------------------------
 */
#ifndef FUZZ_COMMON_H
#define FUZZ_COMMON_H

#include "postgres.h"

#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>

#include "otp_link.h"

/* the libFuzzer entry point each target defines */
extern int	LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

/*
 * FUZZ_CHECK: abort when a property does not hold; libFuzzer reports a
 * crash and saves the input as an artifact.
 */
#define FUZZ_CHECK(cond) \
	do { \
		if (!(cond)) \
			fuzz_fail(#cond, __FILE__, __LINE__); \
	} while (0)

extern void fuzz_fail(const char *what, const char *file, int line)
			pg_attribute_noreturn();
extern char *fuzz_memdup(const uint8_t *data, size_t size);
extern char *fuzz_strndup(const uint8_t *data, size_t size);
extern int	fuzz_split(const uint8_t *data, size_t size, char **parts,
					   int nparts);
extern void fuzz_free_parts(char **parts, int nparts);
extern bool fuzz_form_decode(const char *enc, size_t len, char **out,
							 size_t *outlen);

#endif							/* FUZZ_COMMON_H */
