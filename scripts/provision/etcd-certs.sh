#!/usr/bin/env bash
# Makes the TLS files of an etcd cluster: a certificate authority and, per
# member, a key and a certificate for its client and peer URLs, and per etcd
# user a client certificate whose CN is the user's name: with
# --client-cert-auth and auth enabled, etcd takes the CN as the user over
# its gRPC API (etcdctl), so no password there. Not through its v3 JSON
# gateway (Patroni's etcd3 backend, patroni-hook): etcd 3.4 refuses every
# /v3/ request whose client certificate has a CN once auth is on ("CommonName
# of client sending a request against gateway will be ignored and not used
# as expected"), so those clients get a certificate without a CN (gateway:
# only to pass --client-cert-auth) and authenticate with a username and a
# password. The recipe of scripts/provision/consul-certs.sh (EC P-256).
#
#   scripts/provision/etcd-certs.sh OUTDIR member:NAME=ADDRESS... client:USER... gateway:USER...
#   e.g. scripts/provision/etcd-certs.sh ./etcd-tls member:etcd1=198.51.100.21 \
#            member:etcd2=198.51.100.22 member:etcd3=198.51.100.23 \
#            client:patroni client:patroni-hook-db client:patroni-hook-pgbouncer client:root
#
# Writes OUTDIR/ca.pem, OUTDIR/ca-key.pem (keep it off the hosts),
# OUTDIR/NAME.pem and OUTDIR/NAME-key.pem per member (serverAuth and
# clientAuth: the same pair serves --cert-file and --peer-cert-file; its
# subjectAltName names its address, 127.0.0.1 and localhost), and
# OUTDIR/client-USER.pem and OUTDIR/client-USER-key.pem per user (clientAuth,
# CN=USER), OUTDIR/gateway-USER.pem and -key.pem (clientAuth, no CN: the
# subject is O=USER). A CA already in OUTDIR is reused; a certificate that
# exists is left alone.
set -euo pipefail

die() { printf 'etcd-certs.sh: error: %s\n' "$*" >&2; exit 2; }

[ $# -ge 2 ] || die "usage: etcd-certs.sh OUTDIR member:NAME=ADDRESS... client:USER..."
out="$1"
shift
command -v openssl >/dev/null 2>&1 || die "openssl is not installed (Debian package openssl)"
for spec in "$@"; do
    [[ "$spec" =~ ^member:[A-Za-z0-9][A-Za-z0-9.-]*=[0-9A-Fa-f.:]+$ || "$spec" =~ ^(client|gateway):[A-Za-z0-9][A-Za-z0-9._-]*$ ]] ||
        die "'$spec' is not member:NAME=ADDRESS, client:USER or gateway:USER"
done
mkdir -p "$out"
umask 077

if [ ! -s "$out/ca.pem" ]; then
    openssl req -x509 -new -nodes -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 \
        -keyout "$out/ca-key.pem" -out "$out/ca.pem" -days 3650 -subj "/CN=etcd-ca" \
        -addext "basicConstraints=critical,CA:TRUE" -addext "keyUsage=critical,keyCertSign,cRLSign" \
        2>/dev/null || die "openssl could not make the CA in $out"
    chmod 0644 "$out/ca.pem"
fi
[ -s "$out/ca-key.pem" ] || die "$out/ca.pem exists without $out/ca-key.pem: cannot sign"

# sign FILE-BASE SUBJECT EXTENSIONS
sign() {
    local base="$1" subject="$2" ext
    [ ! -s "$out/$base.pem" ] || return 0
    ext="$(mktemp)"
    printf '%s\n' "$3" >"$ext"
    if ! openssl req -new -nodes -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 \
        -keyout "$out/$base-key.pem" -subj "$subject" 2>/dev/null |
        openssl x509 -req -CA "$out/ca.pem" -CAkey "$out/ca-key.pem" -CAcreateserial \
            -days 825 -extfile "$ext" -out "$out/$base.pem" 2>/dev/null; then
        rm -f "$ext"
        die "openssl could not make the certificate $base ($subject)"
    fi
    rm -f "$ext"
    chmod 0644 "$out/$base.pem"
    echo "$out/$base.pem: $subject"
}

for spec in "$@"; do
    case "$spec" in
    member:*)
        name="${spec#member:}"
        addr="${name#*=}"
        name="${name%%=*}"
        sign "$name" "/CN=$name" "$(printf 'subjectAltName=IP:%s,IP:127.0.0.1,DNS:localhost,DNS:%s\nextendedKeyUsage=serverAuth,clientAuth\nkeyUsage=critical,digitalSignature,keyEncipherment' "$addr" "$name")"
        ;;
    client:*)
        user="${spec#client:}"
        sign "client-$user" "/CN=$user" "$(printf 'extendedKeyUsage=clientAuth\nkeyUsage=critical,digitalSignature,keyEncipherment')"
        ;;
    gateway:*)
        user="${spec#gateway:}"
        sign "gateway-$user" "/O=$user" "$(printf 'extendedKeyUsage=clientAuth\nkeyUsage=critical,digitalSignature,keyEncipherment')"
        ;;
    esac
done
