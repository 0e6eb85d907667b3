#!/bin/sh
# Compose's TimescaleDB container runs this once, on an empty data volume (docker-entrypoint-initdb.d),
# as the superuser: the AgriTrace roles and database from deploy/postgres/roles.sql, and the Grafana
# reader. The superuser's password stays with this container; no application service has it.
set -eu
psql -v ON_ERROR_STOP=1 -X -q --username "$POSTGRES_USER" --dbname postgres \
  -v ownerpw="$AGRITRACE_DB_OWNER_PASSWORD" -v apppw="$AGRITRACE_DB_PASSWORD" \
  -v grafanauser="${AGRITRACE_GRAFANA_DB_USER:-agritrace_grafana_reader}" \
  -v grafanapw="$AGRITRACE_GRAFANA_DB_PASSWORD" \
  -f /agritrace/roles.sql
