package ingest

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"sync"
	"syscall"
	"time"

	"github.com/segmentio/kafka-go"
)

// producer publishes the messages of concurrent webhook requests to Kafka, coalescing
// them per partition: a partition has at most one produce request in flight, and the
// messages that arrive meanwhile go together in the next one, sent as soon as the one in
// flight is answered. An idle partition sends at once (no linger); a busy one sends
// bigger produce requests. This is what kafka-go's Writer cannot do for synchronous
// callers: its batches wait out BatchTimeout, so each request paid the linger on top of
// the produce round trip.
//
// Ordering: a key always maps to the same partition (kafka.Hash, as kafka-go's Writer and
// sarama map it), messages join a partition's queue in the order Publish is called, and a
// partition's produce requests (retries included) never overlap; so one record's messages
// stay in order.
//
// Publish returns nil only once the broker acknowledged every message of the call with
// acks=all. Safe for concurrent use. Close flushes what is queued and stops.
type producer struct {
	client      *kafka.Client
	balancer    kafka.Balancer
	compression kafka.Compression
	maxMessages int                // per produce request (one call's messages for a partition always go together)
	maxBytes    int64              // per produce request, uncompressed, as kafka-go's Writer counts them
	attempts    int                // per produce request, for errors the broker calls temporary and dropped connections
	timeout     time.Duration      // per attempt
	backoff     time.Duration      // before the second attempt, doubling
	observe     func(messages int) // called for every produce request sent; nil: not

	mu     sync.RWMutex
	parts  map[topicPartition]*partitionQueue
	topics map[string]topicPartitions
	closed bool
	stop   chan struct{} // closed by Close: the senders send what is queued and return
	wg     sync.WaitGroup
}

type topicPartition struct {
	topic     string
	partition int
}

// topicPartitions is a topic's partition list, as the balancer takes it, and when it was
// asked for.
type topicPartitions struct {
	ids []int
	at  time.Time
}

// metadataTTL is how long a topic's partition count is used before it is asked again.
const metadataTTL = 10 * time.Second

// errProducerClosed answers a Publish after Close.
var errProducerClosed = errors.New("kafka producer closed")

// pending is one Publish call's messages for one partition.
type pending struct {
	ctx   context.Context
	msgs  []kafka.Message
	bytes int64
	done  chan<- error // buffered: one send per pending, never blocks
}

type partitionQueue struct {
	tp    topicPartition
	wake  chan struct{} // 1-buffered: something was queued
	mu    sync.Mutex
	queue []*pending
}

func newProducer(client *kafka.Client, maxMessages int, maxBytes int64, attempts int, timeout time.Duration) *producer {
	return &producer{
		client:      client,
		balancer:    &kafka.Hash{},
		compression: kafka.Lz4, // a body near max_body still fits the broker's 1 MB default
		maxMessages: maxMessages,
		maxBytes:    maxBytes,
		attempts:    attempts,
		timeout:     timeout,
		backoff:     100 * time.Millisecond,
		parts:       map[topicPartition]*partitionQueue{},
		topics:      map[string]topicPartitions{},
		stop:        make(chan struct{}),
	}
}

// Publish produces msgs (each with its Topic set) and waits until every one is
// acknowledged, one fails, or ctx ends. On an error some of the messages may be on the
// topic, or land there later: the caller must treat the whole call as failed (and may
// publish it again). msgs must not be modified until Publish returns nil, or ever after
// an error.
func (p *producer) Publish(ctx context.Context, msgs []kafka.Message) error {
	if len(msgs) == 0 {
		return nil
	}
	// Group per partition, keeping the call's order within each.
	type group struct {
		tp    topicPartition
		msgs  []kafka.Message
		bytes int64
	}
	groups := make([]group, 0, 1)
	for i := range msgs {
		m := &msgs[i]
		parts, err := p.partitions(ctx, m.Topic)
		if err != nil {
			return err
		}
		tp := topicPartition{topic: m.Topic, partition: p.balancer.Balance(*m, parts...)}
		j := 0
		for j < len(groups) && groups[j].tp != tp {
			j++
		}
		if j == len(groups) {
			if len(msgs) == 1 {
				groups = append(groups, group{tp: tp, msgs: msgs})
			} else {
				groups = append(groups, group{tp: tp})
			}
		}
		if len(msgs) > 1 {
			groups[j].msgs = append(groups[j].msgs, *m)
		}
		groups[j].bytes += messageSize(m)
	}
	done := make(chan error, len(groups))
	for _, g := range groups {
		if err := p.enqueue(g.tp, &pending{ctx: ctx, msgs: g.msgs, bytes: g.bytes, done: done}); err != nil {
			return err
		}
	}
	var first error
	for range groups {
		select {
		case err := <-done:
			if err != nil && first == nil {
				first = err
			}
		case <-ctx.Done():
			return ctx.Err()
		}
	}
	return first
}

// messageSize is what the message weighs in a produce request, roughly as kafka-go's
// Writer counts it against BatchBytes.
func messageSize(m *kafka.Message) int64 {
	n := len(m.Key) + len(m.Value) + 32
	for _, h := range m.Headers {
		n += len(h.Key) + len(h.Value) + 4
	}
	return int64(n)
}

// partitions is topic's partition list, from the cluster's metadata (kept metadataTTL).
func (p *producer) partitions(ctx context.Context, topic string) ([]int, error) {
	p.mu.RLock()
	tps, ok := p.topics[topic]
	p.mu.RUnlock()
	if ok && time.Since(tps.at) < metadataTTL {
		return tps.ids, nil
	}
	mctx, cancel := context.WithTimeout(ctx, p.timeout)
	defer cancel()
	res, err := p.client.Metadata(mctx, &kafka.MetadataRequest{Topics: []string{topic}})
	if err != nil {
		return nil, fmt.Errorf("metadata of topic %s: %w", topic, err)
	}
	for _, t := range res.Topics {
		if t.Name != topic {
			continue
		}
		if t.Error != nil {
			return nil, fmt.Errorf("metadata of topic %s: %w", topic, t.Error)
		}
		if len(t.Partitions) == 0 {
			break
		}
		ids := make([]int, len(t.Partitions))
		for i := range ids {
			ids[i] = i // kafka.Hash takes the list of ids 0..n-1, as the Writer passes it
		}
		p.mu.Lock()
		p.topics[topic] = topicPartitions{ids: ids, at: time.Now()}
		p.mu.Unlock()
		return ids, nil
	}
	return nil, fmt.Errorf("metadata of topic %s: %w", topic, kafka.UnknownTopicOrPartition)
}

// enqueue adds pd to its partition's queue, starting the partition's sender the first
// time.
func (p *producer) enqueue(tp topicPartition, pd *pending) error {
	p.mu.RLock()
	if p.closed {
		p.mu.RUnlock()
		return errProducerClosed
	}
	q := p.parts[tp]
	if q == nil {
		p.mu.RUnlock()
		p.mu.Lock()
		if p.closed {
			p.mu.Unlock()
			return errProducerClosed
		}
		if q = p.parts[tp]; q == nil {
			q = &partitionQueue{tp: tp, wake: make(chan struct{}, 1)}
			p.parts[tp] = q
			p.wg.Add(1)
			go p.send(q)
		}
		p.mu.Unlock()
		p.mu.RLock()
		if p.closed { // Close came in between: its senders may be gone
			p.mu.RUnlock()
			return errProducerClosed
		}
	}
	// Appended under the read lock: Close (write lock) cannot slip in between the check
	// and the append, so a sender that saw stop and an empty queue misses nothing.
	q.mu.Lock()
	q.queue = append(q.queue, pd)
	q.mu.Unlock()
	p.mu.RUnlock()
	select {
	case q.wake <- struct{}{}:
	default:
	}
	return nil
}

// send is a partition's sender: it produces what is queued, one produce request at a
// time, until Close and an empty queue.
func (p *producer) send(q *partitionQueue) {
	defer p.wg.Done()
	var batch []*pending
	for {
		batch = q.take(batch[:0], p.maxMessages, p.maxBytes)
		if len(batch) == 0 {
			select {
			case <-q.wake:
				continue
			case <-p.stop:
				if q.empty() {
					return
				}
				continue
			}
		}
		err := p.produce(q.tp, batch)
		for i, pd := range batch {
			pd.done <- err
			batch[i] = nil
		}
	}
}

// take moves the next produce request's worth of pending calls from the queue into
// batch: at least one, then more while they fit maxMessages and maxBytes. Calls whose
// context already ended are answered with its error and left out: nobody waits for
// them, and a broker that is down does not pile up what its callers gave up on.
func (q *partitionQueue) take(batch []*pending, maxMessages int, maxBytes int64) []*pending {
	q.mu.Lock()
	defer q.mu.Unlock()
	n, size, i := 0, int64(0), 0
	for ; i < len(q.queue); i++ {
		pd := q.queue[i]
		if err := pd.ctx.Err(); err != nil {
			pd.done <- err
			continue
		}
		if len(batch) > 0 && (n+len(pd.msgs) > maxMessages || size+pd.bytes > maxBytes) {
			break
		}
		batch = append(batch, pd)
		n += len(pd.msgs)
		size += pd.bytes
	}
	rest := copy(q.queue, q.queue[i:])
	clear(q.queue[rest:])
	q.queue = q.queue[:rest]
	return batch
}

func (q *partitionQueue) empty() bool {
	q.mu.Lock()
	defer q.mu.Unlock()
	return len(q.queue) == 0
}

// produce sends batch's messages as one produce request (acks=all), retrying temporary
// failures with backoff while anyone still waits for the answer.
func (p *producer) produce(tp topicPartition, batch []*pending) error {
	n := 0
	for _, pd := range batch {
		n += len(pd.msgs)
	}
	records := make([]kafka.Record, n)
	var err error
	for attempt := 0; attempt < p.attempts; attempt++ {
		if attempt > 0 {
			if !waiting(batch) {
				return err
			}
			t := time.NewTimer(p.backoff << (attempt - 1))
			select {
			case <-t.C:
			case <-p.stop: // closing: whoever still waits is answered now, not after retries
				t.Stop()
				return fmt.Errorf("produce %d messages to %s/%d: %w (%w)", n, tp.topic, tp.partition, err, errProducerClosed)
			}
		}
		i := 0
		for _, pd := range batch {
			for j := range pd.msgs {
				m := &pd.msgs[j]
				// Readers are consumed by a send: made afresh for every attempt.
				records[i] = kafka.Record{Time: m.Time, Key: kafka.NewBytes(m.Key), Value: kafka.NewBytes(m.Value), Headers: m.Headers}
				i++
			}
		}
		if p.observe != nil {
			p.observe(n)
		}
		ctx, cancel := context.WithTimeout(context.Background(), p.timeout)
		var res *kafka.ProduceResponse
		res, err = p.client.Produce(ctx, &kafka.ProduceRequest{
			Topic:        tp.topic,
			Partition:    tp.partition,
			RequiredAcks: kafka.RequireAll,
			Compression:  p.compression,
			Records:      kafka.NewRecordReader(records...),
		})
		cancel()
		if err == nil {
			err = res.Error
		}
		if err == nil && len(res.RecordErrors) > 0 {
			err = fmt.Errorf("%d of %d records refused", len(res.RecordErrors), n)
		}
		if err == nil {
			return nil
		}
		if !retriable(err) {
			break
		}
	}
	return fmt.Errorf("produce %d messages to %s/%d: %w", n, tp.topic, tp.partition, err)
}

// waiting tells whether any call of batch still waits for its answer.
func waiting(batch []*pending) bool {
	for _, pd := range batch {
		if pd.ctx.Err() == nil {
			return true
		}
	}
	return false
}

// retriable: what kafka-go's Writer retries, errors the broker calls temporary (no
// leader, not enough replicas, ...) and dropped or refused connections, and an attempt
// that timed out.
func retriable(err error) bool {
	var temp interface{ Temporary() bool }
	if errors.As(err, &temp) && temp.Temporary() {
		return true
	}
	var ne net.Error
	if errors.As(err, &ne) && ne.Timeout() {
		return true
	}
	return errors.Is(err, context.DeadlineExceeded) || errors.Is(err, io.EOF) || errors.Is(err, io.ErrUnexpectedEOF) ||
		errors.Is(err, syscall.ECONNREFUSED) || errors.Is(err, syscall.ECONNRESET) || errors.Is(err, syscall.EPIPE)
}

// Close refuses new calls, waits for the senders to produce what is queued (each
// request bounded by the attempt timeout) and returns.
func (p *producer) Close() error {
	p.mu.Lock()
	if p.closed {
		p.mu.Unlock()
		return nil
	}
	p.closed = true
	close(p.stop)
	p.mu.Unlock()
	p.wg.Wait()
	return nil
}
