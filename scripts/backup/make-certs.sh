#!/usr/bin/env bash
# Makes the TLS files of pgBackRest's TLS server mode: a certificate authority
# and, per host, a key and a certificate signed by it. CN = the host's name
# (what tls-server-auth names), subjectAltName = its address (what the other
# hosts connect to, as IP and as DNS entry: pgBackRest 2.45 compares the
# address with DNS entries). Each certificate serves as its host's server
# certificate and as its client certificate towards the others.
#
#   scripts/backup/make-certs.sh OUTDIR NAME=ADDRESS...
#   e.g. scripts/backup/make-certs.sh ./pgbackrest-tls backup-01=198.51.100.40 \
#            pg-patroni1=198.51.100.21 pg-patroni2=198.51.100.22 pg-patroni3=198.51.100.23
#
# Writes OUTDIR/ca.crt, OUTDIR/ca.key (keep it off the hosts) and
# OUTDIR/NAME.crt, OUTDIR/NAME.key. On each host, as /etc/pgbackrest/tls/:
# ca.crt, NAME.crt as host.crt and NAME.key as host.key, owned by postgres,
# the key mode 0600. A CA already in OUTDIR is reused (to add a host later);
# a host whose certificate exists is left alone.
set -euo pipefail

die() { printf 'make-certs.sh: error: %s\n' "$*" >&2; exit 2; }

[ $# -ge 2 ] || die "usage: make-certs.sh OUTDIR NAME=ADDRESS..."
out="$1"
shift
command -v openssl >/dev/null 2>&1 || die "openssl is not installed (Debian package openssl)"
for spec in "$@"; do
    [[ "$spec" =~ ^[A-Za-z0-9][A-Za-z0-9.-]*=[0-9A-Fa-f.:]+$ ]] ||
        die "'$spec' is not NAME=ADDRESS (a host name, '=', an IPv4 or IPv6 address)"
done
mkdir -p "$out"
umask 077

if [ ! -s "$out/ca.crt" ]; then
    openssl req -x509 -new -nodes -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 \
        -keyout "$out/ca.key" -out "$out/ca.crt" -days 3650 -subj "/CN=pgbackrest-ca" \
        -addext "basicConstraints=critical,CA:TRUE" -addext "keyUsage=critical,keyCertSign,cRLSign" \
        2>/dev/null || die "openssl could not make the CA in $out"
    chmod 0644 "$out/ca.crt"
fi
[ -s "$out/ca.key" ] || die "$out/ca.crt exists without $out/ca.key: cannot sign"

for spec in "$@"; do
    name="${spec%%=*}"
    addr="${spec#*=}"
    [ ! -s "$out/$name.crt" ] || continue
    ext="$(mktemp)"
    printf 'subjectAltName=IP:%s,DNS:%s\nextendedKeyUsage=serverAuth,clientAuth\nkeyUsage=critical,digitalSignature,keyEncipherment\n' \
        "$addr" "$addr" >"$ext"
    if ! openssl req -new -nodes -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 \
        -keyout "$out/$name.key" -subj "/CN=$name" 2>/dev/null |
        openssl x509 -req -CA "$out/ca.crt" -CAkey "$out/ca.key" -CAcreateserial \
            -days 825 -extfile "$ext" -out "$out/$name.crt" 2>/dev/null; then
        rm -f "$ext"
        die "openssl could not make the certificate of $name"
    fi
    rm -f "$ext"
    chmod 0644 "$out/$name.crt"
    echo "$out/$name.crt: CN=$name, subjectAltName $addr"
done
