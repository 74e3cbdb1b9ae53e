package consumer

import (
	"strconv"

	"github.com/prometheus/client_golang/prometheus"
)

// Metrics are the consumer's Prometheus series. One Metrics serves every reader, the
// sweeper and replays of one process. A nil *Metrics records nothing.
type Metrics struct {
	consumed       *prometheus.CounterVec   // topic
	deadLettered   *prometheus.CounterVec   // topic, reason
	stageChanges   *prometheus.CounterVec   // source, outcome
	conversions    *prometheus.CounterVec   // destination, state
	released       *prometheus.CounterVec   // destination
	expired        prometheus.Counter       // swept to unmatched
	lag            *prometheus.GaugeVec     // topic, partition
	batchSeconds   *prometheus.HistogramVec // topic
	identitiesSeen prometheus.Counter
	dropped        *prometheus.CounterVec // field
	yielded        prometheus.Counter
}

// Outcomes of a stage change (closedloop_stage_changes_total{outcome}).
const (
	OutcomeMatched   = "matched"
	OutcomeUnmatched = "unmatched"
	OutcomeIgnored   = "ignored"
)

// NewMetrics registers the consumer's series on reg (nil: a private registry, for tests).
// It panics if they are already registered on reg, as prometheus.MustRegister does.
func NewMetrics(reg prometheus.Registerer) *Metrics {
	if reg == nil {
		reg = prometheus.NewRegistry()
	}
	m := &Metrics{
		consumed: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "closedloop_messages_consumed_total",
			Help: "Kafka messages processed and committed, per topic.",
		}, []string{"topic"}),
		deadLettered: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "closedloop_messages_dead_lettered_total",
			Help: "Messages (or events of a batch message) written to the dead-letter topic, per source topic and reason.",
		}, []string{"topic", "reason"}),
		stageChanges: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "closedloop_stage_changes_total",
			Help: "Decoded CRM events per source and outcome: matched a mapping rule, unmatched, or ignored (not a stage change).",
		}, []string{"source", "outcome"}),
		conversions: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "closedloop_conversions_created_total",
			Help: "Conversion rows newly created in the outbox, per destination and initial state.",
		}, []string{"destination", "state"}),
		released: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "closedloop_conversions_released_total",
			Help: "Conversions moved from awaiting_identity to ready by a late identity capture.",
		}, []string{"destination"}),
		expired: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "closedloop_conversions_unmatched_total",
			Help: "Conversions the sweeper gave up on: no usable identifier arrived within awaiting_timeout.",
		}),
		identitiesSeen: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "closedloop_identity_captures_total",
			Help: "Valid identity captures stored.",
		}),
		dropped: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "closedloop_identifiers_dropped_total",
			Help: "Emails and phones of stage changes that could not be normalized (a phone that is not a valid number, ...), per payload field: dropped, never hashed or sent; the stage change was kept.",
		}, []string{"field"}),
		yielded: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "closedloop_stage_reader_yielded_seconds_total",
			Help: "Time the stage-change reader held back while the identity reader had a backlog (identities first: stage changes then join on arrival).",
		}),
		lag: prometheus.NewGaugeVec(prometheus.GaugeOpts{
			Name: "closedloop_consumer_lag",
			Help: "Messages between the last processed offset and the partition's high watermark.",
		}, []string{"topic", "partition"}),
		batchSeconds: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Name:    "closedloop_consumer_batch_seconds",
			Help:    "Time to process one fetched batch: decode, join, dead-letter, store write and commit.",
			Buckets: prometheus.ExponentialBuckets(0.001, 2.5, 12),
		}, []string{"topic"}),
	}
	reg.MustRegister(m.consumed, m.deadLettered, m.stageChanges, m.conversions, m.released,
		m.expired, m.identitiesSeen, m.lag, m.batchSeconds, m.dropped, m.yielded)
	return m
}

func (m *Metrics) addConsumed(topic string, n int) {
	if m != nil && n > 0 {
		m.consumed.WithLabelValues(topic).Add(float64(n))
	}
}

func (m *Metrics) addDeadLettered(topic, reason string) {
	if m != nil {
		m.deadLettered.WithLabelValues(topic, reason).Inc()
	}
}

func (m *Metrics) addStageChanges(source, outcome string, n int) {
	if m != nil && n > 0 {
		m.stageChanges.WithLabelValues(source, outcome).Add(float64(n))
	}
}

func (m *Metrics) addConversions(destination, state string, n int) {
	if m != nil && n > 0 {
		m.conversions.WithLabelValues(destination, state).Add(float64(n))
	}
}

func (m *Metrics) addDropped(field string, n int) {
	if m != nil && n > 0 {
		m.dropped.WithLabelValues(field).Add(float64(n))
	}
}

func (m *Metrics) addReleased(destination string, n int) {
	if m != nil && n > 0 {
		m.released.WithLabelValues(destination).Add(float64(n))
	}
}

func (m *Metrics) addExpired(n int) {
	if m != nil && n > 0 {
		m.expired.Add(float64(n))
	}
}

func (m *Metrics) addIdentities(n int) {
	if m != nil && n > 0 {
		m.identitiesSeen.Add(float64(n))
	}
}

func (m *Metrics) setLag(topic string, partition int, lag int64) {
	if m != nil {
		if lag < 0 {
			lag = 0
		}
		m.lag.WithLabelValues(topic, strconv.Itoa(partition)).Set(float64(lag))
	}
}

func (m *Metrics) addYielded(seconds float64) {
	if m != nil && seconds > 0 {
		m.yielded.Add(seconds)
	}
}

func (m *Metrics) observeBatch(topic string, seconds float64) {
	if m != nil {
		m.batchSeconds.WithLabelValues(topic).Observe(seconds)
	}
}
