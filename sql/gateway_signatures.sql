--
-- Signatures of the gateways' webhooks: otp_link_verify_hmac (a body HMAC:
-- Meta's X-Hub-Signature-256, WAHA's X-Webhook-Hmac) and
-- otp_link_verify_twilio_signature (X-Twilio-Signature)
--
CREATE EXTENSION otp_link;

\getenv abs_srcdir PG_ABS_SRCDIR
\i :abs_srcdir/sql/include/err.sql

-- WAHA's documented example (Events page, HMAC authentication): body,
-- key my-secret-key, X-Webhook-Hmac-Algorithm sha512, X-Webhook-Hmac hex
SELECT otp_link.otp_link_verify_hmac('{"event":"message","session":"default","engine":"WEBJS"}',
       '208f8a55dde9e05519e898b10b89bf0d0b3b0fdf11fdbf09b6b90476301b98d8097c462b2b17a6ce93b6b47a136cf2e78a33a63f6752c2c1631777076153fa89',
       'my-secret-key', 'sha512') AS waha_doc,
       otp_link.otp_link_verify_hmac('{"event":"message","session":"default","engine":"WEBJS" }',
       '208f8a55dde9e05519e898b10b89bf0d0b3b0fdf11fdbf09b6b90476301b98d8097c462b2b17a6ce93b6b47a136cf2e78a33a63f6752c2c1631777076153fa89',
       'my-secret-key', 'sha512') AS body_changed,
       otp_link.otp_link_verify_hmac('{"event":"message","session":"default","engine":"WEBJS"}',
       '208f8a55dde9e05519e898b10b89bf0d0b3b0fdf11fdbf09b6b90476301b98d8097c462b2b17a6ce93b6b47a136cf2e78a33a63f6752c2c1631777076153fa89',
       'my-secret-key', 'sha256') AS wrong_algorithm;
-- Meta's scheme through the generic verifier: the known answer of
-- sql/signature.sql (HMAC-SHA256 of {"a":1} with key sekret)
SELECT otp_link.otp_link_verify_hmac('{"a":1}',
       'sha256=08b18ff6b14cac081a968b925a48ed9547975960edd9c61b1d560440c4d3baef', 'sekret',
       prefix => 'sha256=') AS meta,
       otp_link.otp_link_verify_hmac('{"a":1}',
       '08b18ff6b14cac081a968b925a48ed9547975960edd9c61b1d560440c4d3baef', 'sekret',
       prefix => 'sha256=') AS prefix_missing,
       otp_link.otp_link_verify_hmac('{"a":1}',
       '08b18ff6b14cac081a968b925a48ed9547975960edd9c61b1d560440c4d3baef', 'sekret') AS no_prefix_wanted,
       otp_link.otp_link_verify_meta_signature('{"a":1}',
       'sha256=08b18ff6b14cac081a968b925a48ed9547975960edd9c61b1d560440c4d3baef', 'sekret') AS meta_1_0;
-- every algorithm and encoding (vectors computed with Python's hmac module)
SELECT a, e, otp_link.otp_link_verify_hmac('{"entry":[],"object":"whatsapp_business_account"}', s, 'gw-secret', a, e) AS ok
  FROM (VALUES
    ('sha1', 'hex', '9cb9609a3c952a56476ddd437e79b5e4329547a3'),
    ('SHA1', 'HEX', '9CB9609A3C952A56476DDD437E79B5E4329547A3'),
    ('sha1', 'base64', 'nLlgmjyVKlZHbd1Dfnm15DKVR6M='),
    ('sha256', 'hex', '249ebd54cbe3dbcebd9bc19f2899913be54558053440f65a2bc4868aa220c1bd'),
    ('sha256', 'base64', 'JJ69VMvj2869m8GfKJmRO+VFWAU0QPZaK8SGiqIgwb0='),
    ('sha512', 'hex', '77993d893e8100a1538f95e8d19a2d736e8ec0d68e497a9e49053992a47e028742f42fc0cdfea802f539dec648e074c0860e581232860735e3519406150ff82e'),
    ('sha512', 'base64', 'd5k9iT6BAKFTj5Xo0Zotc26OwNaOSXqeSQU5kqR+AodC9C/Azf6oAvU53sZI4HTAhg5YEjKGBzXjUZQGFQ/4Lg=='),
    -- malformed or wrong: false, never an error
    ('sha1', 'hex', '9cb9609a3c952a56476ddd437e79b5e4329547a'),
    ('sha1', 'hex', '9cb9609a3c952a56476ddd437e79b5e4329547a30'),
    ('sha1', 'hex', 'zcb9609a3c952a56476ddd437e79b5e4329547a3'),
    ('sha1', 'hex', '9cb9609a3c952a56476ddd437e79b5e4329547a4'),
    ('sha1', 'base64', 'nLlgmjyVKlZHbd1Dfnm15DKVR6M'),
    ('sha1', 'base64', 'nLlgmjyVKlZHbd1Dfnm15DKVR6=='),
    ('sha1', 'base64', '!!!!'),
    ('sha1', 'base64', ''),
    ('sha256', 'base64', 'nLlgmjyVKlZHbd1Dfnm15DKVR6M='),
    -- the URL-safe alphabet ('-' and '_' for '+' and '/') is not base64 here
    ('sha256', 'base64', 'JJ69VMvj2869m8GfKJmRO-VFWAU0QPZaK8SGiqIgwb0='),
    ('sha1', 'hex', NULL)) AS v(a, e, s);
-- names and secrets: stable SQLSTATEs
SELECT pg_temp.err($$SELECT otp_link.otp_link_verify_hmac('x', 'ab', 'k', 'md5')$$);
SELECT pg_temp.err($$SELECT otp_link.otp_link_verify_hmac('x', 'ab', 'k', 'sha256', 'base32')$$);
SELECT pg_temp.err($$SELECT otp_link.otp_link_verify_hmac('x', 'ab', '')$$);
SELECT pg_temp.err($$SELECT otp_link.otp_link_verify_hmac('x', 'ab', NULL)$$);
SELECT pg_temp.err($$SELECT otp_link.otp_link_verify_hmac(NULL, 'ab', 'k')$$);
SELECT pg_temp.err($$SELECT otp_link.otp_link_verify_hmac('x', 'ab', 'k', NULL)$$);
SELECT pg_temp.err($$SELECT otp_link.otp_link_verify_hmac('x', 'ab', 'k', 'sha256', NULL)$$);
-- an empty secret is refused even with no signature to check
SELECT pg_temp.err($$SELECT otp_link.otp_link_verify_hmac('x', NULL, '')$$);
SELECT pg_temp.err($$SELECT otp_link.otp_link_verify_meta_signature('x', NULL, '')$$);

--
-- Twilio: the worked examples of Twilio's request validation docs (auth
-- token 12345, this URL, these POST parameters)
--
SELECT otp_link.otp_link_verify_twilio_signature('https://mycompany.com/myapp.php?foo=1&bar=2',
       '{"CallSid": "CA1234567890ABCDE", "Caller": "+14158675309", "Digits": "1234",
         "From": "+14158675309", "To": "+18005551212"}',
       'RSOYDt4T1cUTdK1PDd93/VVr8B8=', '12345') AS twilio_php_doc,
       otp_link.otp_link_verify_twilio_signature('https://mycompany.com/myapp.php?foo=1&bar=2',
       '{"To": "+18005551212", "From": "+12349013030", "Digits": "1234",
         "Caller": "+12349013030", "CallSid": "CA1234567890ABCDE"}',
       '0/KCTR6DLpKmkAf8muzZqo1nDgQ=', '12345') AS twilio_security_doc,
       otp_link.otp_link_verify_twilio_signature('https://mycompany.com/myapp.php?foo=1&bar=2',
       '{"CallSid": "CA1234567890ABCDE", "Caller": "+14158675309", "Digits": "1235",
         "From": "+14158675309", "To": "+18005551212"}',
       'RSOYDt4T1cUTdK1PDd93/VVr8B8=', '12345') AS param_changed,
       otp_link.otp_link_verify_twilio_signature('https://mycompany.com/myapp.php?foo=1&bar=3',
       '{"CallSid": "CA1234567890ABCDE", "Caller": "+14158675309", "Digits": "1234",
         "From": "+14158675309", "To": "+18005551212"}',
       'RSOYDt4T1cUTdK1PDd93/VVr8B8=', '12345') AS url_changed,
       otp_link.otp_link_verify_twilio_signature('https://mycompany.com/myapp.php?foo=1&bar=2',
       '{"CallSid": "CA1234567890ABCDE", "Caller": "+14158675309", "Digits": "1234",
         "From": "+14158675309", "To": "+18005551212"}',
       'RSOYDt4T1cUTdK1PDd93/VVr8B8=', '12346') AS wrong_token,
       otp_link.otp_link_verify_twilio_signature('https://mycompany.com/myapp.php?foo=1&bar=2',
       '{"CallSid": "CA1234567890ABCDE", "Caller": "+14158675309", "Digits": "1234",
         "From": "+14158675309", "To": "+18005551212"}',
       NULL, '12345') AS no_header;
-- a webhook rule's HMAC-SHA256; a repeated parameter (array, in order),
-- non-ASCII text and an empty value (vectors computed with Python's hmac)
SELECT otp_link.otp_link_verify_twilio_signature('https://mycompany.com/myapp.php?foo=1&bar=2',
       '{"CallSid": "CA1234567890ABCDE", "Caller": "+14158675309", "Digits": "1234",
         "From": "+14158675309", "To": "+18005551212"}',
       '033hgUJA9M/hXIZsYjwkerEP/DBm35nEri5FhCYjA5s=', '12345', 'sha256') AS sha256_rule,
       otp_link.otp_link_verify_twilio_signature('https://api.example/rpc/twilio_webhook',
       '{"Z": "", "MediaUrl": ["a", "b"], "Body": "hé [CODE]"}',
       'Nc9Uz+jGzOQh6sKyooSdA4liZGk=', 'tok123') AS repeated,
       otp_link.otp_link_verify_twilio_signature('https://api.example/rpc/twilio_webhook',
       '{"Z": "", "MediaUrl": ["b", "a"], "Body": "hé [CODE]"}',
       'Nc9Uz+jGzOQh6sKyooSdA4liZGk=', 'tok123') AS repeated_reordered,
       otp_link.otp_link_verify_twilio_signature('https://api.example/rpc/twilio_webhook',
       '{"Z": "", "MediaUrl": ["b", "a"], "Body": "hé [CODE]"}',
       'AXbAQKY9CcFlCY+haeQ35lqu+kw=', 'tok123') AS unsorted_values_signed;
-- as Twilio's libraries do (twilio-python's RequestValidator.validate,
-- twilio-node's validateRequest): the values of a repeated parameter are
-- sorted (above), and the URL is also tried without its port, or with the
-- scheme's default port added (vectors computed with Python's hmac)
SELECT u AS url, s AS signed_url,
       otp_link.otp_link_verify_twilio_signature(u, '{"Body": "[CODE]", "From": "whatsapp:+447700900201"}',
                                                 sig, 'tok123') AS valid
  FROM (VALUES
    ('https://api.example/rpc/twilio_webhook?x=1', 'the same', 'yh9wV8DdyUb5nEPzl2CQF+qna4g='),
    ('https://api.example/rpc/twilio_webhook?x=1', 'with :443', 'tr/pnT8wBW+fSOs73InpKHf4Bhg='),
    ('https://api.example:443/rpc/twilio_webhook?x=1', 'without port', 'yh9wV8DdyUb5nEPzl2CQF+qna4g='),
    ('http://api.example/rpc/twilio_webhook', 'with :80', 'ujxvjgFavE8hGxsnNaIHGofDn74='),
    ('http://api.example:80/rpc/twilio_webhook', 'without port', 'wVJV9deW3usdfBoXrOySmyc7eO4='),
    ('https://api.example:8443/rpc/twilio_webhook', 'without port', '8VyssO1qGNZvufREsyPhc22ezAI='),
    ('https://api.example', 'with :443', 'VKiwoM+BLrYoZvmgw7TEmfpvvvY='),
    ('https://user@api.example:443', 'without port', 'z29VMp0wGRXov6UBy5vm0EJ/rxM='),
    ('https://[2001:db8::1]/x', 'with :443', 'faYB13y4E9s8YPmnmvEZVz3EUXg='),
    ('https://api.example/rpc/twilio_webhook?x=1', 'another host', 'E64kkqTu8Vs7ejSI1s5l4dtUtes='),
    ('http://api.example/rpc/twilio_webhook', 'with :443 (not http''s port)', 'tr/pnT8wBW+fSOs73InpKHf4Bhg='),
    ('https://api.example:443/rpc/twilio_webhook?x=1', 'with :80', 'ujxvjgFavE8hGxsnNaIHGofDn74=')
  ) AS t(u, s, sig);
SELECT pg_temp.err($$SELECT otp_link.otp_link_verify_twilio_signature('https://x', '{"a": "b"}', 'sig', '')$$);
SELECT pg_temp.err($$SELECT otp_link.otp_link_verify_twilio_signature('https://x', '{"a": "b"}', 'sig', NULL)$$);
SELECT pg_temp.err($$SELECT otp_link.otp_link_verify_twilio_signature(NULL, '{"a": "b"}', 'sig', 'tok')$$);
SELECT pg_temp.err($$SELECT otp_link.otp_link_verify_twilio_signature('https://x', '["a"]', 'sig', 'tok')$$);
SELECT pg_temp.err($$SELECT otp_link.otp_link_verify_twilio_signature('https://x', '{"NumMedia": 0}', 'sig', 'tok')$$);
SELECT pg_temp.err($$SELECT otp_link.otp_link_verify_twilio_signature('https://x', '{"a": [1]}', 'sig', 'tok')$$);
SELECT pg_temp.err($$SELECT otp_link.otp_link_verify_twilio_signature('https://x', '{"a": "b"}', 'sig', 'tok', 'md5')$$);

-- the roles: the inbox and administrators verify, the application does not
CREATE ROLE regress_sig_app IN ROLE otp_link_app;
CREATE ROLE regress_sig_inbox IN ROLE otp_link_inbox;
SET ROLE regress_sig_inbox;
SELECT otp_link.otp_link_verify_hmac('{"a":1}', 'sha256=08b18ff6b14cac081a968b925a48ed9547975960edd9c61b1d560440c4d3baef',
       'sekret', prefix => 'sha256=') AS inbox_may;
SET ROLE regress_sig_app;
SELECT pg_temp.err($$SELECT otp_link.otp_link_verify_hmac('x', 'ab', 'k')$$);
SELECT pg_temp.err($$SELECT otp_link.otp_link_verify_twilio_signature('https://x', '{}', 'sig', 'tok')$$);
RESET ROLE;
DROP ROLE regress_sig_app, regress_sig_inbox;
DROP EXTENSION otp_link;
