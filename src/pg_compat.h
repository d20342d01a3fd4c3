/*-------------------------------------------------------------------------
 *
 * pg_compat.h
 *	  The differences between the PostgreSQL majors otp_link builds against
 *	  (15, 16, 17 and 18), in one place.
 *
 * The rest of src/ is written against the NEWEST API; each macro below
 * supplies that API on the older majors it is missing from.  This is the
 * only file of src/ that tests PG_VERSION_NUM.
 *
 *-------------------------------------------------------------------------
 */
#ifndef OTP_LINK_PG_COMPAT_H
#define OTP_LINK_PG_COMPAT_H

#include "postgres.h"

#if PG_VERSION_NUM < 150000
#error "otp_link needs PostgreSQL 15 or later"
#endif

#include "storage/latch.h"

/*
 * 18 replaced the pg_attribute_noreturn() suffix by the pg_noreturn prefix;
 * GCC and Clang accept the attribute in front of a declaration too.
 */
#ifndef pg_noreturn
#define pg_noreturn pg_attribute_noreturn()
#endif

/*
 * 17 ties a WaitEventSet to a resource owner instead of allocating it in a
 * memory context.
 */
#if PG_VERSION_NUM < 170000
#define CreateWaitEventSet(resowner, nevents) \
	CreateWaitEventSet(CurrentMemoryContext, (nevents))
#endif

/* 18 moved the WaitEventSet API out of storage/latch.h */
#if PG_VERSION_NUM >= 180000
#include "storage/waiteventset.h"
#endif

/*
 * The binary side of pg_b64_encode() and pg_b64_decode(): uint8 since 18,
 * char before.
 */
#if PG_VERSION_NUM >= 180000
#define PG_B64_BYTE uint8
#else
#define PG_B64_BYTE char
#endif

/*
 * A GUC check hook's "extra": since 16 guc.c frees it with guc_free(), so it
 * must come from guc_malloc(); before 16 guc.c frees it with free().
 */
#if PG_VERSION_NUM < 160000
#define guc_malloc(elevel, size) malloc(size)
#define guc_free(ptr) free(ptr)
#endif

#endif							/* OTP_LINK_PG_COMPAT_H */
