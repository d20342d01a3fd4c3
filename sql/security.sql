--
-- SECURITY DEFINER functions resist a hostile search_path: objects planted
-- in public or pg_temp that shadow what the functions call are not used.
--
CREATE EXTENSION otp_link;
SELECT otp_link.otp_link_instance_create('201553730661', 'Sec')->>'uuid' AS inst \gset
CREATE ROLE regress_otp_hostile IN ROLE otp_link_app, otp_link_inbox;
GRANT CREATE ON SCHEMA public TO regress_otp_hostile;
SET ROLE regress_otp_hostile;
-- planted look-alikes of functions and operators the SQL inside otp_link uses
CREATE FUNCTION public.now() RETURNS timestamptz LANGUAGE sql AS $$ SELECT '2000-01-01'::timestamptz $$;
CREATE FUNCTION public.gen_random_uuid() RETURNS uuid LANGUAGE sql AS $$ SELECT '00000000-0000-0000-0000-000000000001'::uuid $$;
CREATE FUNCTION public.make_interval(secs integer) RETURNS interval LANGUAGE sql AS $$ SELECT interval '100 years' $$;
CREATE FUNCTION public.to_char(timestamp, text) RETURNS text LANGUAGE sql AS $$ SELECT 'pwned' $$;
CREATE FUNCTION public.hostile_eq(text, text) RETURNS boolean LANGUAGE sql AS $$ SELECT true $$;
CREATE OPERATOR public.= (LEFTARG = text, RIGHTARG = text, FUNCTION = public.hostile_eq);
CREATE TABLE public.links (id int);
CREATE TEMP TABLE instances (id uuid);
SET search_path = public, pg_temp, pg_catalog;
SELECT otp_link.otp_link_generate(:'inst', expires => 60) AS r \gset
RESET search_path;
SELECT :'r'::jsonb->>'uuid' <> '00000000-0000-0000-0000-000000000001' AS real_uuid,
       :'r'::jsonb->>'created_at' <> 'pwned' AS real_to_char,
       (:'r'::jsonb->>'expires_at')::timestamptz - (:'r'::jsonb->>'created_at')::timestamptz AS ttl,
       (:'r'::jsonb->>'created_at')::timestamptz > '2020-01-01' AS real_now;
SET search_path = public, pg_temp, pg_catalog;
SELECT otp_link.otp_link_consume_message('447700900123', 'x [' || (:'r'::jsonb->>'code') || ']')->>'outcome' AS outcome;
SELECT otp_link.otp_link_status((:'r'::jsonb->>'uuid')::uuid)->>'status' AS status;
RESET search_path;
RESET ROLE;
SELECT count(*) AS links_in_public FROM public.links;
DROP OWNED BY regress_otp_hostile;
DROP ROLE regress_otp_hostile;
DROP EXTENSION otp_link;
