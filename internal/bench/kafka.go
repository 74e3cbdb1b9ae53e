package bench

import (
	"context"
	"errors"
	"fmt"
	"net"
	"strconv"
	"time"

	"github.com/segmentio/kafka-go"
)

// CreateTopics creates each topic with partitions partitions (replication 1) through the
// controller and waits until every partition has a leader. Existing topics are an error.
func CreateTopics(ctx context.Context, broker string, partitions int, topics ...string) error {
	conn, err := kafka.DialContext(ctx, "tcp", broker)
	if err != nil {
		return fmt.Errorf("dial %s: %w", broker, err)
	}
	defer conn.Close()
	c, err := conn.Controller()
	if err != nil {
		return fmt.Errorf("find controller: %w", err)
	}
	ctrl, err := kafka.DialContext(ctx, "tcp", net.JoinHostPort(c.Host, strconv.Itoa(c.Port)))
	if err != nil {
		return fmt.Errorf("dial controller: %w", err)
	}
	defer ctrl.Close()
	cfgs := make([]kafka.TopicConfig, len(topics))
	for i, t := range topics {
		cfgs[i] = kafka.TopicConfig{Topic: t, NumPartitions: partitions, ReplicationFactor: 1}
	}
	if err := ctrl.CreateTopics(cfgs...); err != nil {
		return fmt.Errorf("create topics %v: %w", topics, err)
	}
	for _, t := range topics {
		if err := waitLeaders(ctx, conn, t, partitions); err != nil {
			return err
		}
	}
	return nil
}

func waitLeaders(ctx context.Context, conn *kafka.Conn, topic string, partitions int) error {
	for {
		ps, err := conn.ReadPartitions(topic)
		ok := err == nil && len(ps) == partitions
		for _, p := range ps {
			ok = ok && p.Error == nil && p.Leader.Host != ""
		}
		if ok {
			return nil
		}
		if err := wait(ctx, 50*time.Millisecond); err != nil {
			return fmt.Errorf("topic %s: partitions have no leader: %w", topic, err)
		}
	}
}

// wait sleeps d or until ctx ends.
func wait(ctx context.Context, d time.Duration) error {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-ctx.Done():
		return ctx.Err()
	case <-t.C:
		return nil
	}
}

// NewWriter returns a producer tuned for bulk loading: hash partitioning by key, large
// batches, leader acks. It has a transport of its own: close it with CloseWriter.
func NewWriter(brokers []string, topic string) *kafka.Writer {
	return &kafka.Writer{
		Transport:    &kafka.Transport{},
		Addr:         kafka.TCP(brokers...),
		Topic:        topic,
		Balancer:     &kafka.Hash{},
		BatchSize:    2000,
		BatchBytes:   8 << 20,
		BatchTimeout: 5 * time.Millisecond,
		RequiredAcks: kafka.RequireOne,
		MaxAttempts:  20,
	}
}

// CloseWriter flushes and closes a writer from NewWriter, and closes its transport's
// connections (kafka-go keeps them, and their goroutines, otherwise).
func CloseWriter(w *kafka.Writer) error {
	err := w.Close()
	if tr, ok := w.Transport.(*kafka.Transport); ok {
		tr.CloseIdleConnections()
	}
	return err
}

// Produce writes msg(from) .. msg(to-1) to topic in chunks.
func Produce(ctx context.Context, brokers []string, topic string, from, to int, msg func(int) kafka.Message) error {
	w := NewWriter(brokers, topic)
	defer CloseWriter(w)
	const chunk = 20000
	buf := make([]kafka.Message, 0, chunk)
	for i := from; i < to; i++ {
		buf = append(buf, msg(i))
		if len(buf) == chunk || i == to-1 {
			// A topic just created may be unknown to the broker's metadata for a moment.
			for attempt := 0; ; attempt++ {
				err := w.WriteMessages(ctx, buf...)
				if err == nil {
					break
				}
				if !errors.Is(err, kafka.UnknownTopicOrPartition) || attempt == 20 {
					return fmt.Errorf("produce to %s: %w", topic, err)
				}
				if err := wait(ctx, 500*time.Millisecond); err != nil {
					return err
				}
			}
			buf = buf[:0]
		}
	}
	return nil
}

// Lag is a group's position on its topics: the sum over partitions of the end offset minus
// the committed offset (a partition without a commit counts from its start).
type Lag struct {
	End, Committed, Behind int64
}

// GroupLag compares group's committed offsets with the end of topics.
func GroupLag(ctx context.Context, brokers []string, group string, topics []string) (Lag, error) {
	tr := &kafka.Transport{}
	defer tr.CloseIdleConnections()
	client := &kafka.Client{Addr: kafka.TCP(brokers...), Timeout: 10 * time.Second, Transport: tr}
	meta, err := client.Metadata(ctx, &kafka.MetadataRequest{Topics: topics})
	if err != nil {
		return Lag{}, fmt.Errorf("metadata: %w", err)
	}
	parts := map[string][]int{}
	ends := map[string][]kafka.OffsetRequest{}
	starts := map[string][]kafka.OffsetRequest{}
	for _, t := range meta.Topics {
		if t.Error != nil {
			return Lag{}, fmt.Errorf("metadata of %s: %w", t.Name, t.Error)
		}
		for _, p := range t.Partitions {
			parts[t.Name] = append(parts[t.Name], p.ID)
			ends[t.Name] = append(ends[t.Name], kafka.LastOffsetOf(p.ID))
			starts[t.Name] = append(starts[t.Name], kafka.FirstOffsetOf(p.ID))
		}
	}
	endRes, err := client.ListOffsets(ctx, &kafka.ListOffsetsRequest{Topics: ends})
	if err != nil {
		return Lag{}, fmt.Errorf("list end offsets: %w", err)
	}
	startRes, err := client.ListOffsets(ctx, &kafka.ListOffsetsRequest{Topics: starts})
	if err != nil {
		return Lag{}, fmt.Errorf("list start offsets: %w", err)
	}
	committed, err := client.OffsetFetch(ctx, &kafka.OffsetFetchRequest{GroupID: group, Topics: parts})
	if err != nil {
		return Lag{}, fmt.Errorf("offset fetch %s: %w", group, err)
	}
	if committed.Error != nil {
		return Lag{}, fmt.Errorf("offset fetch %s: %w", group, committed.Error)
	}
	var lag Lag
	for topic, ps := range endRes.Topics {
		first := map[int]int64{}
		for _, p := range startRes.Topics[topic] {
			first[p.Partition] = p.FirstOffset
		}
		got := map[int]int64{}
		for _, p := range committed.Topics[topic] {
			if p.Error != nil {
				return Lag{}, fmt.Errorf("offset fetch %s/%d: %w", topic, p.Partition, p.Error)
			}
			got[p.Partition] = p.CommittedOffset
		}
		for _, p := range ps {
			if p.Error != nil {
				return Lag{}, fmt.Errorf("end offset %s/%d: %w", topic, p.Partition, p.Error)
			}
			c, ok := got[p.Partition]
			if !ok || c < 0 {
				c = first[p.Partition]
			}
			lag.End += p.LastOffset
			lag.Committed += c
			lag.Behind += p.LastOffset - c
		}
	}
	return lag, nil
}

// WaitCaughtUp polls GroupLag every interval until group has committed the end of every
// partition of topics, or ctx ends. Transient errors (a broker restarting) are retried;
// the last one is returned with ctx's error.
func WaitCaughtUp(ctx context.Context, brokers []string, group string, topics []string, interval time.Duration) error {
	var last error
	for {
		lag, err := GroupLag(ctx, brokers, group, topics)
		if err == nil && lag.Behind == 0 && lag.End > 0 {
			return nil
		}
		if err != nil {
			last = err
		} else {
			last = fmt.Errorf("group %s is %d messages behind", group, lag.Behind)
		}
		if err := wait(ctx, interval); err != nil {
			return errors.Join(err, last)
		}
	}
}

// ReadAll reads every message of topic, on every partition, from the start to the end
// offsets as they are when it starts (no group, nothing committed).
func ReadAll(ctx context.Context, brokers []string, topic string) ([]kafka.Message, error) {
	conn, err := kafka.DialContext(ctx, "tcp", brokers[0])
	if err != nil {
		return nil, err
	}
	ps, err := conn.ReadPartitions(topic)
	conn.Close()
	if err != nil {
		return nil, fmt.Errorf("partitions of %s: %w", topic, err)
	}
	var out []kafka.Message
	for _, p := range ps {
		pc, err := kafka.DialLeader(ctx, "tcp", brokers[0], topic, p.ID)
		if err != nil {
			return nil, err
		}
		first, last, err := pc.ReadOffsets()
		pc.Close()
		if err != nil {
			return nil, err
		}
		if last <= first {
			continue
		}
		r := kafka.NewReader(kafka.ReaderConfig{Brokers: brokers, Topic: topic, Partition: p.ID, MinBytes: 1, MaxBytes: 16 << 20})
		if err := r.SetOffset(first); err != nil {
			r.Close()
			return nil, err
		}
		for {
			m, err := r.ReadMessage(ctx)
			if err != nil {
				r.Close()
				return nil, fmt.Errorf("read %s/%d: %w", topic, p.ID, err)
			}
			out = append(out, m)
			if m.Offset >= last-1 {
				break
			}
		}
		r.Close()
	}
	return out, nil
}
