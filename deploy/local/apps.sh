#!/usr/bin/env bash
# Starts and stops the application processes of the local stack in the background: the API, the
# ingest workers (ingest-N), the alert evaluator (alerts), the dashboards rollup (rollup), the audit
# checkpointer (audit) and the demo simulator. Pid files and logs go to $AGRITRACE_STATE_DIR/run and /log.
#   apps.sh start | stop | status
set -euo pipefail

repo="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
STATE="${AGRITRACE_STATE_DIR:-$repo/.local}"
export AGRITRACE_ENV_FILE="${AGRITRACE_ENV_FILE:-$STATE/agritrace.env}"
BIN="$repo/.venv/bin"
# shellcheck source=deploy/local/lib.sh
. "$repo/deploy/local/lib.sh"
RUN="$STATE/run"; LOGS="$STATE/log"
API_PORT="${AGRITRACE_API_PORT:-8000}"
INGEST_WORKERS="${AGRITRACE_INGEST_WORKERS:-2}"
SIMULATOR="${AGRITRACE_SIMULATOR:-1}"  # 0: no demo gateways

alive() { [ -f "$RUN/$1.pid" ] && kill -0 "$(cat "$RUN/$1.pid")" 2>/dev/null; }

start_one() {  # name, command...
  local name="$1"; shift
  if alive "$name"; then return; fi
  echo "apps: starting $name"
  (cd "$repo" && close_inherited_fds && exec setsid "$@" >>"$LOGS/$name.log" 2>&1 </dev/null) &
  echo $! > "$RUN/$name.pid"
}

stop_one() {
  local name="$1"
  if alive "$name"; then
    local pid; pid="$(cat "$RUN/$name.pid")"
    echo "apps: stopping $name"
    kill -TERM -- "-$pid" 2>/dev/null || kill -TERM "$pid"
    for _ in $(seq 100); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
    kill -KILL -- "-$pid" 2>/dev/null || true
  fi
  rm -f "$RUN/$name.pid"
}

wait_healthy() {
  for _ in $(seq 150); do
    curl -fsS "http://127.0.0.1:${API_PORT}/healthz" >/dev/null 2>&1 && return 0
    sleep 0.2
  done
  echo "apps: the API did not become healthy; see $LOGS/api.log" >&2
  tail -n 20 "$LOGS/api.log" >&2 || true
  return 1
}

apps() {
  echo api
  for i in $(seq 1 "$INGEST_WORKERS"); do echo "ingest-$i"; done
  echo alerts
  echo rollup
  echo audit
  [ "$SIMULATOR" = 1 ] && echo simulator
  return 0
}

case "${1:-}" in
  start)
    mkdir -p "$RUN" "$LOGS"
    start_one api "$BIN/agritrace" api run --port "$API_PORT"
    for name in $(apps); do
      case "$name" in
        ingest-*) start_one "$name" "$BIN/agritrace" ingest run --worker-id "${name#ingest-}" ;;
        alerts) start_one alerts "$BIN/agritrace" alerts run ;;
        # The 15-minute readings rollup the dashboards read.
        rollup) start_one rollup "$BIN/agritrace" dashboards rollup --every 60 ;;
        # Signed audit checkpoints, hourly, to $STATE/audit/checkpoints and the retained MQTT topic.
        audit) start_one audit "$BIN/agritrace" audit checkpoint --every "${AGRITRACE_AUDIT_CHECKPOINT_EVERY:-3600}" ;;
        # Demo gateways (credentials in $STATE/simulator-gateways.json, mode 600) at a gentle rate.
        simulator) AGRITRACE_STATE_DIR="$STATE" start_one simulator "$BIN/agritrace" simulate --demo --interval 10 ;;
      esac
    done
    wait_healthy ;;
  stop)
    for f in "$RUN"/*.pid; do [ -e "$f" ] && stop_one "$(basename "$f" .pid)"; done; true ;;
  status)
    for f in "$RUN"/*.pid; do
      [ -e "$f" ] || continue
      name="$(basename "$f" .pid)"
      if alive "$name"; then echo "$name: running (pid $(cat "$f"))"; else echo "$name: stopped"; fi
    done ;;
  *) echo "usage: $0 start|stop|status" >&2; exit 2 ;;
esac
