/*-------------------------------------------------------------------------
 *
 * api.h
 *	  The SQL-callable side: options.c, instance.c, link.c, consume.c,
 *	  expire.c and redeem.c.  Layer 3 (backend side): includes otp_link.h,
 *	  spi.h, json.h and shmem.h; never worker.h.
 *
 *-------------------------------------------------------------------------
 */
#ifndef OTP_LINK_API_H
#define OTP_LINK_API_H

#include "utils/jsonb.h"

#include "otp_link.h"
#include "spi.h"
#include "json.h"
#include "shmem.h"

/* SQLSTATEs of our own: PostgREST answers PTxyz with HTTP status xyz */
#define OTP_ERRCODE_RATE_LIMITED	MAKE_SQLSTATE('P','T','4','2','9')
#define OTP_ERRCODE_NOT_FOUND		MAKE_SQLSTATE('P','T','4','0','4')
#define OTP_ERRCODE_GONE			MAKE_SQLSTATE('P','T','4','1','0')

/* SQL fragments shared by consume.c, expire.c and redeem.c */
#define ISO(col) "to_char(" col " AT TIME ZONE 'UTC', 'YYYY-MM-DD\"T\"HH24:MI:SS\"+00:00\"')"

/* the "data" object of a callback, from links l joined to instances i */
#define LINK_DATA_SQL \
	"jsonb_build_object('uuid', l.id, 'status', l.status, 'otp_type', 'link', " \
	"'chat_id', i.phone || '@c.us', 'verified_chat_id', l.chat_id, " \
	"'name', l.name, 'reason', l.reason, " \
	"'created_at', " ISO("l.created_at") ", 'expires_at', " ISO("l.expires_at") ", " \
	"'finished_at', " ISO("l.finished_at") ", 'metadata', l.metadata)"

/* options.c */
extern const char *const otp_message_keys[];
extern const char *const otp_callback_keys[];
extern void otp_check_object_keys(Jsonb *j, const char *what,
								  const char *const *allowed,
								  bool strings_only);
extern void otp_check_text_len(const char *s, int max, const char *what);
extern void otp_check_url(const char *url, const char *what);
extern void otp_link_url_check(const char *tmpl, const char *what);
extern void otp_check_options(Jsonb *options);
extern void otp_check_texts(const char *prompt, const char *const *texts,
							const char *link_url, const char *name,
							bool link_url_may_come);
extern const char *otp_resolve_text(Jsonb *given, Jsonb *inst,
									const char *key, const char *dflt);
extern int	otp_jsonb_get_int(Jsonb *j, const char *key, int dflt);
extern int	otp_instance_limit(Jsonb *options, const char *key, int dflt);
extern char *otp_normalize_phone_or_error(const char *input, const char *what);
extern char *otp_link_url_render(const char *tmpl, const char *token);
extern void otp_click_url_check(const char *tmpl, const char *what);
extern char *otp_click_url_render(const char *tmpl, const char *uuid);
extern bool otp_reply_type_is_sent(const char *type);

/* instance.c */
pg_noreturn extern void otp_error_no_instance(Datum id);
extern bool otp_instance_lookup(Datum id, char **phone, char **name,
								Jsonb **options);

/* link.c */
extern Jsonb *otp_status_json(Datum id, const char *extra_key,
							  const char *extra_val);

#endif							/* OTP_LINK_API_H */
