-- The cluster's AgriTrace roles, run by a superuser:
--   psql -v ownerpw=... -v apppw=... [-v rolespw=...] [-v grafanauser=... -v grafanapw=...] -f roles.sql
-- deploy/local/stack.sh, deploy/postgres/initdb.sh (compose) and the fault-injection stack use it.
-- Least privilege (docs/security.md):
--   agritrace         owns the database and every object in it; runs migrations; may create scratch
--                     databases (tests, benchmarks); cannot create roles.
--   agritrace_app     the API's, workers' and CLI's login: reads and writes rows, owns nothing.
--   agritrace_grafana the group the Grafana reader joins (SELECT on reporting views only).
--   agritrace_roles   (only with rolespw) may create roles, for `agritrace dashboards reader`; a
--                     CREATEROLE login can make itself a superuser in all but name, so production
--                     creates the Grafana reader here instead (grafanapw) and has no such login.
-- Idempotent: re-running it sets the passwords and attributes again.
SELECT 'CREATE ROLE agritrace LOGIN' WHERE NOT EXISTS (SELECT FROM pg_roles WHERE rolname = 'agritrace') \gexec
SELECT format('ALTER ROLE agritrace LOGIN CREATEDB NOCREATEROLE NOSUPERUSER PASSWORD %L', :'ownerpw') \gexec
SELECT 'CREATE ROLE agritrace_app LOGIN' WHERE NOT EXISTS (SELECT FROM pg_roles WHERE rolname = 'agritrace_app') \gexec
SELECT format('ALTER ROLE agritrace_app LOGIN NOCREATEDB NOCREATEROLE NOSUPERUSER PASSWORD %L', :'apppw') \gexec
SELECT 'CREATE ROLE agritrace_grafana NOLOGIN' WHERE NOT EXISTS (SELECT FROM pg_roles WHERE rolname = 'agritrace_grafana') \gexec
\if :{?rolespw}
SELECT 'CREATE ROLE agritrace_roles LOGIN' WHERE NOT EXISTS (SELECT FROM pg_roles WHERE rolname = 'agritrace_roles') \gexec
SELECT format('ALTER ROLE agritrace_roles LOGIN NOCREATEDB CREATEROLE NOSUPERUSER PASSWORD %L', :'rolespw') \gexec
\endif
\if :{?grafanapw}
-- The same role `agritrace dashboards reader` makes (dashboards/service.py): reporting views only.
SELECT format('CREATE ROLE %I LOGIN', :'grafanauser')
 WHERE NOT EXISTS (SELECT FROM pg_roles WHERE rolname = :'grafanauser') \gexec
SELECT format('ALTER ROLE %I LOGIN INHERIT NOCREATEDB NOCREATEROLE NOSUPERUSER PASSWORD %L', :'grafanauser', :'grafanapw') \gexec
SELECT format('GRANT agritrace_grafana TO %I', :'grafanauser') \gexec
SELECT format('ALTER ROLE %I SET default_transaction_read_only = on', :'grafanauser') \gexec
SELECT format('ALTER ROLE %I SET statement_timeout = %L', :'grafanauser', '30s') \gexec
\endif
SELECT 'CREATE DATABASE agritrace OWNER agritrace'
 WHERE NOT EXISTS (SELECT FROM pg_database WHERE datname = 'agritrace') \gexec
-- TimescaleDB is created by the superuser in template1 (so scratch databases made from it have it)
-- and in the application's database.
\connect template1
CREATE EXTENSION IF NOT EXISTS timescaledb;
\connect agritrace
CREATE EXTENSION IF NOT EXISTS timescaledb;
