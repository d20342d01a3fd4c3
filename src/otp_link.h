/*-------------------------------------------------------------------------
 *
 * otp_link.h
 *	  Declarations shared by the source files of otp_link.
 *
 * The lowest layer: constants, settings, and the files that know nothing
 * of tables or shared memory (code.c, text.c, signing.c, http.c).  Every
 * .c file includes it; the layers above have headers of their own, each
 * including only the ones below it (docs/architecture.md):
 *
 *	otp_link.h  <-  spi.h, json.h  <-  shmem.h  <-  api.h, worker.h
 *
 * libcurl is not included here: only http.c knows about it.
 *
 *-------------------------------------------------------------------------
 */
#ifndef OTP_LINK_H
#define OTP_LINK_H

#include "postgres.h"

#include <time.h>

#include "lib/ilist.h"
#include "lib/stringinfo.h"
#include "nodes/pg_list.h"
#include "utils/guc.h"
#include "utils/jsonb.h"
#include "utils/uuid.h"

#include "pg_compat.h"

#define OTP_LINK_VERSION "1.1.0"

/* lengths */
#define OTP_CODE_LEN			8		/* letters in a code */
#define OTP_TOKEN_BYTES			32		/* entropy of a {link} token */
#define OTP_SECRET_BYTES		24		/* entropy of a whsec_ secret */
#define OTP_HASH_LEN			32		/* SHA-256 digest */

/* limits on input (documented in docs/sql-reference.md) */
#define OTP_MAX_EXPIRES			86400	/* a link lives at most one day */
#define OTP_MAX_TEXT_CHARS		4096	/* WhatsApp's limit on a text message */
#define OTP_MAX_NAME_CHARS		256
#define OTP_MAX_URL_LEN			2048
/* the largest limits, in settings and in an instance's options.limits */
#define OTP_MAX_LIMIT_COUNT		1000000
#define OTP_MAX_LIMIT_SECONDS	(86400 * 7)
#define OTP_MAX_HEADER_VALUE	4096	/* bytes of a token sent in a header */
#define OTP_MAX_KEY_LEN			256		/* rate_key, binding, message_id */

/* GUC variables (otp_link.c) */
extern char *otp_link_database;
extern char *otp_link_retry_schedule;
extern bool otp_link_allow_http;
extern bool otp_link_allow_private_networks;
extern int	otp_link_max_concurrency;
extern int	otp_link_destination_concurrency;
extern int	otp_link_breaker_failures;
extern int	otp_link_breaker_pause_ms;
extern int	otp_link_timeout_ms;
extern int	otp_link_connect_timeout_ms;
extern int	otp_link_sweep_interval_ms;
extern int	otp_link_retention_s;
extern int	otp_link_message_retention_s;
extern int	otp_link_token_ttl_s;
extern int	otp_link_unknown_code_limit;
extern int	otp_link_unknown_code_rate;
extern int	otp_link_unknown_code_window_s;
extern int	otp_link_block_duration_s;
extern int	otp_link_generate_limit;
extern int	otp_link_generate_window_s;
extern bool otp_link_preloaded;

/*
 * otp_mono_us: microseconds on the monotonic clock.  The worker's waits and
 * deadlines use it, so that a step of the wall clock neither delays nor
 * hastens them.  Cannot fail on the platforms PostgreSQL supports.
 */
static inline int64
otp_mono_us(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (int64) ts.tv_sec * 1000000 + ts.tv_nsec / 1000;
}

/* random.c: strong random bytes, buffered */
extern void otp_random_bytes(uint8 *dst, int len);

/* code.c: randomness and digests */
extern void otp_code_define_gucs(void);
extern void otp_random_code(char *dst);
extern void otp_random_uuid(pg_uuid_t *dst);
extern char *otp_uuid_text(const pg_uuid_t *uuid);
extern char *otp_random_token(void);
extern char *otp_random_secret(void);
extern void otp_sha256(const char *data, size_t len, uint8 *dst);
extern bytea *otp_sha256_bytea(const char *data, size_t len);
extern bool otp_timingsafe_equal(const void *a, const void *b, size_t len);
extern bool otp_code_is_valid(const char *code);

/* text.c: link and message text */
extern void otp_form_urlencode(StringInfo dst, const char *src, size_t len);
extern char *otp_whatsapp_url(const char *phone_digits, const char *prompt,
							  const char *code);
extern bool otp_normalize_phone(const char *input, char *dst, size_t dstlen);
extern bool otp_extract_code(const char *body, size_t len, char *dst);
extern bool otp_url_is_http(const char *url, const char **why);
extern void otp_render_template(StringInfo dst, const char *tmpl,
								const char *link, const char *name,
								const char *code);
extern bool otp_template_has(const char *tmpl, const char *placeholder);

/* signing.c: Standard Webhooks signatures */
extern uint8 *otp_webhook_key(const char *secret, int *keylen);
extern char *otp_webhook_signature(const uint8 *key, int keylen,
								   const char *msg_id, int64 timestamp,
								   const char *body, size_t bodylen);

/* http.c: libcurl multi interface (the only file that includes curl.h) */
#define OTP_HTTP_BODY_CAP		4096	/* response bytes kept for last_error */
#define OTP_HTTP_ERRBUF			256		/* = CURL_ERROR_SIZE */
#define OTP_HTTP_MAX_HEADERS	8
#define OTP_HTTP_MAX_REDACT		8		/* forms of secrets scrubbed from results */

typedef enum OtpHttpOutcome
{
	OTP_HTTP_PENDING,			/* not finished yet */
	OTP_HTTP_RESPONSE,			/* an HTTP status was received */
	OTP_HTTP_TRANSPORT_ERROR,	/* DNS, connect, TLS, timeout: retryable */
	OTP_HTTP_REFUSED,			/* destination refused by the safety rules */
	OTP_HTTP_INVALID			/* the request cannot be sent (bad URL...) */
} OtpHttpOutcome;

typedef struct OtpHttpRequest
{
	/* set by the caller; all of it lives in cxt */
	MemoryContext cxt;			/* owns this struct; deleted when recorded */
	int64		id;				/* otp_link.deliveries.id */
	int			attempts;		/* attempt number of this try (1-based) */
	char	   *url;
	char	   *body;
	size_t		bodylen;
	char	   *headers[OTP_HTTP_MAX_HEADERS];	/* "Name: value" */
	int			nheaders;
	char	   *redact[OTP_HTTP_MAX_REDACT];	/* every form of every secret
												 * the request carries, scrubbed
												 * from its results */
	int			nredact;
	char	   *dest;			/* destination key (deliveries.dest_key), or NULL */
	bool		result_logged;	/* queue.c logged its result already */

	/* set by http.c */
	OtpHttpOutcome outcome;
	int			http_status;	/* 0 when no response */
	int64		retry_after_s;	/* Retry-After in seconds, -1 if absent */
	int64		elapsed_us;		/* wall time of the attempt */
	int64		deadline;		/* otp_mono_us() when it times out */
	dlist_node	node;			/* in http.c's list of requests in flight */
	char		errbuf[OTP_HTTP_ERRBUF];	/* transport error or refusal */
	char		refusal[OTP_HTTP_ERRBUF];	/* why an address was refused */
	char		response[OTP_HTTP_BODY_CAP + 1];
	size_t		response_len;
	bool		connect_refused;	/* an address was refused */
	bool		connect_allowed;	/* an address was allowed */
	bool		peer_refused;	/* the connection's peer was refused */
	uint64		body_bytes;		/* response body bytes received */
	void	   *easy;			/* CURL * */
	void	   *slist;			/* struct curl_slist * */
} OtpHttpRequest;

struct WaitEventSet;
struct sockaddr;

extern void otp_http_init(void);
extern void otp_http_reconfigure(void);
extern bool otp_http_start(OtpHttpRequest *req);
extern int	otp_http_inflight(void);
extern int	otp_http_nsockets(void);
extern void otp_http_add_wait_events(struct WaitEventSet *set);
extern void otp_http_socket_ready(int fd, uint32 events);
extern long otp_http_timeout_ms(void);
extern List *otp_http_collect(void);
extern List *otp_http_inflight_list(void);
extern bool otp_address_allowed(const struct sockaddr *sa, char *desc,
								size_t desclen);

#endif							/* OTP_LINK_H */
