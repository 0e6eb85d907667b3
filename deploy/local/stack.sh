#!/usr/bin/env bash
# Starts and stops the project's own PostgreSQL (with TimescaleDB) and Mosquitto instances,
# on their own ports and data directories, next to whatever the system already runs.
#   stack.sh start | stop | status | env
# State lives in $AGRITRACE_STATE_DIR (default: .local/ in the repository).
set -euo pipefail

repo="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
STATE="${AGRITRACE_STATE_DIR:-$repo/.local}"
PG_MAJOR="${PG_MAJOR:-15}"
PG_BIN="/usr/lib/postgresql/${PG_MAJOR}/bin"
PG_PORT="${AGRITRACE_PG_PORT:-55432}"
MQTT_PORT="${AGRITRACE_MQTT_PORT:-18830}"
MQTT_BIND="${AGRITRACE_MQTT_BIND:-127.0.0.1}"
# The TLS listener is the gateways' way in, so it listens on every interface (port: the plaintext
# one + 1 unless set, 18831 by default).
MQTT_TLS_PORT="${AGRITRACE_MQTT_TLS_PORT:-$((MQTT_PORT + 1))}"
MQTT_TLS_BIND="${AGRITRACE_MQTT_TLS_BIND:-0.0.0.0}"
# Built by deploy/local/install.sh from deploy/mosquitto/retain_guard.c.
RETAIN_PLUGIN="${AGRITRACE_MQTT_RETAIN_PLUGIN:-/usr/local/lib/agritrace/mosquitto_retain_guard.so}"
ENV_FILE="$STATE/agritrace.env"
# shellcheck source=deploy/local/lib.sh
. "$repo/deploy/local/lib.sh"
DYNSEC_PLUGIN="$(ls /usr/lib/*/mosquitto_dynamic_security.so 2>/dev/null | head -n1 || true)"

log() { echo "stack: $*"; }
as_postgres() { runuser -u postgres -- "$@"; }
random_secret() { head -c 24 /dev/urandom | base64 | tr -d '/+=' ; }

# The services run as the postgres and mosquitto users, which must be able to reach their
# data directories; a checkout under a private home directory falls back to /var/lib.
data_root() {
  mkdir -p "$STATE"
  if [ -f "$STATE/data-root" ]; then cat "$STATE/data-root"; return; fi
  local root="$STATE/data"
  mkdir -p "$root" && chmod 755 "$STATE" "$root"
  if ! runuser -u postgres -- test -x "$root" || ! runuser -u mosquitto -- test -x "$root"; then
    root="/var/lib/agritrace/$(printf '%s' "$STATE" | sha1sum | cut -c1-12)"
    mkdir -p "$root" && chmod 755 /var/lib/agritrace "$root"
  fi
  echo "$root" > "$STATE/data-root"
  echo "$root"
}

ensure_env_file() {
  if [ -f "$ENV_FILE" ]; then
    upgrade_env_file
    return
  fi
  mkdir -p "$STATE"
  local ownerpw apppw rolespw admpw ingpw alertpw auditpw pepper
  ownerpw="$(random_secret)"; apppw="$(random_secret)"; rolespw="$(random_secret)"
  admpw="$(random_secret)"; ingpw="$(random_secret)"; alertpw="$(random_secret)"; auditpw="$(random_secret)"
  pepper="$(random_secret)"
  (umask 077; cat > "$ENV_FILE") <<ENV
# Written once by deploy/local/stack.sh for the local stack; never commit it.
AGRITRACE_MODE=local
AGRITRACE_STATE_DIR=${STATE}
# The application's login (agritrace_app: rows only); the owner (agritrace) runs migrations.
AGRITRACE_DATABASE_URL=postgresql://agritrace_app:${apppw}@127.0.0.1:${PG_PORT}/agritrace
AGRITRACE_DATABASE_OWNER_PASSWORD=${ownerpw}
AGRITRACE_DATABASE_ROLES_URL=postgresql://agritrace_roles:${rolespw}@127.0.0.1:${PG_PORT}/postgres
AGRITRACE_MQTT_HOST=127.0.0.1
AGRITRACE_MQTT_PORT=${MQTT_PORT}
AGRITRACE_MQTT_TLS_PORT=${MQTT_TLS_PORT}
AGRITRACE_MQTT_TLS_CA_FILE=$(data_root)/tls/ca.crt
AGRITRACE_MQTT_ADMIN_USERNAME=agritrace-admin
AGRITRACE_MQTT_ADMIN_PASSWORD=${admpw}
AGRITRACE_MQTT_INGEST_PASSWORD=${ingpw}
AGRITRACE_MQTT_ALERTS_PASSWORD=${alertpw}
AGRITRACE_MQTT_AUDIT_PASSWORD=${auditpw}
AGRITRACE_TOKEN_PEPPER=${pepper}
ENV
}

# An env file written by an earlier release: the application logged in as the owner, and the
# alert publisher used the ingest account. Split the roles and add the new secrets.
upgrade_env_file() {
  if ! grep -q '^AGRITRACE_DATABASE_OWNER_PASSWORD=' "$ENV_FILE"; then
    local ownerpw apppw rolespw
    ownerpw="$(env_value AGRITRACE_DATABASE_URL | sed -E 's|^postgresql://[^:]+:([^@]+)@.*|\1|')"
    apppw="$(random_secret)"; rolespw="$(random_secret)"
    sed -i -e "s|^AGRITRACE_DATABASE_URL=.*|AGRITRACE_DATABASE_URL=postgresql://agritrace_app:${apppw}@127.0.0.1:${PG_PORT}/agritrace|" \
      -e '/^AGRITRACE_DATABASE_ADMIN_URL=/d' -e '/^AGRITRACE_MQTT_INGEST_USERNAME=/d' "$ENV_FILE"
    { echo "AGRITRACE_DATABASE_OWNER_PASSWORD=${ownerpw}"
      echo "AGRITRACE_DATABASE_ROLES_URL=postgresql://agritrace_roles:${rolespw}@127.0.0.1:${PG_PORT}/postgres"
    } >> "$ENV_FILE"
  fi
  grep -q '^AGRITRACE_STATE_DIR=' "$ENV_FILE" || echo "AGRITRACE_STATE_DIR=${STATE}" >> "$ENV_FILE"
  local name
  for name in AGRITRACE_MQTT_ALERTS_PASSWORD AGRITRACE_MQTT_AUDIT_PASSWORD; do
    grep -q "^${name}=" "$ENV_FILE" || echo "${name}=$(random_secret)" >> "$ENV_FILE"
  done
  # Before the broker had a TLS listener for gateways.
  grep -q '^AGRITRACE_MQTT_TLS_PORT=' "$ENV_FILE" || echo "AGRITRACE_MQTT_TLS_PORT=${MQTT_TLS_PORT}" >> "$ENV_FILE"
  grep -q '^AGRITRACE_MQTT_TLS_CA_FILE=' "$ENV_FILE" ||
    echo "AGRITRACE_MQTT_TLS_CA_FILE=$(data_root)/tls/ca.crt" >> "$ENV_FILE"
}

url_password() { sed -E 's|^postgresql://[^:]+:([^@]+)@.*|\1|'; }

env_value() { grep -E "^$1=" "$ENV_FILE" | head -n1 | cut -d= -f2-; }

pg_start() {
  local root pgdata run
  root="$(data_root)"; pgdata="$root/pg"; run="$root/pg-run"
  mkdir -p "$run"
  chown postgres:postgres "$run"
  if [ ! -f "$pgdata/PG_VERSION" ]; then
    log "initialising PostgreSQL cluster in $pgdata"
    mkdir -p "$pgdata" && chown postgres:postgres "$pgdata" && chmod 700 "$pgdata"
    as_postgres "$PG_BIN/initdb" -D "$pgdata" -U postgres --encoding=UTF8 --locale=C.UTF-8 \
      --auth-local=peer --auth-host=scram-sha-256 >/dev/null
    cat >> "$pgdata/postgresql.conf" <<CONF
# --- AgriTrace local stack ---
port = ${PG_PORT}
listen_addresses = '127.0.0.1'
unix_socket_directories = '${run}'
shared_preload_libraries = 'timescaledb'
timescaledb.telemetry_level = off
max_connections = 200
shared_buffers = 1GB
work_mem = 32MB
maintenance_work_mem = 256MB
effective_cache_size = 4GB
max_wal_size = 4GB
checkpoint_timeout = 15min
timezone = 'UTC'
log_min_messages = warning
CONF
  fi
  if ! as_postgres "$PG_BIN/pg_ctl" -D "$pgdata" status >/dev/null 2>&1; then
    log "starting PostgreSQL on 127.0.0.1:${PG_PORT}"
    (close_inherited_fds
     exec runuser -u postgres -- "$PG_BIN/pg_ctl" -D "$pgdata" -l "$run/postgres.log" -w -t 60 start >/dev/null)
  fi
  local ownerpw apppw rolespw
  ownerpw="$(env_value AGRITRACE_DATABASE_OWNER_PASSWORD)"
  apppw="$(env_value AGRITRACE_DATABASE_URL | url_password)"
  rolespw="$(env_value AGRITRACE_DATABASE_ROLES_URL | url_password)"
  psql_admin() { as_postgres psql -X -q -v ON_ERROR_STOP=1 -h "$run" -p "$PG_PORT" -U postgres "$@"; }
  # Least privilege (deploy/postgres/roles.sql, docs/security.md); passwords follow the env file.
  local out
  out="$(psql_admin -d postgres -v ownerpw="$ownerpw" -v apppw="$apppw" -v rolespw="$rolespw" \
    < "$repo/deploy/postgres/roles.sql" 2>&1)" || { echo "$out" >&2; exit 1; }
}

pg_stop() {
  local root; root="$(data_root)"
  if [ -f "$root/pg/PG_VERSION" ] && as_postgres "$PG_BIN/pg_ctl" -D "$root/pg" status >/dev/null 2>&1; then
    log "stopping PostgreSQL"
    as_postgres "$PG_BIN/pg_ctl" -D "$root/pg" -m fast -w stop >/dev/null
  fi
}

mqtt_pid() {
  local root; root="$(data_root)"
  [ -f "$root/mosquitto/mosquitto.pid" ] || return 1
  local pid; pid="$(cat "$root/mosquitto/mosquitto.pid")"
  kill -0 "$pid" 2>/dev/null && [ "$(cat /proc/"$pid"/comm 2>/dev/null)" = mosquitto ] && echo "$pid"
}

mqtt_start() {
  local root persist conf tls
  root="$(data_root)"; persist="$root/mosquitto"; conf="$persist/mosquitto.conf"; tls="$root/tls"
  [ -n "$DYNSEC_PLUGIN" ] || { echo "stack: mosquitto_dynamic_security.so not found" >&2; exit 1; }
  [ -f "$RETAIN_PLUGIN" ] ||
    { echo "stack: $RETAIN_PLUGIN not found (deploy/local/install.sh builds it)" >&2; exit 1; }
  mkdir -p "$persist"
  # The TLS listener's certificate: for this machine's names and the public host gateways are told.
  local public_host="${AGRITRACE_MQTT_PUBLIC_HOST:-$(env_value AGRITRACE_MQTT_PUBLIC_HOST || true)}"
  sh "$repo/deploy/mosquitto/tls-certs.sh" "$tls" mosquitto localhost 127.0.0.1 \
    $(hostname | grep -E '^[A-Za-z0-9.-]+$' || true) ${public_host} | sed 's/^/stack: /'
  sed -e "s|@MQTT_PORT@|${MQTT_PORT}|" -e "s|@MQTT_BIND@|${MQTT_BIND}|" \
      -e "s|@MQTT_TLS_PORT@|${MQTT_TLS_PORT}|" -e "s|@MQTT_TLS_BIND@|${MQTT_TLS_BIND}|" \
      -e "s|@TLS_DIR@|${tls}|g" -e "s|@RETAIN_PLUGIN@|${RETAIN_PLUGIN}|" \
      -e "s|@PERSIST_DIR@|${persist}|g" -e "s|@DYNSEC_PLUGIN@|${DYNSEC_PLUGIN}|" \
      -e "s|@LOG_DEST@|file ${persist}/mosquitto.log|" \
      "$repo/deploy/mosquitto/mosquitto.conf.in" > "$conf.new"
  echo "pid_file $persist/mosquitto.pid" >> "$conf.new"
  echo "user mosquitto" >> "$conf.new"
  # A running broker keeps the config it started with: restart it when the config changed (an
  # upgrade, other ports). Sessions and queued messages are saved on the way down.
  if ! cmp -s "$conf.new" "$conf" && mqtt_pid >/dev/null; then
    log "broker config changed: restarting Mosquitto"
    mqtt_stop
  fi
  mv "$conf.new" "$conf"
  if [ ! -f "$persist/dynamic-security.json" ]; then
    log "initialising broker accounts"
    mosquitto_ctrl dynsec init "$persist/dynamic-security.json" \
      "$(env_value AGRITRACE_MQTT_ADMIN_USERNAME)" "$(env_value AGRITRACE_MQTT_ADMIN_PASSWORD)" >/dev/null
  fi
  # The accounts file (password hashes) and the persistence file are the broker's alone:
  # `mosquitto_ctrl dynsec init` makes the accounts file 0644 and the broker keeps its mode.
  chown -R mosquitto: "$persist"
  chmod 700 "$persist"
  chmod 600 "$persist/dynamic-security.json"
  if ! mqtt_pid >/dev/null; then
    log "starting Mosquitto on ${MQTT_BIND}:${MQTT_PORT} (services)," \
      "TLS ${MQTT_TLS_BIND}:${MQTT_TLS_PORT} (gateways)"
    # umask 077: whatever the broker creates (persistence file, log; the accounts file, which
    # upstream 2.0.11 writes anew with the process umask on every change) is its alone.
    (close_inherited_fds; umask 077; exec mosquitto -d -c "$conf" </dev/null >/dev/null 2>&1)
    for _ in $(seq 50); do mqtt_pid >/dev/null && break; sleep 0.1; done
  fi
  for _ in $(seq 50); do (exec 3<>"/dev/tcp/127.0.0.1/$MQTT_PORT") 2>/dev/null && break; sleep 0.1; done
}

mqtt_stop() {
  local pid
  if pid="$(mqtt_pid)"; then
    log "stopping Mosquitto"
    kill "$pid"
    for _ in $(seq 100); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
  fi
}

case "${1:-}" in
  start)
    [ "$(id -u)" -eq 0 ] || exec sudo "$0" "$@"
    ensure_env_file; pg_start; mqtt_start ;;
  start-db) ensure_env_file; pg_start ;;
  start-broker) ensure_env_file; mqtt_start ;;
  stop) mqtt_stop; pg_stop ;;
  stop-db) pg_stop ;;
  stop-broker) mqtt_stop ;;
  status)
    root="$(data_root)"
    as_postgres "$PG_BIN/pg_ctl" -D "$root/pg" status >/dev/null 2>&1 && echo "postgresql: running (127.0.0.1:$PG_PORT)" || echo "postgresql: stopped"
    mqtt_pid >/dev/null && echo "mosquitto: running ($MQTT_BIND:$MQTT_PORT, TLS $MQTT_TLS_BIND:$MQTT_TLS_PORT)" ||
      echo "mosquitto: stopped" ;;
  data-root) data_root ;;
  *) echo "usage: $0 start|stop|status|start-db|stop-db|start-broker|stop-broker|data-root" >&2; exit 2 ;;
esac
