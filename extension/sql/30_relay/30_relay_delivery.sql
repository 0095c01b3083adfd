-- The relay's side of the outbox. Every step is one short transaction; nothing is held open
-- while a message is on the wire. A relay registers (a session advisory lock on a random
-- token), claims messages under a lease tied to that token, and reports each as delivered or
-- failed. When a relay dies, its session and so its token go with it, and the next claim by any
-- relay takes its messages over at once: nothing is lost, and a message can be sent twice
-- only if its relay died between sending it and saying so.
CREATE FUNCTION guardian._relay_lock_space()
RETURNS integer
LANGUAGE sql IMMUTABLE
SET search_path = pg_catalog, pg_temp
AS $$
    SELECT 1735551097  -- 'grly': the first key of every relay token's advisory lock
$$;
COMMENT ON FUNCTION guardian._relay_lock_space() IS
    'Internal: the advisory lock class of relay tokens.';

CREATE FUNCTION guardian._relay_live_tokens()
RETURNS integer[]
LANGUAGE sql STABLE
SET search_path = pg_catalog, pg_temp
AS $$
    SELECT coalesce(array_agg(l.objid::bigint::integer), '{}')
      FROM pg_catalog.pg_locks AS l
     WHERE l.locktype = 'advisory' AND l.granted AND l.objsubid = 2
       AND l.classid::bigint = guardian._relay_lock_space()
       AND l.database = (SELECT d.oid FROM pg_catalog.pg_database AS d
                          WHERE d.datname = pg_catalog.current_database())
$$;
COMMENT ON FUNCTION guardian._relay_live_tokens() IS
    'Internal: tokens of the relays connected to this database now.';

CREATE FUNCTION guardian._relay_check_token(p_token integer)
RETURNS void
LANGUAGE plpgsql STABLE
SET search_path = pg_catalog, pg_temp
AS $$
BEGIN
    IF p_token IS NULL OR NOT EXISTS (
        SELECT FROM pg_catalog.pg_locks AS l
         WHERE l.locktype = 'advisory' AND l.granted AND l.objsubid = 2
           AND l.pid = pg_catalog.pg_backend_pid()
           AND l.classid::bigint = guardian._relay_lock_space()
           AND l.objid::bigint = p_token)
    THEN
        RAISE EXCEPTION 'relay token % is not held by this session', coalesce(p_token::text, 'NULL')
            USING ERRCODE = 'object_not_in_prerequisite_state',
                  HINT = 'Call SELECT guardian.relay_register(); on this connection and use the token it returns.';
    END IF;
END
$$;
COMMENT ON FUNCTION guardian._relay_check_token(integer) IS
    'Internal: refuses a relay token that this session does not hold.';

CREATE FUNCTION guardian.relay_register()
RETURNS integer
LANGUAGE plpgsql
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    v_token integer;
BEGIN
    FOR i IN 1..100 LOOP
        v_token := 1 + floor(random() * 2147483646)::integer;
        IF pg_catalog.pg_try_advisory_lock(guardian._relay_lock_space(), v_token) THEN
            RETURN v_token;
        END IF;
    END LOOP;
    RAISE EXCEPTION 'no free relay token after 100 tries'
        USING ERRCODE = 'lock_not_available',
              HINT = 'Retry; if this repeats, check pg_locks for leaked advisory locks.';
END
$$;
COMMENT ON FUNCTION guardian.relay_register() IS
    'Register a relay connection: takes a session advisory lock on a fresh token and returns it. Messages leased under the token are taken over as soon as the session ends.';

CREATE FUNCTION guardian.relay_take_intake(p_limit integer DEFAULT 1000)
RETURNS TABLE (
    alert_id       uuid,
    severity       text,
    type           text,
    environment    text,
    table_name     text,
    record_id      text,
    fingerprint    text,
    occurrences    integer,
    created_at     timestamptz,
    last_seen_at   timestamptz,
    resolved       boolean,
    failed_channel text)
LANGUAGE sql
SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $$
    -- The rows are deleted in the caller's transaction: if the caller dies before it commits
    -- the routed notices, they are back for the next relay.
    WITH taken AS (
        DELETE FROM guardian.relay_intake AS i
         WHERE i.ctid = ANY (ARRAY(
                   SELECT j.ctid FROM guardian.relay_intake AS j
                    ORDER BY j.queued_at
                    LIMIT greatest(p_limit, 1)
                      FOR UPDATE SKIP LOCKED))
        RETURNING i.alert_id
    )
    SELECT a.id, a.severity, a.type, a.environment, a.table_name, a.record_id, a.fingerprint,
           a.occurrences, a.created_at, a.last_seen_at, a.resolved_at IS NOT NULL,
           a.metadata #>> '{relay,failed_channel}'
      FROM (SELECT DISTINCT t.alert_id FROM taken AS t) AS t
      JOIN guardian.monitoring_alerts AS a ON a.id = t.alert_id
     ORDER BY a.created_at, a.id
$$;
COMMENT ON FUNCTION guardian.relay_take_intake(integer) IS
    'Relay: take up to p_limit queued alerts (SKIP LOCKED, so relays share the work) for routing. Call in a transaction that also calls guardian.relay_enqueue().';

CREATE FUNCTION guardian.relay_enqueue(
    p_alert_ids        uuid[],
    p_channels         text[],
    p_group_keys       text[],
    p_group_waits      interval[],
    p_repeat_intervals interval[])
RETURNS integer
LANGUAGE plpgsql
SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    v_count integer;
    v_n     integer := coalesce(cardinality(p_alert_ids), 0);
BEGIN
    IF v_n <> coalesce(cardinality(p_channels), 0) OR v_n <> coalesce(cardinality(p_group_keys), 0)
       OR v_n <> coalesce(cardinality(p_group_waits), 0) OR v_n <> coalesce(cardinality(p_repeat_intervals), 0) THEN
        RAISE EXCEPTION 'relay_enqueue needs arrays of equal length'
            USING ERRCODE = 'invalid_parameter_value',
                  HINT = 'Pass one element per notice in every array.';
    END IF;

    INSERT INTO guardian.relay_groups (channel, group_key)
    SELECT DISTINCT i.channel, i.group_key
      FROM unnest(p_channels, p_group_keys) AS i(channel, group_key)
     WHERE i.group_key IS NOT NULL
    ON CONFLICT DO NOTHING;

    -- A first notice is due after the group wait; a repeat of an alert already notified on
    -- this channel only a repeat interval after that notice, and only if it occurred again.
    INSERT INTO guardian.relay_outbox AS o (alert_id, channel, seq, occurrences, group_key, due_at)
    SELECT i.alert_id, i.channel, coalesce(l.seq + 1, 0), a.occurrences, i.group_key,
           CASE WHEN l.seq IS NULL THEN now() + i.group_wait
                ELSE greatest(now() + i.group_wait, coalesce(l.delivered_at, now()) + i.repeat_interval)
           END
      FROM unnest(p_alert_ids, p_channels, p_group_keys, p_group_waits, p_repeat_intervals)
               AS i(alert_id, channel, group_key, group_wait, repeat_interval)
      JOIN guardian.monitoring_alerts AS a ON a.id = i.alert_id
      LEFT JOIN LATERAL (
               SELECT x.seq, x.status, x.occurrences, x.delivered_at
                 FROM guardian.relay_outbox AS x
                WHERE x.alert_id = i.alert_id AND x.channel = i.channel
                ORDER BY x.seq DESC
                LIMIT 1) AS l ON true
     WHERE l.seq IS NULL
        OR l.status = 'pending'
        OR (a.occurrences > l.occurrences AND a.resolved_at IS NULL)
    ON CONFLICT (alert_id, channel) WHERE status = 'pending'
    DO UPDATE SET occurrences = greatest(o.occurrences, excluded.occurrences);
    GET DIAGNOSTICS v_count = ROW_COUNT;
    RETURN v_count;
END
$$;
COMMENT ON FUNCTION guardian.relay_enqueue(uuid[], text[], text[], interval[], interval[]) IS
    'Relay: queue notices (alert, channel, group key or NULL for no grouping, group wait, repeat interval) routed from guardian.relay_take_intake(); returns how many were queued or updated.';

CREATE FUNCTION guardian._relay_dead_letter(p_message_id uuid, p_error text)
RETURNS void
LANGUAGE plpgsql
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    v_msg guardian.relay_messages;
    v_ids jsonb;
BEGIN
    UPDATE guardian.relay_messages AS m
       SET status = 'dead', last_error = left(p_error, 4000), lease_token = NULL,
           lease_until = NULL, next_attempt_at = NULL
     WHERE m.id = p_message_id
    RETURNING m.* INTO v_msg;
    UPDATE guardian.relay_outbox AS o
       SET status = 'dead', note = left(p_error, 500)
     WHERE o.message_id = p_message_id AND o.status = 'queued';
    SELECT jsonb_agg(x.alert_id) INTO v_ids
      FROM (SELECT o.alert_id FROM guardian.relay_outbox AS o
             WHERE o.message_id = p_message_id ORDER BY o.created_at LIMIT 20) AS x;
    -- One open alert per failing channel: further dead letters count as occurrences of it.
    PERFORM guardian.raise_alert(
        'RELAY_DEAD_LETTER', 'HIGH',
        format('relay gave up on a %s message (%s alert%s) after %s attempts: %s',
               v_msg.channel, v_msg.alert_count, CASE WHEN v_msg.alert_count = 1 THEN '' ELSE 's' END,
               v_msg.attempts, left(p_error, 500)),
        p_metadata => jsonb_build_object(
            'relay', jsonb_build_object('failed_channel', v_msg.channel),
            'message_id', v_msg.id, 'alert_count', v_msg.alert_count,
            'alert_ids', coalesce(v_ids, '[]'::jsonb), 'error', left(p_error, 2000),
            'action_required', format('Fix the %s channel, then re-send with: pg-guardian relay retry --channel %s',
                                      v_msg.channel, v_msg.channel)),
        p_fingerprint => md5('RELAY_DEAD_LETTER:' || v_msg.channel));
END
$$;
COMMENT ON FUNCTION guardian._relay_dead_letter(uuid, text) IS
    'Internal: gives up on a message (it and its notices become dead) and raises a RELAY_DEAD_LETTER alert for the relay to send on the other channels.';

CREATE FUNCTION guardian.relay_claim(
    p_channel        text,
    p_token          integer,
    p_limit          integer,
    p_group_interval interval,
    p_lease          interval DEFAULT '2 minutes',
    p_max_attempts   integer DEFAULT 8)
RETURNS TABLE (
    message_id      uuid,
    idempotency_key text,
    group_key       text,
    alert_count     integer,
    attempts        integer)
LANGUAGE plpgsql
SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    v_live     integer[] := guardian._relay_live_tokens();
    v_limit    integer := greatest(p_limit, 1);
    v_taken    integer := 0;
    v_n        integer;
    v_group    text;
    v_mid      uuid;
    v_orphan   record;
BEGIN
    PERFORM guardian._relay_check_token(p_token);

    -- Silences: mark due notices held (or no longer held). held_since remembers that a
    -- notice was held, so that it is dropped if its alert is resolved before it goes out.
    IF EXISTS (SELECT FROM guardian.relay_silences AS s
                WHERE s.ends_at > now() AND s.starts_at <= now()
                  AND (s.channel IS NULL OR s.channel = p_channel))
       OR EXISTS (SELECT FROM guardian.relay_outbox AS o
                   WHERE o.channel = p_channel AND o.status = 'pending' AND o.held_by IS NOT NULL) THEN
        UPDATE guardian.relay_outbox AS o
           SET held_by = x.silence,
               held_since = coalesce(o.held_since, CASE WHEN x.silence IS NOT NULL THEN now() END)
          FROM (SELECT y.alert_id, y.seq,
                       guardian._relay_silence_for(a.severity, a.type, a.environment, a.table_name,
                                                   a.record_id, a.fingerprint, p_channel) AS silence
                  FROM guardian.relay_outbox AS y
                  JOIN guardian.monitoring_alerts AS a ON a.id = y.alert_id
                 WHERE y.channel = p_channel AND y.status = 'pending' AND y.due_at <= now()) AS x
         WHERE o.alert_id = x.alert_id AND o.channel = p_channel AND o.seq = x.seq
           AND o.held_by IS DISTINCT FROM x.silence;
    END IF;

    -- Repeats, and notices that were held by a silence, of alerts resolved since: drop them.
    UPDATE guardian.relay_outbox AS o
       SET status = 'dropped',
           note = CASE WHEN o.held_since IS NOT NULL THEN 'alert resolved while silenced'
                       ELSE 'alert resolved before the repeat was due' END
      FROM guardian.monitoring_alerts AS a
     WHERE o.channel = p_channel AND o.status = 'pending' AND a.id = o.alert_id
       AND a.resolved_at IS NOT NULL AND (o.seq > 0 OR o.held_since IS NOT NULL);

    -- Messages whose relay died or gave up: dead-letter those out of attempts...
    FOR v_orphan IN
        SELECT m.id FROM guardian.relay_messages AS m
         WHERE m.channel = p_channel AND m.status = 'sending'
           AND (m.lease_until <= now() OR NOT m.lease_token = ANY (v_live))
           AND m.attempts >= p_max_attempts
           FOR UPDATE SKIP LOCKED
    LOOP
        PERFORM guardian._relay_dead_letter(v_orphan.id,
            'the relay sending it stopped before it reported the outcome (' || p_max_attempts || ' attempts)');
    END LOOP;

    -- ...and take over the rest, with retries that are due.
    RETURN QUERY
    WITH picked AS (
        SELECT m.id, m.status
          FROM guardian.relay_messages AS m
         WHERE m.channel = p_channel
           AND ((m.status = 'retry' AND m.next_attempt_at <= now())
                OR (m.status = 'sending' AND (m.lease_until <= now() OR NOT m.lease_token = ANY (v_live))))
         ORDER BY m.created_at
         LIMIT v_limit
           FOR UPDATE SKIP LOCKED)
    UPDATE guardian.relay_messages AS m
       SET status = 'sending', attempts = m.attempts + 1, last_attempt_at = now(),
           lease_token = p_token, lease_until = now() + p_lease, next_attempt_at = NULL,
           last_error = CASE WHEN p.status = 'sending'
                             THEN 'the relay sending it stopped before it reported the outcome'
                             ELSE m.last_error END
      FROM picked AS p
     WHERE m.id = p.id
    RETURNING m.id, m.idempotency_key, m.group_key, m.alert_count, m.attempts;
    GET DIAGNOSTICS v_n = ROW_COUNT;
    v_taken := v_taken + v_n;

    -- New messages from notices without grouping: one message each.
    IF v_taken < v_limit THEN
        RETURN QUERY
        WITH picked AS (
            SELECT o.alert_id, o.seq, gen_random_uuid() AS mid,
                   o.alert_id::text || ':' || o.channel || ':' || o.seq AS ikey
              FROM guardian.relay_outbox AS o
             WHERE o.channel = p_channel AND o.group_key IS NULL AND o.status = 'pending'
               AND o.due_at <= now() AND o.held_by IS NULL
             ORDER BY o.due_at
             LIMIT v_limit - v_taken
               FOR UPDATE SKIP LOCKED),
        queued AS (
            UPDATE guardian.relay_outbox AS o
               SET status = 'queued', message_id = p.mid
              FROM picked AS p
             WHERE o.alert_id = p.alert_id AND o.channel = p_channel AND o.seq = p.seq)
        INSERT INTO guardian.relay_messages AS m
            (id, channel, idempotency_key, alert_count, status, attempts, last_attempt_at,
             lease_token, lease_until)
        SELECT p.mid, p_channel, p.ikey, 1, 'sending', 1, now(), p_token, now() + p_lease
          FROM picked AS p
        RETURNING m.id, m.idempotency_key, m.group_key, m.alert_count, m.attempts;
        GET DIAGNOSTICS v_n = ROW_COUNT;
        v_taken := v_taken + v_n;
    END IF;

    -- New messages from groups whose hold has passed: one message for all their due notices.
    IF v_taken < v_limit THEN
        FOR v_group IN
            SELECT g.group_key
              FROM guardian.relay_groups AS g
             WHERE g.channel = p_channel AND g.hold_until <= now()
               AND EXISTS (SELECT FROM guardian.relay_outbox AS o
                            WHERE o.channel = g.channel AND o.group_key = g.group_key
                              AND o.status = 'pending' AND o.due_at <= now() AND o.held_by IS NULL)
             ORDER BY g.hold_until
             LIMIT v_limit - v_taken
               FOR UPDATE OF g SKIP LOCKED
        LOOP
            v_mid := gen_random_uuid();
            INSERT INTO guardian.relay_messages AS m
                (id, channel, group_key, idempotency_key, status, attempts, last_attempt_at,
                 lease_token, lease_until)
            VALUES (v_mid, p_channel, v_group, 'group:' || v_mid::text, 'sending', 1, now(),
                    p_token, now() + p_lease);
            UPDATE guardian.relay_outbox AS o
               SET status = 'queued', message_id = v_mid
             WHERE o.channel = p_channel AND o.group_key = v_group AND o.status = 'pending'
               AND o.due_at <= now() AND o.held_by IS NULL;
            GET DIAGNOSTICS v_n = ROW_COUNT;
            UPDATE guardian.relay_groups AS g
               SET hold_until = now() + p_group_interval, last_message_at = now(),
                   messages = g.messages + 1
             WHERE g.channel = p_channel AND g.group_key = v_group;
            -- A group of one is keyed like an ungrouped notice: the key belongs to the alert.
            RETURN QUERY
            UPDATE guardian.relay_messages AS m
               SET alert_count = v_n,
                   idempotency_key = CASE WHEN v_n = 1
                       THEN (SELECT o.alert_id::text || ':' || o.channel || ':' || o.seq
                               FROM guardian.relay_outbox AS o WHERE o.message_id = v_mid)
                       ELSE m.idempotency_key END
             WHERE m.id = v_mid
            RETURNING m.id, m.idempotency_key, m.group_key, m.alert_count, m.attempts;
        END LOOP;
    END IF;
END
$$;
COMMENT ON FUNCTION guardian.relay_claim(text, integer, integer, interval, interval, integer) IS
    'Relay: lease up to p_limit messages of a channel to send now: retries that are due, messages of relays that died, then new messages (one per ungrouped notice, one per group whose hold has passed). Applies silences and drops stale repeats first.';

CREATE FUNCTION guardian.relay_message_alerts(p_message_ids uuid[], p_sample integer DEFAULT 10)
RETURNS TABLE (
    message_id        uuid,
    alert_id          uuid,
    seq               integer,
    idempotency_key   text,
    severity          text,
    type              text,
    message           text,
    message_length    integer,
    table_name        text,
    record_id         text,
    environment       text,
    metadata          jsonb,
    fingerprint       text,
    occurrences       integer,
    created_at        timestamptz,
    last_seen_at      timestamptz,
    resolved_at       timestamptz,
    group_alerts      bigint,
    group_occurrences bigint,
    group_first_at    timestamptz,
    group_last_at     timestamptz)
LANGUAGE sql STABLE
SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $$
    -- The first p_sample alerts of each message (most severe first), with totals over all of
    -- them; messages are cut to 16 kB here, the channels cut further.
    SELECT x.message_id, x.alert_id, x.seq, x.ikey, x.severity, x.type, x.message, x.message_length,
           x.table_name, x.record_id, x.environment, x.metadata, x.fingerprint, x.occurrences,
           x.created_at, x.last_seen_at, x.resolved_at, x.n, x.occ, x.first_at, x.last_at
      FROM (SELECT o.message_id, a.id AS alert_id, o.seq,
                   a.id::text || ':' || o.channel || ':' || o.seq AS ikey,
                   a.severity, a.type, left(a.message, 16384) AS message,
                   length(a.message) AS message_length, a.table_name, a.record_id, a.environment,
                   CASE WHEN pg_column_size(a.metadata) <= 65536 THEN a.metadata
                        ELSE jsonb_build_object('truncated', true) END AS metadata,
                   a.fingerprint, o.occurrences, a.created_at, a.last_seen_at, a.resolved_at,
                   count(*) OVER w AS n, sum(o.occurrences) OVER w AS occ,
                   min(a.created_at) OVER w AS first_at, max(a.last_seen_at) OVER w AS last_at,
                   row_number() OVER (PARTITION BY o.message_id
                                      ORDER BY array_position(ARRAY['CRITICAL','HIGH','MEDIUM','LOW','INFO'], a.severity),
                                               a.created_at, a.id) AS rn
              FROM guardian.relay_outbox AS o
              JOIN guardian.monitoring_alerts AS a ON a.id = o.alert_id
             WHERE o.message_id = ANY (p_message_ids)
            WINDOW w AS (PARTITION BY o.message_id)) AS x
     WHERE x.rn <= greatest(p_sample, 1)
     ORDER BY x.message_id, x.rn
$$;
COMMENT ON FUNCTION guardian.relay_message_alerts(uuid[], integer) IS
    'Relay: what to say in each message: its first p_sample alerts (most severe first; messages cut to 16 kB) and totals over all its alerts.';

CREATE FUNCTION guardian.relay_delivered(p_message_ids uuid[])
RETURNS integer
LANGUAGE plpgsql
SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    v_count integer;
BEGIN
    -- Delivered wins over everything, even a lease another relay took over meanwhile.
    UPDATE guardian.relay_messages AS m
       SET status = 'delivered', delivered_at = now(), lease_token = NULL, lease_until = NULL,
           next_attempt_at = NULL
     WHERE m.id = ANY (p_message_ids) AND m.status <> 'delivered';
    GET DIAGNOSTICS v_count = ROW_COUNT;
    UPDATE guardian.relay_outbox AS o
       SET status = 'delivered', delivered_at = now()
     WHERE o.message_id = ANY (p_message_ids) AND o.status IN ('queued', 'dead');
    RETURN v_count;
END
$$;
COMMENT ON FUNCTION guardian.relay_delivered(uuid[]) IS
    'Relay: these messages reached their channel (their notices become delivered).';

CREATE FUNCTION guardian.relay_failed(
    p_message_id   uuid,
    p_token        integer,
    p_error        text,
    p_retry_in     interval,
    p_max_attempts integer DEFAULT 8)
RETURNS text
LANGUAGE plpgsql
SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    v_msg guardian.relay_messages;
BEGIN
    SELECT * INTO v_msg FROM guardian.relay_messages AS m WHERE m.id = p_message_id FOR UPDATE;
    IF NOT FOUND OR v_msg.status <> 'sending' OR v_msg.lease_token IS DISTINCT FROM p_token THEN
        RETURN 'ignored';
    END IF;
    IF v_msg.attempts >= p_max_attempts THEN
        PERFORM guardian._relay_dead_letter(p_message_id, coalesce(p_error, 'unknown error'));
        RETURN 'dead';
    END IF;
    UPDATE guardian.relay_messages AS m
       SET status = 'retry', last_error = left(coalesce(p_error, 'unknown error'), 4000),
           next_attempt_at = now() + greatest(coalesce(p_retry_in, '0'::interval), '0'::interval),
           lease_token = NULL, lease_until = NULL
     WHERE m.id = p_message_id;
    RETURN 'retry';
END
$$;
COMMENT ON FUNCTION guardian.relay_failed(uuid, integer, text, interval, integer) IS
    'Relay: a send failed; retry after p_retry_in, or dead-letter the message once it has had p_max_attempts attempts. Returns retry, dead or ignored (not leased by this token).';

CREATE FUNCTION guardian.relay_next_due(p_channel text)
RETURNS timestamptz
LANGUAGE sql STABLE
SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $$
    SELECT least(
        (SELECT min(greatest(o.due_at, coalesce(g.hold_until, '-infinity')))
           FROM guardian.relay_outbox AS o
           LEFT JOIN guardian.relay_groups AS g
                  ON g.channel = o.channel AND g.group_key = o.group_key
          WHERE o.channel = p_channel AND o.status = 'pending' AND o.held_by IS NULL),
        (SELECT min(m.next_attempt_at) FROM guardian.relay_messages AS m
          WHERE m.channel = p_channel AND m.status = 'retry'),
        (SELECT min(m.lease_until) FROM guardian.relay_messages AS m
          WHERE m.channel = p_channel AND m.status = 'sending'),
        (SELECT min(s.ends_at) FROM guardian.relay_silences AS s
          WHERE s.ends_at > now()
            AND s.id IN (SELECT o.held_by FROM guardian.relay_outbox AS o
                          WHERE o.channel = p_channel AND o.status = 'pending')))
$$;
COMMENT ON FUNCTION guardian.relay_next_due(text) IS
    'Relay: when the channel next has something to do (a notice or group due, a retry, a lease or a silence ending); NULL when idle.';

CREATE FUNCTION guardian.relay_retry(p_channel text DEFAULT NULL)
RETURNS integer
LANGUAGE plpgsql
SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    v_count integer;
BEGIN
    WITH revived AS (
        UPDATE guardian.relay_messages AS m
           SET status = 'retry', attempts = 0, next_attempt_at = now()
         WHERE m.status = 'dead' AND (p_channel IS NULL OR m.channel = p_channel)
        RETURNING m.id)
    UPDATE guardian.relay_outbox AS o
       SET status = 'queued', note = NULL
      FROM revived AS r
     WHERE o.message_id = r.id AND o.status = 'dead';
    SELECT count(*) INTO v_count FROM guardian.relay_messages AS m
     WHERE m.status = 'retry' AND m.attempts = 0 AND (p_channel IS NULL OR m.channel = p_channel);
    RETURN v_count;
END
$$;
COMMENT ON FUNCTION guardian.relay_retry(text) IS
    'Re-send dead-lettered messages (of one channel, or all) from scratch, e.g. after fixing a webhook URL or SMTP password; returns how many.';

CREATE FUNCTION guardian.relay_prune(p_keep interval DEFAULT '30 days')
RETURNS integer
LANGUAGE plpgsql
SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    v_count integer;
BEGIN
    -- Notices of resolved alerts are history; those of open alerts decide repeats, so stay.
    DELETE FROM guardian.relay_outbox AS o
     USING guardian.monitoring_alerts AS a
     WHERE a.id = o.alert_id AND a.resolved_at < now() - p_keep
       AND o.status IN ('delivered', 'dropped', 'dead');
    GET DIAGNOSTICS v_count = ROW_COUNT;
    DELETE FROM guardian.relay_messages AS m
     WHERE m.status IN ('delivered', 'dead') AND m.created_at < now() - p_keep
       AND NOT EXISTS (SELECT FROM guardian.relay_outbox AS o WHERE o.message_id = m.id);
    DELETE FROM guardian.relay_groups AS g
     WHERE g.hold_until < now() - p_keep
       AND NOT EXISTS (SELECT FROM guardian.relay_outbox AS o
                        WHERE o.channel = g.channel AND o.group_key = g.group_key
                          AND o.status = 'pending');
    DELETE FROM guardian.relay_silences AS s WHERE s.ends_at < now() - p_keep;
    RETURN v_count;
END
$$;
COMMENT ON FUNCTION guardian.relay_prune(interval) IS
    'Delete relay history older than p_keep: notices of alerts resolved before then, finished messages, idle groups, ended silences. Runs daily as the relay_prune job.';
