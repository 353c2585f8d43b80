# shellcheck shell=bash
# Shared by scripts/test.sh and scripts/lab.sh: runs them as root (through sudo
# when started by a user) and installs what the tests and the lab need, only
# what is missing, so a second run is fast.

PATRONI_VENV="${PATRONI_VENV:-/opt/patroni-hook-test/venv}"
# pgbouncer, setcap and visudo live in sbin, which `su` without `-` leaves off PATH.
export PATH="$PATH:/usr/local/sbin:/usr/sbin:/sbin"
PG_BIN="${PG_BIN:-/usr/lib/postgresql/15/bin}"

# Real Consul for the lab and the end-to-end tests: Debian's consul 1.8.7
# (MPL-2.0), the last Debian release to package it being bullseye. apt fetches
# the .deb with an apt state of its own (the system's sources stay as they
# are); only the static binary is installed, not the package, whose maintainer
# scripts would add a system user and a service the lab does not want.
CONSUL_DEB_VERSION=1.8.7+dfsg1-2+b3
CONSUL_DEB_SHA256=e4e888bba104daba1d9161f49bfc52649a7e4efd45b1a7ead5bc54f2cb9c89d9
CONSUL_BIN=/usr/local/bin/consul

# cargo-deb, the `cargo deb` subcommand that builds the Debian package
# (tests/deb.rs); installed from crates.io when missing.
CARGO_DEB_VERSION=3.8.0

need_root() {
    if [ "$(id -u)" -ne 0 ]; then
        echo "error: run as root: the tests create network namespaces and run PostgreSQL as the postgres user" >&2
        exit 2
    fi
}

# as_root SCRIPT ARGS...: when not root, runs SCRIPT again as root through sudo
# and does not return. Kept across sudo: PATH (so that root finds a rustup
# toolchain of the user's), RUSTUP_HOME (where that toolchain lives) and the
# variables the scripts and tests read. A root shell (a fresh Debian has no
# sudo) runs the script as it is. Call it before any cd: SCRIPT may be relative.
as_root() {
    local script="$1"
    shift
    [ "$(id -u)" -ne 0 ] || return 0
    if ! command -v sudo >/dev/null 2>&1; then
        echo "error: $script must run as root (network namespaces, packages, the postgres user) and sudo is not installed: run it from a root shell" >&2
        exit 2
    fi
    local keep=(CI PATRONI_VENV TEST_THREADS PG_BIN CONSUL_HTTP_ADDR CONSUL_HTTP_TOKEN) v
    for v in $(compgen -e); do
        case "$v" in LAB_*) keep+=("$v") ;; esac
    done
    local rustup_home="${RUSTUP_HOME:-}"
    if [ -z "$rustup_home" ] && [ -d "${HOME:-/nonexistent}/.rustup" ]; then
        rustup_home="$HOME/.rustup"
    fi
    # --preserve-env keeps the values off sudo's command line (a token among
    # them); PATH goes through env, since sudo's secure_path would replace it.
    exec sudo "--preserve-env=$(IFS=,; echo "${keep[*]}")" env "PATH=$PATH" \
        ${rustup_home:+"RUSTUP_HOME=$rustup_home"} bash "$(readlink -f "$script")" "$@"
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
    # tests/edges.rs holds a run at one system call to race it against another
    command -v strace >/dev/null 2>&1 || want+=(strace)
    # tests/pause_edges.rs steps one run's wall clock (libfaketime)
    command -v faketime >/dev/null 2>&1 || want+=(faketime)
    # tests/metrics.rs scrapes the real node_exporter; tests/examples.rs checks
    # the alert rules with promtool
    [ -x /usr/bin/prometheus-node-exporter ] || want+=(prometheus-node-exporter)
    command -v promtool >/dev/null 2>&1 || want+=(prometheus)
    # tests/examples.rs: units (systemd-analyze verify), sudoers (visudo -c), Vagrantfile (vagrant validate, ruby -c)
    command -v systemd-analyze >/dev/null 2>&1 || want+=(systemd)
    command -v visudo >/dev/null 2>&1 || [ -x /usr/sbin/visudo ] || want+=(sudo)
    command -v vagrant >/dev/null 2>&1 || want+=(vagrant)
    command -v vip-manager >/dev/null 2>&1 || want+=(vip-manager)
    # tests/deb.rs: cargo deb resolves the binary's dependencies with
    # dpkg-shlibdeps; lintian checks the package.
    command -v dpkg-shlibdeps >/dev/null 2>&1 || want+=(dpkg-dev)
    command -v lintian >/dev/null 2>&1 || want+=(lintian)
    # the lab's vip-manager variant: Patroni on a real etcd
    command -v etcd >/dev/null 2>&1 || want+=(etcd-server)
    # tests/examples.rs: etcd-rbac.sh and the etcd watch unit run etcdctl
    [ -x /usr/bin/etcdctl ] || want+=(etcd-client)
    # the lab's backup scenario and tests/pgbackrest_examples.rs: the repository host and its TLS servers
    command -v pgbackrest >/dev/null 2>&1 || want+=(pgbackrest)
    /usr/bin/python3 -c 'import ensurepip, venv' >/dev/null 2>&1 || want+=(python3-venv)
    echo "${want[@]:-}"
}

# consul_is_187 BIN: BIN runs and its `version` says 1.8.7. The output is
# read whole before it is looked at: `BIN version | head -n1` under pipefail
# fails whenever head exits before consul has written its last line (consul
# dies of SIGPIPE), which made a good install look missing now and then.
consul_is_187() {
    local out
    out="$("$1" version 2>/dev/null)" || return 1
    [ "${out%%$'\n'*}" = "Consul v1.8.7" ]
}

# install_consul: /usr/local/bin/consul at 1.8.7, unless `consul version`
# already says so. Fails loudly, naming the step, when the suite or the
# version is gone from Debian's archive or the .deb is not the one expected.
install_consul() {
    if consul_is_187 "$CONSUL_BIN"; then
        return 0
    fi
    echo "==> installing Consul 1.8.7 from Debian bullseye's consul_$CONSUL_DEB_VERSION (binary only) to $CONSUL_BIN"
    local d apt_opts deb
    d="$(mktemp -d /tmp/patroni-hook-consul.XXXXXX)"
    mkdir -p "$d/sources" "$d/lists/partial" "$d/cache/archives/partial" "$d/root"
    echo "deb [signed-by=/usr/share/keyrings/debian-archive-keyring.gpg] http://deb.debian.org/debian bullseye main" >"$d/sources/bullseye.list"
    apt_opts=(-o Dir::Etc::sourcelist=/dev/null -o "Dir::Etc::sourceparts=$d/sources"
        -o "Dir::State::Lists=$d/lists" -o "Dir::Cache=$d/cache" -o APT::Sandbox::User=root)
    if [ ! -r /usr/share/keyrings/debian-archive-keyring.gpg ]; then
        echo "error: installing Consul: /usr/share/keyrings/debian-archive-keyring.gpg is missing (apt-get install debian-archive-keyring)" >&2
        rm -rf "$d"; exit 2
    fi
    if ! apt-get "${apt_opts[@]}" update -qq >"$d/update.log" 2>&1 || grep -q '^[WE]:' "$d/update.log"; then
        echo "error: installing Consul: apt could not read Debian's bullseye suite (main), which carries consul $CONSUL_DEB_VERSION; apt said:" >&2
        sed 's/^/    /' "$d/update.log" >&2
        rm -rf "$d"; exit 2
    fi
    if ! (cd "$d" && apt-get "${apt_opts[@]}" download -qq "consul=$CONSUL_DEB_VERSION") >"$d/download.log" 2>&1; then
        echo "error: installing Consul: Debian's bullseye suite no longer serves consul=$CONSUL_DEB_VERSION; apt said:" >&2
        sed 's/^/    /' "$d/download.log" >&2
        rm -rf "$d"; exit 2
    fi
    deb="$(ls "$d"/consul_*.deb)"
    if ! echo "$CONSUL_DEB_SHA256  $deb" | sha256sum -c --quiet - >/dev/null 2>&1; then
        echo "error: installing Consul: $(basename "$deb") has sha256 $(sha256sum "$deb" | cut -d' ' -f1), expected $CONSUL_DEB_SHA256" >&2
        rm -rf "$d"; exit 2
    fi
    dpkg-deb -x "$deb" "$d/root"
    install -m 0755 "$d/root/usr/bin/consul" "$CONSUL_BIN"
    rm -rf "$d"
    if ! consul_is_187 "$CONSUL_BIN"; then
        echo "error: installing Consul: $CONSUL_BIN does not say Consul v1.8.7 after the install" >&2
        exit 2
    fi
    echo "Consul v1.8.7 at $CONSUL_BIN"
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
        # The packages enable vip-manager, etcd, Prometheus and node_exporter
        # services; the lab and the tests start their own, in their namespaces
        # or on loopback ports of their choosing, and these must not run.
        local unit
        for unit in vip-manager etcd prometheus prometheus-node-exporter pgbackrest; do
            if [ -d /run/systemd/system ] && systemctl list-unit-files "$unit.service" >/dev/null 2>&1; then
                systemctl disable --now "$unit.service" >/dev/null 2>&1 || true
            fi
        done
    fi
    install_consul
    # The Debian packages start a cluster and a pgbouncer service on install;
    # the tests start their own on other ports, so the packaged ones are left alone.
    id postgres >/dev/null 2>&1 || useradd --system --home-dir /var/lib/postgresql --shell /bin/bash postgres
    if ! command -v cargo >/dev/null 2>&1; then
        echo "error: cargo not found: install a Rust toolchain >= 1.85 with rustup (as root, or as your user and then run $0 as that user: it keeps your PATH through sudo)" >&2
        exit 2
    fi
    local minor
    minor="$(cargo --version | sed -n 's/^cargo 1\.\([0-9]*\).*/\1/p')"
    if [ -n "$minor" ] && [ "$minor" -lt 85 ]; then
        echo "error: $(cargo --version) is too old: the build needs Rust 1.85 or newer (rustup)" >&2
        exit 2
    fi
    if ! cargo deb --version >/dev/null 2>&1; then
        echo "==> cargo install --locked cargo-deb@$CARGO_DEB_VERSION"
        cargo install --locked --quiet "cargo-deb@$CARGO_DEB_VERSION"
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
