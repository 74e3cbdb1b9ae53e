# Shared helpers for scripts/postgres.sh and scripts/kafka.sh. Sourced, not executed.

# log prints a progress line on stderr (stdout carries only the NAME=value lines).
log() { printf '%s\n' "$*" >&2; }

die() {
	log "error: $*"
	exit 1
}

# now prints the wall clock in seconds with microseconds.
now() { printf '%s\n' "$EPOCHREALTIME"; }

# since START prints the seconds elapsed since START (from now) with one decimal.
since() { awk -v a="$1" -v b="$EPOCHREALTIME" 'BEGIN { printf "%.1f", b - a }'; }

# port_open PORT succeeds when something accepts TCP connections on 127.0.0.1:PORT.
port_open() { (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; }

# free_port prints a port on 127.0.0.1 that nothing listens on, avoiding the ports in "$@".
# Another process may still take it before our server binds it; callers check the bind.
free_port() {
	local p tries
	for tries in $(seq 1 200); do
		p=$((20000 + RANDOM % 30000))
		case " $* " in *" $p "*) continue ;; esac
		if ! port_open "$p"; then
			printf '%s\n' "$p"
			return 0
		fi
	done
	die "no free TCP port found on 127.0.0.1"
}

# pid_alive PID succeeds when PID is a running (not zombie) process.
pid_alive() {
	[[ -n "$1" ]] && kill -0 "$1" 2>/dev/null || return 1
	local state
	state=$(awk '{ print $3 }' "/proc/$1/stat" 2>/dev/null) || return 0
	[[ "$state" != "Z" ]]
}

# stop_pid PID NAME sends TERM, waits up to TIMEOUT seconds (default 30), then sends KILL.
stop_pid() {
	local pid=$1 name=$2 timeout=${3:-30} i
	kill -TERM "$pid" 2>/dev/null || return 0
	for ((i = 0; i < timeout * 10; i++)); do
		pid_alive "$pid" || return 0
		sleep 0.1
	done
	log "$name (pid $pid) still running after ${timeout}s; sending KILL"
	kill -KILL "$pid" 2>/dev/null || true
	for ((i = 0; i < 50; i++)); do
		pid_alive "$pid" || return 0
		sleep 0.1
	done
	die "$name (pid $pid) survived KILL"
}
