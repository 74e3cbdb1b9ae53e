package uploader

import "github.com/prometheus/client_golang/prometheus"

// Metrics are the dispatchers' Prometheus metrics, labelled by destination. One Metrics is
// shared by every dispatcher of a process; its methods are safe for concurrent use.
type Metrics struct {
	// Requests counts logical upload requests (in-process retries included in one) by how
	// the platform answered: ok (per-row results), transient, setup, batch_rejected, error
	// (no usable response).
	Requests *prometheus.CounterVec
	// BatchSize observes the rows per request.
	BatchSize *prometheus.HistogramVec
	// Duration observes the wall time of one logical request, retries included.
	Duration *prometheus.HistogramVec
	// Rows counts row outcomes by class: accepted, sent, permanent, transient, failed,
	// expired, skipped, setup (handed back by a pause).
	Rows *prometheus.CounterVec
	// Throttled counts HTTP 429 responses, retries included.
	Throttled *prometheus.CounterVec
	// Backoff sums the seconds spent waiting in process between HTTP retries.
	Backoff *prometheus.CounterVec
	// Unrecognised counts answers a platform package did not recognise (retried, never
	// rejected), by reason.
	Unrecognised *prometheus.CounterVec
	// HeldActions is how many conversion actions of the destination have their rows held
	// (the platform refused the action) while the rest flows.
	HeldActions *prometheus.GaugeVec
	// Paused is 1 while the destination is paused for a setup problem.
	Paused *prometheus.GaugeVec
}

// NewMetrics creates the metrics and registers them on reg (nil: not registered). Register
// once per registry.
func NewMetrics(reg prometheus.Registerer) *Metrics {
	m := &Metrics{
		Requests: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "closedloop_upload_requests_total",
			Help: "Upload requests by destination and outcome (ok, transient, setup, batch_rejected, error).",
		}, []string{"destination", "outcome"}),
		BatchSize: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Name:    "closedloop_upload_batch_size",
			Help:    "Rows per upload request.",
			Buckets: prometheus.ExponentialBuckets(1, 2, 12), // 1 .. 2048
		}, []string{"destination"}),
		Duration: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Name:    "closedloop_upload_duration_seconds",
			Help:    "Wall time of one upload request including in-process retries.",
			Buckets: prometheus.ExponentialBuckets(0.01, 2, 14), // 10ms .. ~82s
		}, []string{"destination"}),
		Rows: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "closedloop_upload_rows_total",
			Help: "Row outcomes by destination and class.",
		}, []string{"destination", "class"}),
		Throttled: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "closedloop_upload_throttled_total",
			Help: "HTTP 429 responses received, retries included.",
		}, []string{"destination"}),
		Backoff: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "closedloop_upload_backoff_seconds_total",
			Help: "Seconds spent waiting between in-process HTTP retries.",
		}, []string{"destination"}),
		Unrecognised: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "closedloop_upload_unrecognised_total",
			Help: "Platform answers the uploader did not recognise (rows retried with backoff, never rejected), by destination and reason.",
		}, []string{"destination", "reason"}),
		HeldActions: prometheus.NewGaugeVec(prometheus.GaugeOpts{
			Name: "closedloop_conversion_actions_held",
			Help: "Conversion actions whose rows are held because the platform refused the action (unknown, disabled, wrong type).",
		}, []string{"destination"}),
		Paused: prometheus.NewGaugeVec(prometheus.GaugeOpts{
			Name: "closedloop_destination_paused",
			Help: "1 while the destination is paused for a setup problem, else 0.",
		}, []string{"destination"}),
	}
	if reg != nil {
		reg.MustRegister(m.Requests, m.BatchSize, m.Duration, m.Rows, m.Throttled, m.Backoff, m.Unrecognised, m.HeldActions, m.Paused)
	}
	return m
}
