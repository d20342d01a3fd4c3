/*-------------------------------------------------------------------------
 *
 * otp_link.c
 *	  Module initialisation and configuration (GUCs) of otp_link.
 *
 * All settings live under the reserved prefix "otp_link.".  The background
 * worker is registered only when the library is loaded through
 * shared_preload_libraries; loaded any other way, the SQL functions work
 * and deliveries wait in otp_link.deliveries.
 *
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include <limits.h>

#include "fmgr.h"
#include "miscadmin.h"
#include "utils/guc.h"

#include "otp_link.h"
#include "shmem.h"
#include "worker.h"

PG_MODULE_MAGIC;

char	   *otp_link_database = NULL;
char	   *otp_link_retry_schedule = NULL;
bool		otp_link_allow_http = false;
bool		otp_link_allow_private_networks = false;
int			otp_link_max_concurrency = 64;
int			otp_link_destination_concurrency = 16;
int			otp_link_breaker_failures = 10;
int			otp_link_breaker_pause_ms = 30000;
int			otp_link_timeout_ms = 15000;
int			otp_link_connect_timeout_ms = 5000;
int			otp_link_sweep_interval_ms = 10000;
int			otp_link_retention_s = 30 * 86400;
int			otp_link_message_retention_s = 7 * 86400;
int			otp_link_token_ttl_s = 600;
int			otp_link_unknown_code_limit = 10;
int			otp_link_unknown_code_rate = 600;
int			otp_link_unknown_code_window_s = 900;
int			otp_link_block_duration_s = 900;
int			otp_link_generate_limit = 10;
int			otp_link_generate_window_s = 900;
bool		otp_link_preloaded = false;

void		_PG_init(void);

/*
 * define_worker_gucs: the settings of the worker and of its deliveries
 * (all PGC_SIGHUP but otp_link.database).  Allocates in guc.c's memory;
 * can ERROR only on out-of-memory.
 */
static void
define_worker_gucs(void)
{
	/*
	 * A PGC_POSTMASTER variable can only be defined while preloading (else
	 * guc.c raises FATAL); loaded later there is no worker, so the setting
	 * is merely informative then.
	 */
	DefineCustomStringVariable("otp_link.database",
							   "Database whose otp_link deliveries the background worker serves.",
							   NULL, &otp_link_database, "postgres",
							   process_shared_preload_libraries_in_progress ?
							   PGC_POSTMASTER : PGC_SIGHUP,
							   0, NULL, NULL, NULL);
	DefineCustomStringVariable("otp_link.retry_schedule",
							   "Delays before each delivery attempt, comma-separated (e.g. \"0, 5s, 5min\").",
							   "The number of entries is the number of attempts; units ms, s, min, h, d.",
							   &otp_link_retry_schedule,
							   "0, 5s, 5min, 30min, 2h, 5h, 10h, 10h",
							   PGC_SIGHUP, 0,
							   otp_link_check_retry_schedule,
							   otp_link_assign_retry_schedule, NULL);
	DefineCustomBoolVariable("otp_link.allow_http",
							 "Allows plain http:// destinations for deliveries.",
							 NULL, &otp_link_allow_http, false,
							 PGC_SIGHUP, 0, NULL, NULL, NULL);
	DefineCustomBoolVariable("otp_link.allow_private_networks",
							 "Allows deliveries to loopback, private and link-local addresses.",
							 NULL, &otp_link_allow_private_networks, false,
							 PGC_SIGHUP, 0, NULL, NULL, NULL);
	DefineCustomIntVariable("otp_link.max_concurrency",
							"Deliveries in flight at once.",
							NULL, &otp_link_max_concurrency, 64, 1, 1024,
							PGC_SIGHUP, 0, NULL, NULL, NULL);
	DefineCustomIntVariable("otp_link.destination_concurrency",
							"Deliveries in flight at once to one destination.",
							"A destination is the host and port of a callback URL, or the reply endpoint of one instance.",
							&otp_link_destination_concurrency, 16, 1, 1024,
							PGC_SIGHUP, 0, NULL, NULL, NULL);
	DefineCustomIntVariable("otp_link.breaker_failures",
							"Consecutive failed attempts after which a destination is paused.",
							NULL, &otp_link_breaker_failures, 10, 1, 1000,
							PGC_SIGHUP, 0, NULL, NULL, NULL);
	DefineCustomIntVariable("otp_link.breaker_pause",
							"First pause of a failing destination; it doubles while the probes fail, up to 32 times.",
							NULL, &otp_link_breaker_pause_ms, 30000, 100, 3600000,
							PGC_SIGHUP, GUC_UNIT_MS, NULL, NULL, NULL);
	DefineCustomIntVariable("otp_link.timeout",
							"Total time allowed for one delivery attempt.",
							NULL, &otp_link_timeout_ms, 15000, 100, 300000,
							PGC_SIGHUP, GUC_UNIT_MS, NULL, NULL, NULL);
	DefineCustomIntVariable("otp_link.connect_timeout",
							"Time allowed to connect for one delivery attempt.",
							NULL, &otp_link_connect_timeout_ms, 5000, 100, 300000,
							PGC_SIGHUP, GUC_UNIT_MS, NULL, NULL, NULL);
	DefineCustomIntVariable("otp_link.sweep_interval",
							"Interval of the worker's expiry sweep and retention purge.",
							NULL, &otp_link_sweep_interval_ms, 10000, 100, 3600000,
							PGC_SIGHUP, GUC_UNIT_MS, NULL, NULL, NULL);
	DefineCustomIntVariable("otp_link.retention",
							"Age after which finished links and finished deliveries are purged (0 keeps them).",
							NULL, &otp_link_retention_s, 30 * 86400, 0, INT_MAX,
							PGC_SIGHUP, GUC_UNIT_S, NULL, NULL, NULL);
	DefineCustomIntVariable("otp_link.message_retention",
							"How long processed incoming message ids are remembered for idempotency.",
							NULL, &otp_link_message_retention_s, 7 * 86400, 60, INT_MAX,
							PGC_SIGHUP, GUC_UNIT_S, NULL, NULL, NULL);
}

/*
 * define_limit_gucs: the per-call limits (PGC_SUSET, so a superuser can
 * change them per database or role).  Allocates in guc.c's memory; can
 * ERROR only on out-of-memory.
 */
static void
define_limit_gucs(void)
{
	DefineCustomIntVariable("otp_link.token_ttl",
							"Lifetime of the one-time {link} token issued at verification.",
							NULL, &otp_link_token_ttl_s, 600, 10, 86400,
							PGC_SUSET, GUC_UNIT_S, NULL, NULL, NULL);
	DefineCustomIntVariable("otp_link.unknown_code_limit",
							"Unknown codes a sender may send per window before being blocked.",
							"An instance's options.limits.unknown_code_limit overrides it.",
							&otp_link_unknown_code_limit, 10, 1, OTP_MAX_LIMIT_COUNT,
							PGC_SUSET, 0, NULL, NULL, NULL);
	DefineCustomIntVariable("otp_link.unknown_code_rate",
							"Unknown codes the whole server answers per minute; 0 means no limit.",
							"Counted in shared memory, so rolled-back attempts count too. While spent, messages are answered \"blocked\".",
							&otp_link_unknown_code_rate, 600, 0, OTP_MAX_LIMIT_COUNT,
							PGC_SUSET, 0, NULL, NULL, NULL);
	DefineCustomIntVariable("otp_link.unknown_code_window",
							"Window in which unknown codes per sender are counted.",
							NULL, &otp_link_unknown_code_window_s, 900, 1, OTP_MAX_LIMIT_SECONDS,
							PGC_SUSET, GUC_UNIT_S, NULL, NULL, NULL);
	DefineCustomIntVariable("otp_link.block_duration",
							"How long a sender that hit the unknown-code limit stays blocked.",
							NULL, &otp_link_block_duration_s, 900, 1, OTP_MAX_LIMIT_SECONDS,
							PGC_SUSET, GUC_UNIT_S, NULL, NULL, NULL);
	DefineCustomIntVariable("otp_link.generate_limit",
							"Links generated per (instance, rate_key) per window.",
							"An instance's options.limits.generate_limit overrides it.",
							&otp_link_generate_limit, 10, 1, OTP_MAX_LIMIT_COUNT,
							PGC_SUSET, 0, NULL, NULL, NULL);
	DefineCustomIntVariable("otp_link.generate_window",
							"Window in which links per (instance, rate_key) are counted.",
							NULL, &otp_link_generate_window_s, 900, 1, OTP_MAX_LIMIT_SECONDS,
							PGC_SUSET, GUC_UNIT_S, NULL, NULL, NULL);

}

/*
 * _PG_init: define the GUCs and, when preloaded, register the worker.
 *
 * Settings the worker reads are PGC_SIGHUP; per-call limits are PGC_SUSET
 * so a superuser can change them per database or role.  Can ERROR only on
 * out-of-memory.
 */
void
_PG_init(void)
{
	define_worker_gucs();
	define_limit_gucs();

	otp_code_define_gucs();

	MarkGUCPrefixReserved("otp_link");

	if (process_shared_preload_libraries_in_progress)
	{
		otp_link_preloaded = true;
		otp_link_register_worker();
	}
}
