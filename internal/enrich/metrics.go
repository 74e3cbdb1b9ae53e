package enrich

import (
	"time"

	"github.com/prometheus/client_golang/prometheus"
)

// Metrics are the enricher's Prometheus series. A nil *Metrics records nothing.
type Metrics struct {
	requests *prometheus.CounterVec   // connection, kind, outcome
	objects  *prometheus.CounterVec   // connection, kind
	seconds  *prometheus.HistogramVec // connection, kind
	cached   *prometheus.CounterVec   // connection, kind, hit
	rows     *prometheus.CounterVec   // connection, outcome
	pausedG  *prometheus.GaugeVec     // connection
	waiting  *prometheus.GaugeVec     // connection, kind (conversions, stage_changes)
	oldest   *prometheus.GaugeVec     // connection
}

// NewMetrics registers the enricher's series on reg (nil: a private registry).
func NewMetrics(reg prometheus.Registerer) *Metrics {
	if reg == nil {
		reg = prometheus.NewRegistry()
	}
	m := &Metrics{
		requests: prometheus.NewCounterVec(prometheus.CounterOpts{Name: "closedloop_enrich_fetches_total",
			Help: "CRM fetch calls (one batch or one object read per call), per connection, object kind and outcome (ok, error)."}, []string{"connection", "kind", "outcome"}),
		objects: prometheus.NewCounterVec(prometheus.CounterOpts{Name: "closedloop_enrich_objects_requested_total",
			Help: "Objects asked of a CRM, per connection and kind."}, []string{"connection", "kind"}),
		seconds: prometheus.NewHistogramVec(prometheus.HistogramOpts{Name: "closedloop_enrich_fetch_seconds",
			Help: "Time of one fetch call, per connection and kind.", Buckets: prometheus.DefBuckets}, []string{"connection", "kind"}),
		cached: prometheus.NewCounterVec(prometheus.CounterOpts{Name: "closedloop_enrich_cache_lookups_total",
			Help: "Fetch cache lookups, per connection, kind and whether the entry was fresh (hit=true)."}, []string{"connection", "kind", "hit"}),
		rows: prometheus.NewCounterVec(prometheus.CounterOpts{Name: "closedloop_enrich_rows_total",
			Help: "Conversions the enricher moved on, per connection and outcome (ready, awaiting_identity, not_found, retry)."}, []string{"connection", "outcome"}),
		pausedG: prometheus.NewGaugeVec(prometheus.GaugeOpts{Name: "closedloop_enrich_connection_paused",
			Help: "1 while a CRM connection is paused after a 401/403."}, []string{"connection"}),
		waiting: prometheus.NewGaugeVec(prometheus.GaugeOpts{Name: "closedloop_enrich_awaiting_rows",
			Help: "Rows waiting for a CRM connection's API: conversions awaiting enrichment and thin stage changes awaiting their fetch (kind)."}, []string{"connection", "kind"}),
		oldest: prometheus.NewGaugeVec(prometheus.GaugeOpts{Name: "closedloop_enrich_oldest_awaiting_age_seconds",
			Help: "Age of the oldest row waiting for a CRM connection's API (0 when none waits)."}, []string{"connection"}),
	}
	reg.MustRegister(m.requests, m.objects, m.seconds, m.cached, m.rows, m.pausedG, m.waiting, m.oldest)
	return m
}

func (m *Metrics) fetch(conn, kind string, n int, took time.Duration, err error) {
	if m == nil {
		return
	}
	outcome := "ok"
	if err != nil {
		outcome = "error"
	}
	m.requests.WithLabelValues(conn, kind, outcome).Inc()
	m.objects.WithLabelValues(conn, kind).Add(float64(n))
	m.seconds.WithLabelValues(conn, kind).Observe(took.Seconds())
}

func (m *Metrics) cache(conn, kind string, hit bool) {
	if m == nil {
		return
	}
	h := "false"
	if hit {
		h = "true"
	}
	m.cached.WithLabelValues(conn, kind, h).Inc()
}

func (m *Metrics) row(conn, outcome string) {
	if m == nil {
		return
	}
	m.rows.WithLabelValues(conn, outcome).Inc()
}

func (m *Metrics) paused(conn string, paused bool) {
	if m == nil {
		return
	}
	v := 0.0
	if paused {
		v = 1
	}
	m.pausedG.WithLabelValues(conn).Set(v)
}

// Observe sets the waiting-rows gauges from an Overview taken at now.
func (m *Metrics) Observe(list []ConnectionOverview, now time.Time) {
	if m == nil {
		return
	}
	for _, o := range list {
		name := o.Name
		if name == "" {
			name = "source:" + o.Source
		}
		m.waiting.WithLabelValues(name, "conversions").Set(float64(o.Conversions))
		m.waiting.WithLabelValues(name, "stage_changes").Set(float64(o.Pending))
		age := 0.0
		if o.Oldest != nil && o.Waiting() > 0 {
			age = now.Sub(*o.Oldest).Seconds()
		}
		m.oldest.WithLabelValues(name).Set(age)
		m.paused(name, o.Paused)
	}
}
