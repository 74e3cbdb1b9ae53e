// Package devbroker runs an in-process Kafka broker (franz-go's kfake) on 127.0.0.1 for the
// zero-setup demo and fast unit tests. It is not Kafka: every Kafka behaviour closedloop
// relies on is also tested against a real Apache Kafka broker (scripts/kafka.sh).
package devbroker

import (
	"fmt"

	"github.com/twmb/franz-go/pkg/kfake"
)

// Broker is a running in-process broker.
type Broker struct {
	cluster *kfake.Cluster
}

// Start listens on a free 127.0.0.1 port (or port, when non-zero) with the given topics
// created, each with partitions partitions.
func Start(port int, partitions int32, topics ...string) (*Broker, error) {
	opts := []kfake.Opt{kfake.NumBrokers(1), kfake.SeedTopics(partitions, topics...)}
	if port != 0 {
		opts = append(opts, kfake.Ports(port))
	}
	c, err := kfake.NewCluster(opts...)
	if err != nil {
		return nil, fmt.Errorf("in-process kafka: %w", err)
	}
	return &Broker{cluster: c}, nil
}

// Addrs returns the broker's host:port addresses.
func (b *Broker) Addrs() []string { return b.cluster.ListenAddrs() }

// Close stops the broker; its data is gone.
func (b *Broker) Close() { b.cluster.Close() }
