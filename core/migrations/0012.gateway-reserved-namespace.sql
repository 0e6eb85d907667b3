-- depends: 0004.b.coldchain-reserved-gateway
-- The platform's broker accounts (ingest workers, alert publisher, admin) are named agritrace-…;
-- a gateway id is also its broker username and client id, so no gateway may take such a name
-- (a cooperative creating gateway "agritrace-ingest" used to get that account's new password).
ALTER TABLE gateways ADD CONSTRAINT gateways_id_not_service_account CHECK (id !~* '^agritrace');
