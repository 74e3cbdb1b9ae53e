package replay

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"sort"
	"strings"
	"sync"
	"time"

	"github.com/segmentio/kafka-go"
	"go.uber.org/zap"

	"github.com/closedloop/closedloop/consumer"
	"github.com/closedloop/closedloop/crm"
	"github.com/closedloop/closedloop/internal/config"
	"github.com/closedloop/closedloop/internal/pii"
	"github.com/closedloop/closedloop/store"
	"github.com/closedloop/closedloop/uploader"
	"github.com/closedloop/closedloop/uploader/platforms"
)

// Store is what a replay needs from the store (*store.Store satisfies it).
type Store interface {
	consumer.StageStore
	// ExistingKeys reports which conversion keys are stored.
	ExistingKeys(ctx context.Context, keys []string) (map[string]bool, error)
}

// Config holds a Replayer's collaborators and settings.
type Config struct {
	// Kafka gives the brokers, client id, batch size, fetch sizes and the stage topics
	// with their formats. A file replay uses only BatchSize.
	Kafka consumer.Config
	// Mapping returns the stage mapping to plan with. Required.
	Mapping func() *crm.Mapping
	// Normalizer hashes raw emails and phones on arrival.
	Normalizer pii.Normalizer
	// Store is required.
	Store Store
	// Platforms, by destination name, forecast which new rows the platform would refuse
	// (expired, skipped) before anything is sent. A destination without an entry is not
	// forecast.
	Platforms map[string]uploader.Platform
	// Concurrency is how many partitions are read at once (default 2).
	Concurrency int
	// DrainTimeout bounds finishing the batch in hand after ctx is cancelled (default 30s).
	DrainTimeout time.Duration
	Log          *zap.Logger
	// Now is the clock of the expiry forecast (default time.Now).
	Now func() time.Time
	// Enriches, when set, reports whether a CRM connection enriches a source: a replayed
	// thin stage change then waits in awaiting_enrichment as it does when consumed, never a
	// valueless ready row (the enricher's fetch cache keeps a replay from refetching).
	Enriches func(source string) bool
}

// Replayer runs replays. It holds no state between runs and is safe for concurrent use.
type Replayer struct {
	cfg Config
	log *zap.Logger
}

// New checks cfg and returns a Replayer.
func New(cfg Config) (*Replayer, error) {
	if cfg.Store == nil {
		return nil, errors.New("replay: Config.Store is required")
	}
	if cfg.Mapping == nil {
		return nil, errors.New("replay: Config.Mapping is required")
	}
	if cfg.Kafka.BatchSize <= 0 {
		cfg.Kafka.BatchSize = consumer.DefaultBatchSize
	}
	if cfg.Concurrency <= 0 {
		cfg.Concurrency = 2
	}
	if cfg.DrainTimeout <= 0 {
		cfg.DrainTimeout = 30 * time.Second
	}
	if cfg.Now == nil {
		cfg.Now = time.Now
	}
	if cfg.Log == nil {
		cfg.Log = zap.NewNop()
	}
	return &Replayer{cfg: cfg, log: cfg.Log}, nil
}

// Options are what every replay shares.
type Options struct {
	// Destinations, when not empty, keeps only conversions for these destinations: the
	// others see nothing new. Every name must be a configured destination.
	Destinations []string
	// DryRun reads, plans and joins everything and reports what a replay would create,
	// writing nothing anywhere.
	DryRun bool
	// Progress, when set, is called after each batch with the records handled so far and
	// the total expected. It is never called concurrently.
	Progress func(done, total int64)
}

// run is the state of one replay: its pipeline, recorder and summary.
type run struct {
	r     *Replayer
	opts  Options
	pipe  *consumer.Pipeline
	rec   *recorder
	start time.Time

	mu   sync.Mutex // guards sum and done
	sum  *Summary
	done int64
}

func (r *Replayer) newRun(opts Options, formats map[string]string, sum *Summary) (*run, error) {
	if err := validDestinations(opts.Destinations, r.cfg.Mapping()); err != nil {
		return nil, err
	}
	rec := &recorder{
		inner:     r.cfg.Store,
		dry:       opts.DryRun,
		now:       r.cfg.Now,
		platforms: r.cfg.Platforms,
		dests:     map[string]*DestinationSummary{},
		rules:     map[ruleKey]*RuleSummary{},
	}
	if opts.DryRun {
		rec.wouldCreate = map[[16]byte]struct{}{}
	}
	pipe, err := consumer.NewPipeline(consumer.PipelineConfig{
		Formats:         formats,
		Mapping:         r.cfg.Mapping,
		Normalizer:      r.cfg.Normalizer,
		Store:           rec,
		SkipDeadLetters: true, // the originals were dead-lettered when first consumed
		Replay:          true,
		Destinations:    opts.Destinations,
		Enriches:        r.cfg.Enriches,
		Log:             r.log.Named("pipeline"),
	})
	if err != nil {
		return nil, err
	}
	sum.DryRun = opts.DryRun
	sum.Destinations = append([]string(nil), opts.Destinations...)
	return &run{r: r, opts: opts, pipe: pipe, rec: rec, start: time.Now(), sum: sum}, nil
}

// process sends one batch through the pipeline. It finishes even when ctx is cancelled
// meanwhile (bounded by DrainTimeout): a replay stops between batches.
func (u *run) process(ctx context.Context, batch []kafka.Message) (consumer.Stats, error) {
	if len(batch) == 0 {
		return consumer.Stats{}, nil
	}
	work, cancel := context.WithTimeout(context.WithoutCancel(ctx), u.r.cfg.DrainTimeout)
	defer cancel()
	return u.pipe.Process(work, batch)
}

// account adds a processed batch's counts and reports progress.
func (u *run) account(st consumer.Stats, done, total int64, update func(*Summary)) {
	u.mu.Lock()
	defer u.mu.Unlock()
	u.sum.Undecodable += st.DeadLettered
	u.sum.Decoded += st.StageChanges
	u.sum.Ignored += st.Ignored
	u.sum.Matched += st.Matched
	u.sum.Unmatched += st.Unmatched
	if update != nil {
		update(u.sum)
	}
	u.done += done
	if u.opts.Progress != nil {
		u.opts.Progress(u.done, total)
	}
}

// finish copies the recorder's tallies into the summary.
func (u *run) finish(ctx context.Context) *Summary {
	u.mu.Lock()
	defer u.mu.Unlock()
	u.sum.Interrupted = ctx.Err() != nil
	u.sum.ElapsedSeconds = time.Since(u.start).Seconds()
	u.rec.fill(u.sum)
	return u.sum
}

// validDestinations checks a destination filter: each name must receive conversions
// from some mapping rule, or the replay could create nothing for it.
func validDestinations(names []string, m *crm.Mapping) error {
	if len(names) == 0 {
		return nil
	}
	inMapping := map[string]bool{}
	for _, r := range m.Rules() {
		for _, d := range r.Destinations {
			inMapping[d.Destination] = true
		}
	}
	for _, n := range names {
		if !inMapping[n] {
			known := make([]string, 0, len(inMapping))
			for d := range inMapping {
				known = append(known, d)
			}
			sort.Strings(known)
			return fmt.Errorf("replay: destination %q: no mapping rule sends conversions to it (rules send to: %s)",
				n, strings.Join(known, ", "))
		}
	}
	return nil
}

// recorder is the store a replay's pipeline writes through. It asks which keys exist,
// writes only the new rows (nothing at all in a dry run), and tallies every row per
// destination and rule with the platform's verdict on the new ones. Safe for concurrent
// use.
type recorder struct {
	inner     Store
	dry       bool
	now       func() time.Time
	platforms map[string]uploader.Platform

	mu    sync.Mutex
	dests map[string]*DestinationSummary
	rules map[ruleKey]*RuleSummary
	// wouldCreate holds, in a dry run, the keys this run would already have created, so a
	// stage change seen twice counts once, as in a real run.
	wouldCreate map[[16]byte]struct{}
}

type ruleKey struct{ rule, dest string }

var _ consumer.StageStore = (*recorder)(nil)

func (r *recorder) LookupIdentities(ctx context.Context, keys []string) (map[string]store.Identity, error) {
	return r.inner.LookupIdentities(ctx, keys)
}

// UpdateAwaiting releases awaiting rows in a real run; a dry run moves nothing.
func (r *recorder) UpdateAwaiting(ctx context.Context, convs []store.Conversion) (int, error) {
	if r.dry {
		return 0, nil
	}
	return r.inner.UpdateAwaiting(ctx, convs)
}

// WriteBatch writes the rows whose key is not stored yet and records every row.
func (r *recorder) WriteBatch(ctx context.Context, b store.Batch) (store.BatchResult, error) {
	keys := make([]string, len(b.Conversions))
	for i, c := range b.Conversions {
		keys[i] = c.Key
	}
	existing, err := r.inner.ExistingKeys(ctx, keys)
	if err != nil {
		return store.BatchResult{}, err
	}
	fresh := make([]store.Conversion, 0, len(b.Conversions))
	for _, c := range b.Conversions {
		if !existing[c.Key] {
			fresh = append(fresh, c)
		}
	}
	created := make(map[string]bool, len(fresh))
	var res store.BatchResult
	switch {
	case r.dry:
		r.mu.Lock()
		for _, c := range fresh {
			id := keyID(c.Key)
			if _, seen := r.wouldCreate[id]; !seen {
				r.wouldCreate[id] = struct{}{}
				created[c.Key] = true
			}
		}
		r.mu.Unlock()
	case len(fresh) > 0 || len(b.Identities) > 0 || len(b.StageCounts) > 0:
		w := b
		w.Conversions = fresh
		res, err = r.inner.WriteBatch(ctx, w)
		if err != nil {
			return store.BatchResult{}, err
		}
		for _, k := range res.CreatedKeys {
			created[k] = true
		}
	}
	res.CreatedKeys = res.CreatedKeys[:0]
	for _, c := range b.Conversions {
		if created[c.Key] {
			res.CreatedKeys = append(res.CreatedKeys, c.Key)
		}
	}
	res.Created = len(res.CreatedKeys)
	res.Existing = len(b.Conversions) - res.Created
	r.record(b.Conversions, created)
	return res, nil
}

// verdict is the platform's Check on one new row.
type verdict struct {
	class  uploader.Class
	reason string
}

func (r *recorder) record(rows []store.Conversion, created map[string]bool) {
	now := r.now()
	verdicts := make([]verdict, len(rows))
	for i := range rows {
		c := &rows[i]
		if !created[c.Key] {
			continue
		}
		p := r.platforms[c.Destination]
		if p == nil {
			continue
		}
		if e := p.Check(c, now); e != nil {
			verdicts[i] = verdict{class: e.Class, reason: e.Reason}
		}
	}
	r.mu.Lock()
	defer r.mu.Unlock()
	for i := range rows {
		c := &rows[i]
		d := r.dests[c.Destination]
		if d == nil {
			d = &DestinationSummary{Destination: c.Destination, Platform: c.Platform, Forecast: c.Destination != "" && r.platforms[c.Destination] != nil}
			r.dests[c.Destination] = d
		}
		rk := ruleKey{c.Rule, c.Destination}
		rs := r.rules[rk]
		if rs == nil {
			rs = &RuleSummary{Rule: c.Rule, Destination: c.Destination}
			r.rules[rk] = rs
		}
		awaiting := c.State == store.StateAwaitingIdentity
		d.Counts.add(created[c.Key], awaiting)
		rs.Counts.add(created[c.Key], awaiting)
		v := verdicts[i]
		switch {
		case v.class == uploader.ClassExpired:
			d.WillExpire++
		case v.class == uploader.ClassSkipped:
			d.WillSkip++
		case v.class == uploader.ClassPermanent && !awaiting:
			// An awaiting row has no identifier yet; the platform's "no identifier" is
			// the awaiting count, not a rejection.
			d.WillReject++
		default:
			continue
		}
		if d.Reasons == nil {
			d.Reasons = map[string]int{}
		}
		d.Reasons[v.reason]++
	}
}

// fill copies the tallies into sum, sorted by name.
func (r *recorder) fill(sum *Summary) {
	r.mu.Lock()
	defer r.mu.Unlock()
	sum.Conversions = Counts{}
	sum.ByDestination = sum.ByDestination[:0]
	for _, d := range r.dests {
		sum.ByDestination = append(sum.ByDestination, *d)
		sum.Conversions.Planned += d.Planned
		sum.Conversions.New += d.New
		sum.Conversions.Existing += d.Existing
		sum.Conversions.Awaiting += d.Awaiting
	}
	sort.Slice(sum.ByDestination, func(i, j int) bool {
		return sum.ByDestination[i].Destination < sum.ByDestination[j].Destination
	})
	sum.ByRule = sum.ByRule[:0]
	for _, rs := range r.rules {
		sum.ByRule = append(sum.ByRule, *rs)
	}
	sort.Slice(sum.ByRule, func(i, j int) bool {
		a, b := sum.ByRule[i], sum.ByRule[j]
		if a.Rule != b.Rule {
			return a.Rule < b.Rule
		}
		return a.Destination < b.Destination
	})
}

// keyID is a compact form of a conversion key (32 hex characters) for the dry-run set.
func keyID(k string) [16]byte {
	var id [16]byte
	if len(k) == 32 {
		if _, err := hex.Decode(id[:], []byte(k)); err == nil {
			return id
		}
	}
	s := sha256.Sum256([]byte(k))
	copy(id[:], s[:16])
	return id
}

// NewFromConfig builds a Replayer the way `closedloop replay` does: the config's Kafka
// section, its compiled stage mapping, its PII region and one platform per destination
// for the expiry forecast.
func NewFromConfig(cfg *config.Config, st Store, log *zap.Logger) (*Replayer, error) {
	mapping, err := cfg.CompileMappings()
	if err != nil {
		return nil, err
	}
	if log == nil {
		log = zap.NewNop()
	}
	plats := make(map[string]uploader.Platform, len(cfg.Destinations))
	for _, name := range cfg.DestinationNames() {
		p, err := platforms.New(name, cfg.Destinations[name], log)
		if err != nil {
			return nil, fmt.Errorf("destination %s: %w", name, err)
		}
		plats[name] = p
	}
	return New(Config{
		Kafka:      cfg.Kafka,
		Mapping:    func() *crm.Mapping { return mapping },
		Normalizer: pii.Normalizer{DefaultRegion: cfg.PII.DefaultRegion},
		Store:      st,
		Platforms:  plats,
		Log:        log,
		Enriches:   enriches(cfg),
	})
}

// enriches is the config's enrichment routing; nil when no CRM connection is configured.
func enriches(cfg *config.Config) func(string) bool {
	if len(cfg.CRMs.Connections) == 0 {
		return nil
	}
	return cfg.CRMs.Enriches
}
