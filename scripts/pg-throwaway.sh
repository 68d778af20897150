#!/usr/bin/env bash
# A throwaway PostgreSQL server for the tests: a fresh cluster in a temp dir, listening on
# 127.0.0.1 on a free port, trusting the superuser `postgres` (whatever the OS user), tuned for
# speed over durability (fsync off). Nothing outside its temp dir is touched.
#
#   scripts/pg-throwaway.sh start [DIR]   start a server in DIR (new or empty; default: a new
#                                         temp dir) and print, ready for `eval`:
#                                           AIGENTFLOW_PG_URL=postgres://postgres@127.0.0.1:PORT/postgres
#                                           AIGENTFLOW_PG_DIR=DIR
#   scripts/pg-throwaway.sh stop DIR      stop that server (fast shutdown) and remove DIR; a DIR
#                                         that is gone or empty is fine, one this script did not
#                                         make is refused
#   source scripts/pg-throwaway.sh        start one and export both variables in this shell;
#                                         `pg_throwaway_stop` stops it (also run on the shell's
#                                         exit when the shell has no EXIT trap of its own)
#
# The binaries (initdb, pg_ctl, postgres) are taken from PATH or /usr/lib/postgresql/*/bin; when
# missing, Debian's `postgresql` package is installed with apt-get. initdb refuses root, so as
# root the server runs as the `postgres` system user (created if missing).
# Status lines go to stderr; stdout carries only the two assignments.

if [[ "${BASH_SOURCE[0]}" != "$0" ]]; then
  # Sourced: start through a child process so `set -e` and the traps below never leak into the
  # caller's shell, then export what it printed.
  _pg_throwaway_script=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)/$(basename "${BASH_SOURCE[0]}")
  if _pg_throwaway_out=$(bash "$_pg_throwaway_script" start); then
    eval "$_pg_throwaway_out"
    export AIGENTFLOW_PG_URL AIGENTFLOW_PG_DIR
    unset _pg_throwaway_out
    pg_throwaway_stop() {
      if [[ -n "${AIGENTFLOW_PG_DIR:-}" ]]; then
        bash "$_pg_throwaway_script" stop "$AIGENTFLOW_PG_DIR" && unset AIGENTFLOW_PG_URL AIGENTFLOW_PG_DIR
      fi
    }
    if [[ -z "$(trap -p EXIT)" ]]; then
      trap pg_throwaway_stop EXIT
    else
      echo "pg-throwaway: this shell has an EXIT trap: run pg_throwaway_stop when done" >&2
    fi
    return 0
  else
    unset _pg_throwaway_out
    return 1
  fi
fi

set -euo pipefail

MARKER=aigentflow-pg-throwaway
SUPERUSER=postgres

say() { echo "pg-throwaway: $*" >&2; }
die() {
  say "error: $*"
  exit 1
}

# Sets BINDIR to a folder holding initdb, pg_ctl and postgres.
find_binaries() {
  local initdb dir
  BINDIR=
  if initdb=$(command -v initdb 2>/dev/null); then
    dir=$(dirname "$(readlink -f "$initdb")")
    if [[ -x "$dir/pg_ctl" && -x "$dir/postgres" ]]; then
      BINDIR=$dir
      return 0
    fi
  fi
  # Debian keeps them off PATH, one folder per major version: take the newest.
  for dir in $(printf '%s\n' /usr/lib/postgresql/*/bin | sort -V -r); do
    if [[ -x "$dir/initdb" && -x "$dir/pg_ctl" && -x "$dir/postgres" ]]; then
      BINDIR=$dir
      return 0
    fi
  done
  return 1
}

install_postgresql() {
  local sudo=()
  if [[ $EUID -ne 0 ]]; then
    if ! command -v sudo >/dev/null 2>&1 || ! sudo -n true 2>/dev/null; then
      die "PostgreSQL is not installed and this user cannot install it: run 'apt-get install postgresql' as root"
    fi
    sudo=(sudo -n)
  fi
  command -v apt-get >/dev/null 2>&1 ||
    die "PostgreSQL is not installed (no initdb on PATH or under /usr/lib/postgresql) and apt-get is missing"
  say "installing PostgreSQL (apt-get install postgresql)"
  if ! "${sudo[@]}" env DEBIAN_FRONTEND=noninteractive apt-get install -y -q postgresql >&2; then
    "${sudo[@]}" env DEBIAN_FRONTEND=noninteractive apt-get update -q >&2
    "${sudo[@]}" env DEBIAN_FRONTEND=noninteractive apt-get install -y -q postgresql >&2
  fi
}

# Runs a command as the user that owns the server.
as_owner() {
  if [[ $EUID -eq 0 ]]; then
    if command -v runuser >/dev/null 2>&1; then
      runuser -u "$OWNER" -- "$@"
    else
      su -s /bin/sh "$OWNER" -c "$(printf '%q ' "$@")"
    fi
  else
    "$@"
  fi
}

free_port() {
  if command -v python3 >/dev/null 2>&1; then
    python3 -c 'import socket
s = socket.socket()
s.bind(("127.0.0.1", 0))
print(s.getsockname()[1])'
  else
    echo $((20000 + RANDOM % 40000))
  fi
}

accepts_connections() {
  local port=$1
  if [[ -x "$BINDIR/pg_isready" ]]; then
    "$BINDIR/pg_isready" -q -h 127.0.0.1 -p "$port" -U "$SUPERUSER" -d postgres
  elif command -v pg_isready >/dev/null 2>&1; then
    pg_isready -q -h 127.0.0.1 -p "$port" -U "$SUPERUSER" -d postgres
  else
    python3 -c 'import socket, sys
socket.create_connection(("127.0.0.1", int(sys.argv[1])), timeout=1).close()' "$port" 2>/dev/null
  fi
}

log_tail() {
  local file
  for file in "$@"; do
    if [[ -s "$file" ]]; then
      say "last lines of $file:"
      tail -n 25 "$file" | sed 's/^/  /' >&2
    fi
  done
}

cmd_start() {
  local dir=${1:-} made_dir=
  find_binaries || { install_postgresql && find_binaries; } ||
    die "no initdb, pg_ctl and postgres in one folder on PATH or under /usr/lib/postgresql/*/bin"

  if [[ $EUID -eq 0 ]]; then
    OWNER=postgres
    if ! id -u "$OWNER" >/dev/null 2>&1; then
      say "creating the system user $OWNER"
      useradd --system --no-create-home --shell /usr/sbin/nologin "$OWNER"
    fi
  else
    OWNER=$(id -un)
  fi

  if [[ -z "$dir" ]]; then
    dir=$(mktemp -d "${TMPDIR:-/tmp}/aigentflow-pg.XXXXXX")
    made_dir=1
  else
    mkdir -p "$dir"
    [[ -z "$(ls -A "$dir")" ]] || die "$dir is not empty"
    dir=$(cd "$dir" && pwd)
  fi
  # From here on a failure, Ctrl-C or kill stops what was started and removes the dir.
  trap 'on_start_exit' EXIT
  trap 'on_start_signal INT' INT
  trap 'on_start_signal TERM' TERM
  START_DIR=$dir
  touch "$dir/$MARKER"
  if [[ $EUID -eq 0 ]]; then
    chown "$OWNER" "$dir"
    chmod 700 "$dir"
    if ! as_owner test -w "$dir"; then
      # e.g. TMPDIR under /root, which the postgres user cannot reach
      [[ -n "$made_dir" ]] || die "the user $OWNER cannot write $dir"
      rm -rf "$dir"
      dir=$(mktemp -d /tmp/aigentflow-pg.XXXXXX)
      START_DIR=$dir
      touch "$dir/$MARKER"
      chown "$OWNER" "$dir"
      chmod 700 "$dir"
    fi
  fi

  local data=$dir/data
  if ! as_owner "$BINDIR/initdb" -D "$data" -U "$SUPERUSER" --auth=trust --encoding=UTF8 \
    --locale=C --no-sync >"$dir/initdb.log" 2>&1; then
    log_tail "$dir/initdb.log"
    die "initdb failed in $data"
  fi
  as_owner tee -a "$data/postgresql.conf" >/dev/null <<CONF

# throwaway test server (scripts/pg-throwaway.sh)
listen_addresses = '127.0.0.1'
unix_socket_directories = '$dir'
fsync = off
synchronous_commit = off
full_page_writes = off
max_connections = 300
shared_buffers = 32MB
CONF

  # The free port may be taken before the server binds it: try a few.
  local port attempt deadline
  for attempt in 1 2 3 4 5; do
    port=$(free_port)
    if as_owner "$BINDIR/pg_ctl" -D "$data" -l "$dir/server.log" -o "-p $port" -w -t 20 start \
      >"$dir/pg_ctl.log" 2>&1; then
      break
    fi
    if ! grep -q -i 'could not bind\|could not create any TCP/IP sockets\|address already in use' \
      "$dir/server.log" 2>/dev/null || [[ $attempt -eq 5 ]]; then
      log_tail "$dir/pg_ctl.log" "$dir/server.log"
      die "the server in $data did not start"
    fi
    say "port $port was taken, trying another"
    : >"$dir/server.log"
  done
  deadline=$((SECONDS + 10))
  until accepts_connections "$port"; do
    if ((SECONDS >= deadline)); then
      log_tail "$dir/server.log"
      die "the server in $data does not accept connections on 127.0.0.1:$port after 10 s"
    fi
    sleep 0.1
  done

  trap - EXIT INT TERM
  say "PostgreSQL $("$BINDIR/postgres" --version | awk '{print $3}') on 127.0.0.1:$port, data in $data"
  printf 'AIGENTFLOW_PG_URL=%q\n' "postgres://$SUPERUSER@127.0.0.1:$port/postgres"
  printf 'AIGENTFLOW_PG_DIR=%q\n' "$dir"
}

on_start_exit() {
  local status=$?
  trap - EXIT INT TERM
  stop_dir "$START_DIR" || true
  exit "$status"
}

# A signal during start: clean up, then die of the same signal so the caller sees it.
on_start_signal() {
  trap - EXIT INT TERM
  stop_dir "$START_DIR" || true
  kill -s "$1" $$
}

# Stops the server in DIR (if one runs) and removes DIR.
stop_dir() {
  local dir=$1 data owner
  [[ -e "$dir" ]] || return 0
  [[ -d "$dir" ]] || die "$dir is not a directory"
  if [[ ! -e "$dir/$MARKER" ]]; then
    [[ -z "$(ls -A "$dir")" ]] || die "$dir was not made by this script (no $MARKER in it): left alone"
    rmdir "$dir"
    return 0
  fi
  data=$dir/data
  if [[ -e "$data/postmaster.pid" ]]; then
    find_binaries || die "pg_ctl not found to stop the server in $data"
    owner=$(stat -c %U "$data")
    if [[ $EUID -eq 0 ]]; then OWNER=$owner; fi
    if ! as_owner "$BINDIR/pg_ctl" -D "$data" -m fast -w -t 30 stop >/dev/null 2>&1; then
      # pg_ctl could not (the server may already be gone): make sure no postmaster is left
      local pid
      pid=$(head -n 1 "$data/postmaster.pid" 2>/dev/null || true)
      if [[ "$pid" =~ ^[0-9]+$ ]] && [[ "$(readlink "/proc/$pid/cwd" 2>/dev/null)" == "$data" ]]; then
        say "fast shutdown failed: killing the postmaster $pid"
        kill -s KILL "$pid" 2>/dev/null || true
      fi
    fi
  fi
  rm -rf "$dir"
}

case "${1:-}" in
  start)
    [[ $# -le 2 ]] || die "usage: $0 start [DIR]"
    cmd_start "${2:-}"
    ;;
  stop)
    [[ $# -eq 2 && -n "$2" ]] || die "usage: $0 stop DIR"
    stop_dir "$2"
    ;;
  *)
    echo "usage: $0 start [DIR] | stop DIR   (or: source $0)" >&2
    exit 2
    ;;
esac
