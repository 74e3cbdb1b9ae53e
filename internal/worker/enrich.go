package worker

import (
	"net/http"

	"github.com/prometheus/client_golang/prometheus"
	"go.uber.org/zap"

	"github.com/closedloop/closedloop/crm"
	"github.com/closedloop/closedloop/internal/config"
	"github.com/closedloop/closedloop/internal/enrich"
	"github.com/closedloop/closedloop/internal/pii"
	"github.com/closedloop/closedloop/store"
)

// newEnricher builds the enricher of the configured CRM connections; nil when there are none.
func newEnricher(cfg *config.Config, st *store.Store, mapping func() *crm.Mapping, reg prometheus.Registerer, log *zap.Logger, hc *http.Client) (*enrich.Enricher, error) {
	if len(cfg.CRMs.Connections) == 0 {
		return nil, nil
	}
	e, err := enrich.New(enrich.Options{
		Config: cfg.CRMs, Store: st, Mapping: mapping,
		Normalizer: pii.Normalizer{DefaultRegion: cfg.PII.DefaultRegion},
		HTTPClient: hc, Metrics: enrich.NewMetrics(reg), Log: log,
	})
	if err != nil {
		return nil, err
	}
	log.Info("CRM enrichment on", zap.Strings("connections", cfg.CRMs.Names()))
	return e, nil
}
