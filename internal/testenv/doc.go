// Package testenv gives tests their share of the real services that `make test` starts:
// a fresh PostgreSQL database per test and fresh Kafka topics on a real Apache Kafka broker.
//
// It owns nothing else and is imported only from _test.go files. The services themselves are
// started outside the test binary by scripts/postgres.sh and scripts/kafka.sh (both driven by
// scripts/with-services.sh, which `make test` uses); their addresses reach the tests through two
// environment variables:
//
//	CLOSEDLOOP_TEST_POSTGRES_DSN   DSN of a superuser on a throwaway PostgreSQL server
//	CLOSEDLOOP_TEST_KAFKA_BROKERS  comma-separated host:port list of the Kafka brokers
//
// A test that needs a service and finds its variable unset fails (it never skips): a skipped
// integration test reads as a pass in CI.
//
// Sketch:
//
//	dsn := testenv.PostgresDSN(t)                  // new database, dropped at cleanup
//	brokers := testenv.KafkaBrokers(t)
//	topic := testenv.CreateTopic(t, brokers, 3)    // new topic, deleted at cleanup
//
// Every name is unique per call, so tests using these helpers may run with t.Parallel().
package testenv
