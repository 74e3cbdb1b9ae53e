#!/usr/bin/env bash
# A real single-node Apache Kafka broker (KRaft, combined broker+controller) for the tests,
# on free 127.0.0.1 ports, run from Maven Central jars.
#
#   scripts/kafka.sh start   fetch the jars (first run only), format a fresh log dir, start the
#                            broker, wait until it serves, print CLOSEDLOOP_TEST_KAFKA_BROKERS=...
#                            (already running: print the line again and change nothing)
#   scripts/kafka.sh env     print the CLOSEDLOOP_TEST_KAFKA_BROKERS=... line of the running broker
#   scripts/kafka.sh stop    stop the broker (TERM, KILL after 30s) and delete its data
#   scripts/kafka.sh restart stop the broker and start it again on the same ports and data
#   scripts/kafka.sh fetch   only fetch the jars into the cache
#
# Only the NAME=value line goes to stdout, so `export "$(scripts/kafka.sh start)"` works.
# Needs Java 17+ and Maven. Settings (environment):
#   CLOSEDLOOP_KAFKA_VERSION        Kafka version (default 4.1.2)
#   CLOSEDLOOP_CACHE                cache root (default ${XDG_CACHE_HOME:-~/.cache}/closedloop); the
#                                   jars go to kafka-<version>/lib, Maven's repository to m2/
#   CLOSEDLOOP_KAFKA_DIR            broker state: config, data, log (default ${TMPDIR:-/tmp}/closedloop-kafka)
#   CLOSEDLOOP_KAFKA_HEAP           max heap (default 512m)
#   CLOSEDLOOP_KAFKA_START_TIMEOUT  seconds to wait for the broker (default 90)
#   CLOSEDLOOP_JAVA                 java binary (default: java on PATH if 17+, else a JDK 17 under /usr/lib/jvm)
# Topics are not auto-created: tests create theirs (internal/testenv.CreateTopic).
set -euo pipefail
# shellcheck source=scripts/lib.sh
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

VERSION=${CLOSEDLOOP_KAFKA_VERSION:-4.1.2}
LOG4J_VERSION=2.25.4
CACHE=${CLOSEDLOOP_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/closedloop}
KDIR=$CACHE/kafka-$VERSION
M2=$CACHE/m2
STATE=${CLOSEDLOOP_KAFKA_DIR:-${TMPDIR:-/tmp}/closedloop-kafka}
HEAP=${CLOSEDLOOP_KAFKA_HEAP:-512m}
START_TIMEOUT=${CLOSEDLOOP_KAFKA_START_TIMEOUT:-90}
ENV_NAME=CLOSEDLOOP_TEST_KAFKA_BROKERS

case "$VERSION" in
4.*) ;;
*) die "CLOSEDLOOP_KAFKA_VERSION=$VERSION: only Kafka 4.x is supported by this script (log4j2 logging)" ;;
esac

java_major() {
	"$1" -version 2>&1 | awk -F'"' '/version/ { split($2, v, "."); print (v[1] == "1" ? v[2] : v[1]); exit }'
}

find_java() {
	local j
	if [[ -n "${CLOSEDLOOP_JAVA:-}" ]]; then
		printf '%s\n' "$CLOSEDLOOP_JAVA"
		return
	fi
	for j in ${JAVA_HOME:+"$JAVA_HOME/bin/java"} "$(command -v java || true)" /usr/lib/jvm/*-17-*/bin/java /usr/lib/jvm/*17*/bin/java; do
		if [[ -n "$j" && -x "$j" ]] && (($(java_major "$j") >= 17)); then
			printf '%s\n' "$j"
			return
		fi
	done
	die "Java 17 or newer not found: install a JDK 17 (e.g. apt-get install openjdk-17-jdk-headless) or set CLOSEDLOOP_JAVA"
}

write_pom() {
	cat >"$KDIR/pom.xml" <<-POM
		<project xmlns="http://maven.apache.org/POM/4.0.0">
		  <!-- Written by scripts/kafka.sh: the broker's runtime classpath. -->
		  <modelVersion>4.0.0</modelVersion>
		  <groupId>local.closedloop</groupId><artifactId>kafka-broker-libs</artifactId><version>1</version>
		  <packaging>pom</packaging>
		  <dependencies>
		    <!-- the broker (kafka.Kafka, kafka.tools.StorageTool) and its runtime closure -->
		    <dependency><groupId>org.apache.kafka</groupId><artifactId>kafka_2.13</artifactId><version>$VERSION</version></dependency>
		    <!-- command line tools (org.apache.kafka.tools.*), without Kafka Connect -->
		    <dependency><groupId>org.apache.kafka</groupId><artifactId>kafka-tools</artifactId><version>$VERSION</version>
		      <exclusions><exclusion><groupId>org.apache.kafka</groupId><artifactId>connect-runtime</artifactId></exclusion></exclusions>
		    </dependency>
		    <!-- no logging backend is published with the broker; Kafka 4.x uses slf4j 1.7 + log4j2 -->
		    <dependency><groupId>org.slf4j</groupId><artifactId>slf4j-api</artifactId><version>1.7.36</version></dependency>
		    <dependency><groupId>org.apache.logging.log4j</groupId><artifactId>log4j-slf4j-impl</artifactId><version>$LOG4J_VERSION</version></dependency>
		    <dependency><groupId>org.apache.logging.log4j</groupId><artifactId>log4j-core</artifactId><version>$LOG4J_VERSION</version></dependency>
		    <dependency><groupId>org.apache.logging.log4j</groupId><artifactId>log4j-api</artifactId><version>$LOG4J_VERSION</version></dependency>
		  </dependencies>
		</project>
	POM
}

# fetch_jars fills $KDIR/lib once; later runs find lib/.complete and do not run Maven at all.
fetch_jars() {
	local t0 mode
	[[ -f "$KDIR/lib/.complete" ]] && return 0
	command -v mvn >/dev/null || die "Maven (mvn) not found: it fetches the Kafka jars on the first run (apt-get install maven)"
	t0=$(now)
	mkdir -p "$KDIR"
	write_pom
	rm -rf "$KDIR/lib.tmp"
	local args=(-B -ntp -q "-Dmaven.repo.local=$M2" -f "$KDIR/pom.xml"
		org.apache.maven.plugins:maven-dependency-plugin:3.8.1:copy-dependencies
		"-DoutputDirectory=$KDIR/lib.tmp" -DincludeScope=runtime)
	mode=offline
	if [[ ! -d "$M2" ]] || ! mvn -o "${args[@]}" >"$KDIR/mvn.log" 2>&1; then
		mode=download
		log "fetching kafka $VERSION jars from Maven Central into $KDIR/lib (first run only)"
		rm -rf "$KDIR/lib.tmp"
		if ! mvn "${args[@]}" >"$KDIR/mvn.log" 2>&1; then
			tail -n 40 "$KDIR/mvn.log" >&2
			die "maven could not fetch kafka $VERSION (log: $KDIR/mvn.log)"
		fi
	fi
	ls "$KDIR"/lib.tmp/kafka_2.13-"$VERSION".jar >/dev/null 2>&1 || die "maven ran but kafka_2.13-$VERSION.jar is missing from $KDIR/lib.tmp"
	touch "$KDIR/lib.tmp/.complete"
	rm -rf "$KDIR/lib"
	mv "$KDIR/lib.tmp" "$KDIR/lib"
	log "kafka $VERSION jars ready ($mode, $(ls "$KDIR/lib" | wc -l) jars) in $(since "$t0")s"
}

write_config() {
	local port=$1 cport=$2
	cat >"$STATE/server.properties" <<-PROPS
		# Written by scripts/kafka.sh: one node that is both broker and controller, for tests.
		process.roles=broker,controller
		node.id=1
		controller.quorum.voters=1@127.0.0.1:$cport
		listeners=PLAINTEXT://127.0.0.1:$port,CONTROLLER://127.0.0.1:$cport
		advertised.listeners=PLAINTEXT://127.0.0.1:$port
		listener.security.protocol.map=PLAINTEXT:PLAINTEXT,CONTROLLER:PLAINTEXT
		controller.listener.names=CONTROLLER
		inter.broker.listener.name=PLAINTEXT
		log.dirs=$STATE/data
		num.network.threads=2
		num.io.threads=2
		num.partitions=1
		default.replication.factor=1
		min.insync.replicas=1
		offsets.topic.replication.factor=1
		offsets.topic.num.partitions=1
		transaction.state.log.replication.factor=1
		transaction.state.log.min.isr=1
		transaction.state.log.num.partitions=1
		share.coordinator.state.topic.replication.factor=1
		share.coordinator.state.topic.min.isr=1
		group.initial.rebalance.delay.ms=0
		auto.create.topics.enable=false
		delete.topic.enable=true
	PROPS
	cat >"$STATE/log4j2.properties" <<-'LOG'
		status = warn
		appender.console.type = Console
		appender.console.name = STDOUT
		appender.console.layout.type = PatternLayout
		appender.console.layout.pattern = [%d] %p %m (%c)%n
		rootLogger.level = info
		rootLogger.appenderRef.stdout.ref = STDOUT
	LOG
	sed -e 's/^rootLogger.level = info/rootLogger.level = warn/' \
		-e 's/^appender.console.type = Console/&\nappender.console.target = SYSTEM_ERR/' \
		"$STATE/log4j2.properties" >"$STATE/tools-log4j2.properties"
}

# cluster_id prints a random Kafka cluster id: 16 bytes, base64url without padding, not
# starting with '-' (the storage tool would read it as an option).
cluster_id() {
	local id
	while :; do
		id=$(head -c 16 /dev/urandom | base64 | tr '+/' '-_' | tr -d '=')
		[[ "$id" != -* ]] && break
	done
	printf '%s\n' "$id"
}

running_pid() {
	local pid
	[[ -f "$STATE/pid" ]] || return 1
	pid=$(cat "$STATE/pid")
	pid_alive "$pid" || return 1
	tr '\0' ' ' <"/proc/$pid/cmdline" 2>/dev/null | grep -q 'kafka\.Kafka' || return 1
	printf '%s\n' "$pid"
}

# launch starts the broker on port/cport and waits until it serves. It returns 3 when a port
# turned out to be taken (the caller retries with others) and dies on any other failure.
launch() {
	local java=$1 port=$2 cport=$3 pid i deadline
	rm -rf "$STATE/data"
	write_config "$port" "$cport"
	if ! "$java" -Xmx256m "-Dlog4j2.configurationFile=$STATE/tools-log4j2.properties" -cp "$KDIR/lib/*" \
		kafka.tools.StorageTool format "--cluster-id=$(cluster_id)" -c "$STATE/server.properties" \
		>"$STATE/format.log" 2>&1; then
		cat "$STATE/format.log" >&2
		die "formatting the kafka log dir failed"
	fi
	# setsid: a Ctrl-C in the terminal does not reach the broker; `stop` ends it.
	# 9>&-: the broker must not inherit (and hold forever) this script's lock.
	setsid "$java" "-Xmx$HEAP" -Xms128m -XX:+UseG1GC -XX:MaxGCPauseMillis=20 \
		-XX:InitiatingHeapOccupancyPercent=35 -XX:+ExplicitGCInvokesConcurrent -Djava.awt.headless=true \
		"-Dlog4j2.configurationFile=$STATE/log4j2.properties" -cp "$KDIR/lib/*" \
		kafka.Kafka "$STATE/server.properties" </dev/null >"$STATE/broker.log" 2>&1 9>&- &
	pid=$!
	echo "$pid" >"$STATE/pid"
	# The broker opens its (fixed) client port only once it serves requests: it has caught up
	# with the metadata log and is unfenced. So an accepted connection means ready.
	deadline=$((SECONDS + START_TIMEOUT))
	while ! port_open "$port"; do
		if ! pid_alive "$pid"; then
			if grep -q 'Address already in use' "$STATE/broker.log"; then
				return 3
			fi
			log "kafka exited during start-up; last lines of $STATE/broker.log:"
			tail -n 100 "$STATE/broker.log" >&2
			die "kafka did not start"
		fi
		if ((SECONDS >= deadline)); then
			log "kafka not serving on 127.0.0.1:$port after ${START_TIMEOUT}s; last lines of $STATE/broker.log:"
			tail -n 100 "$STATE/broker.log" >&2
			stop_pid "$pid" kafka 10
			die "kafka did not start"
		fi
		sleep 0.2
	done
	printf '%s=127.0.0.1:%s\n' "$ENV_NAME" "$port" >"$STATE/env"
}

cmd_start() {
	local t0 java pid port cport attempt rc
	if pid=$(running_pid); then
		log "kafka already running (pid $pid): $(cat "$STATE/env")"
		cat "$STATE/env"
		return
	fi
	java=$(find_java)
	fetch_jars
	t0=$(now)
	rm -rf "$STATE"
	mkdir -p "$STATE"
	for attempt in 1 2 3 4 5; do
		port=$(free_port)
		cport=$(free_port "$port")
		rc=0
		launch "$java" "$port" "$cport" || rc=$?
		[[ $rc -eq 0 ]] && break
		[[ $rc -eq 3 && $attempt -lt 5 ]] || die "kafka did not start (ports taken)"
		log "port $port or $cport taken meanwhile; trying others"
	done
	log "kafka $VERSION started on 127.0.0.1:$port (pid $(cat "$STATE/pid")) in $(since "$t0")s"
	cat "$STATE/env"
}

cmd_env() {
	running_pid >/dev/null || die "kafka is not running; run scripts/kafka.sh start"
	cat "$STATE/env"
}

cmd_stop() {
	local pid t0
	if ! pid=$(running_pid); then
		rm -rf "$STATE"
		log "kafka not running"
		return
	fi
	t0=$(now)
	stop_pid "$pid" kafka 30
	rm -rf "$STATE"
	log "kafka stopped in $(since "$t0")s"
}

# cmd_restart stops the running broker (TERM) and starts it again with the same config, ports
# and log dir (no format): the fault suite uses it to restart the broker in place.
cmd_restart() {
	local java pid port deadline
	[[ -f "$STATE/server.properties" && -f "$STATE/env" ]] || die "no kafka in $STATE to restart; run scripts/kafka.sh start"
	if pid=$(running_pid); then
		stop_pid "$pid" kafka 30
	fi
	java=$(find_java)
	port=$(cat "$STATE/env")
	port=${port##*:}
	setsid "$java" "-Xmx$HEAP" -Xms128m -XX:+UseG1GC -XX:MaxGCPauseMillis=20 \
		-XX:InitiatingHeapOccupancyPercent=35 -XX:+ExplicitGCInvokesConcurrent -Djava.awt.headless=true \
		"-Dlog4j2.configurationFile=$STATE/log4j2.properties" -cp "$KDIR/lib/*" \
		kafka.Kafka "$STATE/server.properties" </dev/null >>"$STATE/broker.log" 2>&1 9>&- &
	pid=$!
	echo "$pid" >"$STATE/pid"
	deadline=$((SECONDS + START_TIMEOUT))
	while ! port_open "$port"; do
		pid_alive "$pid" || { tail -n 100 "$STATE/broker.log" >&2; die "kafka exited during restart"; }
		((SECONDS < deadline)) || { stop_pid "$pid" kafka 10; die "kafka not serving on 127.0.0.1:$port after ${START_TIMEOUT}s"; }
		sleep 0.2
	done
	log "kafka restarted on 127.0.0.1:$port (pid $pid)"
	cat "$STATE/env"
}

main() {
	mkdir -p "$(dirname "$STATE")"
	exec 9>"$STATE.lock"
	flock 9
	case "${1:-}" in
	start) cmd_start ;;
	env) cmd_env ;;
	stop) cmd_stop ;;
	fetch) fetch_jars ;;
	restart) cmd_restart ;;
	*)
		log "usage: $0 start|env|stop|fetch|restart"
		exit 2
		;;
	esac
}

main "$@"
