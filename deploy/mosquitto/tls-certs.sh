#!/bin/sh
# The broker's TLS files, made with openssl, idempotently:
#   tls-certs.sh DIR OWNER NAME...
# DIR/ca.crt + ca.key: a private CA (EC P-256, 10 years), made once. ca.key is root's, mode 0600:
#   the broker never reads it (nor can it: it runs as OWNER), so a broken broker cannot mint
#   certificates. ca.crt is what gateways trust (`--cafile`), mode 0644.
# DIR/server.crt + server.key: the listener's certificate (EC P-256, 825 days) for the NAMEs
#   (host names or IP addresses, in subjectAltName), key owned by OWNER, mode 0600. Made again
#   when the names change, when it no longer verifies against ca.crt, or 30 days before it expires.
# An operator's own certificate (e.g. from a public CA): put server.crt (full chain), server.key and
# ca.crt (what gateways should trust) in DIR without a ca.key; this script then leaves them alone.
# POSIX sh: run by deploy/local/stack.sh (Debian), deploy/mosquitto/compose-entrypoint.sh (Alpine)
# and tests/faults/stack.py.
set -eu
dir="$1"; owner="$2"; shift 2
[ "$#" -gt 0 ] || { echo "usage: tls-certs.sh DIR OWNER NAME..." >&2; exit 2; }

san=""
for name in "$@"; do
  case "$name" in
    "") continue ;;
    *:*|*[!0-9.]*) case "$name" in *:*) kind=IP ;; *) kind=DNS ;; esac ;;
    *) kind=IP ;;
  esac
  case ",$san," in *",$kind:$name,"*) continue ;; esac
  san="${san:+$san,}$kind:$name"
done

mkdir -p "$dir"
chmod 755 "$dir"
umask 077
tmp="$(mktemp -d)"
trap 'rm -rf "$tmp"' EXIT

if [ ! -f "$dir/ca.key" ] && [ -f "$dir/server.crt" ] && [ -f "$dir/server.key" ]; then
  echo "tls: $dir holds a certificate this script did not make; left as it is"
  exit 0
fi

if [ ! -f "$dir/ca.key" ] || [ ! -f "$dir/ca.crt" ]; then
  cat > "$tmp/ca.cnf" <<EOF
[req]
distinguished_name = dn
prompt = no
[dn]
O = AgriTrace
CN = AgriTrace MQTT CA $(date -u +%Y%m%d%H%M%S)
[ext]
basicConstraints = critical, CA:TRUE, pathlen:0
keyUsage = critical, keyCertSign, cRLSign
subjectKeyIdentifier = hash
EOF
  openssl genpkey -algorithm EC -pkeyopt ec_paramgen_curve:P-256 -out "$tmp/ca.key" 2>/dev/null
  openssl req -new -x509 -config "$tmp/ca.cnf" -extensions ext -key "$tmp/ca.key" -sha256 \
    -days 3650 -out "$tmp/ca.crt"
  chown 0:0 "$tmp/ca.key"
  chmod 600 "$tmp/ca.key"
  chmod 644 "$tmp/ca.crt"
  mv "$tmp/ca.key" "$dir/ca.key"
  mv "$tmp/ca.crt" "$dir/ca.crt"
  rm -f "$dir/server.crt"
  echo "tls: made a private CA in $dir/ca.crt"
fi

fresh=1
if [ ! -f "$dir/server.crt" ] || [ ! -f "$dir/server.key" ] \
  || [ "$(cat "$dir/server.san" 2>/dev/null)" != "$san" ] \
  || ! openssl verify -CAfile "$dir/ca.crt" "$dir/server.crt" >/dev/null 2>&1 \
  || ! openssl x509 -checkend 2592000 -noout -in "$dir/server.crt" >/dev/null 2>&1; then
  fresh=0
fi
if [ "$fresh" = 0 ]; then
  cat > "$tmp/server.cnf" <<EOF
[req]
distinguished_name = dn
prompt = no
[dn]
O = AgriTrace
CN = $1
[ext]
basicConstraints = critical, CA:FALSE
keyUsage = critical, digitalSignature
extendedKeyUsage = serverAuth
subjectAltName = $san
subjectKeyIdentifier = hash
authorityKeyIdentifier = keyid
EOF
  serial="0x7$(od -An -tx1 -N15 /dev/urandom | tr -d ' \n')"
  openssl genpkey -algorithm EC -pkeyopt ec_paramgen_curve:P-256 -out "$tmp/server.key" 2>/dev/null
  openssl req -new -config "$tmp/server.cnf" -key "$tmp/server.key" -out "$tmp/server.csr"
  openssl x509 -req -in "$tmp/server.csr" -CA "$dir/ca.crt" -CAkey "$dir/ca.key" -set_serial "$serial" \
    -sha256 -days 825 -extfile "$tmp/server.cnf" -extensions ext -out "$tmp/server.crt" 2>/dev/null
  chown "$owner" "$tmp/server.key"
  chmod 600 "$tmp/server.key"
  chmod 644 "$tmp/server.crt"
  mv "$tmp/server.key" "$dir/server.key"
  mv "$tmp/server.crt" "$dir/server.crt"
  printf '%s' "$san" > "$dir/server.san"
  chmod 644 "$dir/server.san"
  echo "tls: made the broker's certificate for $san"
fi
# Keep the modes whatever happened to the files since (a copy, an older release).
chown 0:0 "$dir/ca.key"
chmod 600 "$dir/ca.key"
chown "$owner" "$dir/server.key"
chmod 600 "$dir/server.key"
chmod 644 "$dir/ca.crt" "$dir/server.crt"
