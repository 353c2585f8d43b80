#!/usr/bin/env bash
# Makes the TLS files of an etcd cluster: a certificate authority and, per
# member, a key and a certificate for its client and peer URLs, and per etcd
# user a client certificate whose CN is the user's name: with
# --client-cert-auth and auth enabled, etcd takes the CN as the user, so no
# password and no authenticate round trip (docs: patroni-conf/etcd-rbac.sh).
# The recipe of scripts/provision/consul-certs.sh (EC P-256).
#
#   scripts/provision/etcd-certs.sh OUTDIR member:NAME=ADDRESS... client:USER...
#   e.g. scripts/provision/etcd-certs.sh ./etcd-tls member:etcd1=198.51.100.21 \
#            member:etcd2=198.51.100.22 member:etcd3=198.51.100.23 \
#            client:patroni client:patroni-hook-db client:patroni-hook-pgbouncer client:root
#
# Writes OUTDIR/ca.pem, OUTDIR/ca-key.pem (keep it off the hosts),
# OUTDIR/NAME.pem and OUTDIR/NAME-key.pem per member (serverAuth and
# clientAuth: the same pair serves --cert-file and --peer-cert-file; its
# subjectAltName names its address, 127.0.0.1 and localhost), and
# OUTDIR/client-USER.pem and OUTDIR/client-USER-key.pem per user (clientAuth,
# CN=USER). A CA already in OUTDIR is reused; a certificate that exists is
# left alone.
set -euo pipefail

die() { printf 'etcd-certs.sh: error: %s\n' "$*" >&2; exit 2; }

[ $# -ge 2 ] || die "usage: etcd-certs.sh OUTDIR member:NAME=ADDRESS... client:USER..."
out="$1"
shift
command -v openssl >/dev/null 2>&1 || die "openssl is not installed (Debian package openssl)"
for spec in "$@"; do
    [[ "$spec" =~ ^member:[A-Za-z0-9][A-Za-z0-9.-]*=[0-9A-Fa-f.:]+$ || "$spec" =~ ^client:[A-Za-z0-9][A-Za-z0-9._-]*$ ]] ||
        die "'$spec' is not member:NAME=ADDRESS or client:USER"
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

# sign FILE-BASE CN EXTENSIONS
sign() {
    local base="$1" cn="$2" ext
    [ ! -s "$out/$base.pem" ] || return 0
    ext="$(mktemp)"
    printf '%s\n' "$3" >"$ext"
    if ! openssl req -new -nodes -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 \
        -keyout "$out/$base-key.pem" -subj "/CN=$cn" 2>/dev/null |
        openssl x509 -req -CA "$out/ca.pem" -CAkey "$out/ca-key.pem" -CAcreateserial \
            -days 825 -extfile "$ext" -out "$out/$base.pem" 2>/dev/null; then
        rm -f "$ext"
        die "openssl could not make the certificate $base (CN=$cn)"
    fi
    rm -f "$ext"
    chmod 0644 "$out/$base.pem"
    echo "$out/$base.pem: CN=$cn"
}

for spec in "$@"; do
    case "$spec" in
    member:*)
        name="${spec#member:}"
        addr="${name#*=}"
        name="${name%%=*}"
        sign "$name" "$name" "$(printf 'subjectAltName=IP:%s,IP:127.0.0.1,DNS:localhost,DNS:%s\nextendedKeyUsage=serverAuth,clientAuth\nkeyUsage=critical,digitalSignature,keyEncipherment' "$addr" "$name")"
        ;;
    client:*)
        user="${spec#client:}"
        sign "client-$user" "$user" "$(printf 'extendedKeyUsage=clientAuth\nkeyUsage=critical,digitalSignature,keyEncipherment')"
        ;;
    esac
done
