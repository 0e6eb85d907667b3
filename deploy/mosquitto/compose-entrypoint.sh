#!/bin/sh
# Entrypoint of the Mosquitto container in deploy/compose.yaml: renders the same config template
# as deploy/local/stack.sh (deploy/mosquitto/mosquitto.conf.in), makes the TLS listener's
# certificate on first start (deploy/mosquitto/tls-certs.sh: a private CA kept in the `mosquitto`
# volume, its ca.crt copied to the `mqtt-ca` volume the app reads and hands to gateways), creates
# the dynamic-security admin on first start, then runs the broker in the foreground. The paths and
# ports default to the container's; tests/test_compose.py runs this script against the machine's
# own Mosquitto.
set -eu
here="$(cd "$(dirname "$0")" && pwd)"
persist="${MOSQUITTO_DATA_DIR:-/mosquitto/data}"
confdir="${MOSQUITTO_CONFIG_DIR:-/mosquitto/config}"
template="${MOSQUITTO_TEMPLATE:-/agritrace/mosquitto.conf.in}"
port="${MOSQUITTO_PORT:-1883}"
tls_port="${MOSQUITTO_TLS_PORT:-8883}"
tls="$persist/tls"
public_ca="${MOSQUITTO_PUBLIC_CA_DIR:-/mosquitto/ca}"
retain_plugin="${MOSQUITTO_RETAIN_PLUGIN:-/usr/lib/mosquitto_retain_guard.so}"
conf="$confdir/mosquitto.conf"
plugin="$(ls /usr/lib/mosquitto_dynamic_security.so /usr/lib/*/mosquitto_dynamic_security.so 2>/dev/null | head -n1)"
mkdir -p "$confdir" "$persist" "$public_ca"
# The plaintext listener listens on the containers' network only (compose publishes just the TLS
# port); the TLS one is for gateways.
sed -e "s|@MQTT_PORT@|${port}|" -e "s|@MQTT_BIND@|0.0.0.0|" \
    -e "s|@MQTT_TLS_PORT@|${tls_port}|" -e "s|@MQTT_TLS_BIND@|0.0.0.0|" \
    -e "s|@TLS_DIR@|${tls}|g" -e "s|@RETAIN_PLUGIN@|${retain_plugin}|" \
    -e "s|@PERSIST_DIR@|${persist}|g" -e "s|@DYNSEC_PLUGIN@|${plugin}|" \
    -e "s|@LOG_DEST@|stdout|" \
    "$template" > "$conf"
if [ ! -f "$persist/dynamic-security.json" ]; then
  mosquitto_ctrl dynsec init "$persist/dynamic-security.json" \
    "$AGRITRACE_MQTT_ADMIN_USERNAME" "$AGRITRACE_MQTT_ADMIN_PASSWORD" >/dev/null
fi
# The accounts (password hashes) and persistence files are the broker's alone; the TLS directory
# stays root's (the CA key is root's, 0600; the server key the broker's, 0600).
find "$persist" -path "$tls" -prune -o -exec chown mosquitto:mosquitto {} +
chmod 700 "$persist"
chmod 600 "$persist/dynamic-security.json"
sh "$here/tls-certs.sh" "$tls" mosquitto localhost 127.0.0.1 mosquitto "${AGRITRACE_MQTT_PUBLIC_HOST:-}"
cp "$tls/ca.crt" "$public_ca/ca.crt.new"
chmod 644 "$public_ca/ca.crt.new"
mv "$public_ca/ca.crt.new" "$public_ca/ca.crt"
# Whatever the broker creates (persistence file; the accounts file, which some 2.0 releases write
# anew with the process umask on every change) is its alone.
umask 077
exec mosquitto -c "$conf"
