/*-------------------------------------------------------------------------
 *
 * api.h
 *	  Helpers shared by the SQL-callable functions (api.c, consume.c).
 *
 *-------------------------------------------------------------------------
 */
#ifndef OTP_LINK_API_H
#define OTP_LINK_API_H

#include "executor/spi.h"
#include "utils/jsonb.h"
#include "utils/timestamp.h"

#include "pg_compat.h"

/* SQLSTATEs of our own: PostgREST answers PTxyz with HTTP status xyz */
#define OTP_ERRCODE_RATE_LIMITED	MAKE_SQLSTATE('P','T','4','2','9')
#define OTP_ERRCODE_NOT_FOUND		MAKE_SQLSTATE('P','T','4','0','4')

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

extern void otp_json_key(StringInfo buf, const char *key);
extern void otp_json_str(StringInfo buf, const char *key, const char *val);
extern void otp_json_raw(StringInfo buf, const char *key, const char *raw);
extern Jsonb *otp_json_finish(StringInfo buf);

/* a Jsonb object built directly, without printing and parsing JSON text */
typedef struct OtpJsonb
{
	JsonbParseState *state;
} OtpJsonb;

extern void otp_jb_begin(OtpJsonb *b);
extern void otp_jb_str(OtpJsonb *b, const char *key, const char *val);
extern void otp_jb_bool(OtpJsonb *b, const char *key, bool val);
extern void otp_jb_int(OtpJsonb *b, const char *key, int64 val);
extern Jsonb *otp_jb_finish(OtpJsonb *b);
extern char *otp_format_timestamp(TimestampTz t);

extern char *otp_jsonb_get_text(Jsonb *j, const char *key);
extern Jsonb *otp_jsonb_get_object(Jsonb *j, const char *key, const char *what);
extern int	otp_jsonb_get_int(Jsonb *j, const char *key, int dflt);
extern int	otp_instance_limit(Jsonb *options, const char *key, int dflt);

pg_noreturn extern void otp_error_no_instance(Datum id);
extern char *otp_normalize_phone_or_error(const char *input, const char *what);
extern char *otp_link_url_render(const char *tmpl, const char *token);
extern bool otp_instance_lookup(Datum id, char **phone, char **name,
								Jsonb **options);
extern Jsonb *otp_status_json(Datum id, const char *extra_key,
							  const char *extra_val);

#endif							/* OTP_LINK_API_H */
