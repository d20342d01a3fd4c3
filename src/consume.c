/*-------------------------------------------------------------------------
 *
 * consume.c
 *	  Incoming messages: otp_link_consume_message and the trigger function
 *	  otp_link_consume_trigger (and, through otp_consume, the webhook
 *	  functions of webhook.c) decide whether a message verifies, fails or is
 *	  ignored, and queue the reply and the callback.
 *
 * The reply to the user and the callback to the application are rows of
 * otp_link.deliveries written in the same transaction as the status
 * change.  A message without a bracketed code returns "ignored" after one
 * memchr and touches no table.
 *
 * Locking: the sender's advisory lock (OTP_LOCK_SENDER) is taken first;
 * then the matching link row is locked (FOR UPDATE) before its outcome is
 * decided, so many messages carrying one code verify it exactly once; the
 * message id is claimed in otp_link.messages_seen before any other write,
 * so a redelivered webhook is a "duplicate" and writes nothing else.
 *
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include "catalog/namespace.h"

#include "utils/builtins.h"

#include "utils/lsyscache.h"

#include "otp_link.h"
#include "api.h"
#include "consume.h"

PG_FUNCTION_INFO_V1(otp_link_consume_message);
PG_FUNCTION_INFO_V1(otp_link_consume_trigger);

#define MAX_MESSAGE_ID_LEN	256
#define MAX_REPLIES_AFTER_FINISH 3	/* messages to a finished link that get a reply */

/*
 * reply_status: 'queued' when the instance has a reply endpoint the worker
 * can post to, 'held' when the application reads replies itself.
 */
static const char *
reply_status(Jsonb *options)
{
	Jsonb	   *reply = otp_jsonb_get_object(options, "reply_endpoint", "options");
	char	   *type = otp_jsonb_get_text(reply, "type");

	if (otp_reply_type_is_sent(type))
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
	OtpJsonb	jb;

	otp_jb_begin(&jb);
	otp_jb_str(&jb, "to", digits);
	otp_jb_str(&jb, "body", body);
	otp_jb_str(&jb, "event", event);
	otp_jb_str(&jb, "link", link_id);	/* 1.0's name, kept through 1.x */
	otp_jb_str(&jb, "link_uuid", link_id);

	values[0] = instance;
	values[1] = link;
	values[2] = CStringGetTextDatum(event);
	values[3] = CStringGetTextDatum(digits);
	values[4] = JsonbPGetDatum(otp_jb_finish(&jb));
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

/* the locked link row of consume, read once */
typedef struct LinkRow
{
	Datum		link;			/* links.id (uuid) */
	char	   *link_id;		/* the same, as text */
	char	   *status;
	bool		overdue;		/* expires_at <= now() */
	char	   *bound;			/* links.phone, or NULL */
	Datum		inst;			/* instance_id */
	char	   *name;
	Jsonb	   *messages;
	Jsonb	   *callbacks;
	char	   *link_url;
	const char *rstatus;		/* reply_status of the instance's options */
	int32		received;		/* messages_received */
} LinkRow;

/*
 * consume_precheck: the checks of consume that touch no table.  Extracts
 * the code into code and the sender's digits into digits; returns false
 * when the message is "ignored".  *message_id is set to NULL when empty.
 * Allocates nothing; ERRORs (22001, 22023) on bad input unless lenient.
 */
static bool
consume_precheck(const char *chat_id, const char *body, size_t body_len,
				 const char **message_id, bool lenient, char *code,
				 char *digits, size_t digits_len)
{
	/* ordinary chat: nothing to do */
	if (body == NULL || !otp_extract_code(body, body_len, code))
		return false;
	/* an empty message id is no id: it must not make other messages duplicates */
	if (*message_id && (*message_id)[0] == '\0')
		*message_id = NULL;
	/*
	 * An over-long id is refused to a caller, but skipped in the trigger and
	 * the webhook: one bad message must not fail a whole batch, which the
	 * provider would then retry for ever.
	 */
	if (*message_id && strlen(*message_id) > MAX_MESSAGE_ID_LEN && lenient)
		return false;
	if (*message_id && strlen(*message_id) > MAX_MESSAGE_ID_LEN)
		ereport(ERROR,
				(errcode(ERRCODE_STRING_DATA_RIGHT_TRUNCATION),
				 errmsg("message_id is longer than %d bytes", MAX_MESSAGE_ID_LEN),
				 errhint("Pass the provider's message id, e.g. wamid.HBgM....")));
	if (!otp_normalize_phone(chat_id, digits, digits_len))
	{
		size_t		len = strlen(chat_id);

		/* groups, broadcasts and channels are not users: ignore them */
		if (lenient ||
			(len > 5 && pg_strcasecmp(chat_id + len - 5, "@g.us") == 0) ||
			(len > 10 && pg_strcasecmp(chat_id + len - 10, "@broadcast") == 0) ||
			(len > 11 && pg_strcasecmp(chat_id + len - 11, "@newsletter") == 0))
			return false;
		ereport(ERROR,
				(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
				 errmsg("invalid chat id: \"%s\"", chat_id),
				 errdetail("A chat id is 201234567890@c.us, +20 123 456 7890 or 8 to 15 digits."),
				 errhint("Pass the sender's WhatsApp id as the provider reports it.")));
	}
	return true;
}

/*
 * consume_instance_options: the options of the given instance, copied
 * into CurrentMemoryContext.  Connected to SPI.  ERRORs (PT404) when there
 * is no such instance.
 */
static Jsonb *
consume_instance_options(Datum instance)
{
	static SPIPlanPtr inst_plan = NULL;
	bool		isnull;

	otp_prepare(&inst_plan,
				"SELECT options FROM otp_link.instances WHERE id = $1",
				1, (Oid[]) {UUIDOID});
	if (otp_spi_execute(inst_plan, &instance, NULL, 1) != SPI_OK_SELECT)
		elog(ERROR, "instance lookup failed");
	if (SPI_processed == 0)
		otp_error_no_instance(instance);
	return DatumGetJsonbPCopy(SPI_getbinval(SPI_tuptable->vals[0],
											SPI_tuptable->tupdesc, 1, &isnull));
}

/*
 * consume_blocked: true (outcome "blocked", message id claimed) when the
 * sender is blocked or the server's budget of unknown codes is spent.
 * Connected to SPI; allocates in CurrentMemoryContext; ERRORs on database
 * errors.
 */
static bool
consume_blocked(const char *sender, const char *message_id, ConsumeResult *res)
{
	/* a blocked sender gets nowhere */
	res->blocked_until = sender_blocked_until(sender);
	if (res->blocked_until == NULL && otp_unknown_code_allowed(false))
		return false;
	/* else: the server's budget of unknown codes is spent: no code is looked up */
	if (res->blocked_until == NULL)
		res->blocked_until = otp_format_timestamp(TimestampTzPlusMilliseconds(GetCurrentTimestamp(),
																			  60000 / Max(otp_link_unknown_code_rate, 1) + 1000));
	res->outcome = "blocked";
	(void) claim_message_id(message_id, res->outcome, NULL, res);
	return true;
}

/*
 * lock_link: find the link of code and lock it (FOR UPDATE); fill *row and
 * return true, or false when no link has that code (or it belongs to
 * another instance than the given one).  Connected to SPI; allocates in
 * CurrentMemoryContext; ERRORs on database errors.
 */
static bool
lock_link(const char *code, bool has_instance, Datum instance, LinkRow *row)
{
	static SPIPlanPtr link_plan = NULL;
	Oid			types[1] = {BYTEAOID};
	Datum		values[1];
	HeapTuple	tup;
	TupleDesc	desc;
	Datum		d;
	bool		isnull;

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
		return false;

	tup = SPI_copytuple(SPI_tuptable->vals[0]);
	desc = CreateTupleDescCopy(SPI_tuptable->tupdesc);
	row->link = SPI_getbinval(tup, desc, 1, &isnull);
	row->link_id = TextDatumGetCString(SPI_getbinval(tup, desc, 2, &isnull));
	row->status = TextDatumGetCString(SPI_getbinval(tup, desc, 3, &isnull));
	row->overdue = DatumGetBool(SPI_getbinval(tup, desc, 4, &isnull));
	d = SPI_getbinval(tup, desc, 5, &isnull);
	row->bound = isnull ? NULL : TextDatumGetCString(d);
	row->inst = SPI_getbinval(tup, desc, 6, &isnull);
	d = SPI_getbinval(tup, desc, 7, &isnull);
	row->name = isnull ? NULL : TextDatumGetCString(d);
	row->messages = DatumGetJsonbPCopy(SPI_getbinval(tup, desc, 8, &isnull));
	row->callbacks = DatumGetJsonbPCopy(SPI_getbinval(tup, desc, 9, &isnull));
	d = SPI_getbinval(tup, desc, 10, &isnull);
	row->link_url = isnull ? NULL : TextDatumGetCString(d);
	row->rstatus = reply_status(DatumGetJsonbPCopy(SPI_getbinval(tup, desc, 11, &isnull)));
	row->received = DatumGetInt32(SPI_getbinval(tup, desc, 12, &isnull));
	return true;
}

/*
 * decide: the outcome of a message carrying the code of row, sent by
 * digits.  Pure; allocates nothing; cannot ERROR.
 */
static const char *
decide(const LinkRow *row, const char *digits)
{
	bool		pending = strcmp(row->status, "pending") == 0;

	if (pending && row->overdue)
		return "expired";
	if (pending && row->bound && strcmp(row->bound, digits) != 0)
		return "failed";
	if (pending)
		return "verified";
	if (strcmp(row->status, "verified") == 0)
		return "already_verified";
	if (strcmp(row->status, "expired") == 0)
		return "expired";
	return "failed";
}

/*
 * consume_verified: mark the link verified by sender (with a {link} token
 * when the link has a link_url) and queue the success reply and callback.
 * Connected to SPI; allocates in CurrentMemoryContext; ERRORs on database
 * errors.
 */
static void
consume_verified(const LinkRow *row, const char *sender, const char *digits,
				 const char *code)
{
	static SPIPlanPtr verify_plan = NULL;
	char	   *token = NULL;
	char	   *url = NULL;
	Oid			vtypes[4] = {UUIDOID, TEXTOID, BYTEAOID, INT4OID};
	Datum		vvalues[4];
	char		vnulls[4] = {' ', ' ', ' ', ' '};

	if (row->link_url)
	{
		token = otp_random_token();
		url = otp_link_url_render(row->link_url, token);
	}
	vvalues[0] = row->link;
	vvalues[1] = CStringGetTextDatum(sender);
	vvalues[2] = token ? PointerGetDatum(otp_sha256_bytea(token, strlen(token))) : (Datum) 0;
	vnulls[2] = token ? ' ' : 'n';
	vvalues[3] = Int32GetDatum(otp_link_token_ttl_s);
	otp_prepare(&verify_plan,
				"UPDATE otp_link.links SET status = 'verified', chat_id = $2, "
				"finished_at = now(), messages_received = messages_received + 1, "
				"token_hash = $3, token_expires_at = CASE WHEN $3 IS NOT NULL "
				"THEN now() + make_interval(secs => $4) END WHERE id = $1 "
				"RETURNING extract(epoch FROM now() - created_at)::float8",
				4, vtypes);
	if (otp_spi_execute(verify_plan, vvalues, vnulls, 0) != SPI_OK_UPDATE_RETURNING ||
		SPI_processed != 1)
		elog(ERROR, "could not verify link");
	{
		bool		isnull;

		otp_metric_verified(DatumGetFloat8(SPI_getbinval(SPI_tuptable->vals[0],
														 SPI_tuptable->tupdesc, 1, &isnull)));
	}
	queue_reply(row->inst, row->link, row->link_id, "reply.success", digits,
				render(row->messages, "success", url, row->name, code), row->rstatus);
	queue_callback(row->link, "otp_link.verified",
				   otp_jsonb_get_text(row->callbacks, "success"), sender);
	if (token)
		explicit_bzero(token, strlen(token));
}

/*
 * consume_act: what a claimed message does to its link, by outcome:
 * verify it, end a pending link as failed or expired, or (a finished link)
 * count the message and reply a few times more.  Connected to SPI;
 * allocates in CurrentMemoryContext; ERRORs on database errors.
 */
static void
consume_act(const LinkRow *row, const char *outcome, const char *sender,
			const char *digits, const char *code)
{
	bool		pending = strcmp(row->status, "pending") == 0;

	if (strcmp(outcome, "verified") == 0)
		consume_verified(row, sender, digits, code);
	else if (strcmp(outcome, "failed") == 0 && pending)
	{
		finish_link(row->link, "failed", "wrong_sender");
		otp_metric_add(OTP_M_LINKS_FAILED, 1);
		queue_reply(row->inst, row->link, row->link_id, "reply.failed", digits,
					render(row->messages, "failed", NULL, row->name, code), row->rstatus);
		queue_callback(row->link, "otp_link.failed",
					   otp_jsonb_get_text(row->callbacks, "failed"), sender);
	}
	else if (strcmp(outcome, "expired") == 0 && pending)
	{
		const char *url = otp_jsonb_get_text(row->callbacks, "expired");

		finish_link(row->link, "expired", "expired");
		otp_metric_add(OTP_M_LINKS_EXPIRED, 1);
		queue_reply(row->inst, row->link, row->link_id, "reply.expired", digits,
					render(row->messages, "expired", NULL, row->name, code), row->rstatus);
		queue_callback(row->link, "otp_link.expired",
					   url ? url : otp_jsonb_get_text(row->callbacks, "failed"), sender);
	}
	else
	{
		/*
		 * A finished link: tell an expired or failed link's sender again,
		 * but only a few times, so that nobody can make us send replies
		 * without end.
		 */
		touch_link(row->link);
		if (row->received >= MAX_REPLIES_AFTER_FINISH)
			 /* no more replies */ ;
		else if (strcmp(outcome, "expired") == 0)
			queue_reply(row->inst, row->link, row->link_id, "reply.expired", digits,
						render(row->messages, "expired", NULL, row->name, code), row->rstatus);
		else if (strcmp(outcome, "failed") == 0)
			queue_reply(row->inst, row->link, row->link_id, "reply.failed", digits,
						render(row->messages, "failed", NULL, row->name, code), row->rstatus);
	}
}

/*
 * otp_consume: the whole decision for one message.  chat_id is the raw sender
 * id, body the message text (may be NULL), message_id may be NULL,
 * instance may be (Datum) 0 when has_instance is false.  Connects to SPI
 * itself; results are palloc'd in the caller's context.  ERRORs on bad
 * input (22023) and unknown instance (PT404); when lenient (the trigger
 * and the webhook walker, whose rows must not be lost), a sender id that is
 * no phone number makes the message "ignored" instead.
 *
 * Steps: checks without tables; the sender's block and the server's
 * budget; the link, locked; the outcome; the message id claimed; then the
 * outcome's writes (consume_act).
 */
ConsumeResult
otp_consume(const char *chat_id, const char *body, size_t body_len,
			const char *message_id, bool has_instance, Datum instance,
			bool lenient)
{
	ConsumeResult res = {0};
	char		code[OTP_CODE_LEN + 1];
	char		digits[16];
	char	   *sender;
	Jsonb	   *inst_options = NULL;
	LinkRow		row;

	if (!consume_precheck(chat_id, body, body_len, &message_id, lenient,
						  code, digits, sizeof(digits)))
	{
		res.outcome = "ignored";
		otp_metric_message(res.outcome);
		return res;
	}
	sender = psprintf("%s@c.us", digits);

	otp_spi_connect();
	if (has_instance)
		inst_options = consume_instance_options(instance);

	if (consume_blocked(sender, message_id, &res))
	{
		otp_metric_message(res.outcome);
		SPI_finish();
		return res;
	}

	if (!lock_link(code, has_instance, instance, &row))
	{
		res.outcome = "unknown_code";
		(void) otp_unknown_code_allowed(true);	/* spent even if rolled back */
		if (claim_message_id(message_id, res.outcome, NULL, &res))
			res.blocked_until = count_unknown_code(sender, inst_options);
	}
	else
	{
		res.link_id = row.link_id;
		res.outcome = decide(&row, digits);
		if (claim_message_id(message_id, res.outcome, row.link_id, &res))
			consume_act(&row, res.outcome, sender, digits, code);
	}
	explicit_bzero(code, sizeof(code));
	otp_metric_message(res.outcome);
	SPI_finish();
	return res;
}

/*
 * otp_consume_result_json: the jsonb answer of consume_message (and of
 * each message of a webhook) for res.  Allocates in CurrentMemoryContext.
 */
Jsonb *
otp_consume_result_json(ConsumeResult *res, const char *chat_id,
						const char *message_id)
{
	OtpJsonb	jb;
	char		digits[16];
	const char *sender;

	otp_jb_begin(&jb);
	otp_jb_str(&jb, "outcome", res->outcome);
	otp_jb_str(&jb, "uuid", res->link_id);
	sender = otp_normalize_phone(chat_id, digits, sizeof(digits)) ?
		psprintf("%s@c.us", digits) : chat_id;
	otp_jb_str(&jb, "chat_id", sender);	/* 1.0's name, kept through 1.x */
	otp_jb_str(&jb, "sender_chat_id", sender);
	otp_jb_str(&jb, "message_id", message_id);
	if (res->blocked_until)
		otp_jb_str(&jb, "blocked_until", res->blocked_until);
	if (res->original)
		otp_jb_str(&jb, "original_outcome", res->original);
	return otp_jb_finish(&jb);
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

	res = otp_consume(chat_id, body ? VARDATA_ANY(body) : NULL,
				  body ? VARSIZE_ANY_EXHDR(body) : 0, message_id,
				  !PG_ARGISNULL(3), PG_ARGISNULL(3) ? (Datum) 0 : PG_GETARG_DATUM(3),
				  false);
	PG_RETURN_JSONB_P(otp_consume_result_json(&res, chat_id, message_id));
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
		(void) otp_consume(chat_id, body, strlen(body), message_id, has_instance, instance,
					   true);

	return PointerGetDatum(tuple);
}
