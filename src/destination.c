/*-------------------------------------------------------------------------
 *
 * destination.c
 *	  The worker's view of its destinations: deliveries in flight to each,
 *	  and a circuit breaker per destination.
 *
 * A destination is what otp_link.deliveries.dest_key names: the host and
 * port of a callback URL, or "reply:<instance uuid>" for the replies of
 * one instance.  Two rules keep one unhealthy destination from delaying
 * the others:
 *
 *	- at most otp_link.destination_concurrency deliveries are in flight to
 *	  one destination (the claim asks for no more; see queue.c), or half of
 *	  otp_link.max_concurrency when that is more and the destination is
 *	  "fast": its last attempt got an answer within OTP_FAST_MS.  A fast
 *	  destination gives its slots back within milliseconds, and the bigger
 *	  share is what lets one receiver take thousands of deliveries a second
 *	  (the claim's batches grow with it).  The slots fast destinations hold
 *	  beyond otp_link.destination_concurrency are at most a quarter of
 *	  otp_link.max_concurrency in all: should they turn into tarpits
 *	  together, they hold what a single one could, and three quarters stay
 *	  for everyone else until their first timeout;
 *	- after otp_link.breaker_failures consecutive failed attempts (no
 *	  answer, or 408, 429, 5xx) the destination is paused ("open"): none of
 *	  its deliveries is claimed for otp_link.breaker_pause, then up to
 *	  OTP_BREAKER_PROBES probes are sent ("half-open").  An answer closes
 *	  the breaker; when every probe failed it pauses again for twice as
 *	  long, up to 32 times the first pause.
 *
 *	- a destination is "proven" once an attempt got an answer (not 408,
 *	  429, 5xx) within OTP_PROVEN_MS (0.5 s); a slow answer, a timeout or a
 *	  failure makes it unproven again.  Unproven destinations (new ones
 *	  included) together get at most three quarters of
 *	  otp_link.max_concurrency while any destination is proven: a quarter
 *	  of the slots always stays for the destinations that answer quickly,
 *	  however many slow or dead ones there are.  In the claim's order, proven destinations come first,
 *	  then unproven ones, then failing ones.
 *
 * The state lives in this process only (a hash table in TopMemoryContext):
 * a restarted worker learns it again within a share of attempts.  Times
 * are otp_mono_us() values.
 *
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include "utils/builtins.h"
#include "utils/hsearch.h"
#include "utils/memutils.h"

#include "otp_link.h"
#include "worker.h"

#define OTP_DEST_KEY_SIZE	1024	/* dest_key is at most 255 characters */
#define OTP_BREAKER_MAX_DOUBLINGS 5
#define OTP_BREAKER_PROBES	4		/* requests in flight while half-open */
#define OTP_PROVEN_MS		500		/* an answer this fast proves a destination */
#define OTP_FAST_MS			50		/* an answer this fast: the larger share */
#define OTP_DEST_MAX		10000	/* idle proven destinations kept at most */

/* the claim's order of destinations (otp_dest_limits) */
#define PRI_PROVEN		0
#define PRI_UNPROVEN	1
#define PRI_FAILING		2

typedef enum
{
	DEST_CLOSED,				/* healthy: up to the per-destination share */
	DEST_OPEN,					/* paused until open_until */
	DEST_HALF_OPEN				/* a few probes allowed */
} DestState;

typedef struct Destination
{
	char		key[OTP_DEST_KEY_SIZE]; /* hash key: dest_key */
	int			inflight;		/* requests started, not yet finished */
	bool		full;			/* reached cap since the last claim */
	int			cap;			/* in flight the last claim allowed */
	bool		proven;			/* its last attempt got a quick answer */
	bool		fast;			/* ... within OTP_FAST_MS */
	int			failures;		/* consecutive failed attempts */
	int			opens;			/* consecutive pauses (doubles the pause) */
	int			probes;			/* requests started while half-open */
	DestState	state;
	int64		open_until;		/* DEST_OPEN: when to probe */
} Destination;

static HTAB *destinations = NULL;
static int	paused_count = 0;	/* destinations not DEST_CLOSED */

/*
 * lookup: the entry of key, created closed when create is true (else NULL
 * when absent).  A key longer than the hash key is not tracked (NULL).
 * Allocates in TopMemoryContext the first time; cannot ERROR except on
 * out of memory.
 */
static Destination *
lookup(const char *key, bool create)
{
	Destination *d;
	bool		found;

	if (key == NULL || strlen(key) >= OTP_DEST_KEY_SIZE)
		return NULL;
	if (destinations == NULL)
	{
		HASHCTL		ctl;

		ctl.keysize = OTP_DEST_KEY_SIZE;
		ctl.entrysize = sizeof(Destination);
		ctl.hcxt = TopMemoryContext;
		destinations = hash_create("otp_link destinations", 64, &ctl,
								   HASH_ELEM | HASH_STRINGS | HASH_CONTEXT);
	}
	d = hash_search(destinations, key, create ? HASH_ENTER : HASH_FIND, &found);
	if (d != NULL && !found)
	{
		d->inflight = 0;
		d->full = false;
		d->cap = otp_link_destination_concurrency;
		d->proven = false;
		d->fast = false;
		d->failures = 0;
		d->opens = 0;
		d->probes = 0;
		d->state = DEST_CLOSED;
		d->open_until = 0;
	}
	return d;
}

/*
 * dest_limit: how many more deliveries of d its share and breaker allow
 * now.  An open breaker whose pause is over turns half-open here.  A fast
 * destination may go up to half of otp_link.max_concurrency, taking the
 * slots beyond otp_link.destination_concurrency from *extra (what is left
 * of the quarter all fast destinations share), which is decreased.
 */
static int
dest_limit(Destination *d, int64 now, int *extra)
{
	int			share = otp_link_destination_concurrency;
	int			more;

	if (d->state == DEST_OPEN && now >= d->open_until)
	{
		d->state = DEST_HALF_OPEN;
		d->probes = 0;
	}
	if (d->state == DEST_OPEN)
		return 0;
	if (d->state == DEST_HALF_OPEN)
		return Max(Min(OTP_BREAKER_PROBES, share) - d->probes, 0);
	if (!d->fast || *extra <= 0)
		return Max(share - d->inflight, 0);
	more = Min(otp_link_max_concurrency / 2 - Max(d->inflight, share), *extra);
	more = Max(more, 0);
	*extra -= more;
	return Max(share - d->inflight, 0) + more;
}

/*
 * otp_dest_limits: what the next claim may take from each destination:
 * parallel arrays of every destination this process tracks (keys as text
 * Datums, limits and claim priorities as int4 Datums), palloc'd in
 * CurrentMemoryContext; returns their number.  *default_limit and
 * *default_pri apply to destinations not listed (never seen: unproven);
 * *unproven_budget is how many rows of unproven destinations the claim may
 * take in all; *held_back is how many healthy destinations get nothing this
 * time (at their share, or the budget spent): they are due a claim again
 * when their own requests or others' give slots back.
 */
int
otp_dest_limits(Datum **keys, Datum **limits, Datum **pris,
				int *default_limit, int *default_pri, int *unproven_budget,
				int *held_back)
{
	HASH_SEQ_STATUS seq;
	Destination *d;
	int64		now = otp_mono_us();
	int			n = 0;
	long		size = destinations ? hash_get_num_entries(destinations) : 0;
	int			budget = Max(otp_link_max_concurrency * 3 / 4, 1);
	int			unproven = 0;
	bool		any_proven = false;
	int			extra = otp_link_max_concurrency / 4;

	*keys = palloc(Max(size, 1) * sizeof(Datum));
	*limits = palloc(Max(size, 1) * sizeof(Datum));
	*pris = palloc(Max(size, 1) * sizeof(Datum));
	if (destinations != NULL)
	{
		hash_seq_init(&seq, destinations);
		while ((d = hash_seq_search(&seq)) != NULL)
		{
			if (!d->proven)
				unproven += d->inflight;
			any_proven |= d->proven;
			extra -= Max(d->inflight - otp_link_destination_concurrency, 0);
		}
	}
	/* the quarter is kept only for destinations known to answer quickly */
	if (!any_proven)
		budget = otp_link_max_concurrency;
	/* what is left of the unproven destinations' budget */
	budget = Max(budget - unproven, 0);
	*default_limit = Min(otp_link_destination_concurrency, budget);
	*unproven_budget = budget;
	*default_pri = PRI_UNPROVEN;
	*held_back = 0;
	if (destinations == NULL)
		return 0;
	hash_seq_init(&seq, destinations);
	while ((d = hash_seq_search(&seq)) != NULL)
	{
		int			limit = dest_limit(d, now, &extra);
		int			pri = PRI_PROVEN;

		if (!d->proven)
		{
			limit = Min(limit, budget);
			pri = (d->failures > 0 || d->state != DEST_CLOSED) ? PRI_FAILING : PRI_UNPROVEN;
		}
		d->cap = d->inflight + limit;

		/*
		 * Held back while healthy: it is full, so that a quarter of its
		 * requests finishing claims again (a quarter below its share when
		 * it is no longer fast and has more in flight).  Left as it was (a
		 * finish had just cleared it), a destination that lost the larger
		 * share while above its share got nothing here and was never
		 * claimed for again until a commit or the sweep woke the worker.
		 * Given slots, it is full again only once it has used them
		 * (otp_dest_started).
		 */
		d->full = (limit == 0 && d->state == DEST_CLOSED);
		if (d->full)
		{
			if (!d->fast)
				d->cap = Min(d->inflight, otp_link_destination_concurrency);
			(*held_back)++;
		}
		(*keys)[n] = CStringGetTextDatum(d->key);
		(*limits)[n] = Int32GetDatum(limit);
		(*pris)[n] = Int32GetDatum(pri);
		n++;
	}
	return n;
}

/*
 * otp_dest_started: a request to req->dest is now in flight.
 */
void
otp_dest_started(OtpHttpRequest *req)
{
	Destination *d = lookup(req->dest, true);

	if (d == NULL)
		return;
	if (++d->inflight >= d->cap)
		d->full = true;
	if (d->state == DEST_HALF_OPEN)
		d->probes++;
}

/*
 * attempt_failed: whether a finished attempt counts against its
 * destination's health: no answer at all, or an answer that says "not
 * now" (408, 429, 5xx).  Requests refused or invalid here say nothing
 * about the destination.
 */
static bool
attempt_failed(OtpHttpRequest *req, bool *neutral)
{
	*neutral = false;
	if (req->outcome == OTP_HTTP_TRANSPORT_ERROR)
		return true;
	if (req->outcome != OTP_HTTP_RESPONSE)
	{
		*neutral = true;
		return false;
	}
	return req->http_status == 408 || req->http_status == 429 ||
		req->http_status >= 500;
}

/*
 * dest_pause: open d's breaker (again): no claims for breaker_pause, doubled
 * for every consecutive pause, then up to OTP_BREAKER_PROBES probes.
 */
static void
dest_pause(Destination *d, OtpHttpRequest *req, int64 now)
{
	int64		ms = (int64) otp_link_breaker_pause_ms << Min(d->opens, OTP_BREAKER_MAX_DOUBLINGS);

	if (d->state == DEST_CLOSED)
		paused_count++;
	d->state = DEST_OPEN;
	d->open_until = now + ms * 1000;
	d->opens++;
	ereport(LOG,
			(errcode(ERRCODE_SUCCESSFUL_COMPLETION),
			 errmsg("otp_link destination \"%s\" paused for %.1f s after %d consecutive failed attempts",
					d->key, ms / 1000.0, d->failures),
			 errdetail("The last attempt (delivery " INT64_FORMAT ") failed: %s",
					   req->id, req->outcome == OTP_HTTP_RESPONSE ?
					   psprintf("HTTP %d", req->http_status) : req->errbuf)));
}

/*
 * otp_dest_finished: a request to req->dest finished (req->outcome set):
 * update its destination's count and breaker.  Returns true when the
 * caller should claim again at once: the destination had reached its share
 * and a quarter of it is free again (claiming for every single free slot
 * would cost a transaction per request), or it answers again after a
 * pause.  Logs when a destination is paused or resumes.  Allocates
 * only for the log message; cannot ERROR except on out of memory.
 */
bool
otp_dest_finished(OtpHttpRequest *req)
{
	Destination *d = lookup(req->dest, false);
	int64		now = otp_mono_us();
	bool		neutral;
	bool		failed;
	bool		claim = false;

	if (d == NULL)
		return false;
	d->inflight--;
	failed = attempt_failed(req, &neutral);
	if (!neutral)
	{
		d->proven = !failed && req->elapsed_us < OTP_PROVEN_MS * 1000;
		d->fast = d->proven && req->elapsed_us < OTP_FAST_MS * 1000;
	}
	if (d->full && d->cap - d->inflight >= Max(d->cap / 4, 1))
	{
		d->full = false;
		claim = true;
	}
	if (neutral)
		;
	else if (!failed)
	{
		if (d->state != DEST_CLOSED)
		{
			paused_count--;
			claim = true;
			ereport(LOG,
					(errcode(ERRCODE_SUCCESSFUL_COMPLETION),
					 errmsg("otp_link destination \"%s\" answers again: deliveries to it resume", d->key)));
		}
		d->state = DEST_CLOSED;
		d->failures = 0;
		d->opens = 0;
	}
	else
	{
		d->failures++;
		/* half-open: pause again once every probe failed */
		if ((d->state == DEST_HALF_OPEN && d->inflight == 0) ||
			(d->state == DEST_CLOSED && d->failures >= otp_link_breaker_failures))
			dest_pause(d, req, now);
	}
	/* forget idle healthy destinations (proven ones while there are few) */
	if (d->inflight == 0 && d->state == DEST_CLOSED && d->failures == 0 &&
		(!d->proven || hash_get_num_entries(destinations) > OTP_DEST_MAX))
		hash_search(destinations, d->key, HASH_REMOVE, NULL);
	return claim;
}

/*
 * otp_dest_next_probe_us: the earliest time a paused destination may be
 * probed (otp_mono_us()), or 0 when none is paused.
 */
int64
otp_dest_next_probe_us(void)
{
	HASH_SEQ_STATUS seq;
	Destination *d;
	int64		next = 0;

	if (destinations == NULL || paused_count == 0)
		return 0;
	hash_seq_init(&seq, destinations);
	while ((d = hash_seq_search(&seq)) != NULL)
		if (d->state == DEST_OPEN && (next == 0 || d->open_until < next))
			next = d->open_until;
	return next;
}
