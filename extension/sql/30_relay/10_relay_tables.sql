-- The relay's state. An alert reaches people in three steps, each a row in the database, so
-- that a relay killed at any moment loses nothing:
--   relay_intake   alerts created (or repeated) since the relay last looked; filled by triggers
--                  on monitoring_alerts, so the alert path never waits for the relay;
--   relay_outbox   one notice per alert, channel and repeat (seq), routed by the relay;
--   relay_messages what was actually sent: one message carries one notice or a whole group,
--                  with attempts, backoff, lease and dead-letter state.
CREATE TABLE guardian.relay_intake (
    alert_id    uuid NOT NULL,
    occurrences integer NOT NULL,
    queued_at   timestamptz NOT NULL DEFAULT pg_catalog.clock_timestamp()
);
COMMENT ON TABLE guardian.relay_intake IS
    'Alerts the relay has not routed yet (new ones and new occurrences of open ones); emptied by guardian.relay_take_intake().';
SELECT pg_catalog.pg_extension_config_dump('guardian.relay_intake', '');

CREATE TABLE guardian.relay_messages (
    id              uuid NOT NULL DEFAULT gen_random_uuid(),
    channel         text NOT NULL,
    group_key       text,
    idempotency_key text NOT NULL,
    alert_count     integer NOT NULL DEFAULT 0,
    status          text NOT NULL DEFAULT 'sending',
    attempts        integer NOT NULL DEFAULT 0,
    last_error      text,
    last_attempt_at timestamptz,
    next_attempt_at timestamptz,
    lease_token     integer,
    lease_until     timestamptz,
    created_at      timestamptz NOT NULL DEFAULT pg_catalog.now(),
    delivered_at    timestamptz,
    CONSTRAINT relay_messages_pkey PRIMARY KEY (id),
    CONSTRAINT relay_messages_idempotency_key_key UNIQUE (idempotency_key),
    CONSTRAINT relay_messages_status_chk CHECK (status IN ('sending', 'retry', 'delivered', 'dead')),
    CONSTRAINT relay_messages_attempts_chk CHECK (attempts >= 0),
    CONSTRAINT relay_messages_lease_chk CHECK (status <> 'sending' OR lease_until IS NOT NULL),
    CONSTRAINT relay_messages_retry_chk CHECK (status <> 'retry' OR next_attempt_at IS NOT NULL)
);
COMMENT ON TABLE guardian.relay_messages IS
    'Messages the relay sends (one alert, or a group of alerts with a count) with their delivery state: attempts, last error, next retry, lease of the relay sending it, delivered or dead-lettered.';
COMMENT ON COLUMN guardian.relay_messages.idempotency_key IS
    'Stable across retries; sent as the Idempotency-Key header (webhook, Slack) and Message-ID (email) so receivers can drop duplicates.';
COMMENT ON COLUMN guardian.relay_messages.lease_token IS
    'guardian.relay_register() token of the relay sending it; the lease ends when that relay''s session does.';
SELECT pg_catalog.pg_extension_config_dump('guardian.relay_messages', '');

CREATE INDEX relay_messages_open_idx
    ON guardian.relay_messages (channel, next_attempt_at) WHERE status IN ('sending', 'retry');

CREATE TABLE guardian.relay_outbox (
    alert_id     uuid NOT NULL,
    channel      text NOT NULL,
    seq          integer NOT NULL,
    occurrences  integer NOT NULL,
    group_key    text,
    status       text NOT NULL DEFAULT 'pending',
    due_at       timestamptz NOT NULL,
    held_by      uuid,
    held_since   timestamptz,
    message_id   uuid,
    note         text,
    created_at   timestamptz NOT NULL DEFAULT pg_catalog.now(),
    delivered_at timestamptz,
    CONSTRAINT relay_outbox_pkey PRIMARY KEY (alert_id, channel, seq),
    CONSTRAINT relay_outbox_alert_id_fkey FOREIGN KEY (alert_id)
        REFERENCES guardian.monitoring_alerts (id) ON DELETE CASCADE,
    CONSTRAINT relay_outbox_message_id_fkey FOREIGN KEY (message_id)
        REFERENCES guardian.relay_messages (id) ON DELETE SET NULL,
    CONSTRAINT relay_outbox_channel_chk CHECK (channel ~ '^[a-z][a-z0-9_-]{0,39}$'),
    CONSTRAINT relay_outbox_seq_chk CHECK (seq >= 0),
    CONSTRAINT relay_outbox_status_chk
        CHECK (status IN ('pending', 'queued', 'delivered', 'dead', 'dropped')),
    CONSTRAINT relay_outbox_message_chk CHECK (status IN ('pending', 'dropped') OR message_id IS NOT NULL)
);
COMMENT ON TABLE guardian.relay_outbox IS
    'Per-alert, per-channel delivery state: one notice per alert, channel and repeat (seq 0 is the first notice). pending -> queued (in a message) -> delivered, dead or dropped (a repeat, or a silenced notice, of an alert resolved before it was due).';
COMMENT ON COLUMN guardian.relay_outbox.held_by IS 'The silence holding this notice back, if any.';
SELECT pg_catalog.pg_extension_config_dump('guardian.relay_outbox', '');

-- At most one pending notice per alert and channel: new occurrences update its count.
CREATE UNIQUE INDEX relay_outbox_pending_idx
    ON guardian.relay_outbox (alert_id, channel) WHERE status = 'pending';
CREATE INDEX relay_outbox_due_idx
    ON guardian.relay_outbox (channel, group_key, due_at) WHERE status = 'pending';
CREATE INDEX relay_outbox_message_idx ON guardian.relay_outbox (message_id);

-- Alertmanager's group_interval: after a group's message, further alerts of that group wait
-- until hold_until and then go out together as one message.
CREATE TABLE guardian.relay_groups (
    channel         text NOT NULL,
    group_key       text NOT NULL,
    hold_until      timestamptz NOT NULL DEFAULT '-infinity',
    last_message_at timestamptz,
    messages        bigint NOT NULL DEFAULT 0,
    CONSTRAINT relay_groups_pkey PRIMARY KEY (channel, group_key)
);
COMMENT ON TABLE guardian.relay_groups IS
    'Alert groups per channel: when the group''s last message went out and until when further alerts of it are held to be sent together.';
SELECT pg_catalog.pg_extension_config_dump('guardian.relay_groups', '');

CREATE INDEX relay_groups_hold_idx ON guardian.relay_groups (channel, hold_until);

CREATE TABLE guardian.relay_silences (
    id         uuid NOT NULL DEFAULT gen_random_uuid(),
    matchers   jsonb NOT NULL,
    channel    text,
    starts_at  timestamptz NOT NULL DEFAULT pg_catalog.now(),
    ends_at    timestamptz NOT NULL,
    comment    text NOT NULL,
    created_by text NOT NULL DEFAULT SESSION_USER,
    created_at timestamptz NOT NULL DEFAULT pg_catalog.now(),
    expired_by text,
    CONSTRAINT relay_silences_pkey PRIMARY KEY (id),
    CONSTRAINT relay_silences_window_chk CHECK (ends_at > starts_at),
    CONSTRAINT relay_silences_matchers_chk
        CHECK (jsonb_typeof(matchers) = 'array' AND jsonb_array_length(matchers) > 0),
    CONSTRAINT relay_silences_channel_chk CHECK (channel ~ '^[a-z][a-z0-9_-]{0,39}$'),
    CONSTRAINT relay_silences_comment_chk CHECK (btrim(comment) <> '')
);
COMMENT ON TABLE guardian.relay_silences IS
    'Silences: while active, notices of alerts matching every matcher are held back (not lost); create with guardian.create_silence(), end with guardian.expire_silence().';
SELECT pg_catalog.pg_extension_config_dump('guardian.relay_silences', '');

-- Intake triggers. SECURITY DEFINER: whoever may write an alert (the design's own trigger
-- inserts as the application role) may queue it for the relay, and nothing else.
CREATE FUNCTION guardian._relay_intake_inserted()
RETURNS trigger
LANGUAGE plpgsql
SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $$
BEGIN
    INSERT INTO guardian.relay_intake (alert_id, occurrences)
    SELECT n.id, n.occurrences FROM new_alerts AS n;
    RETURN NULL;
END
$$;
COMMENT ON FUNCTION guardian._relay_intake_inserted() IS
    'Internal: queues new alerts for the relay (statement trigger, one INSERT per statement).';

CREATE FUNCTION guardian._relay_intake_updated()
RETURNS trigger
LANGUAGE plpgsql
SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    v_count integer;
BEGIN
    INSERT INTO guardian.relay_intake (alert_id, occurrences)
    SELECT n.id, n.occurrences
      FROM new_alerts AS n
      JOIN old_alerts AS o ON o.id = n.id
     WHERE n.occurrences > o.occurrences;
    GET DIAGNOSTICS v_count = ROW_COUNT;
    -- A repeat of an open alert is alert activity too; acknowledgements and the like are not.
    IF v_count > 0 THEN
        PERFORM pg_catalog.pg_notify('guardian_alerts', '');
    END IF;
    RETURN NULL;
END
$$;
COMMENT ON FUNCTION guardian._relay_intake_updated() IS
    'Internal: queues new occurrences of open alerts for the relay (repeat notices).';

CREATE TRIGGER monitoring_alerts_relay_insert
    AFTER INSERT ON guardian.monitoring_alerts
    REFERENCING NEW TABLE AS new_alerts
    FOR EACH STATEMENT EXECUTE FUNCTION guardian._relay_intake_inserted();

CREATE TRIGGER monitoring_alerts_relay_update
    AFTER UPDATE ON guardian.monitoring_alerts
    REFERENCING OLD TABLE AS old_alerts NEW TABLE AS new_alerts
    FOR EACH STATEMENT EXECUTE FUNCTION guardian._relay_intake_updated();
