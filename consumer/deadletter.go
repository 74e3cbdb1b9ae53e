package consumer

import (
	"context"
	"strconv"
	"time"

	"github.com/segmentio/kafka-go"
)

// Headers the consumer reads and writes.
const (
	// HeaderFormat on a stage-change message overrides its topic's configured format.
	HeaderFormat = "closedloop-format"

	HeaderErrorReason     = "closedloop-error-reason" // what is wrong; never raw PII
	HeaderErrorField      = "closedloop-error-field"  // dotted path of the offending field, may be empty
	HeaderErrorIndex      = "closedloop-error-index"  // the event's index in a batch message; absent for the whole message
	HeaderErrorCode       = "closedloop-error-code"   // a short class: see the Reason* constants
	HeaderSourceTopic     = "closedloop-source-topic"
	HeaderSourcePartition = "closedloop-source-partition"
	HeaderSourceOffset    = "closedloop-source-offset"
)

// Dead-letter reason classes (the closedloop-error-code header and the metrics' reason
// label): a short, bounded vocabulary.
const (
	ReasonTooLarge    = "too_large"   // payload over 1 MiB
	ReasonUndecodable = "undecodable" // the stage-change message as a whole could not be decoded
	ReasonBadEvent    = "bad_event"   // one event of a batch message could not be decoded
	// ReasonNotEnriched: a thin event (Attio: ids only) whose source no CRM connection
	// enriches, so it can never be planned; configure `crms:` and replay it.
	ReasonNotEnriched     = "enrichment_not_configured"
	ReasonInvalidIdentity = "invalid_identity" // an identity capture failed validation
)

// messageWriter is the part of *kafka.Writer the consumer uses for dead letters.
type messageWriter interface {
	WriteMessages(ctx context.Context, msgs ...kafka.Message) error
}

// deadLetter is one message (or one event of a batch message) headed for the dead-letter
// topic.
type deadLetter struct {
	src    kafka.Message
	code   string
	reason string // human text; never raw PII (decoders guarantee it, see crm.DecodeError)
	field  string
	index  int // event index in a batch message, -1 for the whole message
}

// message builds the dead-letter record: the original key, value and headers, plus the
// closedloop-error-* and closedloop-source-* headers (replacing any the source carried, so
// a dead letter re-published by hand and failing again reports the new failure).
func (d deadLetter) message(topic string) kafka.Message {
	hs := make([]kafka.Header, 0, len(d.src.Headers)+7)
	for _, h := range d.src.Headers {
		switch h.Key {
		case HeaderErrorReason, HeaderErrorField, HeaderErrorIndex, HeaderErrorCode,
			HeaderSourceTopic, HeaderSourcePartition, HeaderSourceOffset:
			continue
		}
		hs = append(hs, h)
	}
	hs = append(hs,
		kafka.Header{Key: HeaderErrorReason, Value: []byte(d.reason)},
		kafka.Header{Key: HeaderErrorField, Value: []byte(d.field)},
		kafka.Header{Key: HeaderErrorCode, Value: []byte(d.code)},
		kafka.Header{Key: HeaderSourceTopic, Value: []byte(d.src.Topic)},
		kafka.Header{Key: HeaderSourcePartition, Value: []byte(strconv.Itoa(d.src.Partition))},
		kafka.Header{Key: HeaderSourceOffset, Value: []byte(strconv.FormatInt(d.src.Offset, 10))},
	)
	if d.index >= 0 {
		hs = append(hs, kafka.Header{Key: HeaderErrorIndex, Value: []byte(strconv.Itoa(d.index))})
	}
	return kafka.Message{Topic: topic, Key: d.src.Key, Value: d.src.Value, Headers: hs}
}

// DeadLetterWriter is the synchronous producer for the dead-letter topic. It may be shared
// by several pipelines; it is safe for concurrent use.
type DeadLetterWriter struct {
	*kafka.Writer
	transport *kafka.Transport
}

// Close flushes and closes the producer and its connections.
func (w *DeadLetterWriter) Close() error {
	err := w.Writer.Close()
	w.transport.CloseIdleConnections()
	return err
}

// NewDeadLetterWriter returns the producer for cfg's dead-letter topic: every
// WriteMessages returns only once all in-sync replicas have the messages. Records are
// LZ4-compressed, so an over-sized (but compressible) payload still fits the broker's
// default limit. Close it after the readers that use it have stopped.
func NewDeadLetterWriter(cfg Config, log kafka.Logger, errLog kafka.Logger) *DeadLetterWriter {
	cfg = cfg.withDefaults()
	tr := &kafka.Transport{ClientID: cfg.ClientID}
	return &DeadLetterWriter{transport: tr, Writer: &kafka.Writer{
		// No Topic here: each record names cfg.DeadLetterTopic itself, and kafka-go refuses
		// a topic set on both the writer and the message.
		Addr:         kafka.TCP(cfg.Brokers...),
		Balancer:     &kafka.Hash{},
		RequiredAcks: kafka.RequireAll,
		Async:        false,
		BatchTimeout: 5 * time.Millisecond,
		BatchBytes:   int64(cfg.MaxBytes) + 64<<10,
		MaxAttempts:  5,
		Compression:  kafka.Lz4,
		Logger:       log,
		ErrorLogger:  errLog,
		Transport:    tr,
	}}
}

// lastPerPartition returns the last (highest-offset) message of each topic/partition in
// msgs, which kafka-go needs to commit them all.
func lastPerPartition(msgs []kafka.Message) []kafka.Message {
	type tp struct {
		topic     string
		partition int
	}
	idx := make(map[tp]int, 4)
	out := make([]kafka.Message, 0, 4)
	for _, m := range msgs {
		k := tp{m.Topic, m.Partition}
		if i, ok := idx[k]; ok {
			if m.Offset > out[i].Offset {
				out[i] = m
			}
			continue
		}
		idx[k] = len(out)
		out = append(out, m)
	}
	return out
}
