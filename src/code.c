/*-------------------------------------------------------------------------
 *
 * code.c
 *	  Codes, tokens, secrets and digests of otp_link.
 *
 * Every secret comes from pg_strong_random().  Codes are eight letters A-Z
 * drawn without modulo bias (rejection sampling); tokens and secrets are
 * base64 of raw random bytes.  Digests are SHA-256 from OpenSSL's EVP
 * interface (with PostgreSQL's cryptohash API as the fallback), and
 * secrets are compared in constant time.
 *
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#ifdef USE_OPENSSL
#include <openssl/evp.h>
#endif

#include "common/base64.h"
#include "common/cryptohash.h"
#include "port.h"
#include "utils/guc.h"
#include "utils/uuid.h"

#include "otp_link.h"

/*
 * Fill buf with len bytes from the strong random source; ERROR if the
 * source fails (it never silently degrades).
 */
static void
strong_random(void *buf, size_t len)
{
	if (!pg_strong_random(buf, len))
		ereport(ERROR,
				(errcode(ERRCODE_INTERNAL_ERROR),
				 errmsg("could not generate random bytes")));
}

/*
 * otp_link.debug_codes: for tests only (superuser, hidden).  When set to a
 * comma-separated list of codes, otp_random_code hands them out in turn
 * instead of random ones, so that tests can force collisions.
 */
static char *debug_codes = NULL;
static int	debug_codes_next = 0;

/* a new value of otp_link.debug_codes starts again at its first code */
static void
debug_codes_assign(const char *newval, void *extra)
{
	debug_codes_next = 0;
}

/*
 * otp_code_define_gucs: define the hidden test GUC; called from _PG_init.
 */
void
otp_code_define_gucs(void)
{
	DefineCustomStringVariable("otp_link.debug_codes",
							   "Codes to hand out instead of random ones (tests only).",
							   NULL, &debug_codes, "",
							   PGC_SUSET,
							   GUC_NO_SHOW_ALL | GUC_NOT_IN_SAMPLE,
							   NULL, debug_codes_assign, NULL);
}

/*
 * next_debug_code: the next code of otp_link.debug_codes into dst, cycling;
 * false when the setting is empty.
 */
static bool
next_debug_code(char *dst)
{
	int			ncodes;

	if (debug_codes == NULL || debug_codes[0] == '\0')
		return false;
	ncodes = (strlen(debug_codes) + 1) / (OTP_CODE_LEN + 1);
	if (ncodes == 0)
		return false;
	memcpy(dst, debug_codes + (debug_codes_next % ncodes) * (OTP_CODE_LEN + 1),
		   OTP_CODE_LEN);
	dst[OTP_CODE_LEN] = '\0';
	debug_codes_next++;
	return otp_code_is_valid(dst);
}

/*
 * otp_random_code: write OTP_CODE_LEN upper-case letters and a NUL into dst.
 *
 * Bytes >= 234 (= 9 * 26) are rejected so every letter is exactly equally
 * likely.  Allocates nothing; can ERROR if the random source fails.
 */
void
otp_random_code(char *dst)
{
	uint8		pool[OTP_CODE_LEN];
	int			used = sizeof(pool);
	int			n = 0;

	if (next_debug_code(dst))
		return;
	while (n < OTP_CODE_LEN)
	{
		if (used == sizeof(pool))
		{
			otp_random_bytes(pool, sizeof(pool));
			used = 0;
		}
		if (pool[used] < 234)
			dst[n++] = 'A' + pool[used] % 26;
		used++;
	}
	dst[OTP_CODE_LEN] = '\0';
	explicit_bzero(pool, sizeof(pool));
}

/*
 * otp_random_uuid: a random (version 4) UUID into dst, as
 * gen_random_uuid() makes it.  Allocates nothing; can ERROR if the random
 * source fails.
 */
void
otp_random_uuid(pg_uuid_t *dst)
{
	otp_random_bytes(dst->data, UUID_LEN);
	dst->data[6] = (dst->data[6] & 0x0f) | 0x40;	/* version 4 */
	dst->data[8] = (dst->data[8] & 0x3f) | 0x80;	/* variant RFC 4122 */
}

/*
 * otp_uuid_text: uuid as text, the way uuid_out writes it (lower-case
 * hexadecimal, 8-4-4-4-12), palloc'd.  Cannot ERROR short of running out
 * of memory.
 */
char *
otp_uuid_text(const pg_uuid_t *uuid)
{
	static const char hex[] = "0123456789abcdef";
	char	   *out = palloc(2 * UUID_LEN + 5);
	char	   *p = out;
	int			i;

	for (i = 0; i < UUID_LEN; i++)
	{
		if (i == 4 || i == 6 || i == 8 || i == 10)
			*p++ = '-';
		*p++ = hex[uuid->data[i] >> 4];
		*p++ = hex[uuid->data[i] & 0x0f];
	}
	*p = '\0';
	return out;
}

/*
 * otp_code_is_valid: true if code is exactly OTP_CODE_LEN letters A-Z.
 */
bool
otp_code_is_valid(const char *code)
{
	int			i;

	for (i = 0; i < OTP_CODE_LEN; i++)
		if (code[i] < 'A' || code[i] > 'Z')
			return false;
	return code[OTP_CODE_LEN] == '\0';
}

/*
 * Base64url (RFC 4648 section 5, no padding) of len random bytes, palloc'd
 * in the current memory context.  Can ERROR if the random source fails.
 */
static char *
random_base64(int len, bool url)
{
	uint8		raw[64];
	int			enclen;
	char	   *out;
	int			i;

	Assert(len <= (int) sizeof(raw));
	strong_random(raw, len);
	enclen = pg_b64_enc_len(len);
	out = palloc(enclen + 1);
	enclen = pg_b64_encode((const PG_B64_BYTE *) raw, len, out, enclen);
	explicit_bzero(raw, sizeof(raw));
	if (enclen < 0)
		ereport(ERROR,
				(errcode(ERRCODE_INTERNAL_ERROR),
				 errmsg("could not encode random bytes")));
	out[enclen] = '\0';
	if (url)
	{
		for (i = 0; i < enclen; i++)
		{
			if (out[i] == '+')
				out[i] = '-';
			else if (out[i] == '/')
				out[i] = '_';
			else if (out[i] == '=')
			{
				out[i] = '\0';
				break;
			}
		}
	}
	return out;
}

/*
 * otp_random_token: a one-time {link} token, 256 bits as base64url (43
 * characters), palloc'd.  Can ERROR if the random source fails.
 */
char *
otp_random_token(void)
{
	return random_base64(OTP_TOKEN_BYTES, true);
}

/*
 * otp_random_secret: a Standard Webhooks signing secret "whsec_<base64>"
 * of 192 bits, palloc'd.  Can ERROR if the random source fails.
 */
char *
otp_random_secret(void)
{
	return psprintf("whsec_%s", random_base64(OTP_SECRET_BYTES, false));
}

#ifdef USE_OPENSSL
/*
 * sha256_evp: SHA-256 of data into dst with OpenSSL's EVP interface
 * directly, the digest fetched and the context made once per process:
 * pg_cryptohash makes, initializes (fetching the algorithm by name) and
 * frees a context per digest, 7,700 instructions for an 8-byte code.
 * Same provider, so a FIPS configuration applies as it does to
 * PostgreSQL's own digests.  Returns false (nothing allocated) if OpenSSL
 * fails; never ERRORs.
 */
static bool
sha256_evp(const char *data, size_t len, uint8 *dst)
{
	static EVP_MD *md = NULL;
	static EVP_MD_CTX *ctx = NULL;
	unsigned int dlen = 0;

	if (md == NULL)
	{
#if OPENSSL_VERSION_NUMBER >= 0x30000000L
		md = EVP_MD_fetch(NULL, "SHA256", NULL);
#else
		md = unconstify(EVP_MD *, EVP_sha256());
#endif
		if (md == NULL)
			return false;
	}
	if (ctx == NULL && (ctx = EVP_MD_CTX_new()) == NULL)
		return false;
	if (EVP_DigestInit_ex(ctx, md, NULL) != 1 ||
		EVP_DigestUpdate(ctx, data, len) != 1 ||
		EVP_DigestFinal_ex(ctx, dst, &dlen) != 1 ||
		dlen != OTP_HASH_LEN)
	{
		EVP_MD_CTX_reset(ctx);
		return false;
	}
	return true;
}
#endif

/*
 * otp_sha256: SHA-256 of data into dst (OTP_HASH_LEN bytes): with OpenSSL
 * through sha256_evp, else (or should OpenSSL fail there) through
 * PostgreSQL's cryptohash API.  Can ERROR if the crypto library fails.
 */
void
otp_sha256(const char *data, size_t len, uint8 *dst)
{
	pg_cryptohash_ctx *ctx;

#ifdef USE_OPENSSL
	if (sha256_evp(data, len, dst))
		return;
#endif
	ctx = pg_cryptohash_create(PG_SHA256);
	if (ctx == NULL ||
		pg_cryptohash_init(ctx) < 0 ||
		pg_cryptohash_update(ctx, (const uint8 *) data, len) < 0 ||
		pg_cryptohash_final(ctx, dst, OTP_HASH_LEN) < 0)
	{
		const char *why = ctx ? pg_cryptohash_error(ctx) : "out of memory";

		pg_cryptohash_free(ctx);
		ereport(ERROR,
				(errcode(ERRCODE_INTERNAL_ERROR),
				 errmsg("could not compute SHA-256 digest: %s", why)));
	}
	pg_cryptohash_free(ctx);
}

/*
 * otp_sha256_bytea: the SHA-256 digest of data as a palloc'd bytea.
 */
bytea *
otp_sha256_bytea(const char *data, size_t len)
{
	bytea	   *result = palloc(VARHDRSZ + OTP_HASH_LEN);

	SET_VARSIZE(result, VARHDRSZ + OTP_HASH_LEN);
	otp_sha256(data, len, (uint8 *) VARDATA(result));
	return result;
}

/*
 * otp_timingsafe_equal: compare len bytes in time independent of where they
 * differ.
 */
bool
otp_timingsafe_equal(const void *a, const void *b, size_t len)
{
	const volatile uint8 *pa = a;
	const volatile uint8 *pb = b;
	uint8		diff = 0;
	size_t		i;

	for (i = 0; i < len; i++)
		diff |= pa[i] ^ pb[i];
	return diff == 0;
}
