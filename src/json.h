/*-------------------------------------------------------------------------
 *
 * json.h
 *	  JSON writers and readers (json.c).  Layer 1: includes only
 *	  otp_link.h.
 *
 *-------------------------------------------------------------------------
 */
#ifndef OTP_LINK_JSON_H
#define OTP_LINK_JSON_H

#include "utils/jsonb.h"
#include "utils/timestamp.h"

#include "otp_link.h"

/* pairs held in an OtpJsonb itself; more are palloc'd */
#define OTP_JB_INLINE	16

/* a Jsonb object built directly, without printing and parsing JSON text */
typedef struct OtpJsonb
{
	JsonbPair  *pairs;			/* in the order given: inline_pairs or palloc'd */
	int			npairs;
	int			maxpairs;
	bool		nested;			/* a value is an object or array */
	JsonbPair	inline_pairs[OTP_JB_INLINE];
} OtpJsonb;

extern void otp_jb_begin(OtpJsonb *b);
extern void otp_jb_str(OtpJsonb *b, const char *key, const char *val);
extern void otp_jb_bool(OtpJsonb *b, const char *key, bool val);
extern void otp_jb_int(OtpJsonb *b, const char *key, int64 val);
extern void otp_jb_raw(OtpJsonb *b, const char *key, const char *raw);
extern Jsonb *otp_jb_finish(OtpJsonb *b);
extern char *otp_format_timestamp(TimestampTz t);

/* readers */
extern char *otp_jsonb_get_text(Jsonb *j, const char *key);
extern Jsonb *otp_jsonb_get_object(Jsonb *j, const char *key, const char *what);

#endif							/* OTP_LINK_JSON_H */
