/*-------------------------------------------------------------------------
 *
 * consume.c
 *	  SQL-callable functions of a link's second half: incoming messages
 *	  verify, fail or expire links (otp_link_consume_message, the trigger
 *	  function and the WhatsApp Cloud API webhook walker), the expiry sweep
 *	  (otp_link_expire) and the one-time token exchange (otp_link_redeem).
 *
 * The reply to the user and the callback to the application are rows of
 * otp_link.deliveries written in the same transaction as the status
 * change.  A message without a bracketed code returns "ignored" after one
 * memchr and touches no table.
 *
 * Concurrency: the matching link row is locked (FOR UPDATE) before its
 * outcome is decided, so many messages carrying one code verify it exactly
 * once; the message id is claimed in otp_link.messages_seen before any
 * other write, so a redelivered webhook is a "duplicate" and writes
 * nothing else.
 *
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include "catalog/namespace.h"
#include "catalog/pg_type.h"
#include "commands/trigger.h"
#include "executor/spi.h"
#include "fmgr.h"
#include "utils/builtins.h"
#include "utils/jsonb.h"
#include "utils/lsyscache.h"
#include "utils/uuid.h"

#include "otp_link.h"
#include "api.h"

PG_FUNCTION_INFO_V1(otp_link_consume_message);
PG_FUNCTION_INFO_V1(otp_link_consume_trigger);
PG_FUNCTION_INFO_V1(otp_link_consume_webhook);
PG_FUNCTION_INFO_V1(otp_link_expire);
PG_FUNCTION_INFO_V1(otp_link_redeem);

#define ISO(col) "to_char(" col " AT TIME ZONE 'UTC', 'YYYY-MM-DD\"T\"HH24:MI:SS\"+00:00\"')"

/* the "data" object of a callback, from links l joined to instances i */
#define LINK_DATA_SQL \
	"jsonb_build_object('uuid', l.id, 'status', l.status, 'otp_type', 'link', " \
	"'chat_id', i.phone || '@c.us', 'verified_chat_id', l.chat_id, " \
	"'name', l.name, 'reason', l.reason, " \
	"'created_at', " ISO("l.created_at") ", 'expires_at', " ISO("l.expires_at") ", " \
	"'finished_at', " ISO("l.finished_at") ", 'metadata', l.metadata)"

#define MAX_MESSAGE_ID_LEN	256
#define MAX_REPLIES_AFTER_FINISH 3	/* messages to a finished link that get a reply */

/* what a consumed message came to */
typedef struct ConsumeResult
{
	const char *outcome;
	char	   *link_id;		/* text uuid or NULL */
	char	   *blocked_until;	/* ISO timestamp or NULL */
	char	   *original;		/* for duplicates: the first outcome */
} ConsumeResult;

/*
 * reply_status: 'queued' when the instance has a reply endpoint the worker
 * can post to, 'held' when the application reads replies itself.
 */
static const char *
reply_status(Jsonb *options)
{
	Jsonb	   *reply = otp_jsonb_get_object(options, "reply_endpoint", "options");
	char	   *type = otp_jsonb_get_text(reply, "type");

	if (type && (strcmp(type, "whatsapp_cloud") == 0 || strcmp(type, "http") == 0))
		return "queued";
	return "held";
}

/*
 * queue_reply: insert the reply text to the sender.  Caller is connected
 * to SPI; wakes the worker at commit when the row is queued.
 */
static void
queue_reply(Datum instance, Datum link, const char *link_id, const char *event,
			const char *digits, const char *body, const char *status)
{
	static SPIPlanPtr plan = NULL;
	Oid			types[6] = {UUIDOID, UUIDOID, TEXTOID, TEXTOID, JSONBOID, TEXTOID};
	Datum		values[6];
	StringInfoData buf;

	initStringInfo(&buf);
	appendStringInfoChar(&buf, '{');
	otp_json_str(&buf, "to", digits);
	otp_json_str(&buf, "body", body);
	otp_json_str(&buf, "event", event);
	otp_json_str(&buf, "link", link_id);

	values[0] = instance;
	values[1] = link;
	values[2] = CStringGetTextDatum(event);
	values[3] = CStringGetTextDatum(digits);
	values[4] = JsonbPGetDatum(otp_json_finish(&buf));
	values[5] = CStringGetTextDatum(status);
	otp_prepare(&plan,
				"INSERT INTO otp_link.deliveries (instance_id, link_id, kind, event, destination, payload, status) "
				"VALUES ($1, $2, 'reply', $3, $4, $5, $6)",
				6, types);
	if (otp_spi_execute(plan, values, NULL, 0) != SPI_OK_INSERT)
		elog(ERROR, "could not queue reply");
	if (strcmp(status, "queued") == 0)
		otp_link_wake_worker_at_commit();
}

/*
 * queue_callback: insert the callback for event to url (if any), its body
 * built from the link's current row.  sender is the chat id that caused the
 * event (NULL for the sweep).  Caller is connected to SPI.
 */
static void
queue_callback(Datum link, const char *event, const char *url, const char *sender)
{
	static SPIPlanPtr plan = NULL;
	Oid			types[4] = {UUIDOID, TEXTOID, TEXTOID, TEXTOID};
	Datum		values[4];
	char		nulls[4] = {' ', ' ', ' ', ' '};

	if (url == NULL)
		return;
	values[0] = link;
	values[1] = CStringGetTextDatum(event);
	values[2] = CStringGetTextDatum(url);
	values[3] = sender ? CStringGetTextDatum(sender) : (Datum) 0;
	nulls[3] = sender ? ' ' : 'n';
	otp_prepare(&plan,
				"INSERT INTO otp_link.deliveries (instance_id, link_id, kind, event, destination, payload) "
				"SELECT l.instance_id, l.id, 'callback', $2, $3, "
				"jsonb_build_object('type', $2, 'timestamp', " ISO("now()") ", "
				"'data', " LINK_DATA_SQL " || jsonb_build_object('sender', $4)) "
				"FROM otp_link.links l JOIN otp_link.instances i ON i.id = l.instance_id "
				"WHERE l.id = $1",
				4, types);
	if (otp_spi_execute(plan, values, nulls, 0) != SPI_OK_INSERT)
		elog(ERROR, "could not queue callback");
	otp_link_wake_worker_at_commit();
}

/*
 * claim_message_id: record message_id as processed with outcome.  Returns
 * false (and fills res as a duplicate) when it was processed before,
 * waiting for a concurrent transaction that holds the same id.
 */
static bool
claim_message_id(const char *message_id, const char *outcome,
				 const char *link_id, ConsumeResult *res)
{
	static SPIPlanPtr ins = NULL;
	static SPIPlanPtr get = NULL;
	Oid			types[3] = {TEXTOID, TEXTOID, UUIDOID};
	Datum		values[3];
	char		nulls[3] = {' ', ' ', ' '};

	if (message_id == NULL)
		return true;
	values[0] = CStringGetTextDatum(message_id);
	values[1] = CStringGetTextDatum(outcome);
	values[2] = link_id ? DirectFunctionCall1(uuid_in, CStringGetDatum(link_id)) : (Datum) 0;
	nulls[2] = link_id ? ' ' : 'n';
	otp_prepare(&ins,
				"INSERT INTO otp_link.messages_seen (message_id, outcome, link_id) "
				"VALUES ($1, $2, $3) ON CONFLICT (message_id) DO NOTHING",
				3, types);
	if (otp_spi_execute(ins, values, nulls, 0) != SPI_OK_INSERT)
		elog(ERROR, "could not record message id");
	if (SPI_processed == 1)
		return true;

	otp_prepare(&get,
				"SELECT outcome, link_id::text FROM otp_link.messages_seen WHERE message_id = $1",
				1, types);
	if (otp_spi_execute(get, values, NULL, 1) != SPI_OK_SELECT)
		elog(ERROR, "could not look up message id");
	res->outcome = "duplicate";
	if (SPI_processed == 1)
	{
		res->original = otp_spi_text(1);
		res->link_id = otp_spi_text(2);
	}
	return false;
}

/*
 * senders_has_window_s: whether otp_link.senders has the column window_s
 * (added in 1.1).  Between installing this library and ALTER EXTENSION
 * otp_link UPDATE, a database still has the 1.0 table; the count then runs
 * as in 1.0.  Syscache lookups; can ERROR if schema otp_link is gone.
 */
static bool
senders_has_window_s(void)
{
	Oid			rel = get_relname_relid("senders",
										get_namespace_oid("otp_link", false));

	return OidIsValid(rel) && get_attnum(rel, "window_s") != InvalidAttrNumber;
}

/*
 * count_unknown_code: count an unknown code against sender within the
 * window; block the sender when the limit is reached.  Returns the
 * blocked-until time (ISO, palloc'd) when the sender is now blocked.
 *
 * The counter is the sender's, whichever instance the guesses go to, and
 * its window only ever grows while it runs: a message to an instance with
 * a shorter unknown_code_window cannot restart a count that an instance
 * with a longer one started (window_s keeps the longest window seen since
 * window_start).  A block is never shortened either.  The caller holds the
 * sender's advisory lock (sender_blocked_until takes it).
 */
static char *
count_unknown_code(const char *sender, Jsonb *options)
{
	static SPIPlanPtr plan = NULL;
	static SPIPlanPtr plan10 = NULL;	/* for a 1.0 schema, until its update */
	Oid			types[4] = {TEXTOID, INT4OID, INT4OID, INT4OID};
	Datum		values[4];

	values[0] = CStringGetTextDatum(sender);
	values[1] = Int32GetDatum(otp_instance_limit(options, "unknown_code_window",
												 otp_link_unknown_code_window_s));
	values[2] = Int32GetDatum(otp_instance_limit(options, "unknown_code_limit",
												 otp_link_unknown_code_limit));
	values[3] = Int32GetDatum(otp_instance_limit(options, "block_duration",
												 otp_link_block_duration_s));
#define RESTART "(s.window_start <= now() - make_interval(secs => greatest(s.window_s, $2)))"
	if (!senders_has_window_s())
		otp_prepare(&plan10,
					"INSERT INTO otp_link.senders AS s (chat_id, window_start, unknown_codes, blocked_until) "
					"VALUES ($1, now(), 1, CASE WHEN 1 >= $3 THEN now() + make_interval(secs => $4) END) "
					"ON CONFLICT (chat_id) DO UPDATE SET "
					"unknown_codes = CASE WHEN s.window_start <= now() - make_interval(secs => $2) "
					"  THEN 1 ELSE s.unknown_codes + 1 END, "
					"window_start = CASE WHEN s.window_start <= now() - make_interval(secs => $2) "
					"  THEN now() ELSE s.window_start END, "
					"blocked_until = CASE WHEN (CASE WHEN s.window_start <= now() - make_interval(secs => $2) "
					"  THEN 1 ELSE s.unknown_codes + 1 END) >= $3 "
					"  THEN now() + make_interval(secs => $4) ELSE s.blocked_until END "
					"RETURNING CASE WHEN blocked_until > now() THEN " ISO("blocked_until") " END",
					4, types);
	else
		otp_prepare(&plan,
					"INSERT INTO otp_link.senders AS s "
					"(chat_id, window_start, window_s, unknown_codes, blocked_until) "
					"VALUES ($1, now(), $2, 1, CASE WHEN 1 >= $3 THEN now() + make_interval(secs => $4) END) "
					"ON CONFLICT (chat_id) DO UPDATE SET "
					"unknown_codes = CASE WHEN " RESTART " THEN 1 ELSE s.unknown_codes + 1 END, "
					"window_start = CASE WHEN " RESTART " THEN now() ELSE s.window_start END, "
					"window_s = CASE WHEN " RESTART " THEN $2 ELSE greatest(s.window_s, $2) END, "
					"blocked_until = CASE WHEN (CASE WHEN " RESTART " THEN 1 ELSE s.unknown_codes + 1 END) >= $3 "
					"  THEN greatest(s.blocked_until, now() + make_interval(secs => $4)) "
					"  ELSE s.blocked_until END "
					"RETURNING CASE WHEN blocked_until > now() THEN " ISO("blocked_until") " END",
					4, types);
#undef RESTART
	if (otp_spi_execute(senders_has_window_s() ? plan : plan10, values, NULL, 0) !=
		SPI_OK_INSERT_RETURNING)
		elog(ERROR, "could not count unknown code");
	return otp_spi_text(1);
}

/*
 * sender_blocked_until: ISO time until which sender is blocked, or NULL.
 *
 * First takes the sender's advisory lock, so that messages of one sender
 * are decided one after the other, then reads the block under the latest
 * snapshot: a burst of guesses sent in parallel sees the block (and the
 * count) that the earlier ones committed, and gets no more guesses than
 * the limit, whatever the isolation level.  Can ERROR.
 */
static char *
sender_blocked_until(const char *sender)
{
	static SPIPlanPtr plan = NULL;
	Oid			types[1] = {TEXTOID};
	Datum		values[1];

	otp_advisory_lock(sender, NULL, OTP_LOCK_SENDER);
	values[0] = CStringGetTextDatum(sender);
	otp_prepare(&plan,
				"SELECT " ISO("blocked_until") " FROM otp_link.senders "
				"WHERE chat_id = $1 AND blocked_until > now()",
				1, types);
	if (otp_spi_execute_latest(plan, values, NULL, 1) != SPI_OK_SELECT)
		elog(ERROR, "could not look up sender");
	return SPI_processed ? otp_spi_text(1) : NULL;
}

/*
 * finish_link: set a pending link's status (failed or expired) and reason.
 */
static void
finish_link(Datum link, const char *status, const char *reason)
{
	static SPIPlanPtr plan = NULL;
	Oid			types[3] = {UUIDOID, TEXTOID, TEXTOID};
	Datum		values[3];

	values[0] = link;
	values[1] = CStringGetTextDatum(status);
	values[2] = CStringGetTextDatum(reason);
	otp_prepare(&plan,
				"UPDATE otp_link.links SET status = $2, reason = $3, finished_at = now(), "
				"messages_received = messages_received + 1 WHERE id = $1",
				3, types);
	if (otp_spi_execute(plan, values, NULL, 0) != SPI_OK_UPDATE)
		elog(ERROR, "could not finish link");
}

/*
 * touch_link: count one more message for a finished link.
 */
static void
touch_link(Datum link)
{
	static SPIPlanPtr plan = NULL;
	Oid			types[1] = {UUIDOID};

	otp_prepare(&plan,
				"UPDATE otp_link.links SET messages_received = messages_received + 1 WHERE id = $1",
				1, types);
	if (otp_spi_execute(plan, &link, NULL, 0) != SPI_OK_UPDATE)
		elog(ERROR, "could not update link");
}

/*
 * render: the link's message text for key rendered with link, name, code;
 * palloc'd.
 */
static char *
render(Jsonb *messages, const char *key, const char *link, const char *name,
	   const char *code)
{
	StringInfoData buf;
	char	   *tmpl = otp_jsonb_get_text(messages, key);

	initStringInfo(&buf);
	if (tmpl)
		otp_render_template(&buf, tmpl, link, name, code);
	return buf.data;
}

/*
 * consume: the whole decision for one message.  chat_id is the raw sender
 * id, body the message text (may be NULL), message_id may be NULL,
 * instance may be (Datum) 0 when has_instance is false.  Connects to SPI
 * itself; results are palloc'd in the caller's context.  ERRORs on bad
 * input (22023) and unknown instance (PT404); when lenient (the trigger
 * and the webhook walker, whose rows must not be lost), a sender id that is
 * no phone number makes the message "ignored" instead.
 */
static ConsumeResult
consume(const char *chat_id, const char *body, size_t body_len,
		const char *message_id, bool has_instance, Datum instance, bool lenient)
{
	static SPIPlanPtr link_plan = NULL;
	static SPIPlanPtr inst_plan = NULL;
	static SPIPlanPtr verify_plan = NULL;
	ConsumeResult res = {0};
	char		code[OTP_CODE_LEN + 1];
	char		digits[16];
	char	   *sender;
	Jsonb	   *inst_options = NULL;
	Oid			types[1] = {BYTEAOID};
	Datum		values[1];
	bool		isnull;

	/* ordinary chat: nothing to do */
	if (body == NULL || !otp_extract_code(body, body_len, code))
	{
		res.outcome = "ignored";
		return res;
	}
	/* an empty message id is no id: it must not make other messages duplicates */
	if (message_id && message_id[0] == '\0')
		message_id = NULL;
	/*
	 * An over-long id is refused to a caller, but skipped in the trigger and
	 * the webhook: one bad message must not fail a whole batch, which the
	 * provider would then retry for ever.
	 */
	if (message_id && strlen(message_id) > MAX_MESSAGE_ID_LEN && lenient)
	{
		res.outcome = "ignored";
		return res;
	}
	if (message_id && strlen(message_id) > MAX_MESSAGE_ID_LEN)
		ereport(ERROR,
				(errcode(ERRCODE_STRING_DATA_RIGHT_TRUNCATION),
				 errmsg("message_id is longer than %d bytes", MAX_MESSAGE_ID_LEN),
				 errhint("Pass the provider's message id, e.g. wamid.HBgM....")));
	if (!otp_normalize_phone(chat_id, digits, sizeof(digits)))
	{
		size_t		len = strlen(chat_id);

		/* groups, broadcasts and channels are not users: ignore them */
		if (lenient ||
			(len > 5 && pg_strcasecmp(chat_id + len - 5, "@g.us") == 0) ||
			(len > 10 && pg_strcasecmp(chat_id + len - 10, "@broadcast") == 0) ||
			(len > 11 && pg_strcasecmp(chat_id + len - 11, "@newsletter") == 0))
		{
			res.outcome = "ignored";
			return res;
		}
		ereport(ERROR,
				(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
				 errmsg("invalid chat id: \"%s\"", chat_id),
				 errdetail("A chat id is 201234567890@c.us, +20 123 456 7890 or 8 to 15 digits."),
				 errhint("Pass the sender's WhatsApp id as the provider reports it.")));
	}
	sender = psprintf("%s@c.us", digits);

	otp_spi_connect();

	if (has_instance)
	{
		otp_prepare(&inst_plan,
					"SELECT options FROM otp_link.instances WHERE id = $1",
					1, (Oid[]) {UUIDOID});
		if (otp_spi_execute(inst_plan, &instance, NULL, 1) != SPI_OK_SELECT)
			elog(ERROR, "instance lookup failed");
		if (SPI_processed == 0)
			otp_error_no_instance(instance);
		inst_options = DatumGetJsonbPCopy(SPI_getbinval(SPI_tuptable->vals[0],
														SPI_tuptable->tupdesc, 1, &isnull));
	}

	/* a blocked sender gets nowhere */
	res.blocked_until = sender_blocked_until(sender);
	if (res.blocked_until)
	{
		res.outcome = "blocked";
		(void) claim_message_id(message_id, res.outcome, NULL, &res);
		SPI_finish();
		return res;
	}

	/* the server's budget of unknown codes is spent: no code is looked up */
	if (!otp_unknown_code_allowed(false))
	{
		res.outcome = "blocked";
		res.blocked_until = otp_format_timestamp(TimestampTzPlusMilliseconds(GetCurrentTimestamp(),
																			 60000 / Max(otp_link_unknown_code_rate, 1) + 1000));
		(void) claim_message_id(message_id, res.outcome, NULL, &res);
		SPI_finish();
		return res;
	}

	/* the link, locked */
	values[0] = PointerGetDatum(otp_sha256_bytea(code, OTP_CODE_LEN));
	otp_prepare(&link_plan,
				"SELECT l.id, l.id::text, l.status, l.expires_at <= now(), l.phone, "
				"l.instance_id, l.name, l.messages, l.callbacks, l.link_url, i.options, "
				"l.messages_received "
				"FROM otp_link.links l JOIN otp_link.instances i ON i.id = l.instance_id "
				"WHERE l.code_hash = $1 FOR UPDATE OF l",
				1, types);
	if (otp_spi_execute(link_plan, values, NULL, 1) != SPI_OK_SELECT)
		elog(ERROR, "link lookup failed");

	if (SPI_processed == 0 ||
		(has_instance &&
		 !DatumGetBool(DirectFunctionCall2(uuid_eq, instance,
										   SPI_getbinval(SPI_tuptable->vals[0],
														 SPI_tuptable->tupdesc, 6, &isnull)))))
	{
		res.outcome = "unknown_code";
		(void) otp_unknown_code_allowed(true);	/* spent even if rolled back */
		if (claim_message_id(message_id, res.outcome, NULL, &res))
			res.blocked_until = count_unknown_code(sender, inst_options);
	}
	else
	{
		HeapTuple	tup = SPI_copytuple(SPI_tuptable->vals[0]);
		TupleDesc	desc = CreateTupleDescCopy(SPI_tuptable->tupdesc);
		Datum		link = SPI_getbinval(tup, desc, 1, &isnull);
		char	   *link_id = TextDatumGetCString(SPI_getbinval(tup, desc, 2, &isnull));
		char	   *status = TextDatumGetCString(SPI_getbinval(tup, desc, 3, &isnull));
		bool		overdue = DatumGetBool(SPI_getbinval(tup, desc, 4, &isnull));
		Datum		d_phone = SPI_getbinval(tup, desc, 5, &isnull);
		char	   *bound = isnull ? NULL : TextDatumGetCString(d_phone);
		Datum		inst = SPI_getbinval(tup, desc, 6, &isnull);
		Datum		d_name = SPI_getbinval(tup, desc, 7, &isnull);
		char	   *name = isnull ? NULL : TextDatumGetCString(d_name);
		Jsonb	   *messages = DatumGetJsonbPCopy(SPI_getbinval(tup, desc, 8, &isnull));
		Jsonb	   *callbacks = DatumGetJsonbPCopy(SPI_getbinval(tup, desc, 9, &isnull));
		Datum		d_url = SPI_getbinval(tup, desc, 10, &isnull);
		char	   *link_url = isnull ? NULL : TextDatumGetCString(d_url);
		Jsonb	   *options = DatumGetJsonbPCopy(SPI_getbinval(tup, desc, 11, &isnull));
		int32		received = DatumGetInt32(SPI_getbinval(tup, desc, 12, &isnull));
		const char *rstatus = reply_status(options);

		res.link_id = link_id;
		if (strcmp(status, "pending") == 0 && overdue)
			res.outcome = "expired";
		else if (strcmp(status, "pending") == 0 && bound && strcmp(bound, digits) != 0)
			res.outcome = "failed";
		else if (strcmp(status, "pending") == 0)
			res.outcome = "verified";
		else if (strcmp(status, "verified") == 0)
			res.outcome = "already_verified";
		else if (strcmp(status, "expired") == 0)
			res.outcome = "expired";
		else
			res.outcome = "failed";

		if (claim_message_id(message_id, res.outcome, link_id, &res))
		{
			if (strcmp(res.outcome, "verified") == 0)
			{
				char	   *token = NULL;
				char	   *url = NULL;
				Oid			vtypes[4] = {UUIDOID, TEXTOID, BYTEAOID, INT4OID};
				Datum		vvalues[4];
				char		vnulls[4] = {' ', ' ', ' ', ' '};

				if (link_url)
				{
					token = otp_random_token();
					url = otp_link_url_render(link_url, token);
				}
				vvalues[0] = link;
				vvalues[1] = CStringGetTextDatum(sender);
				vvalues[2] = token ? PointerGetDatum(otp_sha256_bytea(token, strlen(token))) : (Datum) 0;
				vnulls[2] = token ? ' ' : 'n';
				vvalues[3] = Int32GetDatum(otp_link_token_ttl_s);
				otp_prepare(&verify_plan,
							"UPDATE otp_link.links SET status = 'verified', chat_id = $2, "
							"finished_at = now(), messages_received = messages_received + 1, "
							"token_hash = $3, token_expires_at = CASE WHEN $3 IS NOT NULL "
							"THEN now() + make_interval(secs => $4) END WHERE id = $1",
							4, vtypes);
				if (otp_spi_execute(verify_plan, vvalues, vnulls, 0) != SPI_OK_UPDATE)
					elog(ERROR, "could not verify link");
				queue_reply(inst, link, link_id, "reply.success", digits,
							render(messages, "success", url, name, code), rstatus);
				queue_callback(link, "otp_link.verified",
							   otp_jsonb_get_text(callbacks, "success"), sender);
				if (token)
					explicit_bzero(token, strlen(token));
			}
			else if (strcmp(res.outcome, "failed") == 0 && strcmp(status, "pending") == 0)
			{
				finish_link(link, "failed", "wrong_sender");
				queue_reply(inst, link, link_id, "reply.failed", digits,
							render(messages, "failed", NULL, name, code), rstatus);
				queue_callback(link, "otp_link.failed",
							   otp_jsonb_get_text(callbacks, "failed"), sender);
			}
			else if (strcmp(res.outcome, "expired") == 0 && strcmp(status, "pending") == 0)
			{
				const char *url = otp_jsonb_get_text(callbacks, "expired");

				finish_link(link, "expired", "expired");
				queue_reply(inst, link, link_id, "reply.expired", digits,
							render(messages, "expired", NULL, name, code), rstatus);
				queue_callback(link, "otp_link.expired",
							   url ? url : otp_jsonb_get_text(callbacks, "failed"), sender);
			}
			else
			{
				/*
				 * A finished link: tell an expired or failed link's sender
				 * again, but only a few times, so that nobody can make us
				 * send replies without end.
				 */
				touch_link(link);
				if (received >= MAX_REPLIES_AFTER_FINISH)
					 /* no more replies */ ;
				else if (strcmp(res.outcome, "expired") == 0)
					queue_reply(inst, link, link_id, "reply.expired", digits,
								render(messages, "expired", NULL, name, code), rstatus);
				else if (strcmp(res.outcome, "failed") == 0)
					queue_reply(inst, link, link_id, "reply.failed", digits,
								render(messages, "failed", NULL, name, code), rstatus);
			}
		}
	}
	explicit_bzero(code, sizeof(code));
	SPI_finish();
	return res;
}

/*
 * result_json: the jsonb answer of consume_message for res.
 */
static Jsonb *
result_json(ConsumeResult *res, const char *chat_id, const char *message_id)
{
	StringInfoData buf;
	char		digits[16];

	initStringInfo(&buf);
	appendStringInfoChar(&buf, '{');
	otp_json_str(&buf, "outcome", res->outcome);
	otp_json_str(&buf, "uuid", res->link_id);
	otp_json_str(&buf, "chat_id",
				 otp_normalize_phone(chat_id, digits, sizeof(digits)) ?
				 psprintf("%s@c.us", digits) : chat_id);
	otp_json_str(&buf, "message_id", message_id);
	if (res->blocked_until)
		otp_json_str(&buf, "blocked_until", res->blocked_until);
	if (res->original)
		otp_json_str(&buf, "original_outcome", res->original);
	return otp_json_finish(&buf);
}

/* ----------------------------------------------------------------
 * otp_link_consume_message(chat_id text, body text, message_id text,
 *		instance uuid) RETURNS jsonb
 * ----------------------------------------------------------------
 */
Datum
otp_link_consume_message(PG_FUNCTION_ARGS)
{
	char	   *chat_id;
	text	   *body = NULL;
	char	   *message_id = NULL;
	ConsumeResult res;

	if (PG_ARGISNULL(0))
		ereport(ERROR,
				(errcode(ERRCODE_NULL_VALUE_NOT_ALLOWED),
				 errmsg("chat_id must not be null"),
				 errhint("Pass the sender's WhatsApp id, e.g. 201234567890@c.us.")));
	chat_id = text_to_cstring(PG_GETARG_TEXT_PP(0));
	if (!PG_ARGISNULL(1))
		body = PG_GETARG_TEXT_PP(1);
	if (!PG_ARGISNULL(2))
		message_id = text_to_cstring(PG_GETARG_TEXT_PP(2));

	res = consume(chat_id, body ? VARDATA_ANY(body) : NULL,
				  body ? VARSIZE_ANY_EXHDR(body) : 0, message_id,
				  !PG_ARGISNULL(3), PG_ARGISNULL(3) ? (Datum) 0 : PG_GETARG_DATUM(3),
				  false);
	PG_RETURN_JSONB_P(result_json(&res, chat_id, message_id));
}

/*
 * trigger_column: the value of column name in tuple as text (NULL when
 * SQL NULL); ERROR 42703 when the table has no such column.
 */
static char *
trigger_column(HeapTuple tuple, TupleDesc desc, const char *name, const char *what,
			   const char *table)
{
	int			fnum = SPI_fnumber(desc, name);

	if (fnum == SPI_ERROR_NOATTRIBUTE || fnum <= 0)
		ereport(ERROR,
				(errcode(ERRCODE_UNDEFINED_COLUMN),
				 errmsg("column \"%s\" (the %s) does not exist in table \"%s\"", name, what, table),
				 errhint("The arguments of otp_link_consume_trigger() name the chat id, body and, optionally, message id columns, e.g. EXECUTE FUNCTION otp_link.otp_link_consume_trigger('chat_id', 'body', 'message_id').")));
	return SPI_getvalue(tuple, desc, fnum);
}

/* ----------------------------------------------------------------
 * otp_link_consume_trigger() RETURNS trigger
 *
 * Arguments: chat-id column, body column [, message-id column
 * [, instance uuid]].  For INSERT, FOR EACH ROW, BEFORE or AFTER; the row
 * is returned unchanged.
 * ----------------------------------------------------------------
 */
Datum
otp_link_consume_trigger(PG_FUNCTION_ARGS)
{
	TriggerData *trigdata = (TriggerData *) fcinfo->context;
	Trigger    *trigger;
	TupleDesc	desc;
	HeapTuple	tuple;
	char	   *table;
	char	   *chat_id;
	char	   *body;
	char	   *message_id = NULL;
	Datum		instance = (Datum) 0;
	bool		has_instance = false;

	if (!CALLED_AS_TRIGGER(fcinfo))
		ereport(ERROR,
				(errcode(ERRCODE_E_R_I_E_TRIGGER_PROTOCOL_VIOLATED),
				 errmsg("otp_link_consume_trigger() must be called as a trigger")));
	if (!TRIGGER_FIRED_BY_INSERT(trigdata->tg_event) ||
		!TRIGGER_FIRED_FOR_ROW(trigdata->tg_event))
		ereport(ERROR,
				(errcode(ERRCODE_E_R_I_E_TRIGGER_PROTOCOL_VIOLATED),
				 errmsg("otp_link_consume_trigger() must be fired for INSERT, FOR EACH ROW"),
				 errhint("Create it with AFTER INSERT ON <inbox> FOR EACH ROW.")));
	trigger = trigdata->tg_trigger;
	if (trigger->tgnargs < 2 || trigger->tgnargs > 4)
		ereport(ERROR,
				(errcode(ERRCODE_E_R_I_E_TRIGGER_PROTOCOL_VIOLATED),
				 errmsg("otp_link_consume_trigger() takes 2 to 4 arguments, not %d", trigger->tgnargs),
				 errhint("Name the chat id, body and, optionally, message id columns, then optionally an instance uuid.")));

	desc = trigdata->tg_relation->rd_att;
	tuple = trigdata->tg_trigtuple;
	table = RelationGetRelationName(trigdata->tg_relation);
	chat_id = trigger_column(tuple, desc, trigger->tgargs[0], "chat id", table);
	body = trigger_column(tuple, desc, trigger->tgargs[1], "body", table);
	if (trigger->tgnargs >= 3 && trigger->tgargs[2][0] != '\0')
		message_id = trigger_column(tuple, desc, trigger->tgargs[2], "message id", table);
	if (trigger->tgnargs == 4)
	{
		instance = DirectFunctionCall1(uuid_in, CStringGetDatum(trigger->tgargs[3]));
		has_instance = true;
	}

	/* a row without a sender or text is not ours */
	if (chat_id != NULL && body != NULL)
		(void) consume(chat_id, body, strlen(body), message_id, has_instance, instance,
					   true);

	return PointerGetDatum(tuple);
}

/*
 * jsonb_field: the value of key in container, or NULL.
 */
static JsonbValue *
jsonb_field(JsonbContainer *c, const char *key)
{
	return getKeyJsonValueFromContainer(c, key, strlen(key), NULL);
}

/*
 * jsonb_array_container: the container of v if it is an array, else ERROR
 * 22023 naming path.  NULL when v is NULL and optional.
 */
static JsonbContainer *
jsonb_array_container(JsonbValue *v, const char *path, bool optional)
{
	if (v == NULL && optional)
		return NULL;
	if (v == NULL || v->type != jbvBinary || !JsonContainerIsArray(v->val.binary.data))
		ereport(ERROR,
				(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
				 errmsg("malformed WhatsApp webhook payload: %s is not an array", path),
				 errhint("Pass the body WhatsApp Cloud API posts: {\"object\": \"whatsapp_business_account\", \"entry\": [{\"changes\": [{\"value\": {\"messages\": [...]}}]}]}.")));
	return v->val.binary.data;
}

/*
 * jsonb_object_container: like jsonb_array_container for objects.
 */
static JsonbContainer *
jsonb_object_container(JsonbValue *v, const char *path, bool optional)
{
	if (v == NULL && optional)
		return NULL;
	if (v == NULL || v->type != jbvBinary || !JsonContainerIsObject(v->val.binary.data))
		ereport(ERROR,
				(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
				 errmsg("malformed WhatsApp webhook payload: %s is not an object", path),
				 errhint("Pass the body WhatsApp Cloud API posts: {\"object\": \"whatsapp_business_account\", \"entry\": [{\"changes\": [{\"value\": {\"messages\": [...]}}]}]}.")));
	return v->val.binary.data;
}

/*
 * jsonb_string: the string in v (palloc'd), NULL when absent; ERROR when
 * present but not a string.
 */
static char *
jsonb_string(JsonbValue *v, const char *path)
{
	if (v == NULL || v->type == jbvNull)
		return NULL;
	if (v->type != jbvString)
		ereport(ERROR,
				(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
				 errmsg("malformed WhatsApp webhook payload: %s is not a string", path)));
	return pnstrdup(v->val.string.val, v->val.string.len);
}

/* ----------------------------------------------------------------
 * otp_link_consume_webhook(payload jsonb) RETURNS jsonb
 *
 * Walks entry[].changes[].value.messages[]; text messages are consumed
 * (from, text.body, id), the instance found by the business number in
 * value.metadata.display_phone_number when it is registered.  Status
 * updates and non-text messages are ignored.  Returns {"messages": n,
 * "results": [...]}.  The whole payload is checked before any message is
 * consumed, so a malformed one writes nothing.
 * ----------------------------------------------------------------
 */
Datum
otp_link_consume_webhook(PG_FUNCTION_ARGS)
{
	static SPIPlanPtr inst_plan = NULL;
	Jsonb	   *payload;
	JsonbContainer *entries;
	StringInfoData out;
	int			pass;
	int			count = 0;
	int			ne;

	if (PG_ARGISNULL(0))
		ereport(ERROR,
				(errcode(ERRCODE_NULL_VALUE_NOT_ALLOWED),
				 errmsg("payload must not be null"),
				 errhint("Pass the JSON body WhatsApp Cloud API posted.")));
	payload = PG_GETARG_JSONB_P(0);
	if (!JB_ROOT_IS_OBJECT(payload) || JB_ROOT_IS_SCALAR(payload))
		ereport(ERROR,
				(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
				 errmsg("malformed WhatsApp webhook payload: not a JSON object"),
				 errhint("Pass the body WhatsApp Cloud API posts: {\"object\": \"whatsapp_business_account\", \"entry\": [...]}.")));
	entries = jsonb_array_container(jsonb_field(&payload->root, "entry"), "entry", false);

	initStringInfo(&out);
	appendStringInfoString(&out, "{\"results\": [");

	/* pass 0 checks the shape, pass 1 consumes */
	for (pass = 0; pass < 2; pass++)
	{
		int			nentries = JsonContainerSize(entries);

		for (ne = 0; ne < nentries; ne++)
		{
			JsonbValue *entry = getIthJsonbValueFromContainer(entries, ne);
			JsonbContainer *ec = jsonb_object_container(entry, "entry[]", false);
			JsonbContainer *changes = jsonb_array_container(jsonb_field(ec, "changes"),
															"entry[].changes", true);
			int			nc;

			for (nc = 0; changes && nc < (int) JsonContainerSize(changes); nc++)
			{
				JsonbContainer *cc = jsonb_object_container(getIthJsonbValueFromContainer(changes, nc),
															"entry[].changes[]", false);
				JsonbContainer *value = jsonb_object_container(jsonb_field(cc, "value"),
															   "entry[].changes[].value", true);
				JsonbContainer *meta;
				JsonbContainer *msgs;
				char	   *business = NULL;
				bool		has_instance = false;
				Datum		instance = (Datum) 0;
				int			nm;

				if (value == NULL)
					continue;
				meta = jsonb_object_container(jsonb_field(value, "metadata"),
											  "entry[].changes[].value.metadata", true);
				if (meta)
					business = jsonb_string(jsonb_field(meta, "display_phone_number"),
											"value.metadata.display_phone_number");
				msgs = jsonb_array_container(jsonb_field(value, "messages"),
											 "entry[].changes[].value.messages", true);
				if (msgs == NULL)
					continue;	/* status updates and the like */

				if (pass == 1 && business)
				{
					char		digits[16];

					if (otp_normalize_phone(business, digits, sizeof(digits)))
					{
						Datum		arg = CStringGetTextDatum(digits);

						otp_spi_connect();
						otp_prepare(&inst_plan,
									"SELECT id FROM otp_link.instances WHERE phone = $1",
									1, (Oid[]) {TEXTOID});
						if (otp_spi_execute(inst_plan, &arg, NULL, 1) != SPI_OK_SELECT)
							elog(ERROR, "instance lookup failed");
						if (SPI_processed == 1)
						{
							instance = DirectFunctionCall1(uuid_in,
														   CStringGetDatum(SPI_getvalue(SPI_tuptable->vals[0],
																						SPI_tuptable->tupdesc, 1)));
							has_instance = true;
						}
						SPI_finish();
					}
				}

				for (nm = 0; nm < (int) JsonContainerSize(msgs); nm++)
				{
					JsonbContainer *mc = jsonb_object_container(getIthJsonbValueFromContainer(msgs, nm),
																"messages[]", false);
					char	   *type = jsonb_string(jsonb_field(mc, "type"), "messages[].type");
					char	   *from = jsonb_string(jsonb_field(mc, "from"), "messages[].from");
					char	   *id = jsonb_string(jsonb_field(mc, "id"), "messages[].id");
					JsonbContainer *text;
					char	   *body = NULL;
					ConsumeResult res;

					if (type == NULL || strcmp(type, "text") != 0)
						continue;
					text = jsonb_object_container(jsonb_field(mc, "text"), "messages[].text", false);
					body = jsonb_string(jsonb_field(text, "body"), "messages[].text.body");
					if (from == NULL || body == NULL)
						ereport(ERROR,
								(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
								 errmsg("malformed WhatsApp webhook payload: a text message lacks \"from\" or \"text.body\""),
								 errhint("Every text message has from, id, type and text.body.")));
					if (pass == 0)
						continue;
					res = consume(from, body, strlen(body), id, has_instance, instance, true);
					if (count++ > 0)
						appendStringInfoString(&out, ", ");
					appendStringInfoString(&out,
										   DatumGetCString(DirectFunctionCall1(jsonb_out,
																			   JsonbPGetDatum(result_json(&res, from, id)))));
				}
			}
		}
	}
	appendStringInfo(&out, "], \"messages\": %d}", count);
	PG_RETURN_JSONB_P(DatumGetJsonbP(DirectFunctionCall1(jsonb_in, CStringGetDatum(out.data))));
}

/* ----------------------------------------------------------------
 * otp_link_expire(max_links integer DEFAULT 10000) RETURNS integer
 *
 * Moves up to max_links overdue pending links to expired (oldest first,
 * skipping rows other sessions hold) and queues their expired callbacks
 * (to callback.expired, else callback.failed), all in one statement.
 * ----------------------------------------------------------------
 */
Datum
otp_link_expire(PG_FUNCTION_ARGS)
{
	static SPIPlanPtr plan = NULL;
	Datum		limit;
	int64		n;
	bool		isnull;

	if (PG_ARGISNULL(0) || PG_GETARG_INT32(0) < 1)
		ereport(ERROR,
				(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
				 errmsg("max_links must be a positive integer"),
				 errhint("Call it again until it returns 0 to expire more.")));
	limit = PG_GETARG_DATUM(0);
	otp_spi_connect();
	otp_prepare(&plan,
				"WITH due AS ("
				"  SELECT id FROM otp_link.links WHERE status = 'pending' AND expires_at <= now() "
				"  ORDER BY expires_at LIMIT $1 FOR UPDATE SKIP LOCKED), "
				"l AS ("
				"  UPDATE otp_link.links x SET status = 'expired', reason = 'expired', finished_at = now() "
				"  FROM due WHERE x.id = due.id RETURNING x.*), "
				"q AS ("
				"  INSERT INTO otp_link.deliveries (instance_id, link_id, kind, event, destination, payload) "
				"  SELECT l.instance_id, l.id, 'callback', 'otp_link.expired', "
				"    coalesce(l.callbacks->>'expired', l.callbacks->>'failed'), "
				"    jsonb_build_object('type', 'otp_link.expired', 'timestamp', " ISO("now()") ", "
				"      'data', " LINK_DATA_SQL " || jsonb_build_object('sender', NULL::text)) "
				"  FROM l JOIN otp_link.instances i ON i.id = l.instance_id "
				"  WHERE coalesce(l.callbacks->>'expired', l.callbacks->>'failed') IS NOT NULL "
				"  RETURNING 1) "
				"SELECT (SELECT count(*) FROM l), (SELECT count(*) FROM q)",
				1, (Oid[]) {INT4OID});
	if (otp_spi_execute(plan, &limit, NULL, 0) != SPI_OK_SELECT)
		elog(ERROR, "expiry sweep failed");
	n = DatumGetInt64(SPI_getbinval(SPI_tuptable->vals[0], SPI_tuptable->tupdesc, 1, &isnull));
	if (DatumGetInt64(SPI_getbinval(SPI_tuptable->vals[0], SPI_tuptable->tupdesc, 2, &isnull)) > 0)
		otp_link_wake_worker_at_commit();
	SPI_finish();
	PG_RETURN_INT32((int32) n);
}

/* ----------------------------------------------------------------
 * otp_link_redeem(token text, binding text DEFAULT NULL) RETURNS jsonb
 *
 * Exchanges the one-time {link} token once.  "result" is redeemed,
 * invalid_token, already_redeemed, token_expired or binding_mismatch; a
 * mismatch does not use the token up.
 * ----------------------------------------------------------------
 */
Datum
otp_link_redeem(PG_FUNCTION_ARGS)
{
	static SPIPlanPtr get_plan = NULL;
	static SPIPlanPtr use_plan = NULL;
	char	   *token;
	const char *result;
	StringInfoData buf;
	Datum		hash;
	char	   *row[7] = {0};
	bool		isnull;
	int			i;

	if (PG_ARGISNULL(0))
		ereport(ERROR,
				(errcode(ERRCODE_NULL_VALUE_NOT_ALLOWED),
				 errmsg("token must not be null"),
				 errhint("Pass the token of the {link} URL the user opened.")));
	token = text_to_cstring(PG_GETARG_TEXT_PP(0));
	hash = PointerGetDatum(otp_sha256_bytea(token, strlen(token)));

	otp_spi_connect();
	otp_prepare(&get_plan,
				"SELECT l.id::text, (l.redeemed_at IS NOT NULL)::text, "
				"(l.token_expires_at <= now())::text, l.chat_id, l.metadata::text, "
				ISO("l.finished_at") ", l.instance_id::text, l.binding_hash "
				"FROM otp_link.links l WHERE l.token_hash = $1 FOR UPDATE",
				1, (Oid[]) {BYTEAOID});
	if (otp_spi_execute(get_plan, &hash, NULL, 1) != SPI_OK_SELECT)
		elog(ERROR, "token lookup failed");

	if (SPI_processed == 0)
		result = "invalid_token";
	else
	{
		Datum		bh = SPI_getbinval(SPI_tuptable->vals[0], SPI_tuptable->tupdesc, 8, &isnull);
		bool		bound = !isnull;
		bool		binding_ok = true;

		for (i = 0; i < 7; i++)
			row[i] = otp_spi_text(i + 1);
		if (bound)
		{
			bytea	   *want = DatumGetByteaPP(bh);
			uint8		given[OTP_HASH_LEN];

			if (PG_ARGISNULL(1))
				binding_ok = false;
			else
			{
				text	   *b = PG_GETARG_TEXT_PP(1);

				otp_sha256(VARDATA_ANY(b), VARSIZE_ANY_EXHDR(b), given);
				binding_ok = VARSIZE_ANY_EXHDR(want) == OTP_HASH_LEN &&
					otp_timingsafe_equal(VARDATA_ANY(want), given, OTP_HASH_LEN);
			}
		}
		if (strcmp(row[1], "true") == 0)
			result = "already_redeemed";
		else if (strcmp(row[2], "true") == 0)
			result = "token_expired";
		else if (!binding_ok)
			result = "binding_mismatch";
		else
		{
			Datum		id = DirectFunctionCall1(uuid_in, CStringGetDatum(row[0]));

			otp_prepare(&use_plan,
						"UPDATE otp_link.links SET redeemed_at = now() WHERE id = $1",
						1, (Oid[]) {UUIDOID});
			if (otp_spi_execute(use_plan, &id, NULL, 0) != SPI_OK_UPDATE)
				elog(ERROR, "could not redeem token");
			result = "redeemed";
		}
	}
	SPI_finish();
	explicit_bzero(token, strlen(token));

	initStringInfo(&buf);
	appendStringInfoChar(&buf, '{');
	otp_json_str(&buf, "result", result);
	/* only a successful exchange tells which link the token belonged to */
	if (strcmp(result, "redeemed") == 0)
	{
		char		digits[16];

		otp_json_str(&buf, "uuid", row[0]);
		otp_json_str(&buf, "chat_id", row[3]);
		otp_json_str(&buf, "phone",
					 row[3] && otp_normalize_phone(row[3], digits, sizeof(digits)) ? digits : NULL);
		otp_json_str(&buf, "verified_at", row[5]);
		otp_json_str(&buf, "instance", row[6]);
		otp_json_raw(&buf, "metadata", row[4]);
	}
	PG_RETURN_JSONB_P(otp_json_finish(&buf));
}
