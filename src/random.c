/*-------------------------------------------------------------------------
 *
 * random.c
 *	  Strong random bytes for codes and link ids, drawn from
 *	  pg_strong_random() 512 at a time.
 *
 * A pg_strong_random() call costs about as much as 500 bytes (OpenSSL's
 * DRBG re-keys on every call), and generate needs about 25 bytes.  The
 * bytes handed out are the same strong random bytes, each used once: it is
 * zeroed as it is handed out, and a process never uses bytes drawn by
 * another (the buffer is refilled when MyProcPid changes, as after a
 * fork).  Kept apart from code.c, which test/t/031 links without the
 * server's data symbols.
 *
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include "miscadmin.h"
#include "port.h"

#include "otp_link.h"

static uint8 rand_buf[512];
static int	rand_pos = sizeof(rand_buf);
static int	rand_pid = 0;

/*
 * otp_random_bytes: len (at most 64) strong random bytes into dst, from
 * rand_buf.  Allocates nothing; ERRORs if the random source fails.
 */
void
otp_random_bytes(uint8 *dst, int len)
{
	Assert(len > 0 && len <= 64);
	if (rand_pid != MyProcPid || rand_pos + len > (int) sizeof(rand_buf))
	{
		rand_pos = sizeof(rand_buf);	/* empty until the refill succeeds */
		if (!pg_strong_random(rand_buf, sizeof(rand_buf)))
			ereport(ERROR,
					(errcode(ERRCODE_INTERNAL_ERROR),
					 errmsg("could not generate random bytes")));
		rand_pid = MyProcPid;
		rand_pos = 0;
	}
	memcpy(dst, rand_buf + rand_pos, len);
	explicit_bzero(rand_buf + rand_pos, len);
	rand_pos += len;
}
