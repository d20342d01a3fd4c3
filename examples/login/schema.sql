-- examples/login/schema.sql: what the login example needs in its database.
CREATE EXTENSION IF NOT EXISTS otp_link;

-- The inbox: where the WhatsApp provider's webhook handler stores incoming
-- messages.  The trigger hands each one to otp_link_consume_message.
CREATE TABLE IF NOT EXISTS inbox (
	id			bigserial PRIMARY KEY,
	chat_id		text NOT NULL,
	body		text,
	message_id	text,
	received_at	timestamptz NOT NULL DEFAULT now()
);
CREATE OR REPLACE TRIGGER inbox_consume AFTER INSERT ON inbox FOR EACH ROW
	EXECUTE FUNCTION otp_link.otp_link_consume_trigger('chat_id', 'body', 'message_id');
