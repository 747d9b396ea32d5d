#!/usr/bin/env bash
# A throwaway PostgreSQL server for the tests of the PostgreSQL store
# (`cargo test --features postgres`), on 127.0.0.1 only, in a temp directory.
#
#   eval "$(scripts/test-pg.sh start)"   # prints `export DURABLY_TEST_PG_URL=…`
#   cargo test --features postgres pg::
#   scripts/test-pg.sh stop              # stops it and removes its directory
#   scripts/test-pg.sh url               # the URL of the running server
#   scripts/test-pg.sh restart           # restarts it (fast shutdown: clients are cut), same port
#
# Installs Debian's `postgresql` package when no server binaries are found
# (needs root; CI runs as root). As root the server runs as the `postgres`
# user (initdb refuses root); otherwise as the calling user.
#
# Settings for tests, not production: trust authentication on 127.0.0.1,
# fsync off (a crash of the machine loses the throwaway data, nothing else).
#
# Environment: DURABLY_PG_PORT (first port to try, default 54329),
# DURABLY_PG_STATE (the state file, default ${TMPDIR:-/tmp}/pg-server-durably.env),
# DURABLY_PG_SSL_DIR (a directory holding server.crt and server.key: the
# server starts with ssl=on and that certificate; the TLS tests make one;
# with a ca.pem there too, role durably_cert logs in only with a client
# certificate signed by it).
set -euo pipefail
# (Not named /tmp/durably-*: some test setups remove recent dirs of that name.)

STATE="${DURABLY_PG_STATE:-${TMPDIR:-/tmp}/pg-server-durably.env}"
FIRST_PORT="${DURABLY_PG_PORT:-54329}"
SSL_DIR="${DURABLY_PG_SSL_DIR:-}"

log() { echo "test-pg: $*" >&2; }

pg_bin() {
  local d
  for d in $(ls -d /usr/lib/postgresql/*/bin 2>/dev/null | sort -V -r); do
    if [ -x "$d/initdb" ] && [ -x "$d/pg_ctl" ]; then
      echo "$d"
      return 0
    fi
  done
  return 1
}

install_pg() {
  if pg_bin >/dev/null; then return 0; fi
  if [ "$(id -u)" != 0 ]; then
    log "no PostgreSQL server binaries in /usr/lib/postgresql/*/bin and not root: install Debian's 'postgresql' package"
    return 1
  fi
  log "installing Debian's postgresql package"
  local i
  for i in 1 2 3; do
    if (apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends postgresql >/dev/null); then
      break
    fi
    log "apt-get failed (try $i), retrying"
    sleep 5
  done
  pg_bin >/dev/null || { log "postgresql did not install"; return 1; }
}

# Runs a server binary as the server's user.
as_pg() {
  if [ "$(id -u)" = 0 ]; then
    runuser -u postgres -- "$@"
  else
    "$@"
  fi
}

port_free() {
  ! (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null
}

url_of() { echo "postgres://postgres@127.0.0.1:$1/postgres"; }

start() {
  if [ -f "$STATE" ]; then
    # shellcheck disable=SC1090
    . "$STATE"
    if [ -n "${PG_DIR:-}" ] && [ -d "$PG_DIR" ] && as_pg "$PG_BIN/pg_ctl" -D "$PG_DIR/data" status >/dev/null 2>&1; then
      log "already running on port $PG_PORT ($PG_DIR)"
      echo "export DURABLY_TEST_PG_URL=$(url_of "$PG_PORT")"
      return 0
    fi
    rm -f "$STATE"
  fi
  install_pg
  PG_BIN="$(pg_bin)"
  PG_DIR="$(mktemp -d "${TMPDIR:-/tmp}/pg-server-durably.XXXXXX")"
  chmod 755 "$PG_DIR"
  if [ "$(id -u)" = 0 ]; then chown postgres: "$PG_DIR"; fi
  as_pg "$PG_BIN/initdb" -D "$PG_DIR/data" -A trust -U postgres --no-sync -E UTF8 >"$PG_DIR/initdb.log" 2>&1 || {
    cat "$PG_DIR/initdb.log" >&2
    rm -rf "$PG_DIR"
    return 1
  }
  PG_SSL_OPTS=""
  if [ -n "$SSL_DIR" ]; then
    # The key must belong to the server's user and be private, or it refuses to start.
    cp "$SSL_DIR/server.crt" "$SSL_DIR/server.key" "$PG_DIR/"
    chmod 600 "$PG_DIR/server.key"
    if [ "$(id -u)" = 0 ]; then chown postgres: "$PG_DIR/server.crt" "$PG_DIR/server.key"; fi
    PG_SSL_OPTS="-c ssl=on -c ssl_cert_file=$PG_DIR/server.crt -c ssl_key_file=$PG_DIR/server.key"
    if [ -f "$SSL_DIR/ca.pem" ]; then
      # Client certificates signed by that CA: role durably_cert may only
      # log in with one (its CN), over TLS; every other role as before.
      cp "$SSL_DIR/ca.pem" "$PG_DIR/"
      if [ "$(id -u)" = 0 ]; then chown postgres: "$PG_DIR/ca.pem"; fi
      PG_SSL_OPTS="$PG_SSL_OPTS -c ssl_ca_file=$PG_DIR/ca.pem"
      { printf 'hostssl all durably_cert 127.0.0.1/32 cert\nhost all durably_cert 0.0.0.0/0 reject\n'; cat "$PG_DIR/data/pg_hba.conf"; } >"$PG_DIR/hba.tmp"
      mv "$PG_DIR/hba.tmp" "$PG_DIR/data/pg_hba.conf"
      if [ "$(id -u)" = 0 ]; then chown postgres: "$PG_DIR/data/pg_hba.conf"; fi
    fi
  fi
  # A port can be free to connect to and still taken (e.g. a client's
  # ephemeral port): on a bind failure, the next port.
  local port="$FIRST_PORT" tries=0
  while :; do
    tries=$((tries + 1))
    if [ "$tries" -gt 20 ]; then log "no free port from $FIRST_PORT on"; rm -rf "$PG_DIR"; return 1; fi
    if ! port_free "$port"; then port=$((port + 1)); continue; fi
    rm -f "$PG_DIR/server.log"
    # Unix socket in the private directory too, so no system socket is touched.
    if as_pg "$PG_BIN/pg_ctl" -D "$PG_DIR/data" -l "$PG_DIR/server.log" -w -t 60 \
      -o "-p $port -c listen_addresses=127.0.0.1 -k $PG_DIR -c fsync=off -c max_connections=200 $PG_SSL_OPTS" \
      start >/dev/null; then
      break
    fi
    if grep -q "could not bind\|could not create any TCP/IP sockets" "$PG_DIR/server.log"; then
      port=$((port + 1))
      continue
    fi
    cat "$PG_DIR/server.log" >&2
    rm -rf "$PG_DIR"
    return 1
  done
  printf 'PG_BIN=%q\nPG_DIR=%q\nPG_PORT=%q\nPG_SSL_OPTS=%q\n' "$PG_BIN" "$PG_DIR" "$port" "$PG_SSL_OPTS" >"$STATE"
  log "PostgreSQL $("$PG_BIN/postgres" --version | awk '{print $3}') on 127.0.0.1:$port ($PG_DIR)"
  echo "export DURABLY_TEST_PG_URL=$(url_of "$port")"
}

stop() {
  if [ ! -f "$STATE" ]; then
    log "not running (no $STATE)"
    return 0
  fi
  # shellcheck disable=SC1090
  . "$STATE"
  as_pg "$PG_BIN/pg_ctl" -D "$PG_DIR/data" -m fast -w stop >/dev/null 2>&1 || true
  rm -rf "$PG_DIR" "$STATE"
  log "stopped"
}

restart() {
  [ -f "$STATE" ] || { log "not running"; return 1; }
  # shellcheck disable=SC1090
  . "$STATE"
  as_pg "$PG_BIN/pg_ctl" -D "$PG_DIR/data" -l "$PG_DIR/server.log" -m fast -w -t 60 \
    -o "-p $PG_PORT -c listen_addresses=127.0.0.1 -k $PG_DIR -c fsync=off -c max_connections=200 ${PG_SSL_OPTS:-}" \
    restart >/dev/null
  log "restarted on port $PG_PORT"
}

url() {
  [ -f "$STATE" ] || { log "not running"; return 1; }
  # shellcheck disable=SC1090
  . "$STATE"
  url_of "$PG_PORT"
}

case "${1:-}" in
  start) start ;;
  stop) stop ;;
  url) url ;;
  restart) restart ;;
  *)
    echo "usage: $0 start|stop|restart|url" >&2
    exit 2
    ;;
esac
