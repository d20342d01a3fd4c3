/*-------------------------------------------------------------------------
 *
 * retry.c
 *	  The retry schedule of deliveries: otp_link.retry_schedule's check and
 *	  assign hooks, and the jittered delay before the next attempt.
 *
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include <math.h>

#include "common/pg_prng.h"

#include "pgstat.h"

#include "otp_link.h"
#include "worker.h"

#define OTP_MAX_SCHEDULE		64		/* entries of retry_schedule */
#define OTP_MAX_DELAY_MS		((int64) 30 * 86400 * 1000)

/* parsed otp_link.retry_schedule (the GUC's "extra", freed by guc.c) */
typedef struct RetrySchedule
{
	int			n;
	int64		delay_ms[FLEXIBLE_ARRAY_MEMBER];
} RetrySchedule;

static RetrySchedule *retry_schedule = NULL;
static pg_prng_state prng;

/* ----------------------------------------------------------------
 * otp_link.retry_schedule
 * ----------------------------------------------------------------
 */

/*
 * parse_entry: one entry of the schedule at *pp, a non-negative number
 * with an optional unit (ms, s, min, h, d; seconds when none), into
 * *delay_ms; advances *pp past it.  Returns false, with the GUC's error
 * detail set, on a bad entry.  Allocates nothing; cannot ERROR.
 */
static bool
parse_entry(const char **pp, int64 *delay_ms)
{
	const char *p = *pp;
	char	   *end;
	double		v;
	double		mult;
	const char *unit;
	int			ulen;

	errno = 0;
	v = strtod(p, &end);
	if (end == p || errno != 0 || v < 0 || isnan(v))
	{
		GUC_check_errdetail("Each entry must be a non-negative number with an optional unit (ms, s, min, h, d).");
		return false;
	}
	p = end;
	while (*p == ' ' || *p == '\t')
		p++;
	unit = p;
	while ((*p >= 'a' && *p <= 'z') || (*p >= 'A' && *p <= 'Z'))
		p++;
	ulen = p - unit;
	if (ulen == 0 || (ulen == 1 && pg_strncasecmp(unit, "s", 1) == 0))
		mult = 1000;
	else if (ulen == 2 && pg_strncasecmp(unit, "ms", 2) == 0)
		mult = 1;
	else if (ulen == 3 && pg_strncasecmp(unit, "min", 3) == 0)
		mult = 60000;
	else if (ulen == 1 && pg_strncasecmp(unit, "h", 1) == 0)
		mult = 3600000;
	else if (ulen == 1 && pg_strncasecmp(unit, "d", 1) == 0)
		mult = 86400000;
	else
	{
		GUC_check_errdetail("Unknown unit \"%.*s\"; use ms, s, min, h or d.", ulen, unit);
		return false;
	}
	if (v * mult > (double) OTP_MAX_DELAY_MS)
	{
		GUC_check_errdetail("A delay may not exceed 30 days.");
		return false;
	}
	*delay_ms = (int64) (v * mult + 0.5);
	*pp = p;
	return true;
}

/*
 * otp_link_check_retry_schedule: GUC check hook; parses "0, 500ms, 5s,
 * 5min, 2h, 1d" (a bare number is seconds) into a guc_malloc'd RetrySchedule
 * passed as *extra.  Returns false, with a detail, on a malformed value.
 */
bool
otp_link_check_retry_schedule(char **newval, void **extra, GucSource source)
{
	RetrySchedule *sched;
	const char *p = *newval;
	int			n = 0;

	sched = (RetrySchedule *) guc_malloc(LOG, offsetof(RetrySchedule, delay_ms) +
												 OTP_MAX_SCHEDULE * sizeof(int64));
	if (sched == NULL)
		return false;

	for (;;)
	{
		int64		delay;

		while (*p == ' ' || *p == '\t')
			p++;
		if (*p == '\0' && n == 0)
			break;
		if (!parse_entry(&p, &delay))
		{
			guc_free(sched);
			return false;
		}
		if (n >= OTP_MAX_SCHEDULE)
		{
			GUC_check_errdetail("At most %d entries are allowed.", OTP_MAX_SCHEDULE);
			guc_free(sched);
			return false;
		}
		sched->delay_ms[n++] = delay;
		while (*p == ' ' || *p == '\t')
			p++;
		if (*p == '\0')
			break;
		if (*p != ',')
		{
			GUC_check_errdetail("Entries must be separated by commas.");
			guc_free(sched);
			return false;
		}
		p++;
	}
	if (n == 0)
	{
		GUC_check_errdetail("At least one entry is required.");
		guc_free(sched);
		return false;
	}
	sched->n = n;
	*extra = sched;
	return true;
}

/*
 * otp_link_assign_retry_schedule: GUC assign hook; installs the parsed
 * schedule.
 */
void
otp_link_assign_retry_schedule(const char *newval, void *extra)
{
	retry_schedule = (RetrySchedule *) extra;
}

/*
 * otp_retry_delay_ms: delay before the attempt after failed attempt number
 * "attempts" (1-based), jittered by +-10% (0 stays 0); -1 when the schedule
 * is exhausted and the delivery is dead.
 */
int64
otp_retry_delay_ms(int attempts)
{
	int64		d;

	if (retry_schedule == NULL || attempts < 1 || attempts >= retry_schedule->n)
		return -1;
	d = retry_schedule->delay_ms[attempts];
	if (d > 0)
	{
		double		f = 0.9 + 0.2 * pg_prng_double(&prng);

		d = (int64) (d * f);
		if (d < 0)
			d = 0;
	}
	return d;
}

/*
 * otp_retry_seed: seed the generator of the jitter, once in the worker.
 * Allocates nothing; cannot ERROR.
 */
void
otp_retry_seed(void)
{
	pg_prng_seed(&prng, (uint64) GetCurrentTimestamp() ^ ((uint64) MyProcPid << 32));
}
