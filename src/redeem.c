/*-------------------------------------------------------------------------
 *
 * redeem.c
 *	  otp_link_redeem: the one-time exchange of a {link} token for the
 *	  verified link's data, in two forms: any link (1.0), or only the
 *	  links of one instance (and purpose, and bound ones) (1.1).
 *
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include "utils/builtins.h"

#include "otp_link.h"
#include "api.h"

PG_FUNCTION_INFO_V1(otp_link_redeem);
PG_FUNCTION_INFO_V1(otp_link_redeem_scoped);

/*
 * binding_matches: whether the binding given to redeem (NULL when none)
 * has the digest want, compared in constant time.  Allocates nothing;
 * cannot ERROR.
 */
static bool
binding_matches(bytea *want, text *b)
{
	uint8		given[OTP_HASH_LEN];

	if (b == NULL)
		return false;
	otp_sha256(VARDATA_ANY(b), VARSIZE_ANY_EXHDR(b), given);
	return VARSIZE_ANY_EXHDR(want) == OTP_HASH_LEN &&
		otp_timingsafe_equal(VARDATA_ANY(want), given, OTP_HASH_LEN);
}

/*
 * redeem_response: the jsonb that otp_link_redeem returns for result, with
 * the link's data from row (id, -, -, chat_id, metadata, finished_at,
 * instance) when it was redeemed.  Allocates in CurrentMemoryContext;
 * cannot ERROR on what redeem read.
 */
static Jsonb *
redeem_response(const char *result, char **row)
{
	OtpJsonb	jb;
	char		digits[16];		/* referenced until otp_jb_finish */

	otp_jb_begin(&jb);
	otp_jb_str(&jb, "result", result);
	/* only a successful exchange tells which link the token belonged to */
	if (strcmp(result, "redeemed") == 0)
	{
		otp_jb_str(&jb, "uuid", row[0]);
		otp_jb_str(&jb, "chat_id", row[3]);	/* 1.0's name, kept through 1.x */
		otp_jb_str(&jb, "verified_chat_id", row[3]);
		otp_jb_str(&jb, "phone",
					 row[3] && otp_normalize_phone(row[3], digits, sizeof(digits)) ? digits : NULL);
		otp_jb_str(&jb, "verified_at", row[5]);
		otp_jb_str(&jb, "instance", row[6]);
		otp_jb_raw(&jb, "metadata", row[4]);
	}
	return otp_jb_finish(&jb);
}

/*
 * RedeemScope: which links a redeem call accepts.  The 2-argument
 * otp_link_redeem accepts any; the scoped form narrows it to one instance,
 * optionally one metadata purpose, and optionally bound links only.  A link
 * outside the scope answers invalid_token and is left as it was.
 */
typedef struct RedeemScope
{
	Datum		instance;		/* uuid Datum, or 0 for any instance */
	text	   *purpose;		/* metadata->>'purpose' must equal it, or NULL */
	bool		require_binding;	/* only links made with a binding */
} RedeemScope;

/*
 * redeem_lookup: finds and locks (FOR UPDATE) the link of the token digest
 * hash within scope, leaving it in SPI_tuptable: columns id, redeemed,
 * expired, chat_id, metadata, finished_at, instance, binding_hash.  Needs
 * SPI; can ERROR only on a failed query.
 */
static void
redeem_lookup(Datum hash, const RedeemScope *scope)
{
	static SPIPlanPtr plan = NULL;
	Datum		values[4];
	char		nulls[4] = {' ', ' ', ' ', ' '};

	otp_prepare(&plan,
				"SELECT l.id::text, (l.redeemed_at IS NOT NULL)::text, "
				"(l.token_expires_at <= now())::text, l.chat_id, l.metadata::text, "
				ISO("l.finished_at") ", l.instance_id::text, l.binding_hash "
				"FROM otp_link.links l WHERE l.token_hash = $1 "
				"AND ($2::uuid IS NULL OR l.instance_id = $2) "
				"AND ($3::text IS NULL OR l.metadata->>'purpose' = $3) "
				"AND (NOT $4 OR l.binding_hash IS NOT NULL) FOR UPDATE",
				4, (Oid[]) {BYTEAOID, UUIDOID, TEXTOID, BOOLOID});
	values[0] = hash;
	values[1] = scope->instance;
	if (scope->instance == (Datum) 0)
		nulls[1] = 'n';
	values[2] = PointerGetDatum(scope->purpose);
	if (scope->purpose == NULL)
		nulls[2] = 'n';
	values[3] = BoolGetDatum(scope->require_binding);
	if (otp_spi_execute(plan, values, nulls, 1) != SPI_OK_SELECT)
		elog(ERROR, "token lookup failed");
}

/*
 * redeem_token: the exchange itself, for both SQL forms.  token must not be
 * NULL; binding may be.  Returns the jsonb result, allocated in
 * CurrentMemoryContext; ERRORs only on failed queries.  The token's copy is
 * wiped before returning.
 */
static Jsonb *
redeem_token(text *token_arg, text *binding, const RedeemScope *scope)
{
	static SPIPlanPtr use_plan = NULL;
	char	   *token = text_to_cstring(token_arg);
	const char *result;
	char	   *row[7] = {0};
	bool		isnull;
	int			i;

	otp_spi_connect();
	redeem_lookup(PointerGetDatum(otp_sha256_bytea(token, strlen(token))), scope);

	if (SPI_processed == 0)
		result = "invalid_token";
	else
	{
		Datum		bh = SPI_getbinval(SPI_tuptable->vals[0], SPI_tuptable->tupdesc, 8, &isnull);
		bool		binding_ok = isnull || binding_matches(DatumGetByteaPP(bh), binding);

		for (i = 0; i < 7; i++)
			row[i] = otp_spi_text(i + 1);
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
			otp_metric_add(OTP_M_LINKS_REDEEMED, 1);
		}
	}
	SPI_finish();
	explicit_bzero(token, strlen(token));

	return redeem_response(result, row);
}

/* redeem_require: ERRORs (22004) when argument n, called what, is NULL */
static void
redeem_require(FunctionCallInfo fcinfo, int n, const char *what, const char *hint)
{
	if (PG_ARGISNULL(n))
		ereport(ERROR,
				(errcode(ERRCODE_NULL_VALUE_NOT_ALLOWED),
				 errmsg("%s must not be null", what),
				 errhint("%s", hint)));
}

/* ----------------------------------------------------------------
 * otp_link_redeem(token text, binding text DEFAULT NULL) RETURNS jsonb
 *
 * Exchanges the one-time {link} token once.  "result" is redeemed,
 * invalid_token, already_redeemed, token_expired or binding_mismatch; a
 * mismatch does not use the token up.  Accepts a link of any instance and
 * purpose, bound or not (the 1.0 behaviour).
 * ----------------------------------------------------------------
 */
Datum
otp_link_redeem(PG_FUNCTION_ARGS)
{
	RedeemScope scope = {0};

	redeem_require(fcinfo, 0, "token", "Pass the token of the {link} URL the user opened.");
	PG_RETURN_JSONB_P(redeem_token(PG_GETARG_TEXT_PP(0),
								   PG_ARGISNULL(1) ? NULL : PG_GETARG_TEXT_PP(1),
								   &scope));
}

/* ----------------------------------------------------------------
 * otp_link_redeem(token text, instance uuid, binding text DEFAULT NULL,
 *				   require_binding boolean DEFAULT false,
 *				   purpose text DEFAULT NULL) RETURNS jsonb
 *
 * The same exchange, limited to the links of one instance, with
 * metadata->>'purpose' = purpose when purpose is given, and made with a
 * binding when require_binding.  A link outside these answers
 * invalid_token, exactly like an unknown token, and is not used up.
 * ----------------------------------------------------------------
 */
Datum
otp_link_redeem_scoped(PG_FUNCTION_ARGS)
{
	RedeemScope scope;

	redeem_require(fcinfo, 0, "token", "Pass the token of the {link} URL the user opened.");
	redeem_require(fcinfo, 1, "instance",
				   "Pass the instance the application generates its links for; otp_link_redeem(token, binding) accepts a link of any instance.");
	redeem_require(fcinfo, 3, "require_binding", "Pass true or false.");
	scope.instance = PG_GETARG_DATUM(1);
	scope.purpose = PG_ARGISNULL(4) ? NULL : PG_GETARG_TEXT_PP(4);
	scope.require_binding = PG_GETARG_BOOL(3);
	PG_RETURN_JSONB_P(redeem_token(PG_GETARG_TEXT_PP(0),
								   PG_ARGISNULL(2) ? NULL : PG_GETARG_TEXT_PP(2),
								   &scope));
}
