/*-------------------------------------------------------------------------
 *
 * consume.h
 *	  The decision for one incoming message (consume.c), shared with the
 *	  webhook walkers of webhook.c.  Layer 3: includes api.h.
 *
 *-------------------------------------------------------------------------
 */
#ifndef OTP_LINK_CONSUME_H
#define OTP_LINK_CONSUME_H

#include "api.h"

/* what a consumed message came to */
typedef struct ConsumeResult
{
	const char *outcome;
	char	   *link_id;		/* text uuid or NULL */
	char	   *blocked_until;	/* ISO timestamp or NULL */
	char	   *original;		/* for duplicates: the first outcome */
} ConsumeResult;

extern ConsumeResult otp_consume(const char *chat_id, const char *body,
								 size_t body_len, const char *message_id,
								 bool has_instance, Datum instance,
								 bool lenient);
extern Jsonb *otp_consume_result_json(ConsumeResult *res, const char *chat_id,
									  const char *message_id);

#endif							/* OTP_LINK_CONSUME_H */
