/*-------------------------------------------------------------------------
 *
 * instance.c
 *	  Instances: otp_link_instance_create, otp_link_instance_update, and the
 *	  read of one instance row by generate (otp_instance_lookup), which
 *	  keeps a per-backend hint of the row's TID to skip the index.
 *
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include "access/genam.h"
#include "access/heapam.h"

#include "catalog/namespace.h"
#include "catalog/pg_am.h"

#include "nodes/makefuncs.h"
#include "storage/bufmgr.h"

#include "utils/builtins.h"
#include "utils/fmgroids.h"
#include "utils/timestamp.h"

#include "utils/uuid.h"

#include "otp_link.h"
#include "api.h"

PG_FUNCTION_INFO_V1(otp_link_instance_create);
PG_FUNCTION_INFO_V1(otp_link_instance_update);

/*
 * otp_error_no_instance: ERROR PT404 for instance id (a uuid Datum).
 */
void
otp_error_no_instance(Datum id)
{
	ereport(ERROR,
			(errcode(OTP_ERRCODE_NOT_FOUND),
			 errmsg("instance %s does not exist",
					DatumGetCString(DirectFunctionCall1(uuid_out, id))),
			 errhint("Pass the uuid returned by otp_link_instance_create.")));
}

/* ----------------------------------------------------------------
 * otp_link_instance_create(phone text, name text, options jsonb)
 * ----------------------------------------------------------------
 */
Datum
otp_link_instance_create(PG_FUNCTION_ARGS)
{
	static SPIPlanPtr plan = NULL;
	char	   *digits;
	char	   *name = NULL;
	Jsonb	   *options;
	char	   *secret;
	Datum		values[4];
	char		nulls[4] = {' ', ' ', ' ', ' '};
	Oid			types[4] = {TEXTOID, TEXTOID, JSONBOID, TEXTOID};
	OtpJsonb	jb;
	char	   *id;
	char	   *created;
	int			ret;

	if (PG_ARGISNULL(0))
		ereport(ERROR,
				(errcode(ERRCODE_NULL_VALUE_NOT_ALLOWED),
				 errmsg("phone must not be null"),
				 errhint("Pass the instance's WhatsApp number, e.g. +20 155 373 0661.")));
	digits = otp_normalize_phone_or_error(text_to_cstring(PG_GETARG_TEXT_PP(0)),
										  "phone number");
	if (!PG_ARGISNULL(1))
	{
		name = text_to_cstring(PG_GETARG_TEXT_PP(1));
		otp_check_text_len(name, OTP_MAX_NAME_CHARS, "name");
		if (name[0] == '\0')
			name = NULL;		/* "" is no name */
	}
	if (PG_ARGISNULL(2))
		options = DatumGetJsonbP(DirectFunctionCall1(jsonb_in, CStringGetDatum("{}")));
	else
		options = PG_GETARG_JSONB_P(2);
	otp_check_options(options);
	secret = otp_random_secret();

	values[0] = CStringGetTextDatum(digits);
	values[1] = name ? CStringGetTextDatum(name) : (Datum) 0;
	nulls[1] = name ? ' ' : 'n';
	values[2] = JsonbPGetDatum(options);
	values[3] = CStringGetTextDatum(secret);

	otp_spi_connect();
	otp_prepare(&plan,
				"INSERT INTO otp_link.instances (phone, name, options, secret) "
				"VALUES ($1, $2, $3, $4) ON CONFLICT (phone) DO NOTHING "
				"RETURNING id::text, "
				"to_char(created_at AT TIME ZONE 'UTC', 'YYYY-MM-DD\"T\"HH24:MI:SS\"+00:00\"')",
				4, types);
	ret = otp_spi_execute(plan, values, nulls, 1);
	if (ret != SPI_OK_INSERT_RETURNING)
		elog(ERROR, "SPI_execute_plan failed: %s", SPI_result_code_string(ret));
	if (SPI_processed != 1)
		ereport(ERROR,
				(errcode(ERRCODE_UNIQUE_VIOLATION),
				 errmsg("an instance for phone number %s already exists", digits),
				 errhint("Look it up in otp_link.instances, or delete it first.")));
	id = otp_spi_text(1);
	created = otp_spi_text(2);
	SPI_finish();

	otp_jb_begin(&jb);
	otp_jb_str(&jb, "uuid", id);
	otp_jb_str(&jb, "phone", digits);
	otp_jb_str(&jb, "chat_id", psprintf("%s@c.us", digits));
	otp_jb_str(&jb, "name", name);
	otp_jb_str(&jb, "secret", secret);
	otp_jb_str(&jb, "created_at", created);
	PG_RETURN_JSONB_P(otp_jb_finish(&jb));
}

/* ----------------------------------------------------------------
 * The instance row, read without the executor
 *
 * otp_link_generate needs one row of otp_link.instances per call.  Run
 * through SPI, that SELECT costs an executor start-up and shutdown, about a
 * tenth of a generate.  Instead, each backend remembers where each
 * instance's row was last found (its TID) and fetches the tuple at that
 * TID directly, under a fresh snapshot.  Only one version of a row with a
 * given id can be visible in a snapshot (the id is the primary key), so if
 * the tuple there is visible and has that id it is exactly the row the
 * SELECT would have returned; nothing is cached but its location.  When it
 * is not (updated, deleted, vacuumed away, another table after a
 * re-install), the row is looked up through the primary key index, and its
 * new TID remembered.
 * ----------------------------------------------------------------
 */
typedef struct InstanceHint
{
	pg_uuid_t	id;				/* hash key */
	ItemPointerData tid;		/* where the row was last seen */
} InstanceHint;

#define INSTANCE_HINTS_MAX	1024

static HTAB *instance_hints = NULL;
static Oid	instance_hints_relid = InvalidOid;
static AttrNumber instance_attnums[4];	/* id, phone, name, options; per call */

/*
 * instance_tuple_matches: tuple is the row of otp_link.instances with id;
 * if so, copies its phone, name and options into the current context.
 */
static bool
instance_tuple_matches(HeapTuple tuple, TupleDesc desc, pg_uuid_t *id,
					   char **phone, char **name, Jsonb **options)
{
	bool		isnull;
	Datum		d;

	d = heap_getattr(tuple, instance_attnums[0], desc, &isnull);
	if (isnull || memcmp(DatumGetUUIDP(d), id, sizeof(pg_uuid_t)) != 0)
		return false;
	d = heap_getattr(tuple, instance_attnums[1], desc, &isnull);
	*phone = isnull ? NULL : TextDatumGetCString(d);
	d = heap_getattr(tuple, instance_attnums[2], desc, &isnull);
	*name = isnull ? NULL : TextDatumGetCString(d);
	d = heap_getattr(tuple, instance_attnums[3], desc, &isnull);
	*options = isnull ? NULL : DatumGetJsonbPCopy(d);
	return true;
}

/*
 * instance_open: lock otp_link.instances (AccessShareLock, kept until the
 * end of the transaction, as a SELECT's) and open it.  ERRORs if the
 * schema is not trusted, or the table is missing or not a heap table.
 */
static Relation
instance_open(void)
{
	Oid			relid;
	Relation	rel;

	/* name lookup and lock together, as a SELECT's: no race with DDL */
	otp_check_schema();
	relid = RangeVarGetRelid(makeRangeVar("otp_link", "instances", -1),
							 AccessShareLock, true);
	if (!OidIsValid(relid))
		ereport(ERROR,
				(errcode(ERRCODE_UNDEFINED_TABLE),
				 errmsg("table otp_link.instances does not exist"),
				 errhint("Reinstall the extension otp_link.")));
	rel = table_open(relid, NoLock);
	if (rel->rd_rel->relam != HEAP_TABLE_AM_OID)
		ereport(ERROR,
				(errcode(ERRCODE_FEATURE_NOT_SUPPORTED),
				 errmsg("otp_link.instances must be a heap table")));
	return rel;
}

/*
 * instance_find_columns: set instance_attnums from the descriptor of this
 * very call: an ALTER TABLE (say by an extension update) keeps the OID
 * but may move, drop or retype the columns.  Allocates nothing; ERRORs
 * (42703) when a column is missing.
 */
static void
instance_find_columns(TupleDesc desc)
{
	const char *cols[4] = {"id", "phone", "name", "options"};
	const Oid	types[4] = {UUIDOID, TEXTOID, TEXTOID, JSONBOID};
	int			i;
	int			j;

	for (i = 0; i < 4; i++)
	{
		instance_attnums[i] = InvalidAttrNumber;
		for (j = 0; j < desc->natts; j++)
		{
			Form_pg_attribute att = TupleDescAttr(desc, j);

			if (!att->attisdropped && att->atttypid == types[i] &&
				strcmp(NameStr(att->attname), cols[i]) == 0)
				instance_attnums[i] = att->attnum;
		}
		if (instance_attnums[i] == InvalidAttrNumber)
			ereport(ERROR,
					(errcode(ERRCODE_UNDEFINED_COLUMN),
					 errmsg("otp_link.instances has no column \"%s\" of type %s",
							cols[i], format_type_be(types[i])),
					 errhint("Reinstall the extension otp_link.")));
	}
}

/*
 * instance_hints_reset: (re)create the per-backend table of TID hints when
 * it is missing, belongs to another relation (the table was recreated) or
 * is full.  Allocates in TopMemoryContext (hash_create's default); ERRORs
 * only on out of memory.
 */
static void
instance_hints_reset(Oid relid)
{
	HASHCTL		ctl;

	if (instance_hints != NULL && instance_hints_relid == relid &&
		hash_get_num_entries(instance_hints) < INSTANCE_HINTS_MAX)
		return;
	if (instance_hints)
		hash_destroy(instance_hints);
	instance_hints = NULL;
	ctl.keysize = sizeof(pg_uuid_t);
	ctl.entrysize = sizeof(InstanceHint);
	instance_hints = hash_create("otp_link instance hints", 64, &ctl,
								 HASH_ELEM | HASH_BLOBS);
	instance_hints_relid = relid;
}

/*
 * instance_by_pkey: find the row of id through the primary key and
 * remember its TID (or forget a stale hint).  Copies phone, name and
 * options into the current context.  ERRORs if there is no primary key.
 */
static bool
instance_by_pkey(Relation rel, Snapshot snapshot, Datum id, InstanceHint *hint,
				 char **phone, char **name, Jsonb **options)
{
	pg_uuid_t  *key = DatumGetUUIDP(id);
	ScanKeyData skey;
	SysScanDesc scan;
	HeapTuple	tup;
	bool		found = false;

	if (rel->rd_pkindex == InvalidOid)
		list_free(RelationGetIndexList(rel));	/* sets rd_pkindex */
	if (!OidIsValid(rel->rd_pkindex))
		elog(ERROR, "otp_link.instances has no primary key");
	ScanKeyInit(&skey, instance_attnums[0], BTEqualStrategyNumber,
				F_UUID_EQ, id);
	scan = systable_beginscan(rel, rel->rd_pkindex, true, snapshot, 1, &skey);
	tup = systable_getnext(scan);
	if (HeapTupleIsValid(tup) &&
		instance_tuple_matches(tup, RelationGetDescr(rel), key, phone, name, options))
	{
		found = true;
		hint = (InstanceHint *) hash_search(instance_hints, key, HASH_ENTER, NULL);
		hint->tid = tup->t_self;
	}
	else if (hint)
		hash_search(instance_hints, key, HASH_REMOVE, NULL);
	systable_endscan(scan);
	return found;
}

/*
 * otp_instance_lookup: phone, name and options of instance id (palloc'd in
 * the current context) as a SELECT run now would see them; false if there
 * is no such instance.  Takes AccessShareLock on otp_link.instances (kept
 * until the end of the transaction, as a SELECT's).  Tries the TID where
 * the row was last seen, then the primary key.  ERRORs if the table is
 * missing or not a heap table.
 */
bool
otp_instance_lookup(Datum id, char **phone, char **name, Jsonb **options)
{
	pg_uuid_t  *key = DatumGetUUIDP(id);
	Relation	rel;
	TupleDesc	desc;
	Snapshot	snapshot;
	InstanceHint *hint;
	HeapTupleData tuple;
	Buffer		buf;
	bool		found = false;

	rel = instance_open();
	desc = RelationGetDescr(rel);
	instance_find_columns(desc);
	instance_hints_reset(RelationGetRelid(rel));

	/*
	 * As SPI does for a statement that is not read-only: first make the
	 * calling statement's own writes visible (e.g. an UPDATE of the
	 * instance ... RETURNING otp_link_generate(id)), then a snapshot.
	 */
	CommandCounterIncrement();
	snapshot = RegisterSnapshot(GetTransactionSnapshot());

	/* where the row was last seen */
	hint = (InstanceHint *) hash_search(instance_hints, key, HASH_FIND, NULL);
	/* VACUUM may have truncated the table below it (our lock keeps it now) */
	if (hint &&
		ItemPointerGetBlockNumber(&hint->tid) < RelationGetNumberOfBlocks(rel))
	{
		tuple.t_self = hint->tid;
		if (heap_fetch(rel, snapshot, &tuple, &buf, false))
		{
			found = instance_tuple_matches(&tuple, desc, key, phone, name, options);
			ReleaseBuffer(buf);
		}
	}

	/* else through the primary key */
	if (!found)
		found = instance_by_pkey(rel, snapshot, id, hint, phone, name, options);

	UnregisterSnapshot(snapshot);
	table_close(rel, NoLock);
	return found;
}

/*
 * rotation_grace: the grace argument of otp_link_instance_update in
 * seconds (0 when absent or NULL, or when the 1.0 declaration without it is
 * still installed).  ERRORs (22023) outside 0 to 7 days, or when given
 * without rotate_secret.
 */
static int64
rotation_grace(FunctionCallInfo fcinfo, bool rotate)
{
	Interval   *iv;
	int64		usecs;

	if (PG_NARGS() < 5 || PG_ARGISNULL(4))
		return 0;
	iv = PG_GETARG_INTERVAL_P(4);
	usecs = iv->time + (int64) iv->day * USECS_PER_DAY +
		(int64) iv->month * DAYS_PER_MONTH * USECS_PER_DAY;
	if (usecs < 0 || usecs > (int64) OTP_MAX_LIMIT_SECONDS * USECS_PER_SEC)
		ereport(ERROR,
				(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
				 errmsg("grace must be between 0 and 7 days"),
				 errhint("Give the time your receivers need to switch to the new secret, e.g. '24 hours'.")));
	if (usecs > 0 && !rotate)
		ereport(ERROR,
				(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
				 errmsg("grace applies only with rotate_secret"),
				 errhint("Pass rotate_secret => true to rotate the secret with a grace period.")));
	return usecs / USECS_PER_SEC;
}

/* ----------------------------------------------------------------
 * otp_link_instance_update(instance uuid, name text, options jsonb,
 *						   rotate_secret boolean, grace interval) RETURNS jsonb
 *
 * Replaces the name and/or the options; with rotate_secret, a new signing
 * secret.  With a grace period, callbacks are signed with the new and the
 * previous secret until it ends (Standard Webhooks allows several
 * signatures), so receivers can switch without dropping callbacks.
 * ERRORs on bad input (22023, 22001), an unknown instance (PT404).
 * ----------------------------------------------------------------
 */
Datum
otp_link_instance_update(PG_FUNCTION_ARGS)
{
	static SPIPlanPtr plan = NULL;
	static SPIPlanPtr plan10 = NULL;
	Oid			types[6] = {UUIDOID, TEXTOID, BOOLOID, JSONBOID, TEXTOID, INT8OID};
	Datum		values[6];
	char		nulls[6] = {' ', ' ', ' ', ' ', ' ', ' '};
	char	   *name = NULL;
	Jsonb	   *options = NULL;
	char	   *secret = NULL;
	bool		rotate = !PG_ARGISNULL(3) && PG_GETARG_BOOL(3);
	int64		grace = rotation_grace(fcinfo, rotate);
	OtpJsonb	jb;
	char	   *row[5];
	int			i;

	if (PG_ARGISNULL(0))
		ereport(ERROR,
				(errcode(ERRCODE_NULL_VALUE_NOT_ALLOWED),
				 errmsg("instance must not be null"),
				 errhint("Pass the uuid returned by otp_link_instance_create.")));
	if (!PG_ARGISNULL(1))
	{
		name = text_to_cstring(PG_GETARG_TEXT_PP(1));
		otp_check_text_len(name, OTP_MAX_NAME_CHARS, "name");
		if (name[0] == '\0')
			name = NULL;		/* "" removes the name */
	}
	if (!PG_ARGISNULL(2))
	{
		options = PG_GETARG_JSONB_P(2);
		otp_check_options(options);
	}
	if (rotate)
		secret = otp_random_secret();

	values[0] = PG_GETARG_DATUM(0);
	values[1] = name ? CStringGetTextDatum(name) : (Datum) 0;
	nulls[1] = name ? ' ' : 'n';
	values[2] = BoolGetDatum(!PG_ARGISNULL(1));
	values[3] = options ? JsonbPGetDatum(options) : (Datum) 0;
	nulls[3] = options ? ' ' : 'n';
	values[4] = secret ? CStringGetTextDatum(secret) : (Datum) 0;
	nulls[4] = secret ? ' ' : 'n';
	values[5] = Int64GetDatum(grace);

	otp_spi_connect();
	if (PG_NARGS() < 5)
		otp_prepare(&plan10,	/* the 1.0 declaration: no grace columns yet */
					"UPDATE otp_link.instances SET "
					"name = CASE WHEN $3 THEN $2 ELSE name END, "
					"options = coalesce($4, options), secret = coalesce($5, secret) "
					"WHERE id = $1 RETURNING id::text, phone, name, "
					"to_char(created_at AT TIME ZONE 'UTC', 'YYYY-MM-DD\"T\"HH24:MI:SS\"+00:00\"'), NULL::text",
					6, types);
	else
		otp_prepare(&plan,
					"UPDATE otp_link.instances SET "
					"name = CASE WHEN $3 THEN $2 ELSE name END, "
					"options = coalesce($4, options), secret = coalesce($5, secret), "
					"previous_secret = CASE WHEN $5 IS NULL THEN previous_secret "
					"  WHEN $6 > 0 THEN secret END, "
					"previous_secret_until = CASE WHEN $5 IS NULL THEN previous_secret_until "
					"  WHEN $6 > 0 THEN now() + make_interval(secs => $6) END "
					"WHERE id = $1 RETURNING id::text, phone, name, "
					"to_char(created_at AT TIME ZONE 'UTC', 'YYYY-MM-DD\"T\"HH24:MI:SS\"+00:00\"'), "
					"CASE WHEN $5 IS NOT NULL AND $6 > 0 THEN "
					"  to_char(previous_secret_until AT TIME ZONE 'UTC', 'YYYY-MM-DD\"T\"HH24:MI:SS\"+00:00\"') END",
					6, types);
	if (otp_spi_execute(PG_NARGS() < 5 ? plan10 : plan, values, nulls, 1) !=
		SPI_OK_UPDATE_RETURNING)
		elog(ERROR, "instance update failed");
	if (SPI_processed == 0)
		otp_error_no_instance(values[0]);
	for (i = 0; i < 5; i++)
		row[i] = otp_spi_text(i + 1);
	SPI_finish();

	otp_jb_begin(&jb);
	otp_jb_str(&jb, "uuid", row[0]);
	otp_jb_str(&jb, "phone", row[1]);
	otp_jb_str(&jb, "chat_id", psprintf("%s@c.us", row[1]));
	otp_jb_str(&jb, "name", row[2]);
	if (secret)
		otp_jb_str(&jb, "secret", secret);
	if (row[4])
		otp_jb_str(&jb, "previous_secret_valid_until", row[4]);
	otp_jb_str(&jb, "created_at", row[3]);
	PG_RETURN_JSONB_P(otp_jb_finish(&jb));
}
