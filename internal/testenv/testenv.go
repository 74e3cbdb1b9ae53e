package testenv

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"net"
	"net/url"
	"os"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/segmentio/kafka-go"
)

const (
	postgresEnv = "CLOSEDLOOP_TEST_POSTGRES_DSN"
	kafkaEnv    = "CLOSEDLOOP_TEST_KAFKA_BROKERS"

	// setupTimeout bounds each helper's work against a service, at setup and at cleanup.
	setupTimeout = 60 * time.Second
)

// PostgresDSN creates a new, empty database named after the test on the server named by
// CLOSEDLOOP_TEST_POSTGRES_DSN and returns a DSN for it. The database is dropped (WITH
// (FORCE), so connections left open do not block it) when the test and its subtests end.
// It fails the test when the variable is unset or the server refuses.
func PostgresDSN(t testing.TB) string {
	t.Helper()
	admin := os.Getenv(postgresEnv)
	if admin == "" {
		t.Fatalf("%s is not set: this test needs a real PostgreSQL server. "+
			"Run `make test`, or run `scripts/postgres.sh start` and export the %s=... line it prints.",
			postgresEnv, postgresEnv)
	}
	name := uniqueName(t, "t_", 63)

	ctx, cancel := context.WithTimeout(context.Background(), setupTimeout)
	defer cancel()
	conn, err := pgx.Connect(ctx, admin)
	if err != nil {
		t.Fatalf("testenv: connect to %s: %v", postgresEnv, err)
	}
	defer conn.Close(ctx)
	if _, err := conn.Exec(ctx, "CREATE DATABASE "+pgx.Identifier{name}.Sanitize()); err != nil {
		t.Fatalf("testenv: create database %s: %v", name, err)
	}
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), setupTimeout)
		defer cancel()
		conn, err := pgx.Connect(ctx, admin)
		if err != nil {
			t.Errorf("testenv: connect to drop database %s: %v", name, err)
			return
		}
		defer conn.Close(ctx)
		if _, err := conn.Exec(ctx, "DROP DATABASE IF EXISTS "+pgx.Identifier{name}.Sanitize()+" WITH (FORCE)"); err != nil {
			t.Errorf("testenv: drop database %s: %v", name, err)
		}
	})

	dsn, err := withDatabase(admin, name)
	if err != nil {
		t.Fatalf("testenv: %s: %v", postgresEnv, err)
	}
	return dsn
}

// withDatabase returns dsn (URL or keyword/value form) pointing at database name instead.
func withDatabase(dsn, name string) (string, error) {
	if strings.HasPrefix(dsn, "postgres://") || strings.HasPrefix(dsn, "postgresql://") {
		u, err := url.Parse(dsn)
		if err != nil {
			return "", fmt.Errorf("not a valid URL: %w", err)
		}
		u.Path = "/" + name
		return u.String(), nil
	}
	// In keyword/value form a later keyword overrides an earlier one.
	return dsn + " dbname=" + name, nil
}

// KafkaBrokers returns the broker addresses in CLOSEDLOOP_TEST_KAFKA_BROKERS (comma
// separated host:port). It fails the test when the variable is unset or holds no address.
func KafkaBrokers(t testing.TB) []string {
	t.Helper()
	var brokers []string
	for _, b := range strings.Split(os.Getenv(kafkaEnv), ",") {
		if b = strings.TrimSpace(b); b != "" {
			brokers = append(brokers, b)
		}
	}
	if len(brokers) == 0 {
		t.Fatalf("%s is not set: this test needs a real Kafka broker. "+
			"Run `make test`, or run `scripts/kafka.sh start` and export the %s=... line it prints.",
			kafkaEnv, kafkaEnv)
	}
	return brokers
}

// CreateTopic creates a topic with a unique name derived from the test's name, with
// partitions partitions and replication factor 1, through the cluster's controller. It
// returns once every partition has a leader in the metadata of the first broker, so the
// topic can be produced to and consumed from at once. The topic is deleted when the test
// and its subtests end.
func CreateTopic(t testing.TB, brokers []string, partitions int) string {
	t.Helper()
	if len(brokers) == 0 {
		t.Fatalf("testenv.CreateTopic: no brokers given")
	}
	if partitions < 1 {
		t.Fatalf("testenv.CreateTopic: partitions must be at least 1, got %d", partitions)
	}
	topic := uniqueName(t, "t-", 200)

	ctx, cancel := context.WithTimeout(context.Background(), setupTimeout)
	defer cancel()
	ctrl, err := dialController(ctx, brokers[0])
	if err != nil {
		t.Fatalf("testenv: %v", err)
	}
	err = ctrl.CreateTopics(kafka.TopicConfig{Topic: topic, NumPartitions: partitions, ReplicationFactor: 1})
	_ = ctrl.Close()
	if err != nil {
		t.Fatalf("testenv: create topic %s: %v", topic, err)
	}
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), setupTimeout)
		defer cancel()
		ctrl, err := dialController(ctx, brokers[0])
		if err != nil {
			t.Errorf("testenv: delete topic %s: %v", topic, err)
			return
		}
		defer ctrl.Close()
		if err := ctrl.DeleteTopics(topic); err != nil && !errors.Is(err, kafka.UnknownTopicOrPartition) {
			t.Errorf("testenv: delete topic %s: %v", topic, err)
		}
	})
	if err := waitForLeaders(ctx, brokers[0], topic, partitions); err != nil {
		t.Fatalf("testenv: topic %s: %v", topic, err)
	}
	return topic
}

// dialController connects to the cluster's controller, found through broker.
func dialController(ctx context.Context, broker string) (*kafka.Conn, error) {
	conn, err := kafka.DialContext(ctx, "tcp", broker)
	if err != nil {
		return nil, fmt.Errorf("dial kafka broker %s: %w", broker, err)
	}
	defer conn.Close()
	c, err := conn.Controller()
	if err != nil {
		return nil, fmt.Errorf("find kafka controller through %s: %w", broker, err)
	}
	addr := net.JoinHostPort(c.Host, strconv.Itoa(c.Port))
	ctrl, err := kafka.DialContext(ctx, "tcp", addr)
	if err != nil {
		return nil, fmt.Errorf("dial kafka controller %s: %w", addr, err)
	}
	if d, ok := ctx.Deadline(); ok {
		_ = ctrl.SetDeadline(d)
	}
	return ctrl, nil
}

// waitForLeaders polls broker's metadata until topic shows partitions partitions, each
// with a leader and no error.
func waitForLeaders(ctx context.Context, broker, topic string, partitions int) error {
	conn, err := kafka.DialContext(ctx, "tcp", broker)
	if err != nil {
		return fmt.Errorf("dial kafka broker %s: %w", broker, err)
	}
	defer conn.Close()
	if d, ok := ctx.Deadline(); ok {
		_ = conn.SetDeadline(d)
	}
	timer := time.NewTimer(0)
	defer timer.Stop()
	var last error
	for {
		select {
		case <-ctx.Done():
			return fmt.Errorf("partitions have no leader yet (last: %v): %w", last, ctx.Err())
		case <-timer.C:
		}
		last = partitionsReady(conn, topic, partitions)
		if last == nil {
			return nil
		}
		timer.Reset(50 * time.Millisecond)
	}
}

func partitionsReady(conn *kafka.Conn, topic string, partitions int) error {
	ps, err := conn.ReadPartitions(topic)
	if err != nil {
		return err
	}
	if len(ps) != partitions {
		return fmt.Errorf("metadata shows %d of %d partitions", len(ps), partitions)
	}
	for _, p := range ps {
		if p.Error != nil {
			return fmt.Errorf("partition %d: %w", p.ID, p.Error)
		}
		if p.Leader.Host == "" {
			return fmt.Errorf("partition %d has no leader", p.ID)
		}
	}
	return nil
}

// uniqueName returns prefix + the test's name reduced to [a-z0-9_] + a random suffix,
// at most max bytes long. Valid as a PostgreSQL identifier and as a Kafka topic name.
func uniqueName(t testing.TB, prefix string, max int) string {
	t.Helper()
	var b [6]byte
	if _, err := rand.Read(b[:]); err != nil {
		t.Fatalf("testenv: random name: %v", err)
	}
	suffix := "_" + hex.EncodeToString(b[:])
	var sb strings.Builder
	for _, r := range strings.ToLower(t.Name()) {
		switch {
		case r >= 'a' && r <= 'z', r >= '0' && r <= '9':
			sb.WriteRune(r)
		default:
			sb.WriteByte('_')
		}
	}
	name := sb.String()
	if room := max - len(prefix) - len(suffix); len(name) > room {
		name = name[:room]
	}
	return prefix + name + suffix
}
