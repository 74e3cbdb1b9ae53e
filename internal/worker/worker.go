// Package worker assembles one closedloop process from its configuration: the store
// (migrated on start), the active stage mapping (hot-reloaded), the Kafka consumer, one
// upload dispatcher per enabled destination, and the admin server with its status page.
// `closedloop run` and `closedloop demo` both run it.
//
// A consumer that stops on a failure (the database or the broker gone longer than its
// retries) is replaced by a new one after a backoff (keepConsuming); the process keeps
// running and /readyz says not ready meanwhile.
//
// Shutdown: cancelling ctx stops every loop; each drains what it holds (the consumer
// finishes or abandons its batch without committing, dispatchers hand unsent rows back)
// within cfg.Admin.ShutdownTimeout, then the store closes.
package worker

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"os"
	"sync/atomic"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"go.uber.org/zap"
	"golang.org/x/sync/errgroup"

	"github.com/closedloop/closedloop/consumer"
	"github.com/closedloop/closedloop/crm"
	"github.com/closedloop/closedloop/internal/admin"
	"github.com/closedloop/closedloop/internal/config"
	"github.com/closedloop/closedloop/internal/enrich"
	"github.com/closedloop/closedloop/internal/ingest"
	"github.com/closedloop/closedloop/internal/mappingreload"
	"github.com/closedloop/closedloop/internal/pii"
	"github.com/closedloop/closedloop/internal/statuspage"
	"github.com/closedloop/closedloop/store"
	"github.com/closedloop/closedloop/uploader"
	"github.com/closedloop/closedloop/uploader/platforms"
)

// Options are the parts of a run that do not come from the config file.
type Options struct {
	// Signals triggers a mapping reload on every value (SIGHUP in `closedloop run`).
	Signals <-chan os.Signal
	// Listening is called with the admin server's bound address once it serves.
	Listening func(addr string)
	// Uploader overrides dispatcher timings (tests and the demo shorten them).
	Uploader uploader.Options
	// CRMHTTPClient, when set, is the HTTP client of every CRM connection (tests).
	CRMHTTPClient *http.Client
	// IngestListening is called with the webhook server's bound address once it is
	// bound (only when ingest.listen is set).
	IngestListening func(addr string)
}

// Run runs the worker until ctx is cancelled or a component fails for good.
func Run(ctx context.Context, cfg *config.Config, log *zap.Logger, opts Options) error {
	reg := prometheus.NewRegistry()
	reg.MustRegister(collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))

	st, err := store.Open(ctx, cfg.Store, log.Named("store"))
	if err != nil {
		return err // already "store: ..."
	}
	defer st.Close()

	targets := cfg.ResolvingTargets(ctx, log.Named("mappings")) // conversion names resolve at start and on each reload
	initial, err := crm.CompileMappings(cfg.Mappings, targets)
	if err != nil {
		return err
	}
	var mapping func() *crm.Mapping
	var reloader *mappingreload.Reloader
	if cfg.Path != "" {
		reloader, err = mappingreload.New(mappingreload.Config{
			Path:    cfg.Path,
			Load:    mappingreload.FileLoader(cfg.Path, targets),
			Initial: initial,
			Signals: opts.Signals,
			OnChange: func(m *crm.Mapping) {
				// Rows held for a conversion action the platform refused go out at once
				// under the fixed one.
				for _, r := range m.Rules() {
					for _, d := range r.Destinations {
						n, err := st.RetargetHeld(ctx, r.Name, d.Destination, d.Conversion, time.Now())
						switch {
						case err != nil:
							log.Error("retargeting held rows after the mapping change failed; they wait for their hold probe",
								zap.String("rule", r.Name), zap.String("destination", d.Destination), zap.Error(err))
						case n > 0:
							log.Info("held rows retargeted to the fixed conversion action", zap.String("rule", r.Name),
								zap.String("destination", d.Destination), zap.String("conversion", d.Conversion), zap.Int("rows", n))
						}
					}
				}
			},
		}, log.Named("mappings"))
		if err != nil {
			return err
		}
		mapping = reloader.Current
	} else {
		mapping = func() *crm.Mapping { return initial }
	}
	log.Info("stage mapping active", zap.String("version", initial.Version()), zap.Int("rules", len(cfg.Mappings)))
	for _, w := range cfg.Warnings(time.Now()) {
		log.Warn("an API version sunsets soon; set a newer one before it does", zap.String("warning", w))
	}

	deps := consumer.Deps{
		Store:      st,
		Mapping:    mapping,
		Normalizer: pii.Normalizer{DefaultRegion: cfg.PII.DefaultRegion},
		Metrics:    consumer.NewMetrics(reg), // one set, shared by every consumer of this process
		Log:        log.Named("consumer"),
	}
	enricher, err := newEnricher(cfg, st, mapping, reg, log, opts.CRMHTTPClient)
	if err != nil {
		return err
	}
	if enricher != nil {
		deps.Enriches = cfg.CRMs.Enriches
	}
	cons, err := consumer.New(cfg.Kafka, deps)
	if err != nil {
		return fmt.Errorf("consumer: %w", err)
	}
	var current atomic.Pointer[consumer.Consumer] // the consumer running now
	current.Store(cons)
	defer func() { _ = current.Load().Close() }()

	var dispatchers []*uploader.Dispatcher
	if cfg.Uploader.Enabled == nil || *cfg.Uploader.Enabled {
		um := uploader.NewMetrics(reg)
		uo := opts.Uploader
		if uo.LeaseFor == 0 {
			uo.LeaseFor = cfg.Uploader.LeaseFor
		}
		if uo.PollInterval == 0 {
			uo.PollInterval = cfg.Uploader.PollInterval
		}
		if uo.AdjustmentWait == 0 {
			uo.AdjustmentWait = cfg.Uploader.AdjustmentWait
		}
		if uo.StatusPollInterval == 0 {
			uo.StatusPollInterval = cfg.Uploader.StatusPollInterval
		}
		if uo.StatusPollLimit == 0 {
			uo.StatusPollLimit = cfg.Uploader.StatusPollLimit
		}
		for _, name := range cfg.DestinationNames() {
			d := cfg.Destinations[name]
			if !d.IsEnabled() {
				log.Info("destination disabled", zap.String("destination", name))
				continue
			}
			dlog := log.Named("uploader." + name)
			p, err := platforms.New(name, d, dlog)
			if err != nil {
				return fmt.Errorf("destination %s: %w", name, err)
			}
			dispatchers = append(dispatchers, uploader.New(name, d, p, st, uo, dlog, um))
		}
	} else {
		log.Warn("uploader disabled: conversions stay in the outbox")
	}

	// The webhook front (ingest.listen set): verified CRM webhooks onto the stage topics.
	var webhooks *ingest.Server
	if cfg.Ingest.Listen != "" {
		webhooks, err = ingest.New(cfg.Ingest, ingest.Kafka{Brokers: cfg.Kafka.Brokers, ClientID: cfg.Kafka.ClientID}, reg, log.Named("ingest"))
		if err != nil {
			return err
		}
		iaddr, err := webhooks.Listen()
		if err != nil {
			_ = webhooks.Close()
			return err
		}
		if opts.IngestListening != nil {
			opts.IngestListening(iaddr)
		}
	}

	srv := admin.New(reg, log.Named("admin"))
	if cfg.Admin.Pprof {
		srv.ServeProfiles()
	}
	srv.AddCheck("migrations", func(ctx context.Context) error {
		v, dirty, err := st.MigrationVersion(ctx)
		switch {
		case err != nil:
			return err
		case dirty:
			return fmt.Errorf("migration %d is dirty", v)
		case v == 0:
			return errors.New("no migration applied")
		}
		return nil
	})
	srv.AddCheck("consumer", func(context.Context) error {
		if !current.Load().Ready() {
			return errors.New("consumer has not joined its group yet")
		}
		return nil
	})
	srv.Handle("GET /{$}", statuspage.Handler(&status{st: st, mapping: mapping, dispatchers: dispatchers, crms: cfg.CRMs}, time.Now, log.Named("status")))
	addr, err := srv.Start(cfg.Admin.Listen)
	if err != nil {
		if webhooks != nil {
			_ = webhooks.Close()
		}
		return err
	}
	if opts.Listening != nil {
		opts.Listening(addr)
	}
	oldest := prometheus.NewGauge(prometheus.GaugeOpts{
		Name: "closedloop_oldest_awaiting_conversion_age_seconds",
		Help: "Age of the oldest conversion still awaiting an identifier.",
	})
	reg.MustRegister(oldest)

	g, gctx := errgroup.WithContext(ctx)
	g.Go(func() error {
		return keepConsuming(gctx, cons, func() (consumerRun, error) {
			c, err := consumer.New(cfg.Kafka, deps)
			if err == nil {
				current.Store(c)
			}
			return c, err
		}, time.Second, log.Named("consumer"))
	})
	if len(dispatchers) > 0 {
		g.Go(func() error { return uploader.RunAll(gctx, dispatchers) })
	}
	if reloader != nil {
		g.Go(func() error { return reloader.Run(gctx) })
	}
	g.Go(func() error { return watchOldest(gctx, st, oldest, log) })
	if enricher != nil {
		g.Go(func() error { return enricher.Run(gctx) })
		g.Go(func() error { return enricher.WatchGauges(gctx, st, 15*time.Second) })
	}
	if webhooks != nil {
		g.Go(func() error { return webhooks.Serve(gctx, cfg.Admin.ShutdownTimeout) })
	}

	err = g.Wait()
	shutdownCtx, cancel := context.WithTimeout(context.WithoutCancel(ctx), cfg.Admin.ShutdownTimeout)
	defer cancel()
	_ = srv.Shutdown(shutdownCtx)
	if errors.Is(err, context.Canceled) || ctx.Err() != nil {
		log.Info("worker stopped")
		return nil
	}
	return err
}

// consumerRun is the part of a consumer keepConsuming drives.
type consumerRun interface {
	Run(ctx context.Context) error
	Close() error
}

// maxRestartWait caps the wait between consumer restarts.
const maxRestartWait = time.Minute

// keepConsuming runs first, and whenever the consumer running stops on a failure (a
// durable write that failed through its retries, a broker out of reach) closes it and
// runs a new one from next, until ctx ends. Nothing past the failed consumer's last
// committed batch was acknowledged, and a new consumer's readers resume from the
// committed offsets, so a restart loses nothing; /readyz says not ready until the new one
// has joined its group. The wait before a restart starts at minWait and doubles up to
// maxRestartWait; a consumer that ran for maxRestartWait resets it. Only an error from next
// (a configuration a consumer cannot be built from) is returned.
func keepConsuming(ctx context.Context, first consumerRun, next func() (consumerRun, error), minWait time.Duration, log *zap.Logger) error {
	cons, wait := first, minWait
	for {
		started := time.Now()
		err := cons.Run(ctx)
		if err == nil || ctx.Err() != nil {
			return nil // the caller closes the consumer running last
		}
		if cerr := cons.Close(); cerr != nil {
			log.Warn("closing the stopped consumer", zap.Error(cerr))
		}
		if time.Since(started) >= maxRestartWait {
			wait = minWait
		}
		log.Error("consumer stopped; starting a new one from the committed offsets", zap.Error(err), zap.Duration("in", wait))
		t := time.NewTimer(wait)
		select {
		case <-ctx.Done():
			t.Stop()
			return nil // the caller's Close of the stopped consumer returns its first Close's result
		case <-t.C:
		}
		wait = min(wait*2, maxRestartWait)
		if cons, err = next(); err != nil {
			return fmt.Errorf("consumer: %w", err)
		}
	}
}

// watchOldest keeps the oldest-awaiting gauge current.
func watchOldest(ctx context.Context, st *store.Store, g prometheus.Gauge, log *zap.Logger) error {
	t := time.NewTicker(15 * time.Second)
	defer t.Stop()
	for {
		at, ok, err := st.OldestAwaiting(ctx)
		switch {
		case err != nil && ctx.Err() == nil:
			log.Warn("oldest awaiting conversion", zap.Error(err))
		case ok:
			g.Set(time.Since(at).Seconds())
		default:
			g.Set(0)
		}
		select {
		case <-ctx.Done():
			return nil
		case <-t.C:
		}
	}
}

// status feeds the status page from the running worker.
type status struct {
	st          *store.Store
	mapping     func() *crm.Mapping
	dispatchers []*uploader.Dispatcher
	crms        enrich.Config
}

// CRMConnections is the page's CRM enrichment section (statuspage.CRMSource).
func (s *status) CRMConnections(ctx context.Context) ([]enrich.ConnectionOverview, error) {
	return enrich.Overview(ctx, s.st, s.crms, time.Now())
}

func (s *status) Destinations() []statuspage.DestinationStatus {
	out := make([]statuspage.DestinationStatus, 0, len(s.dispatchers))
	for _, d := range s.dispatchers {
		st := d.Status()
		ds := statuspage.DestinationStatus{Name: st.Name, Platform: st.Platform, Paused: st.Paused, Reason: st.Reason, Since: st.Since,
			APIVersion: st.APIVersion}
		if spec, ok := platforms.Lookup(st.Platform); ok {
			ds.VersionWarning, _ = spec.VersionWarning(st.APIVersion, time.Now(), config.SunsetWarnFor)
		}
		for _, h := range st.Held {
			ds.Held = append(ds.Held, h.Conversion+": "+h.Reason+" — "+h.Detail)
		}
		out = append(out, ds)
	}
	return out
}

func (s *status) MappingVersion() string { return s.mapping().Version() }

func (s *status) HourlyCounts(ctx context.Context, since, until time.Time) ([]store.HourCount, error) {
	return s.st.HourlyCounts(ctx, since, until)
}

func (s *status) IdentifierCounts(ctx context.Context, since, until time.Time) ([]store.IdentifierCount, error) {
	return s.st.IdentifierCounts(ctx, since, until)
}

func (s *status) TopRejections(ctx context.Context, since, until time.Time, limit int) ([]store.Rejection, error) {
	return s.st.TopRejections(ctx, since, until, limit)
}
