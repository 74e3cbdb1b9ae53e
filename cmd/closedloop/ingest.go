package main

import (
	"context"
	"errors"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/spf13/cobra"
	"go.uber.org/zap"

	"github.com/closedloop/closedloop/internal/admin"
	"github.com/closedloop/closedloop/internal/ingest"
	"github.com/closedloop/closedloop/internal/logging"
)

func newIngestCmd() *cobra.Command {
	var path string
	var dev bool
	cmd := &cobra.Command{
		Use:   "ingest --config FILE [--dev]",
		Short: "Serve CRM webhooks: verify each, publish it to Kafka, acknowledge once Kafka has it",
		Long: `Serve the webhook endpoints of ingest.sources (POST /webhooks/<name>) on ingest.listen
(default 127.0.0.1:8088) until SIGINT or SIGTERM. Each request is verified the way its CRM
signs it (401 if not), split per CRM record and published to Kafka with acks=all; it is
answered 2xx only once Kafka acknowledged every message (503 otherwise, and the CRM
retries). /metrics, /healthz and /readyz are on admin.listen. The process holds no state:
run as many as you like behind a load balancer. ` + "`closedloop run`" + ` serves the same endpoints
when ingest.listen is set.`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			if path == "" {
				return usageError("ingest: --config is required")
			}
			cfg, err := loadConfig(path)
			if err != nil {
				return err
			}
			if len(cfg.Ingest.Sources) == 0 {
				return usageError("ingest: %s configures no ingest.sources", path)
			}
			log, err := logging.New(cfg.Log.Level, cfg.Log.Format, dev)
			if err != nil {
				return err
			}
			defer log.Sync() //nolint:errcheck // stderr sync errors are not actionable
			log.Info("closedloop ingest starting", zap.String("version", version), zap.String("config", path))
			return runIngest(cmd.Context(), cfg.Ingest, ingest.Kafka{Brokers: cfg.Kafka.Brokers, ClientID: cfg.Kafka.ClientID},
				cfg.Admin.Listen, cfg.Admin.ShutdownTimeout, log)
		},
	}
	cmd.Flags().StringVar(&path, "config", "", "config file (YAML) with an ingest section")
	cmd.Flags().BoolVar(&dev, "dev", false, "readable console logs at debug level")
	return cmd
}

// runIngest serves webhooks and the admin endpoints until ctx ends, then drains within
// shutdownTimeout.
func runIngest(ctx context.Context, cfg ingest.Config, k ingest.Kafka, adminListen string, shutdownTimeout time.Duration, log *zap.Logger) error {
	reg := prometheus.NewRegistry()
	reg.MustRegister(collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))
	srv, err := ingest.New(cfg, k, reg, log.Named("ingest"))
	if err != nil {
		return err
	}
	if _, err := srv.Listen(); err != nil {
		_ = srv.Close()
		return err
	}
	adm := admin.New(reg, log.Named("admin"))
	if _, err := adm.Start(adminListen); err != nil {
		_ = srv.Close()
		return err
	}
	err = srv.Serve(ctx, shutdownTimeout)
	sctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), shutdownTimeout)
	defer cancel()
	_ = adm.Shutdown(sctx)
	if errors.Is(err, context.Canceled) {
		return nil
	}
	return err
}
