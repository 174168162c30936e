#!/usr/bin/env bash
# PostgreSQL for KeyFlow's tests, brought up by the project itself on a bare Debian
# machine (CI and developers' machines start with no service running).
#
#   scripts/test-postgres.sh up     install (if missing), configure, start; print the URL
#   scripts/test-postgres.sh down   stop the cluster
#   scripts/test-postgres.sh url    print the URL the tests use (TEST_DATABASE_URL)
#
# `up` needs root the first time (apt-get, pg_ctlcluster). It uses Debian's cluster
# `<newest version>/main`, listening on 127.0.0.1:5432 only, with trust authentication
# for loopback TCP (a throwaway test server: never point this at a real deployment) and
# a database `test`. It is idempotent: when the server already answers and `test`
# exists it changes nothing and returns at once. It fails with a message, never hangs:
# every external step runs under `timeout`.
set -euo pipefail

HOST=127.0.0.1
PORT=5432
DB=test
URL="postgres://postgres@${HOST}:${PORT}/${DB}"

die() {
    echo "test-postgres: error: $*" >&2
    exit 1
}
say() { echo "test-postgres: $*" >&2; }

ready() { pg_isready -q -h "$HOST" -p "$PORT" -U postgres -d postgres 2>/dev/null; }

has_test_db() {
    [ "$(psql -h "$HOST" -p "$PORT" -U postgres -d postgres -XtAc \
        "SELECT 1 FROM pg_database WHERE datname = '${DB}'" 2>/dev/null)" = 1 ]
}

need_root() {
    [ "$(id -u)" = 0 ] || die "$1 needs root (apt-get / pg_ctlcluster). Run as root, or start a PostgreSQL yourself on ${HOST}:${PORT} with a database '${DB}' and trust auth for user postgres."
}

install_postgres() {
    need_root "installing PostgreSQL"
    say "installing Debian's postgresql package (apt-get update first)"
    export DEBIAN_FRONTEND=noninteractive
    local apt_opts=(-o Acquire::Retries=2 -o Acquire::http::Timeout=30 -o Acquire::https::Timeout=30)
    timeout 300 apt-get "${apt_opts[@]}" update -qq \
        || die "apt-get update failed or timed out (is the Debian mirror reachable?)"
    timeout 600 apt-get "${apt_opts[@]}" install -y -qq --no-install-recommends postgresql >/dev/null \
        || die "apt-get install postgresql failed or timed out"
}

newest_version() {
    # The newest installed server version (directories under /usr/lib/postgresql with a postgres binary).
    local v best=""
    for d in /usr/lib/postgresql/*/bin/postgres; do
        [ -x "$d" ] || continue
        v=$(basename "$(dirname "$(dirname "$d")")")
        if [ -z "$best" ] || [ "$v" -gt "$best" ]; then best=$v; fi
    done
    echo "$best"
}

# Our settings live in a conf.d drop-in (Debian's postgresql.conf includes conf.d), written
# only when its content differs, so a second run writes nothing.
write_conf() {
    local version=$1
    local file="/etc/postgresql/$version/main/conf.d/keyflow-test.conf"
    local want
    want=$(printf '%s\n' \
        "# keyflow tests (scripts/test-postgres.sh): loopback only" \
        "listen_addresses = '${HOST}'" \
        "port = ${PORT}")
    if [ "$(cat "$file" 2>/dev/null)" != "$want" ]; then
        mkdir -p "$(dirname "$file")"
        printf '%s\n' "$want" >"$file"
        RESTART=1
    fi
}

# Only the URL goes to stdout, since callers capture it with $(...): every tool's chatter
# goes to stderr (pg_ctlcluster prints e.g. "Removed stale pid file." on stdout). A plain
# redirection, not a saved descriptor, so the server daemon inherits none of the caller's
# pipe and $(...) does not wait for it to exit.
up() {
    start >&2
    echo "$URL"
}

start() {
    if ready && has_test_db; then
        return
    fi
    command -v pg_ctlcluster >/dev/null && [ -n "$(newest_version)" ] || install_postgres
    need_root "starting PostgreSQL"
    local version
    version=$(newest_version)
    [ -n "$version" ] || die "no PostgreSQL server under /usr/lib/postgresql after installing"

    if ! pg_lsclusters -h 2>/dev/null | awk '{print $1" "$2}' | grep -qx "$version main"; then
        say "creating cluster $version/main"
        timeout 120 pg_createcluster "$version" main --port "$PORT" >/dev/null \
            || die "pg_createcluster $version main failed"
    fi
    RESTART=0
    write_conf "$version"
    # Trust for loopback TCP only; placed first so it wins over Debian's scram lines.
    local hba="/etc/postgresql/$version/main/pg_hba.conf"
    local line="host all all ${HOST}/32 trust"
    if ! grep -qxF "$line" "$hba"; then
        { echo "# keyflow tests (scripts/test-postgres.sh): loopback only"; echo "$line"; cat "$hba"; } >"$hba.new"
        chown --reference="$hba" "$hba.new"
        chmod --reference="$hba" "$hba.new"
        mv "$hba.new" "$hba"
        RESTART=1
    fi

    local status
    status=$(pg_lsclusters -h | awk -v v="$version" '$1 == v && $2 == "main" {print $4}')
    if [ "$status" = online ] && [ "$RESTART" = 1 ]; then
        say "restarting cluster $version/main with the test settings"
        timeout 60 pg_ctlcluster "$version" main restart \
            || die "pg_ctlcluster $version main restart failed; see /var/log/postgresql/postgresql-$version-main.log"
    elif [ "$status" != online ]; then
        say "starting cluster $version/main"
        timeout 60 pg_ctlcluster "$version" main start \
            || die "pg_ctlcluster $version main start failed; see /var/log/postgresql/postgresql-$version-main.log"
    fi
    local i
    for i in $(seq 1 60); do
        ready && break
        [ "$i" = 60 ] && die "PostgreSQL started but does not answer on ${HOST}:${PORT} after 30 s (is the port taken by another server?)"
        sleep 0.5 # waits for the external server process to accept connections
    done
    if ! has_test_db; then
        psql -h "$HOST" -p "$PORT" -U postgres -d postgres -Xqc "CREATE DATABASE ${DB}" \
            || die "cannot create database '${DB}' as user postgres on ${HOST}:${PORT} (is loopback trust auth in effect?)"
    fi
}

down() {
    command -v pg_lsclusters >/dev/null || return 0
    local version
    version=$(newest_version)
    [ -n "$version" ] || return 0
    need_root "stopping PostgreSQL"
    pg_ctlcluster "$version" main stop 2>/dev/null || true
}

case "${1:-}" in
    up) up ;;
    down) down ;;
    url) echo "$URL" ;;
    *)
        echo "usage: $0 up|down|url" >&2
        exit 2
        ;;
esac
