// Package chaos is the fault suite: tests that run the real closedloop binary (built once
// with go build) as subprocesses against a Kafka broker and a PostgreSQL server of their
// own (started with scripts/kafka.sh and scripts/postgres.sh in a private directory, so
// they can be restarted in place without disturbing other tests) and the platform sandbox,
// while stage changes and identity captures flow. They kill -9 the workers and restart
// them, restart the broker and the database once each, run two workers in one consumer
// group for part of the run, and let the sandbox inject 5xx, 429 and timeouts. Then they
// assert that nothing was lost and nothing counted twice (see TestFaults).
//
// `go test ./internal/chaos` (and so `make test`) runs the short variant (~2,000 stage
// changes); CLOSEDLOOP_CHAOS=full (`make chaos`) runs 20,000. Only tests live here.
package chaos
