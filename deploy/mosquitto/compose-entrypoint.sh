#!/bin/sh
# Entrypoint of the Mosquitto container in deploy/compose.yaml: renders the same config template
# as deploy/local/stack.sh (deploy/mosquitto/mosquitto.conf.in), creates the dynamic-security
# admin on first start, then runs the broker in the foreground.
set -eu
persist=/mosquitto/data
conf=/mosquitto/config/mosquitto.conf
plugin="$(ls /usr/lib/mosquitto_dynamic_security.so /usr/lib/*/mosquitto_dynamic_security.so 2>/dev/null | head -n1)"
mkdir -p /mosquitto/config "$persist"
sed -e "s|@MQTT_PORT@|1883|" -e "s|@MQTT_BIND@|0.0.0.0|" \
    -e "s|@PERSIST_DIR@|${persist}|g" -e "s|@DYNSEC_PLUGIN@|${plugin}|" \
    -e "s|@LOG_DEST@|stdout|" \
    /agritrace/mosquitto.conf.in > "$conf"
if [ ! -f "$persist/dynamic-security.json" ]; then
  mosquitto_ctrl dynsec init "$persist/dynamic-security.json" \
    "$AGRITRACE_MQTT_ADMIN_USERNAME" "$AGRITRACE_MQTT_ADMIN_PASSWORD" >/dev/null
fi
chown -R mosquitto:mosquitto "$persist"
exec mosquitto -c "$conf"
