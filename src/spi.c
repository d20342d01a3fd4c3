/*-------------------------------------------------------------------------
 *
 * spi.c
 *	  SPI helpers used by every file that reads or writes the tables: plans
 *	  prepared once per backend and kept, execution (also with the latest
 *	  snapshot), text of a result column, the check that schema otp_link is
 *	  owned by a superuser, and the transaction-scoped advisory lock.
 *
 * Locking: otp_advisory_lock takes an exclusive transaction-level advisory
 * lock on (database, hash(key1), hash(key2), space); the key spaces are in
 * spi.h.  Callers take it before they lock any row (see
 * docs/architecture.md for the order).
 *
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include "catalog/namespace.h"

#include "catalog/pg_namespace.h"

#include "common/hashfn.h"

#include "miscadmin.h"

#include "utils/builtins.h"

#include "utils/snapmgr.h"
#include "utils/syscache.h"

#include "otp_link.h"
#include "spi.h"

/* ----------------------------------------------------------------
 * Helpers shared with consume.c
 * ----------------------------------------------------------------
 */

/*
 * otp_prepare: prepare query once per backend and keep the plan in *plan
 * (SPI_keepplan moves it under CacheMemoryContext).  Must be called while
 * connected to SPI; can ERROR on a bad query.  Like otp_spi_execute, it
 * returns with the caller's memory context current: SPI_prepare leaves
 * SPI's procedure context current, which SPI_finish frees.
 */
SPIPlanPtr
otp_prepare(SPIPlanPtr *plan, const char *query, int nargs, Oid *argtypes)
{
	return otp_prepare_opts(plan, query, nargs, argtypes, 0);
}

/*
 * otp_prepare_opts: otp_prepare with SPI_prepare_cursor's cursor_options,
 * e.g. CURSOR_OPT_CUSTOM_PLAN to keep the parsed statement but plan every
 * execution anew.
 */
SPIPlanPtr
otp_prepare_opts(SPIPlanPtr *plan, const char *query, int nargs, Oid *argtypes,
				 int cursor_options)
{
	if (*plan == NULL)
	{
		MemoryContext caller = CurrentMemoryContext;
		SPIPlanPtr	p = SPI_prepare_cursor(query, nargs, argtypes, cursor_options);

		MemoryContextSwitchTo(caller);

		if (p == NULL)
			ereport(ERROR,
					(errcode(ERRCODE_INTERNAL_ERROR),
					 errmsg("could not prepare \"%s\": %s",
							query, SPI_result_code_string(SPI_result))));
		SPI_keepplan(p);
		*plan = p;
	}
	return *plan;
}

/*
 * otp_check_schema: ERROR (42501) unless schema otp_link is owned by a
 * superuser.  Our SECURITY DEFINER functions reach their tables through
 * that name; had a schema that another role made first been adopted by an
 * install older than 1.1, that role could rename it and put look-alike
 * tables with triggers in its place, which would run as the owner of these
 * functions.  Syscache lookups only (called on every SQL call that touches
 * the tables, through otp_spi_connect and the instance read).
 */
void
otp_check_schema(void)
{
	Oid			nsp = get_namespace_oid("otp_link", true);
	Oid			owner = InvalidOid;
	HeapTuple	tup;

	if (OidIsValid(nsp))
	{
		tup = SearchSysCache1(NAMESPACEOID, ObjectIdGetDatum(nsp));
		if (HeapTupleIsValid(tup))
		{
			owner = ((Form_pg_namespace) GETSTRUCT(tup))->nspowner;
			ReleaseSysCache(tup);
		}
	}
	if (!OidIsValid(owner) || !superuser_arg(owner))
		ereport(ERROR,
				(errcode(ERRCODE_INSUFFICIENT_PRIVILEGE),
				 errmsg("schema \"otp_link\" is not owned by a superuser"),
				 errdetail("otp_link's functions run with their owner's rights and use the objects in that schema."),
				 errhint("A superuser should check what the schema holds, then ALTER SCHEMA otp_link OWNER TO postgres and ALTER EXTENSION otp_link UPDATE.")));
}

/*
 * otp_spi_connect: SPI_connect, then switch back to the caller's memory
 * context, so that what the caller pallocs (and otp_spi_text returns)
 * survives SPI_finish.  SPI runs its queries in contexts of its own.
 */
void
otp_spi_connect(void)
{
	MemoryContext caller = CurrentMemoryContext;

	otp_check_schema();

	if (SPI_connect() != SPI_OK_CONNECT)
		elog(ERROR, "SPI_connect failed");
	MemoryContextSwitchTo(caller);
}

/*
 * otp_spi_execute: SPI_execute_plan (never read-only: our functions are
 * VOLATILE and must see their own earlier writes), then back to the memory
 * context the caller was in, since SPI leaves its own procedure context
 * current and that one is freed by SPI_finish.
 */
int
otp_spi_execute(SPIPlanPtr plan, Datum *values, const char *nulls, long count)
{
	MemoryContext caller = CurrentMemoryContext;
	int			ret = SPI_execute_plan(plan, values, nulls, false, count);

	MemoryContextSwitchTo(caller);
	return ret;
}

/*
 * otp_spi_execute_latest: otp_spi_execute under the latest snapshot instead
 * of the transaction's, as the foreign-key checks do.  For limits: after
 * taking a lock that serializes the callers, the count must see every row
 * that earlier holders of the lock committed, also in REPEATABLE READ and
 * SERIALIZABLE transactions, whose own snapshot may predate those commits.
 */
int
otp_spi_execute_latest(SPIPlanPtr plan, Datum *values, const char *nulls,
					   long count)
{
	MemoryContext caller = CurrentMemoryContext;
	int			ret;

	ret = SPI_execute_snapshot(plan, values, nulls, GetLatestSnapshot(),
							   InvalidSnapshot, false, false, count);
	MemoryContextSwitchTo(caller);
	return ret;
}

/*
 * otp_advisory_lock: a transaction-level lock on (key1, key2) in the key
 * space named by space, so that callers counting the same thing wait for
 * each other.  It is an advisory lock tag, but with a fourth field (space)
 * that pg_advisory_lock() and its kin never use (they use 1 and 2): no
 * role can take or hold these locks from SQL to stall otp_link.  Visible
 * in pg_locks as locktype advisory, objsubid = space.  Can ERROR
 * (deadlock, lock_timeout, statement cancel).
 */
void
otp_advisory_lock(const char *key1, const char *key2, uint16 space)
{
	StringInfoData buf;
	uint64		h;
	LOCKTAG		tag;

	initStringInfo(&buf);
	appendStringInfo(&buf, "%s/%s", key1, key2 ? key2 : "");
	h = hash_bytes_extended((const unsigned char *) buf.data, buf.len, space);
	pfree(buf.data);
	SET_LOCKTAG_ADVISORY(tag, MyDatabaseId, (uint32) (h >> 32), (uint32) h, space);
	(void) LockAcquire(&tag, ExclusiveLock, false, false);
}

/*
 * otp_spi_text: column col of row row of SPI_tuptable as a C string
 * palloc'd in the current context, or NULL.
 */
char *
otp_spi_text_row(uint64 row, int col)
{
	bool		isnull;
	Datum		d = SPI_getbinval(SPI_tuptable->vals[row], SPI_tuptable->tupdesc,
								  col, &isnull);

	if (isnull)
		return NULL;
	return TextDatumGetCString(d);
}

char *
otp_spi_text(int col)
{
	return otp_spi_text_row(0, col);
}
