/*-------------------------------------------------------------------------
 *
 * spi.h
 *	  SPI helpers (spi.c): kept plans, execution, result text, the schema
 *	  check and the advisory lock.  Layer 1: includes only otp_link.h.
 *
 *-------------------------------------------------------------------------
 */
#ifndef OTP_LINK_SPI_H
#define OTP_LINK_SPI_H

#include "executor/spi.h"

#include "otp_link.h"

/* key spaces of otp_advisory_lock (the lock tag's fourth field, >= 3) */
#define OTP_LOCK_RATE_KEY	7281	/* generate: (instance, rate_key) */
#define OTP_LOCK_SENDER		7282	/* consume: (sender, "") */

extern void otp_check_schema(void);
extern void otp_spi_connect(void);
extern SPIPlanPtr otp_prepare(SPIPlanPtr *plan, const char *query, int nargs,
							  Oid *argtypes);
extern SPIPlanPtr otp_prepare_opts(SPIPlanPtr *plan, const char *query,
								   int nargs, Oid *argtypes,
								   int cursor_options);
extern int	otp_spi_execute(SPIPlanPtr plan, Datum *values, const char *nulls,
							long count);
extern int	otp_spi_execute_latest(SPIPlanPtr plan, Datum *values,
								   const char *nulls, long count);
extern void otp_advisory_lock(const char *key1, const char *key2, uint16 space);
extern char *otp_spi_text(int col);
extern char *otp_spi_text_row(uint64 row, int col);

#endif							/* OTP_LINK_SPI_H */
