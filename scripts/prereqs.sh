# shellcheck shell=bash
# Shared by scripts/test.sh and scripts/lab.sh: checks for root and installs
# what the tests and the lab need, only what is missing, so a second run is fast.

PATRONI_VENV="${PATRONI_VENV:-/opt/patroni-hook-test/venv}"
# pgbouncer, setcap and visudo live in sbin, which `su` without `-` leaves off PATH.
export PATH="$PATH:/usr/local/sbin:/usr/sbin:/sbin"
PG_BIN="${PG_BIN:-/usr/lib/postgresql/15/bin}"

need_root() {
    if [ "$(id -u)" -ne 0 ]; then
        echo "error: run as root (sudo $0): the tests create network namespaces and run PostgreSQL as the postgres user" >&2
        exit 2
    fi
}

missing_debs() {
    local want=()
    [ -x "$PG_BIN/postgres" ] || want+=(postgresql-15)
    command -v pgbouncer >/dev/null 2>&1 || [ -x /usr/sbin/pgbouncer ] || want+=(pgbouncer)
    command -v ip >/dev/null 2>&1 || want+=(iproute2)
    command -v setcap >/dev/null 2>&1 || [ -x /usr/sbin/setcap ] || want+=(libcap2-bin)
    command -v curl >/dev/null 2>&1 || want+=(curl)
    command -v openssl >/dev/null 2>&1 || want+=(openssl)
    command -v arping >/dev/null 2>&1 || want+=(iputils-arping)
    command -v shellcheck >/dev/null 2>&1 || want+=(shellcheck)
    command -v runuser >/dev/null 2>&1 || want+=(util-linux)
    # tests/examples.rs: units (systemd-analyze verify), sudoers (visudo -c), Vagrantfile (vagrant validate, ruby -c)
    command -v systemd-analyze >/dev/null 2>&1 || want+=(systemd)
    command -v visudo >/dev/null 2>&1 || [ -x /usr/sbin/visudo ] || want+=(sudo)
    command -v vagrant >/dev/null 2>&1 || want+=(vagrant)
    command -v vip-manager >/dev/null 2>&1 || want+=(vip-manager)
    # the lab's vip-manager variant: Patroni on a real etcd
    command -v etcd >/dev/null 2>&1 || want+=(etcd-server)
    /usr/bin/python3 -c 'import ensurepip, venv' >/dev/null 2>&1 || want+=(python3-venv)
    echo "${want[@]:-}"
}

install_prereqs() {
    local want
    want="$(missing_debs)"
    if [ -n "$want" ]; then
        echo "==> installing Debian packages: $want"
        export DEBIAN_FRONTEND=noninteractive
        apt-get update -qq
        # shellcheck disable=SC2086
        apt-get install -y -qq --no-install-recommends $want >/dev/null
        # The packages enable vip-manager and etcd services; the lab starts its
        # own, in its namespaces, and these must not run.
        local unit
        for unit in vip-manager etcd; do
            if [ -d /run/systemd/system ] && systemctl list-unit-files "$unit.service" >/dev/null 2>&1; then
                systemctl disable --now "$unit.service" >/dev/null 2>&1 || true
            fi
        done
    fi
    # The Debian packages start a cluster and a pgbouncer service on install;
    # the tests start their own on other ports, so the packaged ones are left alone.
    id postgres >/dev/null 2>&1 || useradd --system --home-dir /var/lib/postgresql --shell /bin/bash postgres
    if ! command -v cargo >/dev/null 2>&1; then
        echo "error: cargo not found: install a Rust toolchain >= 1.85 with rustup; if it is installed for your user, run: sudo env \"PATH=\$PATH\" $0" >&2
        exit 2
    fi
    local minor
    minor="$(cargo --version | sed -n 's/^cargo 1\.\([0-9]*\).*/\1/p')"
    if [ -n "$minor" ] && [ "$minor" -lt 85 ]; then
        echo "error: $(cargo --version) is too old: the build needs Rust 1.85 or newer (rustup)" >&2
        exit 2
    fi
    if ! "$PATRONI_VENV/bin/patroni" --version >/dev/null 2>&1; then
        echo "==> creating the Patroni virtualenv at $PATRONI_VENV"
        mkdir -p "$(dirname "$PATRONI_VENV")"
        # Debian's python, not one under /root: the postgres user must be able to run it.
        /usr/bin/python3 -m venv "$PATRONI_VENV"
        "$PATRONI_VENV/bin/pip" install -q --disable-pip-version-check 'patroni[consul,etcd]>=4,<5' 'psycopg[binary]>=3'
    fi
    # The etcd extra (python-etcd) came later: a virtualenv made before lacks it.
    # The lab's vip-manager variant runs Patroni's etcd (v2 API) backend.
    if ! "$PATRONI_VENV/bin/python" -c 'import etcd' >/dev/null 2>&1; then
        echo "==> adding Patroni's etcd extra to $PATRONI_VENV"
        "$PATRONI_VENV/bin/pip" install -q --disable-pip-version-check 'patroni[consul,etcd]>=4,<5'
    fi
    # The postgres user runs Patroni from it: readable, and its parents traversable.
    chmod -R a+rX "$PATRONI_VENV"
    local d
    d="$(dirname "$PATRONI_VENV")"
    while [ "$d" != / ]; do chmod a+x "$d"; d="$(dirname "$d")"; done
}
