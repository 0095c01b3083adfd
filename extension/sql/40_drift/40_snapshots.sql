-- Drift over time: fingerprints are stored as snapshots; one snapshot is the approved baseline
-- that the hourly drift check compares the live schema with. A snapshot can also be a
-- fingerprint imported from another environment (production's, say), so that staging is
-- checked against production without the controller.
CREATE TABLE guardian.schema_snapshots (
    id          bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    label       text NOT NULL,
    source      text NOT NULL DEFAULT 'live',
    environment text NOT NULL DEFAULT guardian.current_environment(),
    taken_at    timestamptz NOT NULL DEFAULT pg_catalog.now(),
    taken_by    text NOT NULL DEFAULT SESSION_USER,
    checksum    text NOT NULL,
    objects     integer NOT NULL,
    fingerprint jsonb NOT NULL,
    baseline    boolean NOT NULL DEFAULT false,
    approved_at timestamptz,
    approved_by text,
    CONSTRAINT schema_snapshots_label_chk CHECK (pg_catalog.length(label) BETWEEN 1 AND 200),
    CONSTRAINT schema_snapshots_source_chk CHECK (source IN ('live', 'import')),
    CONSTRAINT schema_snapshots_baseline_chk CHECK (NOT baseline OR approved_at IS NOT NULL)
);
COMMENT ON TABLE guardian.schema_snapshots IS
    'Stored schema fingerprints: taken here with guardian.snapshot_schema(label) or imported from another environment with guardian.import_fingerprint(label, json). At most one is the approved baseline (guardian.approve_baseline(id)) that guardian.check_drift() compares with.';
SELECT pg_catalog.pg_extension_config_dump('guardian.schema_snapshots', '');
CREATE UNIQUE INDEX schema_snapshots_baseline_idx ON guardian.schema_snapshots (baseline) WHERE baseline;
CREATE INDEX schema_snapshots_label_idx ON guardian.schema_snapshots (label, taken_at);

CREATE FUNCTION guardian._check_label(p_label text)
RETURNS text
LANGUAGE plpgsql IMMUTABLE
SET search_path = pg_catalog, pg_temp
AS $$
BEGIN
    IF p_label IS NULL OR length(btrim(p_label)) NOT BETWEEN 1 AND 200 THEN
        RAISE EXCEPTION 'invalid snapshot label %', coalesce(quote_literal(p_label), 'NULL')
            USING ERRCODE = 'invalid_parameter_value',
                  HINT = 'Use a short name of 1 to 200 characters, e.g. SELECT guardian.snapshot_schema(''release 2024-06'');';
    END IF;
    RETURN btrim(p_label);
END
$$;
COMMENT ON FUNCTION guardian._check_label(text) IS 'Internal: validates and trims a snapshot label.';

CREATE FUNCTION guardian.snapshot_schema(p_label text)
RETURNS bigint
LANGUAGE plpgsql
SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    v_label       text := guardian._check_label(p_label);
    v_fingerprint jsonb := guardian.schema_fingerprint();
    v_id          bigint;
BEGIN
    INSERT INTO guardian.schema_snapshots (label, source, checksum, objects, fingerprint)
    VALUES (v_label, 'live', v_fingerprint->>'checksum',
            (SELECT count(*) FROM jsonb_object_keys(v_fingerprint->'objects')), v_fingerprint)
    RETURNING id INTO v_id;
    RETURN v_id;
END
$$;
COMMENT ON FUNCTION guardian.snapshot_schema(text) IS
    'Store the live schema fingerprint under a label; returns the snapshot id (approve it as the baseline with guardian.approve_baseline(id)).';

-- An imported fingerprint is checked, not trusted: its checksums must be the ones this
-- server computes from its definitions, so a hand-edited or truncated file is refused.
CREATE FUNCTION guardian.import_fingerprint(p_label text, p_fingerprint jsonb, p_environment text DEFAULT NULL)
RETURNS bigint
LANGUAGE plpgsql
SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    v_label    text := guardian._check_label(p_label);
    v_bad      text;
    v_checksum text;
    v_objects  integer;
    v_id       bigint;
BEGIN
    PERFORM guardian._check_fingerprint(p_fingerprint, 'the imported value');
    SELECT o.key INTO v_bad
      FROM jsonb_each(p_fingerprint->'objects') AS o
     WHERE o.value->>'checksum' IS DISTINCT FROM md5((o.value->'definition')::text)
        OR o.key IS DISTINCT FROM (o.value->>'kind') || ' ' || (o.value->>'identity')
     LIMIT 1;
    IF FOUND THEN
        RAISE EXCEPTION 'imported fingerprint is corrupt: object % does not match its checksum', quote_literal(v_bad)
            USING ERRCODE = 'data_corrupted',
                  HINT = 'Export it again unchanged, e.g. psql -AtX -c ''SELECT guardian.schema_fingerprint()'' > prod.json';
    END IF;
    SELECT md5(coalesce(string_agg(o.key || '=' || (o.value->>'checksum'), E'\n' ORDER BY o.key COLLATE "C"), '')),
           count(*)
      INTO v_checksum, v_objects
      FROM jsonb_each(p_fingerprint->'objects') AS o;
    IF v_checksum IS DISTINCT FROM p_fingerprint->>'checksum' THEN
        RAISE EXCEPTION 'imported fingerprint is corrupt: its overall checksum does not match its objects'
            USING ERRCODE = 'data_corrupted',
                  HINT = 'Export it again unchanged, e.g. psql -AtX -c ''SELECT guardian.schema_fingerprint()'' > prod.json';
    END IF;
    IF p_environment IS NOT NULL AND lower(btrim(p_environment)) !~ '^[a-z][a-z0-9_-]{0,62}$' THEN
        RAISE EXCEPTION 'invalid environment name %', quote_literal(p_environment)
            USING ERRCODE = 'invalid_parameter_value',
                  HINT = 'Name the environment the fingerprint comes from, e.g. ''production''.';
    END IF;
    INSERT INTO guardian.schema_snapshots (label, source, environment, checksum, objects, fingerprint)
    VALUES (v_label, 'import', coalesce(lower(btrim(p_environment)), 'unknown'), v_checksum, v_objects,
            p_fingerprint)
    RETURNING id INTO v_id;
    RETURN v_id;
END
$$;
COMMENT ON FUNCTION guardian.import_fingerprint(text, jsonb, text) IS
    'Store a fingerprint exported from another database (SELECT guardian.schema_fingerprint() there) as a snapshot, after checking its checksums; returns the snapshot id. Compare with guardian.diff_schema(id) or approve it as the baseline.';

CREATE FUNCTION guardian._snapshot(p_snapshot bigint)
RETURNS guardian.schema_snapshots
LANGUAGE plpgsql STABLE
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    v_snapshot guardian.schema_snapshots;
BEGIN
    IF p_snapshot IS NULL THEN
        SELECT * INTO v_snapshot FROM guardian.schema_snapshots AS s WHERE s.baseline;
        IF NOT FOUND THEN
            RAISE EXCEPTION 'no approved schema baseline'
                USING ERRCODE = 'no_data_found',
                      HINT = 'Approve the current schema as the baseline with: SELECT guardian.approve_baseline();';
        END IF;
    ELSE
        SELECT * INTO v_snapshot FROM guardian.schema_snapshots AS s WHERE s.id = p_snapshot;
        IF NOT FOUND THEN
            RAISE EXCEPTION 'no schema snapshot with id %', p_snapshot
                USING ERRCODE = 'no_data_found',
                      HINT = 'List snapshots with: SELECT id, label, taken_at, baseline FROM guardian.schema_snapshots ORDER BY id;';
        END IF;
    END IF;
    RETURN v_snapshot;
END
$$;
COMMENT ON FUNCTION guardian._snapshot(bigint) IS
    'Internal: a snapshot by id, or the baseline for NULL, with clear errors when missing.';

CREATE FUNCTION guardian.approve_baseline(p_snapshot bigint DEFAULT NULL)
RETURNS bigint
LANGUAGE plpgsql
SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    v_id  bigint := p_snapshot;
    v_old bigint;
BEGIN
    IF v_id IS NULL THEN
        v_id := guardian.snapshot_schema('baseline ' || to_char(now() AT TIME ZONE 'UTC', 'YYYY-MM-DD HH24:MI:SS') || ' UTC');
    ELSE
        PERFORM guardian._snapshot(v_id);
    END IF;
    -- one baseline at a time, also when two admins approve at once
    LOCK TABLE guardian.schema_snapshots IN SHARE ROW EXCLUSIVE MODE;
    SELECT s.id INTO v_old FROM guardian.schema_snapshots AS s WHERE s.baseline;
    UPDATE guardian.schema_snapshots AS s SET baseline = false WHERE s.baseline AND s.id <> v_id;
    UPDATE guardian.schema_snapshots AS s
       SET baseline = true, approved_at = now(), approved_by = guardian._actor()
     WHERE s.id = v_id;
    -- the drift reported against the old baseline is accepted with the new one
    PERFORM guardian._resolve_drift_alerts(NULL, format('schema baseline %s approved by %s', v_id, guardian._actor()));
    PERFORM guardian.raise_alert(
        'SCHEMA_BASELINE_APPROVED', 'INFO',
        format('schema baseline %s approved by %s (was %s)', v_id, guardian._actor(), coalesce(v_old::text, 'none')),
        p_record_id => v_id::text,
        p_metadata => jsonb_build_object('snapshot', v_id, 'previous', v_old),
        p_fingerprint => md5('SCHEMA_BASELINE_APPROVED:' || v_id || ':' || clock_timestamp()::text));
    RETURN v_id;
END
$$;
COMMENT ON FUNCTION guardian.approve_baseline(bigint) IS
    'Make a snapshot the baseline that drift checks compare with (default: snapshot the live schema now). Resolves open ENVIRONMENT_DRIFT alerts, since their drift is now accepted, and records who approved it.';

CREATE FUNCTION guardian.diff_schema(p_snapshot bigint DEFAULT NULL, p_include_cosmetic boolean DEFAULT false)
RETURNS TABLE (kind text, identity text, parent text, change text, cosmetic boolean, detail jsonb)
LANGUAGE sql STABLE
SET search_path = pg_catalog, pg_temp
AS $$
    SELECT d.kind, d.identity, d.parent, d.change, d.cosmetic, d.detail
      FROM guardian.compare_fingerprints((guardian._snapshot(p_snapshot)).fingerprint,
                                         guardian.schema_fingerprint(), p_include_cosmetic) AS d
$$;
COMMENT ON FUNCTION guardian.diff_schema(bigint, boolean) IS
    'How the live schema differs from a snapshot (default: the approved baseline): added means only live, removed only in the snapshot.';
