#!/usr/bin/env bash
# with-services.sh CMD [ARGS...]: run CMD with a real PostgreSQL and a real Kafka broker.
#
# Each service is started (scripts/postgres.sh, scripts/kafka.sh) unless its variable is
# already set, in which case the service it names is used as is:
#   CLOSEDLOOP_TEST_POSTGRES_DSN, CLOSEDLOOP_TEST_KAFKA_BROKERS
# or unless the script reports it running already (`make services-up`); such a service is reused.
# The variables are exported to CMD. Whatever this script started it stops again when CMD
# ends, fails or is interrupted. The exit status is CMD's (or the failing start's).
# With CI=true and a failing CMD, the tails of the services' logs are printed first.
set -euo pipefail
dir=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
# shellcheck source=scripts/lib.sh
source "$dir/lib.sh"

[[ $# -gt 0 ]] || die "usage: $0 CMD [ARGS...]"

started=()

cleanup() {
	local rc=$? i
	trap - EXIT INT TERM
	if [[ $rc -ne 0 && "${CI:-}" == true ]]; then
		# Warnings and errors only: the broker log starts with hundreds of config lines.
		for f in "${CLOSEDLOOP_KAFKA_DIR:-${TMPDIR:-/tmp}/closedloop-kafka}/broker.log" \
			"${CLOSEDLOOP_PG_DIR:-${TMPDIR:-/tmp}/closedloop-pg}/server.log"; do
			[[ -f "$f" ]] || continue
			log "---- last warnings and errors in $f ----"
			grep -E ' (WARN|ERROR|FATAL|PANIC|WARNING):? ' "$f" | tail -n 40 >&2 || true
		done
	fi
	for ((i = ${#started[@]} - 1; i >= 0; i--)); do
		"$dir/${started[i]}.sh" stop || rc=1
	done
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
	if line=$("$dir/$name.sh" env 2>/dev/null); then
		log "$name: already running (scripts/$name.sh start), using it and leaving it running"
	else
		started+=("$name") # before starting: a start that fails halfway is still stopped
		line=$("$dir/$name.sh" start)
	fi
	[[ "$line" == "$var="* ]] || die "$name.sh start printed '$line', not $var=..."
	export "$line"
}

start postgres CLOSEDLOOP_TEST_POSTGRES_DSN
start kafka CLOSEDLOOP_TEST_KAFKA_BROKERS

rc=0
"$@" || rc=$?
exit "$rc"
