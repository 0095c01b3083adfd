-- The relay role runs the relay and nothing else: it moves rows through the outbox only with
-- these functions, and reads its own status and silences.
GRANT EXECUTE ON FUNCTION guardian.relay_register(), guardian.relay_take_intake(integer),
    guardian.relay_enqueue(uuid[], text[], text[], interval[], interval[]),
    guardian.relay_claim(text, integer, integer, interval, interval, integer),
    guardian.relay_message_alerts(uuid[], integer), guardian.relay_delivered(uuid[]),
    guardian.relay_failed(uuid, integer, text, interval, integer), guardian.relay_next_due(text),
    guardian.relay_overview(), guardian._relay_lock_space(), guardian._relay_live_tokens(),
    guardian._relay_check_token(integer)
    TO guardian_relay;
GRANT SELECT ON guardian.relay_status, guardian.active_silences TO guardian_relay;

GRANT SELECT ON guardian.relay_status, guardian.active_silences, guardian.relay_silences,
    guardian.relay_outbox, guardian.relay_messages
    TO guardian_reader;
GRANT EXECUTE ON FUNCTION guardian.relay_overview(), guardian._relay_lock_space(),
    guardian._relay_live_tokens()
    TO guardian_reader;

GRANT EXECUTE ON FUNCTION guardian.create_silence(text[], interval, text, text, timestamptz),
    guardian.expire_silence(uuid), guardian.relay_retry(text), guardian.relay_prune(interval)
    TO guardian_admin;
