package enrich

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"math/rand/v2"
	"net/http"
	"sort"
	"sync"
	"time"

	"go.uber.org/zap"

	"github.com/closedloop/closedloop/crm"
	"github.com/closedloop/closedloop/internal/join"
	"github.com/closedloop/closedloop/internal/pii"
	"github.com/closedloop/closedloop/store"
)

// Store is what the enricher needs from the store.
type Store interface {
	ClaimEnrichment(ctx context.Context, c store.EnrichmentClaim) ([]store.Conversion, error)
	ClaimPending(ctx context.Context, c store.EnrichmentClaim) ([]store.PendingChange, error)
	CompletePending(ctx context.Context, owner string, results []store.PendingResult) (int, error)
	CompleteEnrichment(ctx context.Context, owner string, results []store.Enriched) (int, error)
	FetchCache(ctx context.Context, connection, kind string, ids []string, freshAfter time.Time) (map[string]store.FetchCacheEntry, error)
	PutFetchCache(ctx context.Context, entries []store.FetchCacheEntry) error
	SetConnectionState(ctx context.Context, cs store.ConnectionState) error
	ConnectionStates(ctx context.Context) ([]store.ConnectionState, error)
	WriteBatch(ctx context.Context, b store.Batch) (store.BatchResult, error)
	LookupIdentities(ctx context.Context, subjectKeys []string) (map[string]store.Identity, error)
	UpdateAwaiting(ctx context.Context, convs []store.Conversion) (int, error)
}

// Options configure an Enricher.
type Options struct {
	Config     Config
	Store      Store
	Mapping    func() *crm.Mapping // the active mapping (hot reload lives elsewhere); required
	Normalizer pii.Normalizer
	// HTTPClient, when set, is used by every connection (tests); nil = one per connection
	// with its timeout.
	HTTPClient *http.Client
	// Clients, when set, replaces the client of the named connections (tests).
	Clients map[string]Client
	Owner   string // lease owner; default a random id
	Metrics *Metrics
	Log     *zap.Logger
	Now     func() time.Time
}

// Enricher fetches what thin stage changes lacked. Run it once per process; it is safe for
// several processes to run against one PostgreSQL store.
type Enricher struct {
	opts     Options
	cfg      Config
	log      *zap.Logger
	conns    map[string]*conn // by source
	sources  []string
	owner    string
	now      func() time.Time
	mu       sync.Mutex
	statuses map[string]store.ConnectionState // by connection name, as last known
}

type conn struct {
	name   string
	cfg    Connection
	client Client
}

// New checks opts and builds the connections' clients.
func New(opts Options) (*Enricher, error) {
	if opts.Store == nil || opts.Mapping == nil {
		return nil, errors.New("enrich: Options.Store and Options.Mapping are required")
	}
	cfg := opts.Config
	if cfg.Batch == 0 {
		d := DefaultConfig()
		d.Connections = cfg.Connections
		cfg = d
	}
	cfg = cfg.WithDefaults()
	if errs := cfg.Validate("crms"); len(errs) > 0 {
		return nil, fmt.Errorf("enrich: %w", errors.Join(errs...))
	}
	e := &Enricher{opts: opts, cfg: cfg, log: opts.Log, conns: map[string]*conn{}, owner: opts.Owner, now: opts.Now,
		statuses: map[string]store.ConnectionState{}}
	if e.log == nil {
		e.log = zap.NewNop()
	}
	e.log = e.log.Named("enrich")
	if e.now == nil {
		e.now = time.Now
	}
	if e.owner == "" {
		e.owner = fmt.Sprintf("enricher-%08x", rand.Uint32())
	}
	for _, name := range cfg.Names() {
		c := cfg.Connections[name]
		client := opts.Clients[name]
		if client == nil {
			var err error
			if client, err = NewClient(c, opts.HTTPClient, opts.Normalizer); err != nil {
				return nil, err
			}
		}
		e.conns[c.Source] = &conn{name: name, cfg: c, client: client}
		e.sources = append(e.sources, c.Source)
	}
	sort.Strings(e.sources)
	return e, nil
}

// Enriches reports whether a connection enriches stage changes of source: the consumer
// routes thin conversions of those sources to awaiting_enrichment.
func (c Config) Enriches(source string) bool {
	for _, conn := range c.Connections {
		if conn.WithDefaults().Source == source {
			return true
		}
	}
	return false
}

// Run claims and enriches due rows until ctx is cancelled; it returns nil then. Each
// connection runs its own loop (claim, fetch, complete), so a slow or failing CRM delays
// only its own rows. Store errors are logged and retried at the next poll: the rows stay
// durable.
func (e *Enricher) Run(ctx context.Context) error {
	if len(e.conns) == 0 {
		<-ctx.Done()
		return nil
	}
	var wg sync.WaitGroup
	for _, src := range e.sources {
		wg.Add(1)
		go func(c *conn) {
			defer wg.Done()
			e.loop(ctx, c)
		}(e.conns[src])
	}
	wg.Wait()
	return nil
}

// loop is one connection's claim-fetch-complete loop.
func (e *Enricher) loop(ctx context.Context, c *conn) {
	timer := time.NewTimer(0)
	defer timer.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-timer.C:
		}
		n, err := e.passOne(ctx, c)
		if err != nil && ctx.Err() == nil {
			e.log.Warn("enrichment pass failed; retrying", zap.String("connection", c.name), zap.Error(err))
		}
		wait := e.cfg.PollInterval
		if n >= e.cfg.Batch && err == nil {
			wait = 0 // a full batch: more may be due
		}
		timer.Reset(wait)
	}
}

// Pass runs one claim-fetch-complete round of every connection, the connections
// concurrently, and returns how many rows they claimed together.
func (e *Enricher) Pass(ctx context.Context) (int, error) {
	var (
		wg    sync.WaitGroup
		mu    sync.Mutex
		total int
		errs  []error
	)
	for _, src := range e.sources {
		wg.Add(1)
		go func(c *conn) {
			defer wg.Done()
			n, err := e.passOne(ctx, c)
			mu.Lock()
			total += n
			if err != nil {
				errs = append(errs, err)
			}
			mu.Unlock()
		}(e.conns[src])
	}
	wg.Wait()
	return total, errors.Join(errs...)
}

// passOne runs one round for one connection: unless it is paused, claim its due rows (a
// full batch of conversions, then of stage changes waiting to be planned), enrich them.
func (e *Enricher) passOne(ctx context.Context, c *conn) (int, error) {
	now := e.now()
	paused, err := e.refreshState(ctx, c.name, now)
	if err != nil || paused {
		return 0, err
	}
	n, err := e.passPending(ctx, c, now)
	if err != nil {
		return n, err
	}
	rows, err := e.opts.Store.ClaimEnrichment(ctx, store.EnrichmentClaim{Sources: []string{c.cfg.Source}, Owner: e.owner,
		Limit: e.cfg.Batch, LeaseFor: e.cfg.LeaseFor, Now: now})
	if err != nil || len(rows) == 0 {
		return n, err
	}
	return n + len(rows), e.enrich(ctx, c, rows)
}

// refreshState reads the connection's stored state (another instance may have paused or
// resumed it) and reports whether it is paused at now.
func (e *Enricher) refreshState(ctx context.Context, name string, now time.Time) (bool, error) {
	states, err := e.opts.Store.ConnectionStates(ctx)
	if err != nil {
		return false, err
	}
	paused := false
	e.mu.Lock()
	for _, s := range states {
		if s.Name == name {
			e.statuses[s.Name] = s
			paused = s.Paused(now)
		}
	}
	e.mu.Unlock()
	e.opts.Metrics.paused(name, paused)
	return paused, nil
}

// Statuses returns the last known state of every connection, by name, for the status page
// and the report.
func (e *Enricher) Statuses() []store.ConnectionState {
	e.mu.Lock()
	defer e.mu.Unlock()
	out := make([]store.ConnectionState, 0, len(e.conns))
	for _, src := range e.sources {
		name := e.conns[src].name
		s, ok := e.statuses[name]
		if !ok {
			s = store.ConnectionState{Name: name}
		}
		out = append(out, s)
	}
	return out
}

// Cache kinds.
const (
	cacheDeal    = "deal"
	cacheContact = "contact"
)

// enrich handles the claimed rows of one connection.
func (e *Enricher) enrich(ctx context.Context, c *conn, rows []store.Conversion) error {
	dealIDs := uniq(rows, func(r store.Conversion) string { return r.ObjectID })
	deals, err := e.load(ctx, c, dealIDs, nil)
	if err != nil {
		var fe *FetchError
		if errors.As(err, &fe) {
			return e.failed(ctx, c, rows, err)
		}
		return e.release(ctx, rows, err)
	}
	return e.complete(ctx, c, rows, deals)
}

// load returns the deals of ids (a nil value: the CRM has no such deal) from the fetch
// cache when fresh, else from the CRM, and makes sure their contacts are fresh in the
// store as identities. notBefore, when it names an id, is the earliest fetch time that
// counts as fresh for it (a stage change that only a fetch after it can describe).
//
// What was fetched is recorded (identities first, then the cache) as soon as each request
// answers, so a later request of the same round failing does not make the next round fetch
// it again. A *FetchError says a request failed; any other error is the store's.
func (e *Enricher) load(ctx context.Context, c *conn, ids []string, notBefore map[string]time.Time) (map[string]*Deal, error) {
	now := e.now()
	fresh := now.Add(-c.cfg.CacheTTL)
	deals := map[string]*Deal{} // nil value: not found
	cached, err := e.opts.Store.FetchCache(ctx, c.name, cacheDeal, ids, fresh)
	if err != nil {
		return nil, err
	}
	var missing []string
	for _, id := range ids {
		ent, ok := cached[id]
		if ok && ent.FetchedAt.Before(notBefore[id]) {
			ok = false // fetched before the change it must describe
		}
		if !ok {
			missing = append(missing, id)
			continue
		}
		e.opts.Metrics.cache(c.name, cacheDeal, true)
		if !ent.Found {
			deals[id] = nil
			continue
		}
		var d Deal
		if err := json.Unmarshal(ent.Data, &d); err != nil {
			missing = append(missing, id) // unreadable entry: fetch again
			continue
		}
		deals[id] = &d
	}
	// Contacts recorded in this round (fetched with their deals, or on their own).
	have := map[string]bool{}
	if len(missing) > 0 {
		start := time.Now()
		got, ferr := c.client.FetchDeals(ctx, missing)
		e.opts.Metrics.fetch(c.name, cacheDeal, len(missing), time.Since(start), ferr)
		var captures []store.IdentityCapture
		var entries []store.FetchCacheEntry
		for _, id := range missing {
			d, ok := got.Deals[id]
			if !ok {
				if ferr == nil { // a complete answer without it: not found
					e.opts.Metrics.cache(c.name, cacheDeal, false)
					deals[id] = nil
					entries = append(entries, store.FetchCacheEntry{Connection: c.name, Kind: cacheDeal, ID: id, Found: false, FetchedAt: now})
				}
				continue
			}
			e.opts.Metrics.cache(c.name, cacheDeal, false)
			data, _ := json.Marshal(d)
			deals[id] = &d
			entries = append(entries, store.FetchCacheEntry{Connection: c.name, Kind: cacheDeal, ID: id, Found: true, Data: data, FetchedAt: now})
		}
		for id, ct := range got.Contacts {
			have[id] = true
			captures = append(captures, contactCapture(c.cfg.Source, ct, now))
			entries = append(entries, store.FetchCacheEntry{Connection: c.name, Kind: cacheContact, ID: id, Found: true, FetchedAt: now})
		}
		if err := e.record(ctx, captures, entries); err != nil {
			return nil, err
		}
		if ferr != nil {
			return nil, ferr
		}
	}
	// The deals' contacts not fetched with them nor fresh in the cache.
	var contactIDs []string
	for _, id := range ids {
		if d := deals[id]; d != nil {
			for _, cid := range d.ContactIDs {
				if !have[cid] {
					have[cid] = true
					contactIDs = append(contactIDs, cid)
				}
			}
		}
	}
	if len(contactIDs) == 0 {
		return deals, nil
	}
	cachedContacts, err := e.opts.Store.FetchCache(ctx, c.name, cacheContact, contactIDs, fresh)
	if err != nil {
		return nil, err
	}
	var stale []string
	for _, id := range contactIDs {
		if _, ok := cachedContacts[id]; ok {
			e.opts.Metrics.cache(c.name, cacheContact, true)
		} else {
			e.opts.Metrics.cache(c.name, cacheContact, false)
			stale = append(stale, id)
		}
	}
	if len(stale) == 0 {
		return deals, nil
	}
	start := time.Now()
	got, ferr := c.client.FetchContacts(ctx, stale)
	e.opts.Metrics.fetch(c.name, cacheContact, len(stale), time.Since(start), ferr)
	var captures []store.IdentityCapture
	var entries []store.FetchCacheEntry
	for id, ct := range got {
		captures = append(captures, contactCapture(c.cfg.Source, ct, now))
		entries = append(entries, store.FetchCacheEntry{Connection: c.name, Kind: cacheContact, ID: id, Found: true, FetchedAt: now})
	}
	if err := e.record(ctx, captures, entries); err != nil {
		return nil, err
	}
	if ferr != nil {
		return nil, ferr
	}
	return deals, nil
}

// record stores fetched contacts as identities, then the fetch cache entries: a crash in
// between refetches at most, and loses nothing.
func (e *Enricher) record(ctx context.Context, captures []store.IdentityCapture, entries []store.FetchCacheEntry) error {
	if len(captures) > 0 {
		if _, err := e.opts.Store.WriteBatch(ctx, store.Batch{Identities: captures}); err != nil {
			return err
		}
	}
	return e.opts.Store.PutFetchCache(ctx, entries)
}

// contactCapture is a fetched contact as an identity capture of source:contact:<id>.
func contactCapture(source string, ct Contact, at time.Time) store.IdentityCapture {
	capture := store.IdentityCapture{SubjectKey: crm.SubjectKey(source, crm.ObjectContact, ct.ID), CapturedAt: at, Identifiers: ct.Identifiers}
	for _, typ := range sortedKeys(ct.ClickIDs) {
		capture.Clicks = append(capture.Clicks, store.Click{Type: typ, ID: ct.ClickIDs[typ]})
	}
	return capture
}

// complete values and joins every row against its fetched deal and records the results.
func (e *Enricher) complete(ctx context.Context, c *conn, rows []store.Conversion, deals map[string]*Deal) error {
	mapping := e.opts.Mapping()
	results := make([]store.Enriched, 0, len(rows))
	var keys []string
	seen := map[string]bool{}
	type pending struct {
		row      store.Conversion
		subjects []string
		res      store.Enriched
	}
	var joins []pending
	for _, r := range rows {
		d := deals[r.ObjectID]
		if d == nil {
			results = append(results, store.Enriched{Key: r.Key, State: store.StateUnmatched, Reason: store.ReasonCRMRecordNotFound,
				Detail: "the CRM has no " + r.ObjectType + " " + r.ObjectID, CountAttempt: true})
			e.opts.Metrics.row(c.name, "not_found")
			continue
		}
		res := store.Enriched{Key: r.Key, CountAttempt: true}
		sc := crm.StageChange{Source: r.Source, ObjectType: r.ObjectType, ObjectID: r.ObjectID, OccurredAt: r.OccurredAt,
			Amount: d.Amount, Currency: d.Currency, ContactIDs: d.ContactIDs, Properties: d.Properties}
		if r.Value == nil {
			if v, cur, reason, ok := mapping.Value(r.Rule, r.Destination, sc); ok {
				res.SetValue, res.Currency, res.Detail = true, cur, reason
				if v != nil {
					f := v.InexactFloat64()
					res.Value = &f
				}
			}
		}
		subjects := append([]string{}, r.SubjectKeys...)
		for _, k := range sc.SubjectKeys() {
			if !contains(subjects, k) {
				subjects = append(subjects, k)
			}
		}
		res.SubjectKeys = subjects
		for _, k := range subjects {
			if !seen[k] {
				seen[k] = true
				keys = append(keys, k)
			}
		}
		joins = append(joins, pending{row: r, subjects: subjects, res: res})
	}
	if len(joins) > 0 {
		ids, err := e.opts.Store.LookupIdentities(ctx, keys)
		if err != nil {
			return e.release(ctx, rows, err)
		}
		for _, p := range joins {
			list := make([]store.Identity, 0, len(p.subjects)+1)
			if hasAnything(p.row.Identity) {
				list = append(list, p.row.Identity) // what the stage change itself carried
			}
			for _, k := range p.subjects {
				if id, ok := ids[k]; ok {
					list = append(list, id)
				}
			}
			p.res.Identity = join.Resolve(list, p.row.OccurredAt)
			if join.Usable(p.res.Identity, p.row.Platform) {
				p.res.State = store.StateReady
				e.opts.Metrics.row(c.name, "ready")
			} else {
				p.res.State, p.res.Reason = store.StateAwaitingIdentity, "no_identifier"
				e.opts.Metrics.row(c.name, "awaiting_identity")
			}
			results = append(results, p.res)
		}
	}
	if _, err := e.opts.Store.CompleteEnrichment(ctx, e.owner, results); err != nil {
		return fmt.Errorf("complete enrichment: %w", err)
	}
	// A capture stored between the lookup and the write found no awaiting_identity row to
	// release (the rows were still awaiting enrichment): join those rows once more.
	var again []store.Conversion
	for _, res := range results {
		if res.State == store.StateAwaitingIdentity {
			again = append(again, store.Conversion{Key: res.Key, SubjectKeys: res.SubjectKeys, Identity: res.Identity})
		}
	}
	return e.recheck(ctx, rows, again)
}

func (e *Enricher) recheck(ctx context.Context, rows []store.Conversion, again []store.Conversion) error {
	if len(again) == 0 {
		return nil
	}
	platform := map[string]store.Conversion{}
	for _, r := range rows {
		platform[r.Key] = r
	}
	var keys []string
	for _, a := range again {
		keys = append(keys, a.SubjectKeys...)
	}
	ids, err := e.opts.Store.LookupIdentities(ctx, keys)
	if err != nil {
		return err // the rows wait for the next capture or expiry as any other
	}
	var ready []store.Conversion
	for _, a := range again {
		r := platform[a.Key]
		list := []store.Identity{a.Identity}
		for _, k := range a.SubjectKeys {
			if id, ok := ids[k]; ok {
				list = append(list, id)
			}
		}
		id := join.Resolve(list, r.OccurredAt)
		if join.Usable(id, r.Platform) {
			ready = append(ready, store.Conversion{Key: a.Key, State: store.StateReady, Identity: id})
		}
	}
	_, err = e.opts.Store.UpdateAwaiting(ctx, ready)
	return err
}

// failed handles a fetch error for every row of the connection's batch.
func (e *Enricher) failed(ctx context.Context, c *conn, rows []store.Conversion, err error) error {
	var fe *FetchError
	if !errors.As(err, &fe) {
		return e.release(ctx, rows, err)
	}
	now := e.now()
	results := make([]store.Enriched, 0, len(rows))
	switch fe.Class {
	case ClassSetup:
		until, serr := e.pause(ctx, c, fe)
		if serr != nil {
			return e.release(ctx, rows, serr)
		}
		for _, r := range rows {
			results = append(results, store.Enriched{Key: r.Key, State: store.StateAwaitingEnrichment, Reason: store.ReasonCRMPaused,
				Detail: fe.Error(), NextAttemptAt: until})
		}
	default:
		for _, r := range rows {
			wait := backoff(r.Attempts, e.cfg.MaxBackoff)
			if fe.RetryAfter > wait {
				wait = min(fe.RetryAfter, e.cfg.MaxBackoff)
			}
			results = append(results, store.Enriched{Key: r.Key, State: store.StateAwaitingEnrichment, Reason: store.ReasonCRMRetry,
				Detail: fe.Error(), NextAttemptAt: now.Add(wait), CountAttempt: true})
		}
		e.log.Warn("CRM fetch failed; rows retry later", zap.String("connection", c.name), zap.String("class", fe.Class),
			zap.Int("status", fe.Status), zap.Duration("retry_after", fe.RetryAfter), zap.Int("rows", len(rows)))
		if m := e.opts.Metrics; m != nil {
			m.rows.WithLabelValues(c.name, "retry").Add(float64(len(rows)))
		}
	}
	if _, err := e.opts.Store.CompleteEnrichment(ctx, e.owner, results); err != nil {
		return fmt.Errorf("record fetch failure: %w", err)
	}
	return nil
}

// release gives up the batch after a store error: the leases run out and the rows are
// claimed again; nothing else changes.
func (e *Enricher) release(_ context.Context, _ []store.Conversion, err error) error {
	return err
}

// WatchGauges keeps the waiting-rows gauges (Metrics.Observe) current, reading the store
// every interval until ctx is cancelled; st is usually the enricher's own store.
func (e *Enricher) WatchGauges(ctx context.Context, st OverviewSource, every time.Duration) error {
	t := time.NewTicker(every)
	defer t.Stop()
	for {
		list, err := Overview(ctx, st, e.cfg, e.now())
		switch {
		case err != nil && ctx.Err() == nil:
			e.log.Warn("enrichment gauges", zap.Error(err))
		case err == nil:
			e.opts.Metrics.Observe(list, e.now())
		}
		select {
		case <-ctx.Done():
			return nil
		case <-t.C:
		}
	}
}

// Resume clears a connection's pause (after the credentials were fixed).
func (e *Enricher) Resume(ctx context.Context, name string) error {
	e.opts.Metrics.paused(name, false)
	return e.opts.Store.SetConnectionState(ctx, store.ConnectionState{Name: name})
}

// backoff is 2^attempts seconds with jitter, capped.
func backoff(attempts int, ceiling time.Duration) time.Duration {
	d := time.Second << min(attempts, 20)
	d += time.Duration(rand.Int64N(int64(d/4) + 1))
	return min(d, ceiling)
}

func uniq(rows []store.Conversion, f func(store.Conversion) string) []string {
	seen := map[string]bool{}
	var out []string
	for _, r := range rows {
		if k := f(r); !seen[k] {
			seen[k] = true
			out = append(out, k)
		}
	}
	return out
}

func contains(list []string, s string) bool {
	for _, v := range list {
		if v == s {
			return true
		}
	}
	return false
}

func hasAnything(id store.Identity) bool {
	return len(id.Clicks) > 0 || len(id.Identifiers) > 0 || id.LeadID != ""
}

func sortedKeys(m map[string]string) []string {
	out := make([]string, 0, len(m))
	for k := range m {
		out = append(out, k)
	}
	sort.Strings(out)
	return out
}
