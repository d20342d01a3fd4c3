/*-------------------------------------------------------------------------
 *
 * http.c
 *	  HTTP(S) delivery for the otp_link worker, on libcurl's multi interface.
 *
 * This is the only file of otp_link that includes curl.h.  One multi handle
 * lives for the life of the worker process; it keeps the connection cache,
 * so connections (and TLS sessions) are reused between deliveries.  Each
 * delivery attempt is one easy handle, created by otp_http_start() and
 * destroyed when otp_http_collect() hands the finished request back.
 *
 * The worker waits on its latch and on the sockets libcurl asks for (the
 * CURLMOPT_SOCKETFUNCTION table kept here) in one WaitEventSet, so no
 * thread and no busy loop is needed.  Ready sockets and expired timers are
 * fed back with curl_multi_socket_action().
 *
 * Safety: every address libcurl is about to connect to passes through
 * CURLOPT_OPENSOCKETFUNCTION, after name resolution, so a host name that
 * resolves (or re-resolves: DNS rebinding) to a private address is refused
 * unless otp_link.allow_private_networks is on.  The peer of the connection
 * a request is about to be sent on is checked again in
 * CURLOPT_PREREQFUNCTION: that callback runs for new and for reused
 * (kept-alive) connections alike, so turning the setting off applies to the
 * next request whatever the connection cache holds.  Plain http:// is
 * refused unless otp_link.allow_http is on.  A URL or header value with a
 * control character is never handed to libcurl (no header injection).
 * Redirects are never followed and proxy settings from the environment are
 * ignored.  The response body is read up to OTP_MAX_RESPONSE bytes; the
 * transfer is then aborted and judged by its HTTP status.
 *
 * Callbacks called by libcurl never palloc and never ERROR: a longjmp
 * through libcurl would corrupt it.  They only write into the fixed buffers
 * of OtpHttpRequest and into the malloc'd socket table.
 *
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include <arpa/inet.h>
#include <netinet/in.h>
#include <sys/socket.h>

#include <curl/curl.h>

#include "storage/latch.h"
#include "utils/timestamp.h"

#include "otp_link.h"

#define OTP_USER_AGENT		"otp_link/" OTP_LINK_VERSION " (PostgreSQL extension)"
#define OTP_MAX_RESPONSE	(1024 * 1024)	/* abort bodies larger than this */
/* Retry-After is clamped to this, so that callers can multiply by 1000 */
#define OTP_MAX_RETRY_AFTER_S	((curl_off_t) PG_INT32_MAX)

#if LIBCURL_VERSION_NUM < 0x075700
#error "otp_link needs libcurl 7.87.0 or later (CURLOPT_PROTOCOLS_STR, CURLOPT_PREREQFUNCTION, CURLOPT_QUICK_EXIT)"
#endif

StaticAssertDecl(OTP_HTTP_ERRBUF >= CURL_ERROR_SIZE,
				 "OTP_HTTP_ERRBUF must hold CURL_ERROR_SIZE bytes");

/* a socket libcurl wants us to watch */
typedef struct OtpSocket
{
	curl_socket_t fd;
	int			what;			/* CURL_POLL_IN / OUT / INOUT */
} OtpSocket;

static CURLM *multi = NULL;
static int	inflight = 0;
static dlist_head inflight_list = DLIST_STATIC_INIT(inflight_list);

/* malloc'd: grown inside a libcurl callback, where palloc must not ERROR */
static OtpSocket *sockets = NULL;
static int	nsockets = 0;
static int	maxsockets = 0;

/* when libcurl wants curl_multi_socket_action(CURL_SOCKET_TIMEOUT) (otp_mono_us()) */
static bool timer_set = false;
static int64 timer_deadline = 0;

/*
 * socket_cb: CURLMOPT_SOCKETFUNCTION; keeps the table of watched sockets.
 * Returns -1 (libcurl then fails the transfer) only if malloc fails.
 */
static int
socket_cb(CURL *easy, curl_socket_t s, int what, void *userp, void *socketp)
{
	int			i;

	for (i = 0; i < nsockets; i++)
		if (sockets[i].fd == s)
			break;

	if (what == CURL_POLL_REMOVE)
	{
		if (i < nsockets)
			sockets[i] = sockets[--nsockets];
		return 0;
	}
	if (i == nsockets)
	{
		if (nsockets == maxsockets)
		{
			int			newmax = maxsockets ? maxsockets * 2 : 64;
			OtpSocket  *n = realloc(sockets, newmax * sizeof(OtpSocket));

			if (n == NULL)
				return -1;
			sockets = n;
			maxsockets = newmax;
		}
		sockets[nsockets].fd = s;
		nsockets++;
	}
	sockets[i].what = what;
	return 0;
}

/*
 * timer_cb: CURLMOPT_TIMERFUNCTION; remembers when libcurl wants to be
 * called back.  A negative timeout deletes the timer.
 */
static int
timer_cb(CURLM *m, long timeout_ms, void *userp)
{
	if (timeout_ms < 0)
		timer_set = false;
	else
	{
		timer_set = true;
		timer_deadline = otp_mono_us() + (int64) timeout_ms * 1000;
	}
	return 0;
}

/*
 * v4_allowed: whether an IPv4 address (host byte order) is a public unicast
 * address.  Refuses "this network", RFC 1918, CGNAT, loopback, link-local,
 * IETF protocol assignments, documentation, benchmarking, multicast,
 * reserved, broadcast.
 */
static bool
v4_allowed(uint32 a)
{
	uint32		b1 = a >> 24;
	uint32		b2 = (a >> 16) & 0xff;
	uint32		b3 = (a >> 8) & 0xff;

	if (b1 == 0 || b1 == 10 || b1 == 127)
		return false;
	if (b1 == 100 && (b2 & 0xc0) == 64)
		return false;			/* 100.64.0.0/10 CGNAT */
	if (b1 == 169 && b2 == 254)
		return false;			/* link-local, cloud metadata */
	if (b1 == 172 && (b2 & 0xf0) == 16)
		return false;
	if (b1 == 192 && b2 == 168)
		return false;
	if (b1 == 192 && b2 == 0 && b3 == 0)
		return false;			/* 192.0.0.0/24 */
	if ((b1 == 192 && b2 == 0 && b3 == 2) ||
		(b1 == 198 && b2 == 51 && b3 == 100) ||
		(b1 == 203 && b2 == 0 && b3 == 113))
		return false;			/* documentation TEST-NET-1, -2, -3 */
	if (b1 == 198 && (b2 & 0xfe) == 18)
		return false;			/* 198.18.0.0/15 */
	if (b1 >= 224)
		return false;			/* multicast, reserved, broadcast */
	return true;
}

/*
 * v4_of: the IPv4 address (host byte order) at p[0..3].
 */
static uint32
v4_of(const uint8 *p)
{
	return ((uint32) p[0] << 24) | ((uint32) p[1] << 16) |
		((uint32) p[2] << 8) | (uint32) p[3];
}

/*
 * otp_address_allowed: whether a resolved address is a public destination.
 *
 * IPv4-mapped (::ffff:a.b.c.d), NAT64 (64:ff9b::/96) and 6to4 (2002::/16)
 * IPv6 addresses are judged by the IPv4 address they carry.  Otherwise only
 * global unicast (2000::/3) is public, less the special ranges inside it;
 * so the rest of ::/8 (IPv4-compatible ::a.b.c.d, IPv4-translated
 * ::ffff:0:a.b.c.d ...) is refused whatever IPv4 address it carries.
 * Writes a printable form of the address into desc.  Pure: never
 * allocates, never ERRORs (it runs inside a libcurl callback).
 */
bool
otp_address_allowed(const struct sockaddr *sa, char *desc, size_t desclen)
{
	if (desclen > 0)
		desc[0] = '\0';

	if (sa->sa_family == AF_INET)
	{
		const struct sockaddr_in *sin = (const struct sockaddr_in *) sa;

		if (desclen > 0)
			inet_ntop(AF_INET, &sin->sin_addr, desc, desclen);
		return v4_allowed(ntohl(sin->sin_addr.s_addr));
	}
	else if (sa->sa_family == AF_INET6)
	{
		const struct sockaddr_in6 *sin6 = (const struct sockaddr_in6 *) sa;
		const uint8 *b = sin6->sin6_addr.s6_addr;
		static const uint8 zero12[12] = {0};
		static const uint8 mapped[12] = {0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0xff, 0xff};
		static const uint8 nat64[12] = {0, 0x64, 0xff, 0x9b, 0, 0, 0, 0, 0, 0, 0, 0};

		if (desclen > 0)
			inet_ntop(AF_INET6, &sin6->sin6_addr, desc, desclen);

		if (memcmp(b, mapped, 12) == 0 || memcmp(b, nat64, 12) == 0)
			return v4_allowed(v4_of(b + 12));
		if (memcmp(b, zero12, 12) == 0)
			return false;		/* ::, ::1 and deprecated ::a.b.c.d */
		if ((b[0] & 0xe0) != 0x20)
			return false;		/* not global unicast 2000::/3 */
		if (b[0] == 0x20 && b[1] == 0x02)
			return v4_allowed(v4_of(b + 2));	/* 6to4 */
		if (b[0] == 0x20 && b[1] == 0x01 && b[2] == 0 && b[3] == 0)
			return false;		/* Teredo */
		if (b[0] == 0x20 && b[1] == 0x01 && b[2] == 0 && b[3] == 0x02 &&
			b[4] == 0 && b[5] == 0)
			return false;		/* benchmarking 2001:2::/48 */
		if (b[0] == 0x20 && b[1] == 0x01 && b[2] == 0x0d && b[3] == 0xb8)
			return false;		/* documentation 2001:db8::/32 */
		if (b[0] == 0x3f && b[1] == 0xff && (b[2] & 0xf0) == 0)
			return false;		/* documentation 3fff::/20 */
		if (b[0] == 0x00 && b[1] == 0x64 && b[2] == 0xff && b[3] == 0x9b)
			return false;		/* local-use NAT64 64:ff9b:1::/48 */
		if (b[0] == 0x01 && b[1] == 0x00 && memcmp(b + 2, zero12, 6) == 0)
			return false;		/* discard-only 100::/64 */
		if ((b[0] & 0xfe) == 0xfc)
			return false;		/* unique local fc00::/7 */
		if (b[0] == 0xfe && (b[1] & 0x80) == 0x80)
			return false;		/* link-local fe80::/10, site-local fec0::/10 */
		if (b[0] == 0xff)
			return false;		/* multicast */
		return true;
	}

	if (desclen > 0)
		snprintf(desc, desclen, "address family %d", sa->sa_family);
	return false;
}

/*
 * opensocket_cb: CURLOPT_OPENSOCKETFUNCTION; the safety check on the
 * resolved address, right before libcurl connects.  Returns a new socket,
 * or CURL_SOCKET_BAD to refuse the address.
 */
static curl_socket_t
opensocket_cb(void *clientp, curlsocktype purpose, struct curl_sockaddr *address)
{
	OtpHttpRequest *req = (OtpHttpRequest *) clientp;

	if (purpose == CURLSOCKTYPE_IPCXN && !otp_link_allow_private_networks)
	{
		char		desc[INET6_ADDRSTRLEN + 32];

		if (!otp_address_allowed(&address->addr, desc, sizeof(desc)))
		{
			req->connect_refused = true;
			snprintf(req->refusal, sizeof(req->refusal),
					 "destination address %s is not public and otp_link.allow_private_networks is off",
					 desc);
			return CURL_SOCKET_BAD;
		}
	}
	req->connect_allowed = true;
	return socket(address->family, address->socktype, address->protocol);
}

/*
 * prereq_cb: CURLOPT_PREREQFUNCTION; called on the connection a request is
 * about to be sent on, new or reused from the connection cache, before any
 * byte of the request is written.  opensocket_cb only sees connections
 * being opened, so without this a connection kept alive while
 * otp_link.allow_private_networks was on would still carry requests after
 * it was turned off.  The peer is judged by the same rules; an address that
 * does not parse is refused.  Returns CURL_PREREQFUNC_ABORT to refuse
 * (libcurl then fails the transfer with CURLE_ABORTED_BY_CALLBACK and does
 * not keep the connection).  Never allocates, never ERRORs.
 */
static int
prereq_cb(void *clientp, char *conn_primary_ip, char *conn_local_ip,
		  int conn_primary_port, int conn_local_port)
{
	OtpHttpRequest *req = (OtpHttpRequest *) clientp;
	struct sockaddr_storage ss;
	char		desc[INET6_ADDRSTRLEN + 32];
	bool		ok;

	if (otp_link_allow_private_networks)
		return CURL_PREREQFUNC_OK;

	memset(&ss, 0, sizeof(ss));
	if (conn_primary_ip != NULL &&
		inet_pton(AF_INET, conn_primary_ip,
				  &((struct sockaddr_in *) &ss)->sin_addr) == 1)
	{
		ss.ss_family = AF_INET;
		ok = otp_address_allowed((struct sockaddr *) &ss, desc, sizeof(desc));
	}
	else if (conn_primary_ip != NULL &&
			 inet_pton(AF_INET6, conn_primary_ip,
					   &((struct sockaddr_in6 *) &ss)->sin6_addr) == 1)
	{
		ss.ss_family = AF_INET6;
		ok = otp_address_allowed((struct sockaddr *) &ss, desc, sizeof(desc));
	}
	else
	{
		snprintf(desc, sizeof(desc), "\"%.*s\"", INET6_ADDRSTRLEN,
				 conn_primary_ip ? conn_primary_ip : "");
		ok = false;
	}

	if (ok)
		return CURL_PREREQFUNC_OK;
	req->peer_refused = true;
	snprintf(req->refusal, sizeof(req->refusal),
			 "destination address %s is not public and otp_link.allow_private_networks is off",
			 desc);
	return CURL_PREREQFUNC_ABORT;
}

/*
 * write_cb: CURLOPT_WRITEFUNCTION; keeps the first OTP_HTTP_BODY_CAP bytes
 * of the response body and discards the rest.  Once more than
 * OTP_MAX_RESPONSE bytes have come, it returns 0, which makes libcurl abort
 * the transfer with CURLE_WRITE_ERROR: the status line has already been
 * received and otp_http_collect() judges the answer by it.  (A chunked
 * body has no length for CURLOPT_MAXFILESIZE_LARGE to check.)  Never
 * allocates, never ERRORs.
 */
static size_t
write_cb(char *ptr, size_t size, size_t nmemb, void *userdata)
{
	OtpHttpRequest *req = (OtpHttpRequest *) userdata;
	size_t		n = size * nmemb;
	size_t		room = OTP_HTTP_BODY_CAP - req->response_len;

	if (room > 0)
	{
		size_t		take = Min(room, n);

		memcpy(req->response + req->response_len, ptr, take);
		req->response_len += take;
		req->response[req->response_len] = '\0';
	}
	req->body_bytes += n;
	if (req->body_bytes > OTP_MAX_RESPONSE)
		return 0;
	return n;
}

/*
 * otp_http_init: global libcurl setup and the multi handle.  Called once at
 * worker start; ERRORs (ERRCODE_SYSTEM_ERROR) if libcurl cannot start.
 */
void
otp_http_init(void)
{
	if (multi != NULL)
		return;
	if (curl_global_init(CURL_GLOBAL_DEFAULT) != CURLE_OK)
		ereport(ERROR,
				(errcode(ERRCODE_SYSTEM_ERROR),
				 errmsg("could not initialize libcurl")));
	multi = curl_multi_init();
	if (multi == NULL)
		ereport(ERROR,
				(errcode(ERRCODE_SYSTEM_ERROR),
				 errmsg("could not create a libcurl multi handle")));
	curl_multi_setopt(multi, CURLMOPT_SOCKETFUNCTION, socket_cb);
	curl_multi_setopt(multi, CURLMOPT_TIMERFUNCTION, timer_cb);
	curl_multi_setopt(multi, CURLMOPT_MAXCONNECTS, (long) otp_link_max_concurrency);
}

/*
 * otp_http_reconfigure: apply settings that live in the multi handle
 * (after SIGHUP).
 */
void
otp_http_reconfigure(void)
{
	if (multi != NULL)
		curl_multi_setopt(multi, CURLMOPT_MAXCONNECTS, (long) otp_link_max_concurrency);
}

/*
 * url_is_https: whether url starts with "https://" (case-insensitive).
 */
static bool
url_is_https(const char *url)
{
	return pg_strncasecmp(url, "https://", 8) == 0;
}

/*
 * has_control: whether s contains a control character (a byte below 0x20,
 * or 0x7f: CR and LF would end a header line and start another one, or a
 * second request).  Never ERRORs.
 */
static bool
has_control(const char *s)
{
	for (; *s != '\0'; s++)
	{
		unsigned char c = (unsigned char) *s;

		if (c < 0x20 || c == 0x7f)
			return true;
	}
	return false;
}

/*
 * request_refused: whether req cannot be sent as it is (no URL, control
 * characters in the URL or a header, a scheme not allowed); if so sets
 * its outcome (OTP_HTTP_INVALID) and errbuf.  The header is named, never
 * its value.  No palloc, no ERROR.
 */
static bool
request_refused(OtpHttpRequest *req)
{
	int			i;

	if (req->url == NULL || req->url[0] == '\0')
	{
		req->outcome = OTP_HTTP_INVALID;
		strlcpy(req->errbuf, "no destination url", sizeof(req->errbuf));
		return true;
	}
	/* second line of defence: values are also checked when they are stored */
	if (has_control(req->url))
	{
		req->outcome = OTP_HTTP_INVALID;
		strlcpy(req->errbuf,
				"the destination url contains control characters; the request was not sent",
				sizeof(req->errbuf));
		return true;
	}
	for (i = 0; i < req->nheaders; i++)
	{
		if (has_control(req->headers[i]))
		{
			/* name the header (a constant of worker.c), never its value */
			int			namelen = (int) strcspn(req->headers[i], ":");
			bool		clean = namelen <= 64;
			int			j;

			for (j = 0; clean && j < namelen; j++)
				clean = !((unsigned char) req->headers[i][j] < 0x20 ||
						  (unsigned char) req->headers[i][j] == 0x7f);
			req->outcome = OTP_HTTP_INVALID;
			if (clean)
				snprintf(req->errbuf, sizeof(req->errbuf),
						 "the %.*s header contains control characters; the request was not sent",
						 namelen, req->headers[i]);
			else
				strlcpy(req->errbuf,
						"a header contains control characters; the request was not sent",
						sizeof(req->errbuf));
			return true;
		}
	}
	if (!url_is_https(req->url) &&
		!(otp_link_allow_http && pg_strncasecmp(req->url, "http://", 7) == 0))
	{
		req->outcome = OTP_HTTP_INVALID;
		strlcpy(req->errbuf,
				otp_link_allow_http ?
				"destination url is neither http:// nor https://" :
				"destination url is not https:// and otp_link.allow_http is off",
				sizeof(req->errbuf));
		return true;
	}

	return false;
}

/*
 * header_list: the request's headers, plus an empty "Expect:" (no
 * 100-continue round trip), as a libcurl list; NULL when libcurl is out of
 * memory.  Allocates with libcurl's malloc; no palloc, no ERROR.
 */
static struct curl_slist *
header_list(OtpHttpRequest *req)
{
	struct curl_slist *slist = NULL;
	struct curl_slist *n;
	int			i;

	for (i = 0; i < req->nheaders; i++)
	{
		n = curl_slist_append(slist, req->headers[i]);
		if (n == NULL)
		{
			curl_slist_free_all(slist);
			return NULL;
		}
		slist = n;
	}
	/* no "Expect: 100-continue" round trip */
	n = curl_slist_append(slist, "Expect:");
	if (n == NULL)
	{
		curl_slist_free_all(slist);
		return NULL;
	}
	return n;
}

/*
 * set_options: the options of one easy handle: destination, body and
 * headers, the allowed protocols, no redirects and no proxy, timeouts,
 * and the callbacks that vet addresses and keep the response.  Returns
 * the first libcurl error.  No palloc, no ERROR.
 */
static CURLcode
set_options(CURL *easy, OtpHttpRequest *req, struct curl_slist *slist)
{
	CURLcode	rc;

	rc = CURLE_OK;
#define SETOPT(opt, val) do { if (rc == CURLE_OK) rc = curl_easy_setopt(easy, opt, val); } while (0)
	SETOPT(CURLOPT_PRIVATE, req);
	SETOPT(CURLOPT_ERRORBUFFER, req->errbuf);
	SETOPT(CURLOPT_URL, req->url);
	SETOPT(CURLOPT_NOSIGNAL, 1L);
	SETOPT(CURLOPT_PROTOCOLS_STR, otp_link_allow_http ? "http,https" : "https");
	SETOPT(CURLOPT_FOLLOWLOCATION, 0L);
	SETOPT(CURLOPT_PROXY, "");
	SETOPT(CURLOPT_POST, 1L);
	SETOPT(CURLOPT_POSTFIELDSIZE_LARGE, (curl_off_t) req->bodylen);
	SETOPT(CURLOPT_POSTFIELDS, req->body);
	SETOPT(CURLOPT_HTTPHEADER, slist);
	SETOPT(CURLOPT_USERAGENT, OTP_USER_AGENT);
	/* otp_link.timeout is enforced by otp_http_collect(), after reading */
	SETOPT(CURLOPT_CONNECTTIMEOUT_MS, (long) Min(otp_link_connect_timeout_ms,
												 otp_link_timeout_ms));
	/* never wait for a resolver thread stuck in getaddrinfo() */
	SETOPT(CURLOPT_QUICK_EXIT, 1L);
	SETOPT(CURLOPT_OPENSOCKETFUNCTION, opensocket_cb);
	SETOPT(CURLOPT_OPENSOCKETDATA, req);
	SETOPT(CURLOPT_PREREQFUNCTION, prereq_cb);
	SETOPT(CURLOPT_PREREQDATA, req);
	SETOPT(CURLOPT_WRITEFUNCTION, write_cb);
	SETOPT(CURLOPT_WRITEDATA, req);
	SETOPT(CURLOPT_MAXFILESIZE_LARGE, (curl_off_t) OTP_MAX_RESPONSE);
	SETOPT(CURLOPT_TCP_KEEPALIVE, 1L);
#undef SETOPT
	return rc;
}

/*
 * otp_http_start: start one POST of req->body to req->url.
 *
 * On success the request is in flight and will come back from
 * otp_http_collect(); returns true.  When it cannot be sent at all (no URL,
 * a control character in the URL or a header value, plain http refused,
 * libcurl failure) req->outcome and req->errbuf say why and false is
 * returned.  Allocates the easy handle and header list with
 * malloc (libcurl); never ERRORs.
 */
bool
otp_http_start(OtpHttpRequest *req)
{
	CURL	   *easy;
	struct curl_slist *slist = NULL;

	req->outcome = OTP_HTTP_PENDING;
	req->http_status = 0;
	req->retry_after_s = -1;
	req->errbuf[0] = '\0';
	req->refusal[0] = '\0';
	req->response[0] = '\0';
	req->response_len = 0;
	req->connect_refused = false;
	req->connect_allowed = false;
	req->peer_refused = false;
	req->body_bytes = 0;

	if (request_refused(req))
		return false;

	easy = curl_easy_init();
	if (easy == NULL)
	{
		req->outcome = OTP_HTTP_TRANSPORT_ERROR;
		strlcpy(req->errbuf, "could not create a libcurl handle", sizeof(req->errbuf));
		return false;
	}

	slist = header_list(req);
	if (slist == NULL)
		goto fail;
	if (set_options(easy, req, slist) != CURLE_OK)
		goto fail;

	if (curl_multi_add_handle(multi, easy) != CURLM_OK)
		goto fail;

	req->easy = easy;
	req->slist = slist;
	req->elapsed_us = GetCurrentTimestamp();	/* start time until done */
	req->deadline = otp_mono_us() + (int64) otp_link_timeout_ms * 1000;
	dlist_push_tail(&inflight_list, &req->node);
	inflight++;
	return true;

fail:
	curl_slist_free_all(slist);
	curl_easy_cleanup(easy);
	req->outcome = OTP_HTTP_TRANSPORT_ERROR;
	if (req->errbuf[0] == '\0')
		strlcpy(req->errbuf, "could not set up the libcurl request", sizeof(req->errbuf));
	return false;
}

/*
 * otp_http_inflight: number of requests started and not yet collected.
 */
int
otp_http_inflight(void)
{
	return inflight;
}

/*
 * otp_http_nsockets: number of sockets libcurl currently wants watched.
 */
int
otp_http_nsockets(void)
{
	return nsockets;
}

/*
 * otp_http_add_wait_events: add libcurl's sockets to a WaitEventSet that
 * has room for otp_http_nsockets() more events.  ERRORs only as
 * AddWaitEventToSet does.
 */
void
otp_http_add_wait_events(struct WaitEventSet *set)
{
	int			i;

	for (i = 0; i < nsockets; i++)
	{
		uint32		ev = 0;

		if (sockets[i].what & CURL_POLL_IN)
			ev |= WL_SOCKET_READABLE;
		if (sockets[i].what & CURL_POLL_OUT)
			ev |= WL_SOCKET_WRITEABLE;
		if (ev != 0)
			AddWaitEventToSet(set, ev, sockets[i].fd, NULL, NULL);
	}
}

/*
 * otp_http_socket_ready: tell libcurl that a socket is ready.
 */
void
otp_http_socket_ready(int fd, uint32 events)
{
	int			ev = 0;
	int			running;

	if (events & WL_SOCKET_READABLE)
		ev |= CURL_CSELECT_IN;
	if (events & WL_SOCKET_WRITEABLE)
		ev |= CURL_CSELECT_OUT;
	curl_multi_socket_action(multi, fd, ev, &running);
}

/*
 * otp_http_timeout_ms: how long the caller may sleep before libcurl needs
 * attention (0: now), or -1 when libcurl has no timer.
 */
long
otp_http_timeout_ms(void)
{
	int64		now = otp_mono_us();
	int64		next = timer_set ? timer_deadline : PG_INT64_MAX;
	dlist_iter	it;

	dlist_foreach(it, &inflight_list)
	{
		OtpHttpRequest *req = dlist_container(OtpHttpRequest, node, it.cur);

		next = Min(next, req->deadline);
	}
	if (next == PG_INT64_MAX)
		return -1;
	if (next <= now)
		return 0;
	return (long) Min((next - now + 999) / 1000, (int64) LONG_MAX);
}

/*
 * otp_http_inflight_list: the requests in flight, as a List allocated in
 * CurrentMemoryContext.
 */
List *
otp_http_inflight_list(void)
{
	List	   *l = NIL;
	dlist_iter	it;

	dlist_foreach(it, &inflight_list)
		l = lappend(l, dlist_container(OtpHttpRequest, node, it.cur));
	return l;
}

/*
 * release: take a finished (or abandoned) request's easy handle out of the
 * multi handle and free it.  With CURLOPT_QUICK_EXIT this does not wait
 * for a resolver thread.
 */
static void
release(OtpHttpRequest *req)
{
	CURL	   *easy = (CURL *) req->easy;

	curl_multi_remove_handle(multi, easy);
	curl_easy_cleanup(easy);
	curl_slist_free_all((struct curl_slist *) req->slist);
	req->easy = NULL;
	req->slist = NULL;
	dlist_delete(&req->node);
	inflight--;
}

/*
 * expire: abandon the requests in flight past their deadline
 * (otp_link.timeout) as transport errors, appending them to done.
 * otp_http_collect() calls it after reading what the sockets hold, so an
 * answer that arrived while the process was not running (SIGSTOP, an
 * overloaded machine) is taken, not discarded.
 */
static List *
expire(List *done)
{
	int64		now = otp_mono_us();
	dlist_mutable_iter it;

	dlist_foreach_modify(it, &inflight_list)
	{
		OtpHttpRequest *req = dlist_container(OtpHttpRequest, node, it.cur);

		if (req->deadline > now)
			continue;
		req->outcome = OTP_HTTP_TRANSPORT_ERROR;
		req->http_status = 0;
		snprintf(req->errbuf, sizeof(req->errbuf),
				 "timed out: no complete answer within otp_link.timeout (%d ms)",
				 otp_link_timeout_ms);
		req->elapsed_us = GetCurrentTimestamp() - req->elapsed_us;
		release(req);
		done = lappend(done, req);
	}
	return done;
}

/*
 * connected: whether the transfer reached a server (libcurl knows its
 * address).  A garbled status line ("HTTP/1.1 0 X") fails with the same
 * code as a URL of an unsupported scheme; only the second is the
 * request's fault, the first is the server's and is retried.  Never
 * ERRORs.
 */
static bool
connected(CURL *easy)
{
	char	   *ip = NULL;

	return curl_easy_getinfo(easy, CURLINFO_PRIMARY_IP, &ip) == CURLE_OK &&
		ip != NULL && ip[0] != '\0';
}

/*
 * otp_http_collect: run expired libcurl timers and return the requests that
 * finished or passed their deadline, as a List (allocated in CurrentMemoryContext) of
 * OtpHttpRequest pointers with outcome, http_status, retry_after_s and
 * errbuf filled in.  Their libcurl handles are released.  Never ERRORs
 * except on out-of-memory.
 */
List *
otp_http_collect(void)
{
	List	   *done = NIL;
	CURLMsg    *msg;
	int			left;

	if (timer_set && timer_deadline <= otp_mono_us())
	{
		int			running;

		timer_set = false;
		curl_multi_socket_action(multi, CURL_SOCKET_TIMEOUT, 0, &running);
	}

	while ((msg = curl_multi_info_read(multi, &left)) != NULL)
	{
		CURL	   *easy = msg->easy_handle;
		CURLcode	res = msg->data.result;
		OtpHttpRequest *req = NULL;
		long		code = 0;
		curl_off_t	ra = -1;

		if (msg->msg != CURLMSG_DONE)
			continue;
		curl_easy_getinfo(easy, CURLINFO_PRIVATE, (char **) &req);
		curl_easy_getinfo(easy, CURLINFO_RESPONSE_CODE, &code);

		req->http_status = (int) code;
		req->elapsed_us = GetCurrentTimestamp() - req->elapsed_us;
		if (req->peer_refused)
		{
			/* prereq_cb refused the connection's peer: nothing was sent */
			req->http_status = 0;
			req->outcome = OTP_HTTP_REFUSED;
			strlcpy(req->errbuf, req->refusal, sizeof(req->errbuf));
		}
		else if (res == CURLE_OK ||
				 (code > 0 && res == CURLE_FILESIZE_EXCEEDED) ||
				 (code > 0 && res == CURLE_WRITE_ERROR &&
				  req->body_bytes > OTP_MAX_RESPONSE))
		{
			/* an answer; a body cut off at OTP_MAX_RESPONSE still counts */
			req->outcome = OTP_HTTP_RESPONSE;

			/*
			 * libcurl gives delay-seconds as parsed (an overflowing number
			 * reads as 0, i.e. absent) or an HTTP-date minus now; clamp it
			 * so that the caller can multiply it by 1000.
			 */
			if (curl_easy_getinfo(easy, CURLINFO_RETRY_AFTER, &ra) == CURLE_OK && ra > 0)
				req->retry_after_s = (int64) Min(ra, OTP_MAX_RETRY_AFTER_S);
		}
		else if (req->connect_refused && !req->connect_allowed)
		{
			req->outcome = OTP_HTTP_REFUSED;
			strlcpy(req->errbuf, req->refusal, sizeof(req->errbuf));
		}
		else if ((res == CURLE_UNSUPPORTED_PROTOCOL || res == CURLE_URL_MALFORMAT) &&
				 !connected(easy))
			req->outcome = OTP_HTTP_INVALID;	/* the URL itself: never sendable */
		else
			req->outcome = OTP_HTTP_TRANSPORT_ERROR;

		if (req->outcome != OTP_HTTP_RESPONSE && req->errbuf[0] == '\0')
			strlcpy(req->errbuf, curl_easy_strerror(res), sizeof(req->errbuf));

		release(req);
		done = lappend(done, req);
	}
	return expire(done);
}
