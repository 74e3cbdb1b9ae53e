package consumer

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"sort"
	"sync"
	"time"

	"github.com/segmentio/kafka-go"
	"go.uber.org/zap"

	"github.com/closedloop/closedloop/crm"
	"github.com/closedloop/closedloop/internal/join"
	"github.com/closedloop/closedloop/internal/pii"
	"github.com/closedloop/closedloop/store"
)

// StageStore is what the stage-change pipeline needs from the store.
type StageStore interface {
	// LookupIdentities returns the stored identity of each subject key that has one, in
	// one round trip.
	LookupIdentities(ctx context.Context, subjectKeys []string) (map[string]store.Identity, error)
	// WriteBatch writes identities, conversions (known keys are left alone) and stage
	// counts in one transaction.
	WriteBatch(ctx context.Context, b store.Batch) (store.BatchResult, error)
	// UpdateAwaiting moves conversions still awaiting identity to the given state and
	// identity snapshot; it returns how many it moved.
	UpdateAwaiting(ctx context.Context, convs []store.Conversion) (int, error)
}

// OffsetReader reads how far the stage pipeline has written each partition of topics
// (store.Store.ConsumedOffsets).
type OffsetReader interface {
	ConsumedOffsets(ctx context.Context, topics []string) ([]store.ConsumedOffset, error)
}

// KeyChecker reports which conversion keys already exist; a dry-run replay uses it.
type KeyChecker interface {
	ExistingKeys(ctx context.Context, keys []string) (map[string]bool, error)
}

// Stats counts what one Process call did.
type Stats struct {
	Messages     int // messages processed
	DeadLettered int // dead-letter records written (one per bad message, one per bad event)
	StageChanges int // decoded stage changes
	Ignored      int // events that are not stage changes
	Matched      int // stage changes some rule matched
	Unmatched    int // stage changes no rule matched
	Planned      int // distinct conversions planned (after the destination filter)
	Ready        int // of Planned: joined to a usable identifier
	Awaiting     int // of Planned: waiting for an identifier
	Created      int // rows newly created in the store (0 in a dry run)
	Existing     int // rows that already existed (known after a write or a dry-run check)
	Released     int // awaiting rows released by the post-write recheck
}

func (s *Stats) add(o Stats) {
	s.Messages += o.Messages
	s.DeadLettered += o.DeadLettered
	s.StageChanges += o.StageChanges
	s.Ignored += o.Ignored
	s.Matched += o.Matched
	s.Unmatched += o.Unmatched
	s.Planned += o.Planned
	s.Ready += o.Ready
	s.Awaiting += o.Awaiting
	s.Created += o.Created
	s.Existing += o.Existing
	s.Released += o.Released
}

// PipelineConfig configures a Pipeline.
type PipelineConfig struct {
	// Formats maps a stage topic to the format of its messages; a message's
	// closedloop-format header overrides it. Topics not listed default to canonical.
	Formats map[string]string
	// Mapping returns the active stage mapping (hot reload lives elsewhere). Required.
	Mapping func() *crm.Mapping
	// Normalizer hashes raw emails and phones on arrival.
	Normalizer pii.Normalizer
	// Store is required.
	Store StageStore
	// Offsets reads the consumed offsets the store keeps with each batch; required unless
	// Replay. With it each Kafka message is counted (stage counts, rule matches, dead
	// letters, metrics) once, however often it is redelivered: see Process.
	Offsets OffsetReader
	// DeadLetters receives undecodable messages on DeadLetterTopic. Required unless
	// SkipDeadLetters.
	DeadLetters     messageWriter
	DeadLetterTopic string
	// SkipDeadLetters counts bad messages without writing them anywhere (a replay: the
	// originals were dead-lettered when first consumed).
	SkipDeadLetters bool
	// Replay marks created conversions as replay rows and skips stage counts (the live
	// consumer counted those stage changes already).
	Replay bool
	// Destinations, when not empty, keeps only conversions for these destinations.
	Destinations []string
	Metrics      *Metrics
	Log          *zap.Logger

	// Enriches, when set, reports whether a CRM connection enriches stage changes of a
	// source: their thin conversions wait in awaiting_enrichment (see routeEnrichment).
	Enriches func(source string) bool
}

// Pipeline turns a batch of stage-change messages into outbox rows: decode → plan → join
// → dead letters and one store write. It is shared by the group consumer and the replay
// reader. It commits nothing: the caller commits offsets after Process returns nil.
// Process is safe for concurrent use if the store and writer are.
type Pipeline struct {
	cfg     PipelineConfig
	dests   map[string]bool
	log     *zap.Logger
	retry   backoff
	timeNow func() time.Time

	mu      sync.Mutex
	written uint64            // batches finish has written so far
	recent  []writtenSubjects // the identity subjects of the last recentWrites of them
}

// writtenSubjects names the subjects whose identities the written batch seq stored.
type writtenSubjects struct {
	seq      uint64
	subjects []string
}

// recentWrites is how many written batches the pipeline remembers for joinAhead: the
// consumer joins at most two batches ahead of the one being written.
const recentWrites = 4

// NewPipeline checks cfg and returns a Pipeline.
func NewPipeline(cfg PipelineConfig) (*Pipeline, error) {
	if cfg.Mapping == nil {
		return nil, errors.New("consumer: PipelineConfig.Mapping is required")
	}
	if cfg.Store == nil {
		return nil, errors.New("consumer: PipelineConfig.Store is required")
	}
	if !cfg.Replay && cfg.Offsets == nil {
		return nil, errors.New("consumer: PipelineConfig.Offsets is required unless Replay")
	}
	if !cfg.SkipDeadLetters && (cfg.DeadLetters == nil || cfg.DeadLetterTopic == "") {
		return nil, errors.New("consumer: PipelineConfig.DeadLetters and DeadLetterTopic are required")
	}
	p := &Pipeline{cfg: cfg, log: cfg.Log, retry: defaultBackoff, timeNow: time.Now}
	if p.log == nil {
		p.log = zap.NewNop()
	}
	if len(cfg.Destinations) > 0 {
		p.dests = make(map[string]bool, len(cfg.Destinations))
		for _, d := range cfg.Destinations {
			p.dests[d] = true
		}
	}
	return p, nil
}

// prepared is a batch decoded, planned and joined, not yet written.
type prepared struct {
	msgs    []kafka.Message
	mapping *crm.Mapping // the mapping that planned them
	stats   Stats
	dead    []deadLetter
	batch   store.Batch
	changes []change // decoded stage changes with their plans, joined by join
	version string   // version of the mapping that planned them
	// joined says join ran; joinedAfter is how many batches had been written when its
	// lookup started, and lookupKeys the subjects it looked up.
	joined      bool
	joinedAfter uint64
	lookupKeys  map[string]struct{}
	created     []string // keys the store newly created
	// decodeTook is how long decode took, for the debug log.
	decodeTook time.Duration
	// durations of the store calls, for the debug log
	lookupTook, writeTook, recheckTook time.Duration
	sources                            map[string]int // source → stage changes, for metrics
	ignoredBy                          map[string]int // format → ignored events
	matchedBy                          map[string]int
	unmatchedBy                        map[string]int
	droppedBy                          map[string]int // payload field → identifiers dropped
}

// change is one decoded stage change with the conversions it plans.
type change struct {
	sc      crm.StageChange
	planned []crm.Planned
}

// Process decodes, plans, joins and writes one batch. It returns only after every bad
// message is on the dead-letter topic and every row is in the store, or an error when
// either failed after retries: the caller must then not commit the batch's offsets.
//
// Unless Replay, the store write also moves each partition's consumed offset past the
// batch, and a message before the stored offset (a redelivery after a crash between that
// write and the Kafka commit) is written again (idempotently) but not counted again: its
// stage counts, rule matches, dead letters and metrics are left out. A dead letter can
// still be written twice when the process dies between the dead-letter write and the
// store write; its closedloop-source-* headers tell the copies apart.
func (p *Pipeline) Process(ctx context.Context, msgs []kafka.Message) (Stats, error) {
	return p.finish(ctx, p.decode(msgs))
}

// decode is the first half of Process: it decodes and plans every message against the
// mapping active now. It reads no store and writes nothing, so the consumer runs it for
// the next batch while the previous one is being written.
func (p *Pipeline) decode(msgs []kafka.Message) *prepared {
	start := time.Now()
	prep := p.decodeBatch(msgs, p.cfg.Mapping())
	prep.decodeTook = time.Since(start)
	return prep
}

// skipCounted reads the consumed offsets of the batch's partitions and, when some of its
// messages lie before them (already written, so already counted), takes everything
// counted (stage counts, dead letters, metrics, stats) from the other messages only,
// decoded again with the same mapping. The rows and identities of the whole batch are
// still written: that is idempotent. The store re-checks the counts against the offsets
// in the write's transaction, so a concurrent writer of the same partition (a rebalance)
// never double counts either.
func (p *Pipeline) skipCounted(ctx context.Context, prep *prepared) error {
	if p.cfg.Replay || len(prep.batch.Offsets) == 0 {
		return nil
	}
	topics := make([]string, 0, 2)
	for _, o := range prep.batch.Offsets {
		if !slices.Contains(topics, o.Topic) {
			topics = append(topics, o.Topic)
		}
	}
	var stored []store.ConsumedOffset
	err := p.retry.do(ctx, p.log, "consumed offsets", func(ctx context.Context) error {
		var err error
		stored, err = p.cfg.Offsets.ConsumedOffsets(ctx, topics)
		return err
	})
	if err != nil {
		return fmt.Errorf("consumed offsets: %w", err)
	}
	type tp struct {
		topic     string
		partition int
	}
	next := make(map[tp]int64, len(stored))
	for _, o := range stored {
		next[tp{o.Topic, o.Partition}] = o.Next
	}
	fresh := make([]kafka.Message, 0, len(prep.msgs))
	for _, m := range prep.msgs {
		if m.Offset >= next[tp{m.Topic, m.Partition}] {
			fresh = append(fresh, m)
		}
	}
	if len(fresh) == len(prep.msgs) {
		return nil
	}
	p.log.Info("redelivered messages already written: not counted again",
		zap.Int("messages", len(prep.msgs)-len(fresh)), zap.Int("batch", len(prep.msgs)))
	f := p.decodeBatch(fresh, prep.mapping)
	prep.dead = f.dead
	prep.batch.StageCounts = f.batch.StageCounts
	prep.sources, prep.ignoredBy, prep.matchedBy, prep.unmatchedBy = f.sources, f.ignoredBy, f.matchedBy, f.unmatchedBy
	prep.droppedBy = f.droppedBy
	prep.stats.DeadLettered, prep.stats.StageChanges, prep.stats.Ignored = f.stats.DeadLettered, f.stats.StageChanges, f.stats.Ignored
	prep.stats.Matched, prep.stats.Unmatched = f.stats.Matched, f.stats.Unmatched
	return nil
}

// finish is the second half of Process: the identity lookup and join (after every
// earlier batch's write, so they see its identities), the dead letters, the one store
// write and the re-check of rows left awaiting.
func (p *Pipeline) finish(ctx context.Context, prep *prepared) (Stats, error) {
	start := time.Now()
	if !prep.joined || p.changedSince(prep) {
		if err := p.join(ctx, prep, p.retry); err != nil {
			return Stats{}, err
		}
	}
	joined := time.Since(start)
	if err := p.skipCounted(ctx, prep); err != nil {
		return Stats{}, err
	}
	if err := p.writeDeadLetters(ctx, prep.dead); err != nil {
		return Stats{}, err
	}
	if err := p.write(ctx, prep); err != nil {
		return Stats{}, err
	}
	p.record(prep)
	if ce := p.log.Check(zap.DebugLevel, "batch processed"); ce != nil {
		ce.Write(zap.Int("messages", prep.stats.Messages), zap.Int("conversions", prep.stats.Planned),
			zap.Duration("decode", prep.decodeTook), zap.Duration("join", joined), zap.Duration("lookup", prep.lookupTook),
			zap.Duration("write", prep.writeTook), zap.Duration("recheck", prep.recheckTook))
	}
	return prep.stats, nil
}

// joinAhead joins a decoded batch before the batches ahead of it are written, so that its
// lookup overlaps their writes. It tries once: finish joins again when it failed, or when
// a batch written since its lookup started stored an identity of one of its subjects
// (the stage pipeline's own captures then join exactly as if the batches ran one after
// the other; captures from the identity topic race with the join as always, and the
// re-check after the write releases the rows they complete).
func (p *Pipeline) joinAhead(ctx context.Context, prep *prepared) {
	p.mu.Lock()
	prep.joinedAfter = p.written
	p.mu.Unlock()
	prep.joined = p.join(ctx, prep, backoff{Attempts: 1}) == nil
}

// changedSince reports whether a batch written after prep's lookup started stored an
// identity prep looked up (or whether the pipeline no longer remembers those batches).
func (p *Pipeline) changedSince(prep *prepared) bool {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.written == prep.joinedAfter {
		return false
	}
	if len(p.recent) == 0 || p.recent[0].seq > prep.joinedAfter+1 {
		return true
	}
	for _, w := range p.recent {
		if w.seq <= prep.joinedAfter {
			continue
		}
		for _, k := range w.subjects {
			if _, ok := prep.lookupKeys[k]; ok {
				return true
			}
		}
	}
	return false
}

// noteWritten records a batch finish wrote, with the subjects of its identity captures.
func (p *Pipeline) noteWritten(caps []store.IdentityCapture) {
	subjects := make([]string, len(caps))
	for i, c := range caps {
		subjects[i] = c.SubjectKey
	}
	p.mu.Lock()
	defer p.mu.Unlock()
	p.written++
	p.recent = append(p.recent, writtenSubjects{seq: p.written, subjects: subjects})
	if len(p.recent) > recentWrites {
		p.recent = append(p.recent[:0], p.recent[len(p.recent)-recentWrites:]...)
	}
}

// prepare decodes, plans and joins a batch without writing it.
func (p *Pipeline) prepare(ctx context.Context, msgs []kafka.Message) (*prepared, error) {
	prep := p.decode(msgs)
	if err := p.join(ctx, prep, p.retry); err != nil {
		return nil, err
	}
	return prep, nil
}

// DryRun prepares the batch like Process and reports what a write would create, writing
// nothing anywhere.
func (p *Pipeline) DryRun(ctx context.Context, msgs []kafka.Message, keys KeyChecker) (Stats, error) {
	prep, err := p.prepare(ctx, msgs)
	if err != nil {
		return Stats{}, err
	}
	if len(prep.batch.Conversions) == 0 {
		return prep.stats, nil
	}
	ks := make([]string, len(prep.batch.Conversions))
	for i, c := range prep.batch.Conversions {
		ks[i] = c.Key
	}
	var existing map[string]bool
	err = p.retry.do(ctx, p.log, "existing keys", func(ctx context.Context) error {
		var err error
		existing, err = keys.ExistingKeys(ctx, ks)
		return err
	})
	if err != nil {
		return Stats{}, fmt.Errorf("existing keys: %w", err)
	}
	for _, k := range ks {
		if existing[k] {
			prep.stats.Existing++
		} else {
			prep.stats.Created++
		}
	}
	return prep.stats, nil
}

func (p *Pipeline) formatOf(m *kafka.Message) string {
	for _, h := range m.Headers {
		if h.Key == HeaderFormat && len(h.Value) > 0 {
			return string(h.Value)
		}
	}
	if f, ok := p.cfg.Formats[m.Topic]; ok && f != "" {
		return f
	}
	return crm.FormatCanonical
}

// decodeBatch decodes every message and plans each stage change against the mapping
// active now; join builds the rows.
func (p *Pipeline) decodeBatch(msgs []kafka.Message, mapping *crm.Mapping) *prepared {
	seenDay := p.timeNow().UTC().Truncate(24 * time.Hour)
	prep := &prepared{
		msgs:        msgs,
		mapping:     mapping,
		sources:     map[string]int{},
		ignoredBy:   map[string]int{},
		matchedBy:   map[string]int{},
		unmatchedBy: map[string]int{},
		droppedBy:   map[string]int{},
	}
	prep.stats.Messages = len(msgs)
	if mapping != nil {
		prep.version = mapping.Version()
	}

	prep.changes = make([]change, 0, len(msgs))
	counts := map[store.StageCount]int{} // keyed with Count 0
	for i := range msgs {
		m := &msgs[i]
		if len(m.Value) > crm.MaxPayloadBytes {
			prep.dead = append(prep.dead, deadLetter{src: *m, code: ReasonTooLarge, index: -1,
				reason: fmt.Sprintf("payload is %d bytes, over the %d-byte limit", len(m.Value), crm.MaxPayloadBytes)})
			continue
		}
		format := p.formatOf(m)
		dec, err := crm.Decode(format, m.Value, p.cfg.Normalizer)
		if err != nil {
			dl := deadLetter{src: *m, code: ReasonUndecodable, index: -1, reason: err.Error()}
			var de *crm.DecodeError
			if errors.As(err, &de) {
				dl.field = de.Field
				if de.Index >= 0 {
					dl.index = de.Index
				}
			}
			prep.dead = append(prep.dead, dl)
			continue
		}
		for _, b := range dec.Bad {
			prep.dead = append(prep.dead, deadLetter{src: *m, code: ReasonBadEvent, reason: b.Error(), field: b.Field, index: b.Index})
		}
		if dec.Ignored > 0 {
			prep.stats.Ignored += dec.Ignored
			prep.ignoredBy[format] += dec.Ignored
		}
		for _, d := range dec.Dropped {
			prep.droppedBy[d.Field]++
			p.log.Debug("identifier dropped", zap.String("topic", m.Topic), zap.Int("partition", m.Partition),
				zap.Int64("offset", m.Offset), zap.String("field", d.Field), zap.String("reason", d.Reason))
		}
		for j, tc := range dec.Thin {
			if p.cfg.Enriches == nil || !p.cfg.Enriches(tc.Source) {
				prep.dead = append(prep.dead, deadLetter{src: *m, code: ReasonNotEnriched, index: j,
					reason: "a thin " + tc.Source + " event names only ids; no CRM connection (crms:) enriches source " + tc.Source})
				continue
			}
			prep.stats.StageChanges++
			prep.sources[tc.Source]++
			prep.batch.Pending = append(prep.batch.Pending, PendingFromThin(tc, m, j, p.timeNow()))
		}
		for _, sc := range dec.Changes {
			prep.stats.StageChanges++
			prep.sources[sc.Source]++
			planned, unmatched := mapping.Plan(sc)
			// Counted on the day the change was processed, the day its conversions are
			// created, so the report sets stage changes beside the conversions they made;
			// and attributed to its message, which the store counts once.
			at := store.StageCount{Day: seenDay, Source: sc.Source, Topic: m.Topic, Partition: m.Partition, Offset: m.Offset}
			if unmatched {
				prep.stats.Unmatched++
				prep.unmatchedBy[sc.Source]++
				counts[at]++
			} else {
				prep.stats.Matched++
				prep.matchedBy[sc.Source]++
				seenRule := map[string]bool{}
				for _, pl := range planned {
					if !seenRule[pl.Rule] {
						seenRule[pl.Rule] = true
						r := at
						r.Rule = pl.Rule
						counts[r]++
					}
				}
			}
			if p.dests != nil {
				kept := planned[:0]
				for _, pl := range planned {
					if p.dests[pl.Destination] {
						kept = append(kept, pl)
					}
				}
				planned = kept
			}
			if capture, ok := captureFromChange(sc); ok && !p.cfg.Replay {
				prep.batch.Identities = append(prep.batch.Identities, capture)
			}
			if len(planned) > 0 {
				prep.changes = append(prep.changes, change{sc: sc, planned: planned})
			}
		}
	}
	if !p.cfg.Replay {
		prep.batch.StageCounts = make([]store.StageCount, 0, len(counts))
		for k, n := range counts {
			k.Count = n
			prep.batch.StageCounts = append(prep.batch.StageCounts, k)
		}
		sort.Slice(prep.batch.StageCounts, func(i, j int) bool {
			a, b := prep.batch.StageCounts[i], prep.batch.StageCounts[j]
			if !a.Day.Equal(b.Day) {
				return a.Day.Before(b.Day)
			}
			if a.Source != b.Source {
				return a.Source < b.Source
			}
			if a.Rule != b.Rule {
				return a.Rule < b.Rule
			}
			if a.Topic != b.Topic {
				return a.Topic < b.Topic
			}
			if a.Partition != b.Partition {
				return a.Partition < b.Partition
			}
			return a.Offset < b.Offset
		})
		for _, last := range lastPerPartition(msgs) {
			if last.Topic != "" {
				prep.batch.Offsets = append(prep.batch.Offsets, store.ConsumedOffset{Topic: last.Topic, Partition: last.Partition, Next: last.Offset + 1})
			}
		}
	}
	prep.stats.DeadLettered = len(prep.dead)
	return prep
}

// join looks up the identities of every subject of the batch in one call (retried as
// retry says) and builds the rows. It may run again on the same batch: it rebuilds them.
func (p *Pipeline) join(ctx context.Context, prep *prepared, retry backoff) error {
	changes := prep.changes
	prep.batch.Conversions, prep.batch.Restatements = nil, nil
	prep.stats.Ready, prep.stats.Awaiting, prep.stats.Planned = 0, 0, 0
	if len(changes) == 0 {
		return nil
	}
	// One lookup for every subject of the batch.
	keySet := make(map[string]struct{}, len(changes)*2)
	prep.lookupKeys = keySet
	keys := make([]string, 0, len(changes)*2)
	for i := range changes {
		for _, k := range subjectKeys(changes[i].sc) {
			if _, ok := keySet[k]; !ok {
				keySet[k] = struct{}{}
				keys = append(keys, k)
			}
		}
	}
	var ids map[string]store.Identity
	lookupStart := time.Now()
	err := retry.do(ctx, p.log, "lookup identities", func(ctx context.Context) error {
		var err error
		ids, err = p.cfg.Store.LookupIdentities(ctx, keys)
		return err
	})
	if err != nil {
		return fmt.Errorf("lookup identities: %w", err)
	}
	prep.lookupTook = time.Since(lookupStart)

	seenKey := make(map[string]bool, len(changes))
	prep.batch.Conversions = make([]store.Conversion, 0, len(changes))
	for i := range changes {
		ch := &changes[i]
		sk := subjectKeys(ch.sc)
		joined := resolve(ch.sc, sk, ids)
		for _, pl := range ch.planned {
			if pl.RestateKey != "" { // a rule with restate_on; the store decides (restate.go)
				prep.batch.Restatements = append(prep.batch.Restatements, restatementRow(ch.sc, pl, prep.version, p.cfg.Replay))
			}
			if seenKey[pl.Key] {
				continue // a duplicate within the batch: the first one wins, as in the store
			}
			seenKey[pl.Key] = true
			conv := conversionRow(ch.sc, sk, pl, joined, p.cfg.Replay)
			routeEnrichment(&conv, pl, p.cfg.Enriches)
			if pl.MappingVersion == "" {
				conv.MappingVersion = prep.version
			}
			if conv.State == store.StateReady {
				prep.stats.Ready++
			} else {
				prep.stats.Awaiting++
			}
			prep.batch.Conversions = append(prep.batch.Conversions, conv)
		}
	}
	prep.stats.Planned = len(prep.batch.Conversions)
	return nil
}

// writeDeadLetters publishes every dead letter synchronously (acks=all), retrying with
// backoff; an error means none of the batch may be committed.
func (p *Pipeline) writeDeadLetters(ctx context.Context, dead []deadLetter) error {
	if len(dead) == 0 || p.cfg.SkipDeadLetters {
		return nil
	}
	out := make([]kafka.Message, len(dead))
	for i, d := range dead {
		out[i] = d.message(p.cfg.DeadLetterTopic)
	}
	err := p.retry.do(ctx, p.log, "dead-letter write", func(ctx context.Context) error {
		return p.cfg.DeadLetters.WriteMessages(ctx, out...)
	})
	if err != nil {
		return fmt.Errorf("dead-letter topic %s: %w", p.cfg.DeadLetterTopic, err)
	}
	for _, d := range dead {
		p.log.Warn("message dead-lettered", zap.String("topic", d.src.Topic), zap.Int("partition", d.src.Partition),
			zap.Int64("offset", d.src.Offset), zap.String("code", d.code), zap.String("field", d.field),
			zap.Int("index", d.index), zap.String("reason", d.reason))
	}
	return nil
}

// write stores the batch in one transaction, then re-checks the rows it left awaiting
// identity: an identity capture stored while this batch was being joined would otherwise
// miss them (the identity consumer looked for awaiting rows before these existed).
func (p *Pipeline) write(ctx context.Context, prep *prepared) error {
	b := prep.batch
	if len(b.Conversions) == 0 && len(b.StageCounts) == 0 && len(b.Identities) == 0 && len(b.Offsets) == 0 && len(b.Pending) == 0 {
		return nil
	}
	var res store.BatchResult
	writeStart := time.Now()
	err := p.retry.do(ctx, p.log, "store write", func(ctx context.Context) error {
		var err error
		res, err = p.cfg.Store.WriteBatch(ctx, b)
		return err
	})
	if err != nil {
		return fmt.Errorf("store write: %w", err)
	}
	p.noteWritten(b.Identities)
	prep.stats.Created = res.Created
	prep.stats.Existing = res.Existing
	prep.created = res.CreatedKeys
	prep.writeTook = time.Since(writeStart)
	if prep.stats.Awaiting == 0 {
		return nil
	}
	defer func(start time.Time) { prep.recheckTook = time.Since(start) }(time.Now())
	released, err := recheckAwaiting(ctx, p.cfg.Store, p.retry, p.log, b.Conversions, p.cfg.Metrics)
	if err != nil {
		return err
	}
	prep.stats.Released = released
	return nil
}

// record updates the metrics once a batch is durable.
func (p *Pipeline) record(prep *prepared) {
	m := p.cfg.Metrics
	if m == nil {
		return
	}
	for _, d := range prep.dead {
		m.addDeadLettered(d.src.Topic, d.code)
	}
	for s, n := range prep.matchedBy {
		m.addStageChanges(s, OutcomeMatched, n)
	}
	for s, n := range prep.unmatchedBy {
		m.addStageChanges(s, OutcomeUnmatched, n)
	}
	for f, n := range prep.ignoredBy {
		m.addStageChanges(f, OutcomeIgnored, n)
	}
	for f, n := range prep.droppedBy {
		m.addDropped(f, n)
	}
	if len(prep.created) == 0 {
		return
	}
	type ds struct{ dest, state string }
	byKey := make(map[string]ds, len(prep.batch.Conversions))
	for _, c := range prep.batch.Conversions {
		byKey[c.Key] = ds{c.Destination, string(c.State)}
	}
	by := map[ds]int{}
	for _, k := range prep.created {
		by[byKey[k]]++
	}
	for k, n := range by {
		m.addConversions(k.dest, k.state, n)
	}
}

// subjectKeys are the identity subjects a stage change joins on: its object, its
// contacts, and its hashed email (the subject form identity captures use for a lead-form
// submission without a CRM id).
func subjectKeys(sc crm.StageChange) []string {
	keys := sc.SubjectKeys()
	if h := sc.Identifiers["email"]; h != "" {
		keys = append(keys, "email:"+h)
	}
	return keys
}

// captureFromChange turns what a stage change itself carries (click ids, hashed email and
// phone, a lead id) into an identity capture for its object, so later stage changes of the
// same object and late re-joins find it. ok is false when it carries nothing.
func captureFromChange(sc crm.StageChange) (store.IdentityCapture, bool) {
	if len(sc.ClickIDs) == 0 && len(sc.Identifiers) == 0 && sc.LeadID == "" {
		return store.IdentityCapture{}, false
	}
	return store.IdentityCapture{
		SubjectKey:  crm.SubjectKey(sc.Source, sc.ObjectType, sc.ObjectID),
		CapturedAt:  sc.OccurredAt,
		Clicks:      changeClicks(sc),
		Identifiers: sc.Identifiers,
		LeadID:      sc.LeadID,
	}, true
}

// changeClicks lists a stage change's click ids with an unknown click time (zero At): the
// join treats them as before the conversion but prefers any dated click of the same type.
func changeClicks(sc crm.StageChange) []store.Click {
	if len(sc.ClickIDs) == 0 {
		return nil
	}
	out := make([]store.Click, 0, len(sc.ClickIDs))
	for t, id := range sc.ClickIDs {
		if id != "" {
			out = append(out, store.Click{Type: t, ID: id})
		}
	}
	sort.Slice(out, func(i, j int) bool { return out[i].Type < out[j].Type })
	return out
}

// resolve joins a stage change to the stored identities of its subjects, as of the
// change's time: stored data first (object, then contacts), then what the payload itself
// carried, which loses every tie.
func resolve(sc crm.StageChange, keys []string, ids map[string]store.Identity) store.Identity {
	list := make([]store.Identity, 0, len(keys)+1)
	for _, k := range keys {
		if id, ok := ids[k]; ok {
			list = append(list, id)
		}
	}
	if len(sc.ClickIDs) > 0 || len(sc.Identifiers) > 0 || sc.LeadID != "" {
		list = append(list, store.Identity{Clicks: changeClicks(sc), Identifiers: sc.Identifiers, LeadID: sc.LeadID})
	}
	return join.Resolve(list, sc.OccurredAt)
}

// conversionRow builds the outbox row for one planned conversion.
func conversionRow(sc crm.StageChange, keys []string, pl crm.Planned, joined store.Identity, replay bool) store.Conversion {
	c := store.Conversion{
		Key:            pl.Key,
		Kind:           store.KindConversion,
		Destination:    pl.Destination,
		Platform:       pl.Platform,
		Rule:           pl.Rule,
		MappingVersion: pl.MappingVersion,
		Source:         sc.Source,
		ObjectType:     sc.ObjectType,
		ObjectID:       sc.ObjectID,
		SubjectKeys:    keys,
		ConversionName: pl.ConversionName,
		OccurredAt:     pl.OccurredAt,
		Currency:       pl.Currency,
		Identity:       joined,
		Replay:         replay,
	}
	if pl.Retract {
		c.Kind = store.KindRetraction
		c.RetractsKey = pl.RetractsKey
	}
	if pl.Value != nil {
		v := pl.Value.InexactFloat64()
		c.Value = &v
	}
	if pl.ValueReason != "" {
		c.Detail = pl.ValueReason
	}
	switch {
	case pl.Rejected != "" && !pl.Retract:
		// Never sent (a value in the wrong currency); stored so the report shows it.
		c.State, c.Reason, c.Detail = store.StateRejected, pl.Rejected, pl.RejectedDetail
	case pl.Retract:
		// A retraction names the conversion it takes back by key; the platform matches on
		// that key, not on a click, so it never waits for an identifier.
		c.State = store.StateReady
	case join.Usable(joined, pl.Platform):
		c.State = store.StateReady
	default:
		c.State = store.StateAwaitingIdentity
		c.Reason = "no_identifier"
	}
	return c
}
