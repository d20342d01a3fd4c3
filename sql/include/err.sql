-- sql/include/err.sql: shared by the regression tests (\i :abs_srcdir/sql/include/err.sql)
-- err(query): SQLSTATE, message and hint of the error query raises
CREATE FUNCTION pg_temp.err(q text) RETURNS text LANGUAGE plpgsql AS $$
DECLARE
    st text; msg text; hint text;
BEGIN
    EXECUTE q;
    RETURN 'no error';
EXCEPTION WHEN OTHERS THEN
    GET STACKED DIAGNOSTICS st = RETURNED_SQLSTATE, msg = MESSAGE_TEXT, hint = PG_EXCEPTION_HINT;
    RETURN st || ': ' || msg || coalesce(' | HINT: ' || nullif(hint, ''), '');
END $$;
