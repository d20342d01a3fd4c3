/*-------------------------------------------------------------------------
 *
 * redeem.c
 *	  otp_link_redeem: the one-time exchange of a {link} token for the
 *	  verified link's data.
 *
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include "utils/builtins.h"

#include "otp_link.h"
#include "api.h"

PG_FUNCTION_INFO_V1(otp_link_redeem);

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
			binding_ok = binding_matches(DatumGetByteaPP(bh),
										 PG_ARGISNULL(1) ? NULL : PG_GETARG_TEXT_PP(1));
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

	PG_RETURN_JSONB_P(redeem_response(result, row));
}
