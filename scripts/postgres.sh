#!/usr/bin/env bash
# A throwaway PostgreSQL server for the tests, on a free 127.0.0.1 port.
#
#   scripts/postgres.sh start   initdb a fresh cluster, start it, print CLOSEDLOOP_TEST_POSTGRES_DSN=...
#                               (already running: print the line again and change nothing)
#   scripts/postgres.sh env     print the CLOSEDLOOP_TEST_POSTGRES_DSN=... line of the running server
#   scripts/postgres.sh stop    stop the server and delete its data
#   scripts/postgres.sh restart [fast|immediate]
#                               stop the running server (immediate: as if it crashed) and start it
#                               again on the same port and data; print the DSN line
#
# Only the NAME=value line goes to stdout, so `export "$(scripts/postgres.sh start)"` works.
# Needs the PostgreSQL server binaries (initdb, pg_ctl, postgres): found with
# `pg_config --bindir`, else in the newest /usr/lib/postgresql/*/bin, or set CLOSEDLOOP_PG_BINDIR.
# initdb refuses to run as root, so as root the server runs as CLOSEDLOOP_PG_USER
# (default: postgres, created as a system user if missing).
#
# State (data directory, log, socket) lives in CLOSEDLOOP_PG_DIR, default
# ${TMPDIR:-/tmp}/closedloop-pg. Durability is switched off (fsync=off and friends): this
# server is for tests only.
set -euo pipefail
# shellcheck source=scripts/lib.sh
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

STATE=${CLOSEDLOOP_PG_DIR:-${TMPDIR:-/tmp}/closedloop-pg}
DATA=$STATE/data
RUN_USER=${CLOSEDLOOP_PG_USER:-postgres}
ENV_NAME=CLOSEDLOOP_TEST_POSTGRES_DSN

find_bindir() {
	local d
	if [[ -n "${CLOSEDLOOP_PG_BINDIR:-}" ]]; then
		printf '%s\n' "$CLOSEDLOOP_PG_BINDIR"
		return
	fi
	if command -v pg_config >/dev/null && d=$(pg_config --bindir 2>/dev/null) && [[ -x "$d/initdb" && -x "$d/pg_ctl" ]]; then
		printf '%s\n' "$d"
		return
	fi
	d=$(ls -d /usr/lib/postgresql/*/bin 2>/dev/null | sort -V | tail -n 1 || true)
	if [[ -n "$d" && -x "$d/initdb" && -x "$d/pg_ctl" ]]; then
		printf '%s\n' "$d"
		return
	fi
	die "PostgreSQL server binaries (initdb, pg_ctl) not found: install the server package (e.g. apt-get install postgresql-15) or set CLOSEDLOOP_PG_BINDIR"
}

# as_pg runs a command as the server's user: RUN_USER when we are root, else ourselves.
as_pg() {
	if [[ $(id -u) -eq 0 ]]; then
		(cd "$STATE" && runuser -u "$RUN_USER" -- "$@")
	else
		(cd "$STATE" && "$@")
	fi
}

ensure_run_user() {
	[[ $(id -u) -eq 0 ]] || return 0
	if ! id "$RUN_USER" >/dev/null 2>&1; then
		log "creating system user $RUN_USER to run PostgreSQL (initdb refuses root)"
		useradd --system --no-create-home --shell /usr/sbin/nologin "$RUN_USER" ||
			die "could not create user $RUN_USER; set CLOSEDLOOP_PG_USER to an existing non-root user"
	fi
}

running_pid() {
	local pid
	[[ -f "$DATA/postmaster.pid" ]] || return 1
	pid=$(head -n 1 "$DATA/postmaster.pid")
	pid_alive "$pid" || return 1
	printf '%s\n' "$pid"
}

dsn_line() { cat "$STATE/env"; }

cmd_start() {
	local t0 bindir pid port attempt version
	t0=$(now)
	if pid=$(running_pid); then
		log "postgres already running (pid $pid): $(dsn_line)"
		dsn_line
		return
	fi
	bindir=$(find_bindir)
	ensure_run_user
	rm -rf "$STATE"
	mkdir -p "$STATE"
	chmod 700 "$STATE"
	[[ $(id -u) -ne 0 ]] || chown "$RUN_USER" "$STATE"
	as_pg test -w "$STATE" || die "$RUN_USER cannot write $STATE; set CLOSEDLOOP_PG_DIR to a directory it can reach"

	if ! as_pg "$bindir/initdb" -D "$DATA" -U postgres -A trust -E UTF8 --locale=C --no-sync --no-instructions >"$STATE/initdb.log" 2>&1; then
		cat "$STATE/initdb.log" >&2
		die "initdb failed"
	fi
	as_pg tee -a "$DATA/postgresql.conf" >/dev/null <<-CONF
		# scripts/postgres.sh: a throwaway server for tests; speed over durability.
		listen_addresses = '127.0.0.1'
		unix_socket_directories = '$STATE'
		fsync = off
		synchronous_commit = off
		full_page_writes = off
		max_connections = 300
		shared_buffers = 128MB
		log_min_messages = warning
	CONF

	port=""
	for attempt in 1 2 3 4 5; do
		port=$(free_port)
		printf "port = %s\n" "$port" | as_pg tee -a "$DATA/postgresql.conf" >/dev/null
		# 9>&-: the server must not inherit (and hold forever) this script's lock.
		if as_pg "$bindir/pg_ctl" start -D "$DATA" -l "$STATE/server.log" -w -t 60 >/dev/null 2>&1 9>&-; then
			break
		fi
		if grep -q "could not bind" "$STATE/server.log" 2>/dev/null && [[ $attempt -lt 5 ]]; then
			log "port $port taken meanwhile; trying another"
			continue
		fi
		tail -n 50 "$STATE/server.log" >&2 || true
		die "postgres did not start"
	done
	"$bindir/pg_isready" -q -h 127.0.0.1 -p "$port" -t 30 || {
		tail -n 50 "$STATE/server.log" >&2
		die "postgres started but does not accept connections on 127.0.0.1:$port"
	}
	pid=$(running_pid) || die "postgres exited right after start"
	printf '%s=postgres://postgres@127.0.0.1:%s/postgres?sslmode=disable\n' "$ENV_NAME" "$port" >"$STATE/env"
	version=$("$bindir/postgres" --version | awk '{ print $3 }')
	log "postgres $version started on 127.0.0.1:$port (pid $pid) in $(since "$t0")s"
	dsn_line
}

cmd_env() {
	running_pid >/dev/null || die "postgres is not running; run scripts/postgres.sh start"
	dsn_line
}

cmd_stop() {
	local pid bindir
	if ! pid=$(running_pid); then
		rm -rf "$STATE"
		log "postgres not running"
		return
	fi
	bindir=$(find_bindir)
	if ! as_pg "$bindir/pg_ctl" stop -D "$DATA" -m fast -w -t 30 >/dev/null 2>&1; then
		log "pg_ctl stop failed; stopping pid $pid directly"
		stop_pid "$pid" postgres 10
	fi
	rm -rf "$STATE"
	log "postgres stopped"
}

# cmd_restart stops the server (mode fast, or immediate for a crash-like stop that needs
# recovery) and starts it again on the same data directory and port: the fault suite uses it.
cmd_restart() {
	local pid bindir mode=${1:-fast}
	case "$mode" in fast | immediate) ;; *) die "restart mode must be fast or immediate, got $mode" ;; esac
	[[ -f "$STATE/env" && -f "$DATA/postgresql.conf" ]] || die "no postgres in $STATE to restart; run scripts/postgres.sh start"
	bindir=$(find_bindir)
	if pid=$(running_pid); then
		as_pg "$bindir/pg_ctl" stop -D "$DATA" -m "$mode" -w -t 30 >/dev/null 2>&1 || stop_pid "$pid" postgres 10
	fi
	if ! as_pg "$bindir/pg_ctl" start -D "$DATA" -l "$STATE/server.log" -w -t 60 >/dev/null 2>&1 9>&-; then
		tail -n 50 "$STATE/server.log" >&2 || true
		die "postgres did not restart"
	fi
	pid=$(running_pid) || die "postgres exited right after restart"
	log "postgres restarted ($mode) (pid $pid)"
	dsn_line
}

main() {
	mkdir -p "$(dirname "$STATE")"
	exec 9>"$STATE.lock"
	flock 9
	case "${1:-}" in
	start) cmd_start ;;
	env) cmd_env ;;
	stop) cmd_stop ;;
	restart) cmd_restart "${2:-fast}" ;;
	*)
		log "usage: $0 start|env|stop|restart [fast|immediate]"
		exit 2
		;;
	esac
}

main "$@"
