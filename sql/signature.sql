--
-- otp_link_verify_meta_signature: Meta's X-Hub-Signature-256 on webhook bodies
--
CREATE EXTENSION otp_link;
-- known answer: HMAC-SHA256 of '{"a":1}' with key 'sekret' (computed with Python's hmac)
SELECT otp_link.otp_link_verify_meta_signature('{"a":1}',
       'sha256=08b18ff6b14cac081a968b925a48ed9547975960edd9c61b1d560440c4d3baef', 'sekret') AS good,
       otp_link.otp_link_verify_meta_signature('{"a":1}',
       'sha256=08B18FF6B14CAC081A968B925A48ED9547975960EDD9C61B1D560440C4D3BAEF', 'sekret') AS upper_hex,
       otp_link.otp_link_verify_meta_signature('{"a": 1}',
       'sha256=08b18ff6b14cac081a968b925a48ed9547975960edd9c61b1d560440c4d3baef', 'sekret') AS body_changed,
       otp_link.otp_link_verify_meta_signature('{"a":1}',
       'sha256=08b18ff6b14cac081a968b925a48ed9547975960edd9c61b1d560440c4d3baef', 'other') AS wrong_secret,
       otp_link.otp_link_verify_meta_signature('{"a":1}',
       'sha256=08b18ff6b14cac081a968b925a48ed9547975960edd9c61b1d560440c4d3bae', 'sekret') AS short,
       otp_link.otp_link_verify_meta_signature('{"a":1}',
       'sha1=08b18ff6b14cac081a968b925a48ed9547975960edd9c61b1d560440c4d3baef', 'sekret') AS wrong_scheme,
       otp_link.otp_link_verify_meta_signature('{"a":1}',
       'sha256=zzb18ff6b14cac081a968b925a48ed9547975960edd9c61b1d560440c4d3baef', 'sekret') AS not_hex,
       otp_link.otp_link_verify_meta_signature('{"a":1}', NULL, 'sekret') AS missing;
-- PostgREST: the header arrives in request.headers
SELECT set_config('request.headers',
       '{"x-hub-signature-256": "sha256=08b18ff6b14cac081a968b925a48ed9547975960edd9c61b1d560440c4d3baef"}', false) IS NOT NULL AS set;
SELECT otp_link.otp_link_verify_meta_signature('{"a":1}',
       current_setting('request.headers', true)::json->>'x-hub-signature-256', 'sekret') AS from_headers;
\set VERBOSITY terse
SELECT otp_link.otp_link_verify_meta_signature(NULL, 'sha256=00', 'sekret');
SELECT otp_link.otp_link_verify_meta_signature('{}', 'sha256=00', NULL);
DROP EXTENSION otp_link;
