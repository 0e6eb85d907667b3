#!/bin/sh
# Entrypoint of the Mosquitto container in deploy/compose.yaml: renders the same config template
# as deploy/local/stack.sh (deploy/mosquitto/mosquitto.conf.in), creates the dynamic-security
# admin on first start, then runs the broker in the foreground. The paths and port default to the
# container's; tests/test_compose.py runs this script against the machine's own Mosquitto.
set -eu
persist="${MOSQUITTO_DATA_DIR:-/mosquitto/data}"
confdir="${MOSQUITTO_CONFIG_DIR:-/mosquitto/config}"
template="${MOSQUITTO_TEMPLATE:-/agritrace/mosquitto.conf.in}"
port="${MOSQUITTO_PORT:-1883}"
conf="$confdir/mosquitto.conf"
plugin="$(ls /usr/lib/mosquitto_dynamic_security.so /usr/lib/*/mosquitto_dynamic_security.so 2>/dev/null | head -n1)"
mkdir -p "$confdir" "$persist"
sed -e "s|@MQTT_PORT@|${port}|" -e "s|@MQTT_BIND@|0.0.0.0|" \
    -e "s|@PERSIST_DIR@|${persist}|g" -e "s|@DYNSEC_PLUGIN@|${plugin}|" \
    -e "s|@LOG_DEST@|stdout|" \
    "$template" > "$conf"
if [ ! -f "$persist/dynamic-security.json" ]; then
  mosquitto_ctrl dynsec init "$persist/dynamic-security.json" \
    "$AGRITRACE_MQTT_ADMIN_USERNAME" "$AGRITRACE_MQTT_ADMIN_PASSWORD" >/dev/null
fi
chown -R mosquitto:mosquitto "$persist"
exec mosquitto -c "$conf"
