-- depends: 0002.b.audit-drift-schema-changes 0004.b.coldchain-reserved-gateway
-- Audit trail on the cold-chain tables that record decisions: an alert's lifecycle (acknowledged,
-- resolved, by whom), product profiles and their excursion rules, what each channel is watched
-- against, and webhooks.
--
-- Left out of the record: an alert's worst value and minutes out of band, which the evaluator
-- rewrites with every reading of a live excursion (an update touching only them writes nothing), and
-- its updated_at, which moves with them; a webhook's signing secret.
-- Not attached: alert_events (append-only by its own trigger, and already each alert's history),
-- the evaluator's and notifier's bookkeeping (coldchain_eval_state, coldchain_outbox_cursor,
-- coldchain_webhook_deliveries).
DO $$ BEGIN
    PERFORM audit_attach('alerts', ARRAY['worst_value', 'minutes_out', 'updated_at']);
    PERFORM audit_attach('coldchain_profiles');
    PERFORM audit_attach('coldchain_rules');
    PERFORM audit_attach('coldchain_channel_profiles');
    PERFORM audit_attach('coldchain_webhooks', ARRAY['secret']);
END $$;
