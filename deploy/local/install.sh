#!/usr/bin/env bash
# Installs what the local stack needs into the system, idempotently:
# PostgreSQL 15 with TimescaleDB, Mosquitto, build tools, and the tools the tests use.
# Fast when everything is already there (it only checks).
set -euo pipefail

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
PG_MAJOR="${PG_MAJOR:-15}"
PG_CONFIG="/usr/lib/postgresql/${PG_MAJOR}/bin/pg_config"
TSDB_SUITE="${TSDB_SUITE:-trixie}"  # Debian release whose timescaledb source package we build

need_root() {
  if [ "$(id -u)" -ne 0 ]; then
    exec sudo --preserve-env=PG_MAJOR,TSDB_SUITE "$0" "$@"
  fi
}

apt_packages=(
  "postgresql-${PG_MAJOR}" "postgresql-server-dev-${PG_MAJOR}" postgresql-client-common
  mosquitto mosquitto-clients
  # headers for the broker plugin built below (deploy/mosquitto/retain_guard.c)
  mosquitto-dev libmosquitto-dev
  build-essential cmake dpkg-dev xz-utils
  zbar-tools chromium
  # wrk: the trace page benchmark; a CJK font so headless Chromium screenshots show Chinese text
  wrk fonts-wqy-zenhei
)

missing=()
for p in "${apt_packages[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done

if [ "${#missing[@]}" -gt 0 ]; then
  need_root "$@"
  echo "install: apt packages: ${missing[*]}"
  export DEBIAN_FRONTEND=noninteractive
  # Installing postgresql must not create or start a system cluster we did not ask for
  # on a machine that has none; the project runs its own cluster.
  mkdir -p /etc/postgresql-common/createcluster.d
  [ -e /etc/postgresql-common/createcluster.d/agritrace.conf ] ||
    [ -d "/etc/postgresql/${PG_MAJOR}" ] ||
    echo "create_main_cluster = false" > /etc/postgresql-common/createcluster.d/agritrace.conf
  apt-get update -qq
  apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
fi

tsdb_installed() {
  [ -f "$("$PG_CONFIG" --pkglibdir)/timescaledb.so" ] &&
    ls "$("$PG_CONFIG" --sharedir)"/extension/timescaledb--*.sql >/dev/null 2>&1
}

if ! tsdb_installed; then
  need_root "$@"
  # A binary package where the distribution has one (Debian 13, Ubuntu), else build the
  # Apache-licensed part from Debian 13's source package.
  if apt-cache show "postgresql-${PG_MAJOR}-timescaledb" >/dev/null 2>&1; then
    apt-get install -y -qq "postgresql-${PG_MAJOR}-timescaledb" >/dev/null
  else
    echo "install: building TimescaleDB (Apache-2 part) from Debian ${TSDB_SUITE} sources"
    work="$(mktemp -d /tmp/agritrace-tsdb.XXXXXX)"
    chmod 755 "$work"
    mkdir -p "$work/lists/partial" "$work/src"
    echo "deb-src http://deb.debian.org/debian ${TSDB_SUITE} main" > "$work/sources.list"
    apt_opts=(-o "Dir::Etc::sourcelist=$work/sources.list" -o Dir::Etc::sourceparts=/dev/null
              -o "Dir::State::Lists=$work/lists")
    apt-get "${apt_opts[@]}" update -qq
    (cd "$work/src" && apt-get "${apt_opts[@]}" source --download-only timescaledb >/dev/null)
    orig="$(ls "$work"/src/timescaledb_*.orig.tar.* | head -n1)"
    tar -xf "$orig" -C "$work/src"
    srcdir="$(find "$work/src" -mindepth 1 -maxdepth 1 -type d -name 'timescaledb*' | head -n1)"
    (cd "$srcdir" &&
      ./bootstrap -DAPACHE_ONLY=1 -DREGRESS_CHECKS=OFF -DTAP_CHECKS=OFF -DWARNINGS_AS_ERRORS=OFF \
        -DPG_CONFIG="$PG_CONFIG" >/dev/null &&
      make -s -C build -j"$(nproc)" install >/dev/null)
    rm -rf "$work"
  fi
  tsdb_installed || { echo "install: TimescaleDB did not install" >&2; exit 1; }
fi

# The broker's retain guard (deploy/mosquitto/retain_guard.c), a Mosquitto plugin: built again
# whenever its source changes (the checksum beside it says from what it was built).
plugin_src="$here/../mosquitto/retain_guard.c"
plugin="${AGRITRACE_MQTT_RETAIN_PLUGIN:-/usr/local/lib/agritrace/mosquitto_retain_guard.so}"
plugin_sum="$(sha256sum < "$plugin_src" | cut -d' ' -f1)"
if [ ! -f "$plugin" ] || [ "$(cat "$plugin.sha256" 2>/dev/null)" != "$plugin_sum" ]; then
  need_root "$@"
  echo "install: building the broker's retain guard plugin ($plugin)"
  mkdir -p "$(dirname "$plugin")"
  gcc -shared -fPIC -O2 -Wall -Wextra -Werror -o "$plugin.new" "$plugin_src"
  chmod 755 "$plugin.new"
  mv "$plugin.new" "$plugin"  # a running broker keeps the file it loaded
  echo "$plugin_sum" > "$plugin.sha256"
fi
