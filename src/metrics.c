/*-------------------------------------------------------------------------
 *
 * metrics.c
 *	  Cumulative counters for monitoring, kept in shared memory (shmem.c):
 *	  links by event, messages by outcome, delivery attempts by result and
 *	  HTTP status class, and a time-to-verify histogram; exposed by
 *	  otp_link_counters() as rows and by otp_link_prometheus() in
 *	  Prometheus' text exposition format, with the gauges of
 *	  otp_link_gauges() (SQL, from indexes).
 *
 * A backend keeps what its transaction counted in a local array and adds
 * it to the shared atomics at COMMIT (shmem.c's transaction callback): a
 * ROLLBACK, an aborted subtransaction or a PREPARE drops it, so only
 * committed work is counted.  A subtransaction's counts are saved lazily:
 * the first count at a nesting level deeper than the last saved one saves
 * the array as it was, and an abort at that level puts it back.  The
 * worker's HTTP attempts happened whatever becomes of the transaction that
 * records them, and are counted at once (otp_metric_add_now).
 *
 * Without shared_preload_libraries there is no shared memory: nothing is
 * counted (otp_shared is NULL), otp_link_counters() returns no rows and
 * otp_link_prometheus() says so in a comment and in otp_link_preloaded 0.
 *
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include "access/xact.h"
#include "executor/spi.h"
#include "funcapi.h"
#include "utils/builtins.h"
#include "utils/memutils.h"

#include "otp_link.h"
#include "spi.h"
#include "shmem.h"

PG_FUNCTION_INFO_V1(otp_link_counters);
PG_FUNCTION_INFO_V1(otp_link_prometheus);

/* a family of counters: one name, at most one label */
typedef struct MetricFamily
{
	const char *name;
	const char *help;
	const char *label;			/* NULL: one unlabelled counter */
	OtpMetric	first;
	int			n;
} MetricFamily;

static const MetricFamily families[] = {
	{"otp_link_links_generated_total", "Links generated.", NULL, OTP_M_LINKS_GENERATED, 1},
	{"otp_link_links_verified_total", "Links verified.", NULL, OTP_M_LINKS_VERIFIED, 1},
	{"otp_link_links_failed_total", "Links ended as failed (wrong sender, cancelled).", NULL, OTP_M_LINKS_FAILED, 1},
	{"otp_link_links_expired_total", "Links ended as expired (by otp_link_expire or by a late message).", NULL, OTP_M_LINKS_EXPIRED, 1},
	{"otp_link_links_clicked_total", "Click links opened for the first time.", NULL, OTP_M_LINKS_CLICKED, 1},
	{"otp_link_clicks_total", "Clicks counted on click links.", NULL, OTP_M_CLICKS, 1},
	{"otp_link_links_redeemed_total", "Link tokens redeemed.", NULL, OTP_M_LINKS_REDEEMED, 1},
	{"otp_link_messages_total", "Messages consumed, by outcome.", "outcome", OTP_M_MSG_FIRST,
	OTP_M_DELIVERY_DELIVERED - OTP_M_MSG_FIRST},
	{"otp_link_deliveries_total", "Delivery attempts, by the delivery's result.", "result",
	OTP_M_DELIVERY_DELIVERED, 3},
	{"otp_link_http_attempts_total", "HTTP attempts of the delivery worker, by status class.", "class",
	OTP_M_HTTP_2XX, OTP_M_TTV_BUCKET - OTP_M_HTTP_2XX},
};

static const char *const label_values[OTP_M__COUNT] = {
	[OTP_M_MSG_VERIFIED] = "verified",
	[OTP_M_MSG_ALREADY_VERIFIED] = "already_verified",
	[OTP_M_MSG_FAILED] = "failed",
	[OTP_M_MSG_EXPIRED] = "expired",
	[OTP_M_MSG_UNKNOWN_CODE] = "unknown_code",
	[OTP_M_MSG_BLOCKED] = "blocked",
	[OTP_M_MSG_DUPLICATE] = "duplicate",
	[OTP_M_MSG_IGNORED] = "ignored",
	[OTP_M_MSG_MALFORMED] = "malformed",
	[OTP_M_DELIVERY_DELIVERED] = "delivered",
	[OTP_M_DELIVERY_RETRIED] = "retried",
	[OTP_M_DELIVERY_DEAD] = "dead",
	[OTP_M_HTTP_2XX] = "2xx",
	[OTP_M_HTTP_3XX] = "3xx",
	[OTP_M_HTTP_4XX] = "4xx",
	[OTP_M_HTTP_5XX] = "5xx",
	[OTP_M_HTTP_OTHER] = "other",
	[OTP_M_HTTP_TRANSPORT_ERROR] = "transport_error",
	[OTP_M_HTTP_REFUSED] = "refused",
	[OTP_M_HTTP_INVALID] = "invalid",
};

/* upper bounds (seconds, inclusive) of the time-to-verify buckets */
static const int ttv_bounds[OTP_TTV_BOUNDS] = {1, 2, 5, 10, 20, 30, 60, 120, 300, 600, 1800};

#define TTV_NAME "otp_link_time_to_verify_seconds"

/* this transaction's counts, not yet in shared memory */
static uint64 pending[OTP_M__COUNT];
static bool pending_any = false;

/* pending as it was when a subtransaction first counted (lazy saves) */
typedef struct PendingSave
{
	int			level;			/* nesting level the save belongs to */
	uint64		counts[OTP_M__COUNT];
} PendingSave;

static PendingSave *saves = NULL;	/* TopMemoryContext */
static int	nsaves = 0;
static int	maxsaves = 0;

/*
 * save_for_subxact: before the first count of a subtransaction, save the
 * counts as they were, so that its abort can put them back.  Allocates in
 * TopMemoryContext; can ERROR only on out-of-memory.
 */
static void
save_for_subxact(void)
{
	int			level = GetCurrentTransactionNestLevel();

	if (level <= 1 || (nsaves > 0 && saves[nsaves - 1].level >= level))
		return;
	if (nsaves == maxsaves)
	{
		maxsaves = Max(4, maxsaves * 2);
		saves = saves == NULL ?
			MemoryContextAlloc(TopMemoryContext, maxsaves * sizeof(PendingSave)) :
			repalloc(saves, maxsaves * sizeof(PendingSave));
	}
	saves[nsaves].level = level;
	memcpy(saves[nsaves].counts, pending, sizeof(pending));
	nsaves++;
}

/*
 * otp_metric_add: count n of m when the current transaction commits.
 * Nothing without shared memory.  Can ERROR only on out-of-memory (the
 * first time a process counts, or in a subtransaction).
 */
void
otp_metric_add(OtpMetric m, uint64 n)
{
	if (otp_shared == NULL)
		return;
	otp_link_xact_callbacks();
	save_for_subxact();
	pending[m] += n;
	pending_any = true;
}

/*
 * otp_metric_add_now: count n of m at once, whatever becomes of the
 * transaction.  Never ERRORs.
 */
void
otp_metric_add_now(OtpMetric m, uint64 n)
{
	if (otp_shared != NULL)
		pg_atomic_fetch_add_u64(&otp_shared->counters[m], n);
}

/*
 * otp_metric_message: count a consumed message by its outcome (the
 * "outcome" of otp_link_consume_message, or "malformed").  Can ERROR only
 * on out-of-memory.
 */
void
otp_metric_message(const char *outcome)
{
	int			m;

	if (otp_shared == NULL || outcome == NULL)
		return;
	for (m = OTP_M_MSG_FIRST; m < OTP_M_DELIVERY_DELIVERED; m++)
		if (strcmp(label_values[m], outcome) == 0)
		{
			otp_metric_add((OtpMetric) m, 1);
			return;
		}
	elog(WARNING, "otp_link: no counter for message outcome \"%s\"", outcome);
}

/*
 * otp_metric_verified: count a verified link that took seconds from its
 * creation.  Can ERROR only on out-of-memory.
 */
void
otp_metric_verified(double seconds)
{
	int			b = 0;

	if (otp_shared == NULL)
		return;
	if (seconds < 0)
		seconds = 0;
	while (b < OTP_TTV_BOUNDS && seconds > ttv_bounds[b])
		b++;
	otp_metric_add(OTP_M_LINKS_VERIFIED, 1);
	otp_metric_add((OtpMetric) (OTP_M_TTV_BUCKET + b), 1);
	otp_metric_add(OTP_M_TTV_SUM_US, (uint64) (seconds * 1e6));
}

/*
 * otp_metric_attempt: count one finished HTTP attempt of the worker (by
 * its outcome and HTTP status) and the delivery's result (status is
 * "delivered", "queued" for a retry, or "dead"), at once.  Never ERRORs.
 */
void
otp_metric_attempt(OtpHttpOutcome outcome, int http_status, const char *status)
{
	OtpMetric	class;

	if (otp_shared == NULL)
		return;
	if (outcome == OTP_HTTP_RESPONSE)
		class = http_status >= 200 && http_status < 600 ?
			(OtpMetric) (OTP_M_HTTP_2XX + http_status / 100 - 2) : OTP_M_HTTP_OTHER;
	else if (outcome == OTP_HTTP_TRANSPORT_ERROR)
		class = OTP_M_HTTP_TRANSPORT_ERROR;
	else if (outcome == OTP_HTTP_REFUSED)
		class = OTP_M_HTTP_REFUSED;
	else
		class = OTP_M_HTTP_INVALID;
	otp_metric_add_now(class, 1);
	if (strcmp(status, "delivered") == 0)
		otp_metric_add_now(OTP_M_DELIVERY_DELIVERED, 1);
	else if (strcmp(status, "dead") == 0)
		otp_metric_add_now(OTP_M_DELIVERY_DEAD, 1);
	else
		otp_metric_add_now(OTP_M_DELIVERY_RETRIED, 1);
}

/* otp_metrics_init: zero the shared counters (shmem.c, at creation) */
void
otp_metrics_init(void)
{
	int			m;

	for (m = 0; m < OTP_M__COUNT; m++)
		pg_atomic_init_u64(&otp_shared->counters[m], 0);
}

/*
 * otp_metrics_at_commit: add this transaction's counts to shared memory
 * (one atomic add per counter it touched).  Never ERRORs.
 */
void
otp_metrics_at_commit(void)
{
	int			m;

	if (pending_any && otp_shared != NULL)
		for (m = 0; m < OTP_M__COUNT; m++)
			if (pending[m] != 0)
				pg_atomic_fetch_add_u64(&otp_shared->counters[m], pending[m]);
	otp_metrics_at_abort();
}

/* otp_metrics_at_abort: forget this transaction's counts; never ERRORs */
void
otp_metrics_at_abort(void)
{
	if (pending_any)
		memset(pending, 0, sizeof(pending));
	pending_any = false;
	nsaves = 0;
}

/*
 * otp_metrics_at_subxact: at the end of a subtransaction, put its counts
 * back (abort), or hand its save to its parent (commit: the parent, which
 * has no save of its own, was in that state when it last counted).
 * Never ERRORs.
 */
void
otp_metrics_at_subxact(bool commit)
{
	int			level = GetCurrentTransactionNestLevel();

	if (nsaves == 0 || saves[nsaves - 1].level != level)
		return;
	if (!commit)
	{
		memcpy(pending, saves[nsaves - 1].counts, sizeof(pending));
		nsaves--;
	}
	else if (level - 1 <= 1 ||
			 (nsaves >= 2 && saves[nsaves - 2].level == level - 1))
		nsaves--;
	else
		saves[nsaves - 1].level = level - 1;
}

/* ----------------------------------------------------------------
 * Reading the counters
 * ----------------------------------------------------------------
 */

/* snapshot: read every shared counter into out; false without shmem */
static bool
snapshot(uint64 *out)
{
	int			m;

	if (otp_shared == NULL)
		return false;
	for (m = 0; m < OTP_M__COUNT; m++)
		out[m] = pg_atomic_read_u64(&otp_shared->counters[m]);
	return true;
}

/* put_row: one row (metric, label, value) of otp_link_counters() */
static void
put_row(ReturnSetInfo *rsinfo, const char *metric, const char *label,
		double value)
{
	Datum		values[3];
	bool		nulls[3] = {false, label == NULL, false};

	values[0] = CStringGetTextDatum(metric);
	values[1] = label ? CStringGetTextDatum(label) : (Datum) 0;
	values[2] = Float8GetDatum(value);
	tuplestore_putvalues(rsinfo->setResult, rsinfo->setDesc, values, nulls);
}

/*
 * otp_link_counters() RETURNS TABLE (metric text, label text, value
 * double precision): the shared counters, one row per series: the
 * counters under their Prometheus names (label: the value of the
 * family's one label, or NULL), then the time-to-verify histogram
 * (_bucket rows cumulative, label the bound "le", then _sum in seconds
 * and _count).  No rows without shared memory.  Never ERRORs but on
 * out-of-memory.
 */
Datum
otp_link_counters(PG_FUNCTION_ARGS)
{
	ReturnSetInfo *rsinfo = (ReturnSetInfo *) fcinfo->resultinfo;
	uint64		c[OTP_M__COUNT];
	uint64		cum = 0;
	int			f,
				i;

	InitMaterializedSRF(fcinfo, 0);
	if (!snapshot(c))
		PG_RETURN_VOID();
	for (f = 0; f < lengthof(families); f++)
		for (i = 0; i < families[f].n; i++)
			put_row(rsinfo, families[f].name,
					families[f].label ? label_values[families[f].first + i] : NULL,
					(double) c[families[f].first + i]);
	for (i = 0; i <= OTP_TTV_BOUNDS; i++)
	{
		cum += c[OTP_M_TTV_BUCKET + i];
		put_row(rsinfo, TTV_NAME "_bucket",
				i < OTP_TTV_BOUNDS ? psprintf("%d", ttv_bounds[i]) : "+Inf",
				(double) cum);
	}
	put_row(rsinfo, TTV_NAME "_sum", NULL, c[OTP_M_TTV_SUM_US] / 1e6);
	put_row(rsinfo, TTV_NAME "_count", NULL, (double) cum);
	PG_RETURN_VOID();
}

/*
 * append_counters: the counters and the histogram of c in the text
 * exposition format (HELP and TYPE once per family).  Allocates in
 * CurrentMemoryContext.
 */
static void
append_counters(StringInfo buf, const uint64 *c)
{
	uint64		cum = 0;
	int			f,
				i;

	for (f = 0; f < lengthof(families); f++)
	{
		const MetricFamily *fam = &families[f];

		appendStringInfo(buf, "# HELP %s %s\n# TYPE %s counter\n",
						 fam->name, fam->help, fam->name);
		for (i = 0; i < fam->n; i++)
		{
			if (fam->label)
				appendStringInfo(buf, "%s{%s=\"%s\"} " UINT64_FORMAT "\n",
								 fam->name, fam->label,
								 label_values[fam->first + i], c[fam->first + i]);
			else
				appendStringInfo(buf, "%s " UINT64_FORMAT "\n",
								 fam->name, c[fam->first + i]);
		}
	}
	appendStringInfoString(buf,
						   "# HELP " TTV_NAME " Seconds from a link's creation to its verification.\n"
						   "# TYPE " TTV_NAME " histogram\n");
	for (i = 0; i <= OTP_TTV_BOUNDS; i++)
	{
		cum += c[OTP_M_TTV_BUCKET + i];
		if (i < OTP_TTV_BOUNDS)
			appendStringInfo(buf, TTV_NAME "_bucket{le=\"%d\"} " UINT64_FORMAT "\n",
							 ttv_bounds[i], cum);
		else
			appendStringInfo(buf, TTV_NAME "_bucket{le=\"+Inf\"} " UINT64_FORMAT "\n",
							 cum);
	}
	appendStringInfo(buf, TTV_NAME "_sum %.6f\n" TTV_NAME "_count " UINT64_FORMAT "\n",
					 c[OTP_M_TTV_SUM_US] / 1e6, cum);
}

/*
 * append_gauges: the rows of otp_link.otp_link_gauges() (metric, help,
 * value) as gauges.  Connects to SPI itself; ERRORs on database errors.
 */
static void
append_gauges(StringInfo buf)
{
	static SPIPlanPtr plan = NULL;
	uint64		r;

	otp_spi_connect();
	/* numeric: the text does not depend on extra_float_digits */
	otp_prepare(&plan, "SELECT metric, help, value::numeric::text FROM otp_link.otp_link_gauges()",
				0, NULL);
	if (otp_spi_execute(plan, NULL, NULL, 0) != SPI_OK_SELECT)
		elog(ERROR, "otp_link_gauges() failed");
	for (r = 0; r < SPI_processed; r++)
	{
		char	   *metric = otp_spi_text_row(r, 1);

		appendStringInfo(buf, "# HELP %s %s\n# TYPE %s gauge\n%s %s\n",
						 metric, otp_spi_text_row(r, 2), metric, metric,
						 otp_spi_text_row(r, 3));
	}
	SPI_finish();
}

/*
 * otp_link_prometheus() RETURNS text: the counters (shared memory) and the
 * gauges (otp_link_gauges(): queue and pending links from indexes, the
 * worker) in Prometheus' text exposition format, version 0.0.4.  Without
 * shared memory, a comment says the counters are not kept and only the
 * gauges follow.  ERRORs on database errors.
 */
Datum
otp_link_prometheus(PG_FUNCTION_ARGS)
{
	StringInfoData buf;
	uint64		c[OTP_M__COUNT];

	initStringInfo(&buf);
	if (snapshot(c))
		append_counters(&buf, c);
	else
		appendStringInfoString(&buf,
							   "# otp_link is not in shared_preload_libraries: no counters are kept "
							   "(otp_link_preloaded 0); the gauges follow\n");
	append_gauges(&buf);
	PG_RETURN_TEXT_P(cstring_to_text_with_len(buf.data, buf.len));
}
