#!/usr/bin/env bash
# with-services.sh CMD [ARGS...]: run CMD with a real PostgreSQL and a real Kafka broker.
#
# Each service is started (scripts/postgres.sh, scripts/kafka.sh) unless its variable is
# already set, in which case the service it names is used as is:
#   CLOSEDLOOP_TEST_POSTGRES_DSN, CLOSEDLOOP_TEST_KAFKA_BROKERS
# The variables are exported to CMD. The services started here are private to this run
# (their state lives in a fresh temporary directory, so concurrent runs and a server left by
# `make services-up` do not interfere) and are stopped again when CMD ends, fails or is
# interrupted. The exit status is CMD's (or the failing start's).
# With CI=true and a failing CMD, the services' last warnings and errors are printed first.
set -euo pipefail
dir=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
# shellcheck source=scripts/lib.sh
source "$dir/lib.sh"

[[ $# -gt 0 ]] || die "usage: $0 CMD [ARGS...]"

run_dir=""
started=()

cleanup() {
	local rc=$? i f
	trap - EXIT INT TERM
	if [[ $rc -ne 0 && "${CI:-}" == true && -n "$run_dir" ]]; then
		# Warnings and errors only: the broker log starts with hundreds of config lines.
		for f in "$run_dir/kafka/broker.log" "$run_dir/pg/server.log"; do
			[[ -f "$f" ]] || continue
			log "---- last warnings and errors in $f ----"
			grep -E ' (WARN|ERROR|FATAL|PANIC|WARNING):? ' "$f" | tail -n 40 >&2 || true
		done
	fi
	for ((i = ${#started[@]} - 1; i >= 0; i--)); do
		"$dir/${started[i]}.sh" stop || rc=1
	done
	[[ -z "$run_dir" ]] || rm -rf "$run_dir"
	exit "$rc"
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

# start NAME VAR: start scripts/NAME.sh unless VAR is set, and export the line it prints.
start() {
	local name=$1 var=$2 line
	if [[ -n "${!var:-}" ]]; then
		log "$name: using $var=${!var} from the environment"
		return
	fi
	if [[ -z "$run_dir" ]]; then
		run_dir=$(mktemp -d "${TMPDIR:-/tmp}/closedloop-test.XXXXXX")
		chmod 755 "$run_dir" # the PostgreSQL server user must reach its directory
		export CLOSEDLOOP_PG_DIR=$run_dir/pg CLOSEDLOOP_KAFKA_DIR=$run_dir/kafka
	fi
	started+=("$name") # before starting: a start that fails halfway is still stopped
	line=$("$dir/$name.sh" start)
	[[ "$line" == "$var="* ]] || die "$name.sh start printed '$line', not $var=..."
	export "$line"
}

start postgres CLOSEDLOOP_TEST_POSTGRES_DSN
start kafka CLOSEDLOOP_TEST_KAFKA_BROKERS

rc=0
"$@" || rc=$?
exit "$rc"
