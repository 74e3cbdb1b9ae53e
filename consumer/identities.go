package consumer

import (
	"context"
	"errors"
	"fmt"
	"hash/fnv"
	"runtime"
	"sync"
	"time"

	"github.com/segmentio/kafka-go"
	"go.uber.org/zap"

	"github.com/closedloop/closedloop/crm"
	"github.com/closedloop/closedloop/internal/identity"
	"github.com/closedloop/closedloop/internal/join"
	"github.com/closedloop/closedloop/internal/pii"
	"github.com/closedloop/closedloop/store"
)

// IdentityStore is what the identity pipeline needs from the store.
type IdentityStore interface {
	// UpsertIdentities merges captures into the stored identities, durably.
	UpsertIdentities(ctx context.Context, captures []store.IdentityCapture) (store.UpsertResult, error)
	// AwaitingForSubjects returns the conversions awaiting identity that join on any of
	// the subject keys.
	AwaitingForSubjects(ctx context.Context, subjectKeys []string) ([]store.Conversion, error)
	LookupIdentities(ctx context.Context, subjectKeys []string) (map[string]store.Identity, error)
	UpdateAwaiting(ctx context.Context, convs []store.Conversion) (int, error)
}

// IdentityStats counts what one IdentityPipeline.Process call did.
type IdentityStats struct {
	Messages     int
	Captures     int // valid captures stored
	DeadLettered int
	Released     int // awaiting conversions that became ready
}

// IdentityPipelineConfig configures an IdentityPipeline.
type IdentityPipelineConfig struct {
	Normalizer      pii.Normalizer
	Store           IdentityStore // required
	DeadLetters     messageWriter // required unless SkipDeadLetters
	DeadLetterTopic string
	SkipDeadLetters bool
	Metrics         *Metrics
	Log             *zap.Logger
}

// IdentityPipeline stores identity captures and releases the conversions that were
// waiting for them: decode → UpsertIdentities on the lanes (see start) and dead letters →
// AwaitingForSubjects → join → UpdateAwaiting. The caller commits offsets after Process
// (or finish) returns nil.
type IdentityPipeline struct {
	cfg   IdentityPipelineConfig
	log   *zap.Logger
	retry backoff
	// writeTimeout bounds each shard's write, retries included; it runs on after the
	// caller's context is cancelled (a batch in hand is finished, not dropped).
	writeTimeout time.Duration

	mu      sync.Mutex   // serializes start
	tails   []*laneWrite // per lane, the shard started last
	writing sync.WaitGroup
}

// NewIdentityPipeline checks cfg and returns an IdentityPipeline.
func NewIdentityPipeline(cfg IdentityPipelineConfig) (*IdentityPipeline, error) {
	if cfg.Store == nil {
		return nil, errors.New("consumer: IdentityPipelineConfig.Store is required")
	}
	if !cfg.SkipDeadLetters && (cfg.DeadLetters == nil || cfg.DeadLetterTopic == "") {
		return nil, errors.New("consumer: IdentityPipelineConfig.DeadLetters and DeadLetterTopic are required")
	}
	p := &IdentityPipeline{cfg: cfg, log: cfg.Log, retry: defaultBackoff, writeTimeout: 30 * time.Second,
		tails: make([]*laneWrite, max(runtime.GOMAXPROCS(0), 1))}
	if p.log == nil {
		p.log = zap.NewNop()
	}
	return p, nil
}

// Process handles one batch of identity-capture messages. It returns nil only once the
// bad ones are dead-lettered and the good ones stored and re-joined.
func (p *IdentityPipeline) Process(ctx context.Context, msgs []kafka.Message) (IdentityStats, error) {
	b := p.start(ctx, p.decode(msgs))
	st, err := p.finish(ctx, b)
	b.wait()
	return st, err
}

// decodedCaptures is a batch of identity-capture messages decoded and hashed, not yet
// stored: the captures in message order and the messages to dead-letter.
type decodedCaptures struct {
	msgs     int
	captures []store.IdentityCapture
	dead     []deadLetter
}

// decodeParallelMin is the batch size from which decode spreads over several goroutines.
const decodeParallelMin = 64

// decode validates, normalizes and hashes msgs, on up to GOMAXPROCS goroutines (a phone
// number costs ~10 µs to parse), keeping message order. It writes nothing, so the
// consumer runs it for the next batch while the previous one is written.
func (p *IdentityPipeline) decode(msgs []kafka.Message) decodedCaptures {
	type result struct {
		c   store.IdentityCapture
		bad *deadLetter
	}
	out := make([]result, len(msgs))
	one := func(i int) {
		m := &msgs[i]
		if len(m.Value) > crm.MaxPayloadBytes {
			out[i].bad = &deadLetter{src: *m, code: ReasonTooLarge, index: -1,
				reason: fmt.Sprintf("payload is %d bytes, over the %d-byte limit", len(m.Value), crm.MaxPayloadBytes)}
			return
		}
		c, err := identity.Decode(m.Value, p.cfg.Normalizer)
		if err != nil {
			dl := &deadLetter{src: *m, code: ReasonInvalidIdentity, index: -1, reason: err.Error()}
			var fe *identity.FieldError
			if errors.As(err, &fe) {
				dl.field = fe.Field
			}
			out[i].bad = dl
			return
		}
		out[i].c = c
	}
	workers := min(runtime.GOMAXPROCS(0), len(msgs)/decodeParallelMin)
	if workers <= 1 {
		for i := range msgs {
			one(i)
		}
	} else {
		var wg sync.WaitGroup
		chunk := (len(msgs) + workers - 1) / workers
		for lo := 0; lo < len(msgs); lo += chunk {
			hi := min(lo+chunk, len(msgs))
			wg.Go(func() {
				for i := lo; i < hi; i++ {
					one(i)
				}
			})
		}
		wg.Wait()
	}
	d := decodedCaptures{msgs: len(msgs), captures: make([]store.IdentityCapture, 0, len(msgs))}
	for _, r := range out {
		if r.bad != nil {
			d.dead = append(d.dead, *r.bad)
		} else {
			d.captures = append(d.captures, r.c)
		}
	}
	return d
}

// laneWrite is one shard of one batch on its lane: done is closed once the shard is stored
// (err nil) or given up on (err set).
type laneWrite struct {
	done chan struct{}
	err  error
}

// storing is a decoded batch whose captures are being stored on the lanes.
type storing struct {
	decodedCaptures
	writes []*laneWrite
}

// wait returns once every write of the batch has ended.
func (b *storing) wait() {
	for _, w := range b.writes {
		<-w.done
	}
}

// start begins storing d's captures in the background and returns the batch for finish.
// The captures are split by subject over the lanes (GOMAXPROCS of them): lane i stores
// the subjects that hash to i in its own transaction, one batch after another in start
// order. A subject's captures thus still merge in message order, while the lanes run on
// several cores, ahead of one another and of the batch being committed, as the next
// batch is decoded. A write outlives ctx's cancellation, bounded by writeTimeout.
func (p *IdentityPipeline) start(ctx context.Context, d decodedCaptures) *storing {
	b := &storing{decodedCaptures: d}
	if len(d.captures) == 0 {
		return b
	}
	p.mu.Lock()
	defer p.mu.Unlock()
	for i, shard := range shardBySubject(d.captures, len(p.tails)) {
		prev := p.tails[i]
		w := &laneWrite{done: make(chan struct{})}
		p.tails[i] = w
		b.writes = append(b.writes, w)
		p.writing.Add(1)
		go func() {
			defer p.writing.Done()
			defer close(w.done)
			if prev != nil {
				<-prev.done // its failure fails its own batch; this one is still written
			}
			if len(shard) == 0 {
				return
			}
			wctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), p.writeTimeout)
			defer cancel()
			w.err = p.retry.do(wctx, p.log, "upsert identities", func(ctx context.Context) error {
				_, err := p.cfg.Store.UpsertIdentities(ctx, shard)
				return err
			})
		}()
	}
	return b
}

// wait returns once every write started so far has ended.
func (p *IdentityPipeline) wait() { p.writing.Wait() }

// finish dead-letters the bad messages of a started batch, waits for its captures to be
// stored and re-joins the conversions waiting for them.
func (p *IdentityPipeline) finish(ctx context.Context, b *storing) (IdentityStats, error) {
	st := IdentityStats{Messages: b.msgs}
	captures, dead := b.captures, b.dead
	if len(dead) > 0 && !p.cfg.SkipDeadLetters {
		out := make([]kafka.Message, len(dead))
		for i, d := range dead {
			out[i] = d.message(p.cfg.DeadLetterTopic)
		}
		if err := p.retry.do(ctx, p.log, "dead-letter write", func(ctx context.Context) error {
			return p.cfg.DeadLetters.WriteMessages(ctx, out...)
		}); err != nil {
			return IdentityStats{}, fmt.Errorf("dead-letter topic %s: %w", p.cfg.DeadLetterTopic, err)
		}
		for _, d := range dead {
			p.log.Warn("identity capture dead-lettered", zap.String("topic", d.src.Topic), zap.Int("partition", d.src.Partition),
				zap.Int64("offset", d.src.Offset), zap.String("field", d.field), zap.String("reason", d.reason))
		}
	}
	st.DeadLettered = len(dead)
	if len(captures) > 0 {
		for _, w := range b.writes {
			select {
			case <-w.done:
			case <-ctx.Done():
				return IdentityStats{}, fmt.Errorf("upsert identities: %w", ctx.Err())
			}
			if w.err != nil {
				return IdentityStats{}, fmt.Errorf("upsert identities: %w", w.err)
			}
		}
		st.Captures = len(captures)
		released, err := p.rejoin(ctx, captures)
		if err != nil {
			return IdentityStats{}, err
		}
		st.Released = released
	}
	if m := p.cfg.Metrics; m != nil {
		for _, d := range dead {
			m.addDeadLettered(d.src.Topic, d.code)
		}
		m.addIdentities(st.Captures)
	}
	return st, nil
}

// shardBySubject splits captures into n groups (some may be empty) by a hash of their
// subject key, keeping their order within each group; n <= 1 gives one group.
func shardBySubject(captures []store.IdentityCapture, n int) [][]store.IdentityCapture {
	if n <= 1 {
		return [][]store.IdentityCapture{captures}
	}
	out := make([][]store.IdentityCapture, n)
	for _, c := range captures {
		h := fnv.New32a()
		h.Write([]byte(c.SubjectKey))
		i := h.Sum32() % uint32(n)
		out[i] = append(out[i], c)
	}
	return out
}

// rejoin finds the conversions awaiting any subject of the captures and releases those
// that now have a usable identifier.
func (p *IdentityPipeline) rejoin(ctx context.Context, captures []store.IdentityCapture) (int, error) {
	seen := make(map[string]bool, len(captures))
	keys := make([]string, 0, len(captures))
	for _, c := range captures {
		if !seen[c.SubjectKey] {
			seen[c.SubjectKey] = true
			keys = append(keys, c.SubjectKey)
		}
	}
	var awaiting []store.Conversion
	if err := p.retry.do(ctx, p.log, "awaiting for subjects", func(ctx context.Context) error {
		var err error
		awaiting, err = p.cfg.Store.AwaitingForSubjects(ctx, keys)
		return err
	}); err != nil {
		return 0, fmt.Errorf("awaiting for subjects: %w", err)
	}
	if len(awaiting) == 0 {
		return 0, nil
	}
	n, err := releaseAwaiting(ctx, p.cfg.Store, p.retry, p.log, awaiting, p.cfg.Metrics)
	return n, err
}

// identityLookup is the part of the store a re-join needs.
type identityLookup interface {
	LookupIdentities(ctx context.Context, subjectKeys []string) (map[string]store.Identity, error)
	UpdateAwaiting(ctx context.Context, convs []store.Conversion) (int, error)
}

// recheckAwaiting re-joins the awaiting rows among convs (just written) against the
// identities stored now; see Pipeline.write.
func recheckAwaiting(ctx context.Context, st identityLookup, b backoff, log *zap.Logger, convs []store.Conversion, m *Metrics) (int, error) {
	awaiting := make([]store.Conversion, 0, 16)
	for _, c := range convs {
		if c.State == store.StateAwaitingIdentity {
			awaiting = append(awaiting, c)
		}
	}
	if len(awaiting) == 0 {
		return 0, nil
	}
	return releaseAwaiting(ctx, st, b, log, awaiting, m)
}

// releaseAwaiting joins each awaiting conversion again — the snapshot it already holds
// (from its stage change's own payload) plus every stored identity of its subjects, as of
// its time — and moves those with a usable identifier to ready, in one lookup and one
// update.
func releaseAwaiting(ctx context.Context, st identityLookup, b backoff, log *zap.Logger, awaiting []store.Conversion, m *Metrics) (int, error) {
	seen := map[string]bool{}
	keys := make([]string, 0, len(awaiting)*2)
	for _, c := range awaiting {
		for _, k := range c.SubjectKeys {
			if !seen[k] {
				seen[k] = true
				keys = append(keys, k)
			}
		}
	}
	var ids map[string]store.Identity
	if err := b.do(ctx, log, "lookup identities", func(ctx context.Context) error {
		var err error
		ids, err = st.LookupIdentities(ctx, keys)
		return err
	}); err != nil {
		return 0, fmt.Errorf("lookup identities: %w", err)
	}
	release := make([]store.Conversion, 0, len(awaiting))
	for _, c := range awaiting {
		list := make([]store.Identity, 0, len(c.SubjectKeys)+1)
		for _, k := range c.SubjectKeys {
			if id, ok := ids[k]; ok {
				list = append(list, id)
			}
		}
		if len(list) == 0 {
			continue
		}
		base := c.Identity
		base.SubjectKey = ""
		list = append(list, base)
		joined := join.Resolve(list, c.OccurredAt)
		if !join.Usable(joined, c.Platform) {
			continue
		}
		c.Identity = joined
		c.State = store.StateReady
		c.Reason = ""
		release = append(release, c)
	}
	if len(release) == 0 {
		return 0, nil
	}
	var n int
	if err := b.do(ctx, log, "update awaiting", func(ctx context.Context) error {
		var err error
		n, err = st.UpdateAwaiting(ctx, release)
		return err
	}); err != nil {
		return 0, fmt.Errorf("update awaiting: %w", err)
	}
	if m != nil {
		by := map[string]int{}
		for _, c := range release {
			by[c.Destination]++
		}
		if n == len(release) {
			for d, k := range by {
				m.addReleased(d, k)
			}
		} else {
			m.addReleased("", n)
		}
	}
	return n, nil
}
