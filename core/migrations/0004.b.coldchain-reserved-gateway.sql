-- depends: 0004.coldchain
-- Alerts are published on agritrace/v1/alerts/{gateway_id}/..., inside the agritrace/v1/{gateway_id}/
-- namespace a gateway may publish to; a gateway named "alerts" could forge them. Reserve the name.
ALTER TABLE gateways ADD CONSTRAINT gateways_id_not_reserved CHECK (id <> 'alerts');
