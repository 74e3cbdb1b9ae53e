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

// init makes a source's series visible at 0 before its first request.
func (m *metrics) init(source string) {
	m.messages.WithLabelValues(source)
	m.unsplitTotal.WithLabelValues(source)
}

func (m *metrics) observe(source string, code int, d time.Duration) {
	m.requests.WithLabelValues(source, strconv.Itoa(code)).Inc()
	m.seconds.WithLabelValues(source).Observe(d.Seconds())
}

func (m *metrics) refused(source, reason string) { m.refusals.WithLabelValues(source, reason).Inc() }

func (m *metrics) published(source string, n int) { m.messages.WithLabelValues(source).Add(float64(n)) }

func (m *metrics) unsplit(source string) { m.unsplitTotal.WithLabelValues(source).Inc() }
