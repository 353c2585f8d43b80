#!/usr/bin/env bash
# Makes the TLS files of a Consul cluster: a certificate authority and, per
# agent, a key and a certificate signed by it, the recipe of
# scripts/backup/make-certs.sh (EC P-256, serverAuth and clientAuth) with the
# names Consul needs. Every agent's certificate names its address, 127.0.0.1
# and localhost (the HTTPS API its local Patroni and patroni-hook call); a
# server's also names server.DC.consul, which `verify_server_hostname` checks
# on every RPC connection to a server.
#
#   scripts/provision/consul-certs.sh OUTDIR DC ROLE:NAME=ADDRESS...
#   e.g. scripts/provision/consul-certs.sh ./consul-tls dc1 server:consul-01=198.51.100.11 \
#            client:pg-patroni1=198.51.100.21 client:pgbouncer=198.51.100.30
#
# Writes OUTDIR/ca.pem, OUTDIR/ca-key.pem (keep it off the hosts) and
# OUTDIR/NAME.pem, OUTDIR/NAME-key.pem. On each host, as /etc/consul.d/tls/:
# ca.pem, NAME.pem as agent.pem and NAME-key.pem as agent-key.pem, the key
# readable by the consul user only. A CA already in OUTDIR is reused (to add
# an agent later); an agent whose certificate exists is left alone.
set -euo pipefail

die() { printf 'consul-certs.sh: error: %s\n' "$*" >&2; exit 2; }

[ $# -ge 3 ] || die "usage: consul-certs.sh OUTDIR DC ROLE:NAME=ADDRESS..."
out="$1" dc="$2"
shift 2
[[ "$dc" =~ ^[a-z0-9-]+$ ]] || die "'$dc' is not a datacenter name"
command -v openssl >/dev/null 2>&1 || die "openssl is not installed (Debian package openssl)"
for spec in "$@"; do
    [[ "$spec" =~ ^(server|client):[A-Za-z0-9][A-Za-z0-9.-]*=[0-9A-Fa-f.:]+$ ]] ||
        die "'$spec' is not ROLE:NAME=ADDRESS (server or client, a node name, '=', an IPv4 or IPv6 address)"
done
mkdir -p "$out"
umask 077

if [ ! -s "$out/ca.pem" ]; then
    openssl req -x509 -new -nodes -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 \
        -keyout "$out/ca-key.pem" -out "$out/ca.pem" -days 3650 -subj "/CN=consul-ca-$dc" \
        -addext "basicConstraints=critical,CA:TRUE" -addext "keyUsage=critical,keyCertSign,cRLSign" \
        2>/dev/null || die "openssl could not make the CA in $out"
    chmod 0644 "$out/ca.pem"
fi
[ -s "$out/ca-key.pem" ] || die "$out/ca.pem exists without $out/ca-key.pem: cannot sign"

for spec in "$@"; do
    role="${spec%%:*}"
    name="${spec#*:}"
    addr="${name#*=}"
    name="${name%%=*}"
    [ ! -s "$out/$name.pem" ] || continue
    san="IP:$addr,IP:127.0.0.1,DNS:localhost,DNS:$name"
    [ "$role" != server ] || san="$san,DNS:server.$dc.consul"
    ext="$(mktemp)"
    printf 'subjectAltName=%s\nextendedKeyUsage=serverAuth,clientAuth\nkeyUsage=critical,digitalSignature,keyEncipherment\n' \
        "$san" >"$ext"
    if ! openssl req -new -nodes -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 \
        -keyout "$out/$name-key.pem" -subj "/CN=$name" 2>/dev/null |
        openssl x509 -req -CA "$out/ca.pem" -CAkey "$out/ca-key.pem" -CAcreateserial \
            -days 825 -extfile "$ext" -out "$out/$name.pem" 2>/dev/null; then
        rm -f "$ext"
        die "openssl could not make the certificate of $name"
    fi
    rm -f "$ext"
    chmod 0644 "$out/$name.pem"
    echo "$out/$name.pem: CN=$name, subjectAltName $san"
done
