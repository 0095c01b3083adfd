-- Silences (after Alertmanager): a list of matchers `field=value`, `field!=value`,
-- `field=~regex`, `field!~regex` over an alert's severity, type, environment, table_name,
-- record_id and fingerprint (a missing value matches as ''); regular expressions are anchored.
-- While a silence is active, matching notices stay in the outbox, held, and go out when it
-- ends, unless their alert was resolved in the meantime.
CREATE FUNCTION guardian._relay_parse_matcher(p_matcher text)
RETURNS jsonb
LANGUAGE plpgsql IMMUTABLE
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    v_parts text[] := regexp_match(p_matcher, '^\s*([a-z_]+)\s*(=~|!~|!=|=)(.*)$');
BEGIN
    IF v_parts IS NULL THEN
        RAISE EXCEPTION 'invalid silence matcher %', coalesce(quote_literal(p_matcher), 'NULL')
            USING ERRCODE = 'invalid_parameter_value',
                  DETAIL = 'A matcher is field=value, field!=value, field=~regex or field!~regex.',
                  HINT = 'For example: SELECT guardian.create_silence(ARRAY[''type=TEST_DATA_CONTAMINATION'', ''environment=staging''], ''2 hours'', ''cleanup in progress'');';
    END IF;
    IF v_parts[1] NOT IN ('severity', 'type', 'environment', 'table_name', 'record_id', 'fingerprint') THEN
        RAISE EXCEPTION 'unknown silence matcher field %', quote_literal(v_parts[1])
            USING ERRCODE = 'invalid_parameter_value',
                  HINT = 'Match on severity, type, environment, table_name, record_id or fingerprint.';
    END IF;
    IF v_parts[2] IN ('=~', '!~') THEN
        BEGIN
            PERFORM '' ~ v_parts[3];
        EXCEPTION WHEN invalid_regular_expression THEN
            RAISE EXCEPTION 'invalid regular expression in silence matcher %: %', quote_literal(p_matcher), SQLERRM
                USING ERRCODE = 'invalid_parameter_value',
                      HINT = 'Use a POSIX regular expression, e.g. table_name=~public\..*';
        END;
    END IF;
    RETURN jsonb_build_object('field', v_parts[1], 'op', v_parts[2], 'value', v_parts[3]);
END
$$;
COMMENT ON FUNCTION guardian._relay_parse_matcher(text) IS
    'Internal: parses and checks one silence matcher (field op value) into JSON.';

CREATE FUNCTION guardian._relay_silence_for(
    p_severity text, p_type text, p_environment text, p_table_name text, p_record_id text,
    p_fingerprint text, p_channel text)
RETURNS uuid
LANGUAGE sql STABLE
SET search_path = pg_catalog, pg_temp
AS $$
    SELECT s.id
      FROM guardian.relay_silences AS s
     WHERE s.starts_at <= pg_catalog.now() AND s.ends_at > pg_catalog.now()
       AND (s.channel IS NULL OR s.channel = p_channel)
       AND NOT EXISTS (
             SELECT
               FROM jsonb_to_recordset(s.matchers) AS m(field text, op text, value text),
                    LATERAL (SELECT coalesce(CASE m.field
                                 WHEN 'severity' THEN p_severity
                                 WHEN 'type' THEN p_type
                                 WHEN 'environment' THEN p_environment
                                 WHEN 'table_name' THEN p_table_name
                                 WHEN 'record_id' THEN p_record_id
                                 WHEN 'fingerprint' THEN p_fingerprint END, '') AS v) AS f
              WHERE NOT CASE m.op
                          WHEN '=' THEN f.v = m.value
                          WHEN '!=' THEN f.v <> m.value
                          WHEN '=~' THEN f.v ~ ('^(?:' || m.value || ')$')
                          WHEN '!~' THEN f.v !~ ('^(?:' || m.value || ')$')
                          ELSE false END)
     ORDER BY s.ends_at DESC
     LIMIT 1
$$;
COMMENT ON FUNCTION guardian._relay_silence_for(text, text, text, text, text, text, text) IS
    'Internal: the active silence (longest-lasting) that holds back an alert with these fields on a channel, or NULL.';

CREATE FUNCTION guardian.create_silence(
    p_matchers  text[],
    p_duration  interval,
    p_comment   text,
    p_channel   text DEFAULT NULL,
    p_starts_at timestamptz DEFAULT NULL)
RETURNS uuid
LANGUAGE plpgsql
SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    v_matchers jsonb;
    v_starts   timestamptz := coalesce(p_starts_at, now());
    v_id       uuid;
BEGIN
    IF coalesce(cardinality(p_matchers), 0) = 0 THEN
        RAISE EXCEPTION 'a silence needs at least one matcher'
            USING ERRCODE = 'invalid_parameter_value',
                  HINT = 'For example: SELECT guardian.create_silence(ARRAY[''type=TEST_DATA_CONTAMINATION''], ''2 hours'', ''cleanup in progress'');';
    END IF;
    IF p_duration IS NULL OR p_duration <= '0'::interval THEN
        RAISE EXCEPTION 'invalid silence duration %', coalesce(quote_literal(p_duration::text), 'NULL')
            USING ERRCODE = 'invalid_parameter_value',
                  HINT = 'Give a positive interval such as ''2 hours''.';
    END IF;
    IF p_comment IS NULL OR btrim(p_comment) = '' THEN
        RAISE EXCEPTION 'a silence needs a comment saying why'
            USING ERRCODE = 'invalid_parameter_value',
                  HINT = 'Pass p_comment, e.g. ''cleanup of tenant-a test rows in progress''.';
    END IF;
    IF p_channel IS NOT NULL AND p_channel !~ '^[a-z][a-z0-9_-]{0,39}$' THEN
        RAISE EXCEPTION 'invalid channel name %', quote_literal(p_channel)
            USING ERRCODE = 'invalid_parameter_value',
                  HINT = 'Channel names are those of the relay configuration, e.g. slack, email, webhook; NULL silences every channel.';
    END IF;
    SELECT jsonb_agg(guardian._relay_parse_matcher(m.matcher) ORDER BY m.ord)
      INTO v_matchers
      FROM unnest(p_matchers) WITH ORDINALITY AS m(matcher, ord);
    INSERT INTO guardian.relay_silences (matchers, channel, starts_at, ends_at, comment)
    VALUES (v_matchers, p_channel, v_starts, v_starts + p_duration, btrim(p_comment))
    RETURNING id INTO v_id;
    RETURN v_id;
END
$$;
COMMENT ON FUNCTION guardian.create_silence(text[], interval, text, text, timestamptz) IS
    'Hold back relay notices of alerts matching every matcher (field=value, field!=value, field=~regex, field!~regex) for p_duration, on one channel or all; returns the silence id. Held notices go out when it ends.';

CREATE FUNCTION guardian.expire_silence(p_id uuid)
RETURNS guardian.relay_silences
LANGUAGE plpgsql
SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    v_silence guardian.relay_silences;
BEGIN
    UPDATE guardian.relay_silences AS s
       SET ends_at    = greatest(least(s.ends_at, now()), s.starts_at + '1 microsecond'::interval),
           expired_by = coalesce(s.expired_by, SESSION_USER)
     WHERE s.id = p_id
    RETURNING s.* INTO v_silence;
    IF NOT FOUND THEN
        RAISE EXCEPTION 'no silence with id %', p_id
            USING ERRCODE = 'no_data_found',
                  HINT = 'List silences with: SELECT id, matchers, ends_at FROM guardian.active_silences;';
    END IF;
    RETURN v_silence;
END
$$;
COMMENT ON FUNCTION guardian.expire_silence(uuid) IS
    'End a silence now; the notices it held go out on the relay''s next pass.';

CREATE VIEW guardian.active_silences AS
SELECT s.id,
       (SELECT string_agg(concat(m.matcher ->> 'field', m.matcher ->> 'op', m.matcher ->> 'value'), ', '
                          ORDER BY m.ord)
          FROM jsonb_array_elements(s.matchers) WITH ORDINALITY AS m(matcher, ord)) AS matchers,
       coalesce(s.channel, '*') AS channel, s.starts_at, s.ends_at, s.comment, s.created_by,
       (SELECT count(*) FROM guardian.relay_outbox AS o
         WHERE o.held_by = s.id AND o.status = 'pending') AS held_notices
  FROM guardian.relay_silences AS s
 WHERE s.ends_at > pg_catalog.now()
 ORDER BY s.ends_at;
COMMENT ON VIEW guardian.active_silences IS
    'Silences in force now or starting later, with how many relay notices each holds back.';
