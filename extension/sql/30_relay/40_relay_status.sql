-- What `pg-guardian relay status` shows: per channel, the queue and how delivery is going.
CREATE VIEW guardian.relay_status AS
WITH notices AS (
    SELECT o.channel,
           count(*) FILTER (WHERE o.status = 'pending') AS pending,
           count(*) FILTER (WHERE o.status = 'pending' AND o.held_by IS NOT NULL) AS silenced,
           count(*) FILTER (WHERE o.status = 'queued') AS in_messages,
           count(*) FILTER (WHERE o.status = 'dead') AS dead_notices,
           count(*) FILTER (WHERE o.status = 'delivered'
                              AND o.delivered_at > pg_catalog.now() - '1 hour'::interval) AS delivered_last_hour,
           min(o.created_at) FILTER (WHERE o.status IN ('pending', 'queued')
                                       AND o.held_by IS NULL) AS oldest_undelivered_at
      FROM guardian.relay_outbox AS o
     GROUP BY o.channel),
messages AS (
    SELECT m.channel,
           count(*) FILTER (WHERE m.status = 'sending') AS sending,
           count(*) FILTER (WHERE m.status = 'retry') AS retrying,
           count(*) FILTER (WHERE m.status = 'dead') AS dead_messages,
           count(*) FILTER (WHERE m.status = 'delivered' AND m.attempts > 1
                              AND m.delivered_at > pg_catalog.now() - '1 day'::interval) AS recovered_last_day,
           max(m.delivered_at) AS last_delivered_at,
           (array_agg(m.last_error ORDER BY m.last_attempt_at DESC)
               FILTER (WHERE m.status IN ('retry', 'dead') AND m.last_error IS NOT NULL))[1] AS last_error
      FROM guardian.relay_messages AS m
     GROUP BY m.channel)
SELECT coalesce(n.channel, m.channel) AS channel,
       coalesce(n.pending, 0) AS pending,
       coalesce(n.silenced, 0) AS silenced,
       coalesce(n.in_messages, 0) AS in_messages,
       coalesce(m.sending, 0) AS sending,
       coalesce(m.retrying, 0) AS retrying,
       coalesce(m.dead_messages, 0) AS dead_messages,
       coalesce(n.dead_notices, 0) AS dead_notices,
       coalesce(n.delivered_last_hour, 0) AS delivered_last_hour,
       coalesce(m.recovered_last_day, 0) AS recovered_last_day,
       n.oldest_undelivered_at,
       pg_catalog.now() - n.oldest_undelivered_at AS oldest_undelivered_age,
       m.last_delivered_at,
       m.last_error
  FROM notices AS n
  FULL JOIN messages AS m ON m.channel = n.channel
 ORDER BY 1;
COMMENT ON VIEW guardian.relay_status IS
    'Relay queue per channel: pending (and silenced) notices, messages sending, retrying and dead-lettered, deliveries in the last hour, oldest undelivered notice and the last error.';

CREATE FUNCTION guardian.relay_overview()
RETURNS TABLE (intake_backlog bigint, relay_connections integer, oldest_intake_at timestamptz)
LANGUAGE sql STABLE
SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $$
    SELECT (SELECT count(*) FROM guardian.relay_intake),
           cardinality(guardian._relay_live_tokens()),
           (SELECT min(i.queued_at) FROM guardian.relay_intake AS i)
$$;
COMMENT ON FUNCTION guardian.relay_overview() IS
    'Alerts waiting to be routed, relay connections alive now (a relay has one per channel plus one), and how long the oldest unrouted alert has waited.';

-- Relay history would grow for ever; prune it daily (pg_cron or `pg-guardian jobs serve`).
INSERT INTO guardian.jobs (name, schedule, command, description, max_lag, builtin)
VALUES ('relay_prune', '23 3 * * *', 'SELECT guardian.relay_prune()',
        'Delete relay history (notices, messages, groups, silences) older than 30 days.',
        '2 days', true);
