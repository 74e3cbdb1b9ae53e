package ingest

import (
	"strconv"
	"time"

	"github.com/prometheus/client_golang/prometheus"
)

// metrics are the ingest server's Prometheus series. Labels are bounded: source names
// come from the config, codes and reasons from fixed vocabularies.
type metrics struct {
	requests     *prometheus.CounterVec   // source, code
	refusals     *prometheus.CounterVec   // source, reason
	messages     *prometheus.CounterVec   // source
	unsplitTotal *prometheus.CounterVec   // source
	seconds      *prometheus.HistogramVec // source
	batch        prometheus.Histogram     // messages per produce request
}

func newMetrics(reg prometheus.Registerer) *metrics {
	m := &metrics{
		requests: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "closedloop_ingest_requests_total",
			Help: "Webhook requests answered, per source and HTTP status code.",
		}, []string{"source", "code"}),
		refusals: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "closedloop_ingest_refused_total",
			Help: "Webhook requests refused with 401 because verification failed, per source and reason.",
		}, []string{"source", "reason"}),
		messages: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "closedloop_ingest_messages_published_total",
			Help: "Kafka messages published (acknowledged by all in-sync replicas) from webhooks, per source.",
		}, []string{"source"}),
		unsplitTotal: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "closedloop_ingest_unsplit_total",
			Help: "Verified webhook bodies of an unknown shape, published whole (the consumer dead-letters them).",
		}, []string{"source"}),
		seconds: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Name:    "closedloop_ingest_request_seconds",
			Help:    "Time from a webhook's arrival to its answer, Kafka acknowledgement included.",
			Buckets: prometheus.ExponentialBuckets(0.0005, 2.5, 12),
		}, []string{"source"}),
	}
	m.batch = prometheus.NewHistogram(prometheus.HistogramOpts{
		Name:    "closedloop_ingest_produce_batch_messages",
		Help:    "Messages per Kafka produce request: the webhooks of concurrent requests share one.",
		Buckets: prometheus.ExponentialBuckets(1, 2, 9),
	})
	reg.MustRegister(m.requests, m.refusals, m.messages, m.unsplitTotal, m.seconds, m.batch)
	return m
}

// sourceMetrics are one source's series of the busy path, looked up once.
type sourceMetrics struct {
	m        *metrics
	name     string
	ok       prometheus.Counter // requests answered 200
	seconds  prometheus.Observer
	messages prometheus.Counter
}

// source makes a source's series visible at 0 before its first request and returns
// them.
func (m *metrics) source(name string) *sourceMetrics {
	m.unsplitTotal.WithLabelValues(name)
	return &sourceMetrics{m: m, name: name, ok: m.requests.WithLabelValues(name, "200"),
		seconds: m.seconds.WithLabelValues(name), messages: m.messages.WithLabelValues(name)}
}

func (sm *sourceMetrics) observe(code int, d time.Duration) {
	if code == 200 {
		sm.ok.Inc()
	} else {
		sm.m.requests.WithLabelValues(sm.name, strconv.Itoa(code)).Inc()
	}
	sm.seconds.Observe(d.Seconds())
}

func (m *metrics) refused(source, reason string) { m.refusals.WithLabelValues(source, reason).Inc() }

func (m *metrics) unsplit(source string) { m.unsplitTotal.WithLabelValues(source).Inc() }
