package sandbox

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"math/rand/v2"
	"net"
	"net/http"
	"sort"
	"strings"
	"sync"
	"time"

	"go.uber.org/zap"

	"github.com/closedloop/closedloop/uploader/sandbox/schema"
)

// DefaultRejectMarker is the event or conversion name whose rows the sandbox rejects when
// Faults.RejectMarker is empty.
const DefaultRejectMarker = "reject-me"

// maxBody is the largest request body the sandbox reads.
const maxBody = 32 << 20

// Options configure a Server. The zero value works: any non-empty credentials are accepted.
type Options struct {
	Seed int64            // seeds the fault draws
	Now  func() time.Time // the platforms' clock; default time.Now

	// The OAuth token endpoint's client. When set, the token endpoint only accepts these;
	// any other refresh token gets invalid_grant. Empty accepts any non-empty value.
	ClientID, ClientSecret, RefreshToken string
	TokenTTL                             time.Duration // access token lifetime; default 1h

	// Platforms holds fixed credentials and catalogues by platform name; each platform's
	// emulation documents which of them it reads. Absent: any non-empty credential works.
	Platforms map[string]PlatformOptions

	// StatusDelay is how long an asynchronously processed request reports it is still
	// processing (platforms with a request status).
	StatusDelay time.Duration

	Faults Faults
}

// PlatformOptions are one platform's fixed credentials and catalogue in the sandbox.
type PlatformOptions struct {
	// AccessToken, when set, is the platform's fixed access token: the only one accepted,
	// or (platforms whose tokens come from the token endpoint) accepted besides those.
	AccessToken string
	// DeveloperToken, when set, is the only accepted developer token.
	DeveloperToken string
	// Conversions, when set, are the only conversion names (goals) that exist.
	Conversions []string
}

// Platform returns the options for platform name (zero when none are set).
func (o Options) Platform(name string) PlatformOptions { return o.Platforms[name] }

// Faults are injected failures. Shares are probabilities in [0,1] drawn per request.
type Faults struct {
	// Platforms limits the faults to these platforms (names as a destination's `platform`
	// key); empty means all.
	Platforms []string `json:"platforms,omitempty"`

	Share5xx          float64 `json:"share_5xx,omitempty"`           // 500/503 answers
	Share429          float64 `json:"share_429,omitempty"`           // throttled answers with Retry-After
	RetryAfterSeconds int     `json:"retry_after_seconds,omitempty"` // for 429; default 1
	ShareTimeout      float64 `json:"share_timeout,omitempty"`       // processed, answered after TimeoutDelayMS
	TimeoutDelayMS    int     `json:"timeout_delay_ms,omitempty"`    // default 30000
	ShareBatchReject  float64 `json:"share_batch_reject,omitempty"`  // valid requests rejected whole, naming no row
	// ShareUnknownError answers valid requests with an error the uploaders do not list
	// (each platform's own "not ready yet"): a request-level answer that names no row.
	ShareUnknownError float64 `json:"share_unknown_error,omitempty"`
	// ShareSetupIn5xx answers valid requests with an auth or permission error inside an
	// HTTP 500, in the platform's shape.
	ShareSetupIn5xx float64 `json:"share_setup_in_5xx,omitempty"`

	// RejectMarker: rows whose event or conversion name equals it are invalid (default
	// DefaultRejectMarker). RejectKeys: rows whose dedup key value (the platform's
	// transaction, order or event id) is listed are invalid.
	RejectMarker string   `json:"reject_marker,omitempty"`
	RejectKeys   []string `json:"reject_keys,omitempty"`
	// AsyncRejectKeys: a platform with an asynchronous request status accepts rows with
	// these dedup key values, then reports them failed in the status.
	AsyncRejectKeys []string `json:"async_reject_keys,omitempty"`

	// TooRecentGoals: rows of these conversion goals are answered "goal created too
	// recently" (a transient row error) by the platforms that have one.
	TooRecentGoals []string `json:"too_recent_goals,omitempty"`

	// ExpiredToken answers every API call as if the access token had expired, in each
	// platform's shape.
	ExpiredToken bool `json:"expired_token,omitempty"`

	// Lookup shapes the read-only lookups (see LookupFaults); it applies whatever Platforms says.
	Lookup LookupFaults `json:"lookup,omitempty"`
}

// KeyCount is what happened to one dedup key.
type KeyCount struct {
	Received  int `json:"received"`  // times it arrived in an accepted request
	Effective int `json:"effective"` // times it counted as a new conversion (1 = exactly once)
}

// Counts are one platform's totals.
type Counts struct {
	Requests       int                  `json:"requests"`        // API requests answered 2xx
	Faulted        int                  `json:"faulted"`         // requests failed by an injected fault
	Refused        int                  `json:"refused"`         // requests refused (auth, validation, rejection)
	Received       int                  `json:"received"`        // events in 2xx requests
	AcceptedUnique int                  `json:"accepted_unique"` // events that took effect
	Duplicates     int                  `json:"duplicates"`      // received but dropped by the platform's dedup
	Rejected       int                  `json:"rejected"`        // events refused (row errors, async failures)
	Retracted      int                  `json:"retracted"`       // retractions applied (platforms that retract)
	Keys           map[string]*KeyCount `json:"keys"`
	// Restated counts restatements applied (Google Ads RESTATEMENT, Microsoft Restate, a
	// Data Manager transactionId resent with another value); AdjustmentDuplicates the
	// adjustments the platform ignored as already applied; Adjustments is per adjustment
	// key (see adjustments.go). Conversions' counts above never include adjustments.
	Restated             int                  `json:"restated"`
	AdjustmentDuplicates int                  `json:"adjustment_duplicates"`
	Adjustments          map[string]*KeyCount `json:"adjustments,omitempty"`
}

// Server emulates the platforms its emulators (Mount) add. It is an http.Handler; safe for concurrent use.
type Server struct {
	opts Options
	log  *zap.Logger
	now  func() time.Time

	emulators []Emulator // in mount order

	mu     sync.Mutex
	rng    *rand.Rand
	faults Faults
	seq    int
	tokens map[string]time.Time // access token → expiry
	counts map[string]*Counts

	httpSrv *http.Server
}

// An Emulator is one platform's emulation, built by the platform's package (its
// uploader.Spec.Sandbox) for a Server. Its handlers use the Server's exported kit: Draw,
// Refused, the lock with CountsLocked and RecordLocked, the token store and the JSON
// helpers. Its own state is guarded by the Server's lock.
type Emulator interface {
	// Platform is the name its counts and the fault scope (Faults.Platforms) use: the
	// destination's `platform` value.
	Platform() string
	// Route returns the handler for r when r's path is one of the platform's endpoints, else
	// nil. The Server asks its emulators in mount order after its own paths.
	Route(r *http.Request) http.HandlerFunc
	// ResetLocked forgets the platform's own state (dedup keys, stored requests); the Server
	// calls it with its lock held, at New and Reset.
	ResetLocked()
}

// Mount builds a platform's Emulator for s (uploader.Spec.Sandbox).
type Mount func(s *Server) Emulator

// New returns a Server emulating the platforms mounts build, asked in that order
// (uploader/platforms.NewSandbox mounts every registered platform). log may be zap.NewNop().
func New(opts Options, log *zap.Logger, mounts ...Mount) *Server {
	if opts.Now == nil {
		opts.Now = time.Now
	}
	if opts.TokenTTL == 0 {
		opts.TokenTTL = time.Hour
	}
	s := &Server{
		opts:   opts,
		log:    log,
		now:    opts.Now,
		rng:    rand.New(rand.NewPCG(uint64(opts.Seed), 0x5eed)),
		faults: opts.Faults,
	}
	for _, m := range mounts {
		s.emulators = append(s.emulators, m(s))
	}
	s.resetLocked()
	return s
}

func (s *Server) resetLocked() {
	s.tokens = map[string]time.Time{}
	s.counts = map[string]*Counts{}
	for _, e := range s.emulators {
		s.counts[e.Platform()] = &Counts{Keys: map[string]*KeyCount{}, Adjustments: map[string]*KeyCount{}}
		e.ResetLocked()
	}
}

// Reset forgets every count, request, token and dedup key (faults stay).
func (s *Server) Reset() {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.resetLocked()
}

// SetFaults replaces the active faults.
func (s *Server) SetFaults(f Faults) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.faults = f
}

// Faults returns the active faults.
func (s *Server) Faults() Faults {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.faults
}

// Counts returns a deep copy of every platform's counts.
func (s *Server) Counts() map[string]Counts {
	s.mu.Lock()
	defer s.mu.Unlock()
	out := make(map[string]Counts, len(s.counts))
	for p, c := range s.counts {
		cp := *c
		cp.Keys = make(map[string]*KeyCount, len(c.Keys))
		for k, v := range c.Keys {
			kc := *v
			cp.Keys[k] = &kc
		}
		cp.Adjustments = make(map[string]*KeyCount, len(c.Adjustments))
		for k, v := range c.Adjustments {
			kc := *v
			cp.Adjustments[k] = &kc
		}
		out[p] = cp
	}
	return out
}

// Start listens on addr (e.g. "127.0.0.1:0") and serves in the background. It returns the
// base URL ("http://127.0.0.1:PORT"). Stop with Shutdown.
func (s *Server) Start(addr string) (string, error) {
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		return "", fmt.Errorf("sandbox: listen %s: %w", addr, err)
	}
	s.httpSrv = &http.Server{Handler: s, ReadHeaderTimeout: 10 * time.Second}
	go func() {
		if err := s.httpSrv.Serve(ln); err != nil && !errors.Is(err, http.ErrServerClosed) {
			s.log.Error("sandbox server stopped", zap.Error(err))
		}
	}()
	return "http://" + ln.Addr().String(), nil
}

// Shutdown stops a server started with Start, waiting for in-flight requests until ctx ends.
func (s *Server) Shutdown(ctx context.Context) error {
	if s.httpSrv == nil {
		return nil
	}
	return s.httpSrv.Shutdown(ctx)
}

// ServeHTTP routes to the emulated endpoints.
func (s *Server) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	path := r.URL.Path
	switch {
	case path == "/token":
		s.HandleToken(w, r)
	case path == "/sandbox/counts":
		WriteJSON(w, http.StatusOK, s.Counts())
	case path == "/sandbox/reset" && r.Method == http.MethodPost:
		s.Reset()
		WriteJSON(w, http.StatusOK, map[string]bool{"reset": true})
	case path == "/sandbox/faults":
		s.handleFaults(w, r)
	default:
		for _, e := range s.emulators {
			if h := e.Route(r); h != nil {
				h(w, r)
				return
			}
		}
		http.NotFound(w, r)
	}
}

// PathParts splits a request path into its segments ("/v1/a/b" → v1, a, b).
func PathParts(r *http.Request) []string {
	return strings.Split(strings.Trim(r.URL.Path, "/"), "/")
}

func (s *Server) handleFaults(w http.ResponseWriter, r *http.Request) {
	switch r.Method {
	case http.MethodGet:
		WriteJSON(w, http.StatusOK, s.Faults())
	case http.MethodPost, http.MethodPut:
		var f Faults
		dec := json.NewDecoder(io.LimitReader(r.Body, maxBody))
		dec.DisallowUnknownFields()
		if err := dec.Decode(&f); err != nil {
			WriteJSON(w, http.StatusBadRequest, map[string]string{"error": "faults: " + err.Error()})
			return
		}
		s.SetFaults(f)
		WriteJSON(w, http.StatusOK, f)
	default:
		w.Header().Set("Allow", "GET, POST")
		http.Error(w, "method not allowed", http.StatusMethodNotAllowed)
	}
}

// Fault is what the dice decided for one request; each platform answers it in its own shape.
type Fault int

// The random faults Draw decides.
const (
	NoFault         Fault = iota
	Fault5xx              // a 5xx answer
	Fault429              // throttled, with Retry-After (Faults.RetryAfter)
	FaultTimeout          // processed, then answered after Faults.TimeoutDelay (Hold)
	FaultUnknown          // an answer the uploaders do not list, naming no row
	FaultSetupIn5xx       // an auth error inside a 5xx
)

// RevokeTokens makes every access token issued so far expire now, as a routine
// expiry does: the client's cached token is refused (401) and a refresh fixes it.
func (s *Server) RevokeTokens() {
	s.mu.Lock()
	defer s.mu.Unlock()
	now := s.now()
	for tok, exp := range s.tokens {
		if exp.After(now) {
			s.tokens[tok] = now
		}
	}
}

// Draw decides the random fault for one request on platform p (counting it as faulted) and
// returns it with the active faults; out of Faults.Platforms only the row faults apply.
func (s *Server) Draw(p string) (Fault, Faults) {
	s.mu.Lock()
	defer s.mu.Unlock()
	f := s.faults
	if len(f.Platforms) > 0 {
		in := false
		for _, q := range f.Platforms {
			in = in || q == p
		}
		if !in {
			return NoFault, Faults{RejectMarker: f.RejectMarker, RejectKeys: f.RejectKeys, AsyncRejectKeys: f.AsyncRejectKeys, TooRecentGoals: f.TooRecentGoals, Lookup: f.Lookup}
		}
	}
	x := s.rng.Float64()
	switch {
	case x < f.Share5xx:
		s.counts[p].Faulted++
		return Fault5xx, f
	case x < f.Share5xx+f.Share429:
		s.counts[p].Faulted++
		return Fault429, f
	case x < f.Share5xx+f.Share429+f.ShareTimeout:
		s.counts[p].Faulted++
		return FaultTimeout, f
	case x < f.Share5xx+f.Share429+f.ShareTimeout+f.ShareUnknownError:
		s.counts[p].Faulted++
		return FaultUnknown, f
	case x < f.Share5xx+f.Share429+f.ShareTimeout+f.ShareUnknownError+f.ShareSetupIn5xx:
		s.counts[p].Faulted++
		return FaultSetupIn5xx, f
	}
	return NoFault, f
}

// BatchReject draws the whole-batch rejection fault (Faults.ShareBatchReject).
func (s *Server) BatchReject(p string, f Faults) bool {
	if f.ShareBatchReject <= 0 {
		return false
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.rng.Float64() < f.ShareBatchReject
}

// Marker is the event / conversion name whose rows are invalid.
func (f Faults) Marker() string {
	if f.RejectMarker == "" {
		return DefaultRejectMarker
	}
	return f.RejectMarker
}

// RejectsKey says rows with dedup key value k are invalid.
func (f Faults) RejectsKey(k string) bool {
	for _, x := range f.RejectKeys {
		if x == k {
			return true
		}
	}
	return false
}

// AsyncRejects says dedup key value k is accepted, then reported failed asynchronously.
func (f Faults) AsyncRejects(k string) bool {
	for _, x := range f.AsyncRejectKeys {
		if x == k {
			return true
		}
	}
	return false
}

// RetryAfter is the Retry-After value of a throttled answer.
func (f Faults) RetryAfter() string {
	if f.RetryAfterSeconds <= 0 {
		return "1"
	}
	return fmt.Sprint(f.RetryAfterSeconds)
}

// TimeoutDelay is how long the timeout fault holds an answer.
func (f Faults) TimeoutDelay() time.Duration {
	if f.TimeoutDelayMS <= 0 {
		return 30 * time.Second
	}
	return time.Duration(f.TimeoutDelayMS) * time.Millisecond
}

// Hold delays an answer for the timeout fault, returning early if the client gives up.
func Hold(ctx context.Context, d time.Duration) {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-ctx.Done():
	case <-t.C:
	}
}

// RecordLocked counts one event of platform p that arrived in an accepted request under
// dedup key k; effective says whether it took effect (false = the platform's dedup dropped
// it). Call with the lock held.
func (s *Server) RecordLocked(p, k string, effective bool) {
	c := s.counts[p]
	kc := c.Keys[k]
	if kc == nil {
		kc = &KeyCount{}
		c.Keys[k] = kc
	}
	kc.Received++
	c.Received++
	if effective {
		kc.Effective++
		c.AcceptedUnique++
	} else {
		c.Duplicates++
	}
}

// Refused counts a refused request of platform p carrying events events.
func (s *Server) Refused(p string, events int) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.counts[p].Refused++
	s.counts[p].Rejected += events
}

// NextIDLocked returns a new unique id starting with prefix. Call with the lock held.
func (s *Server) NextIDLocked(prefix string) string {
	s.seq++
	return fmt.Sprintf("%s-%06d", prefix, s.seq)
}

// Lock takes the Server's lock, which guards the counts, the tokens, the id sequence and
// every emulator's own state.
func (s *Server) Lock() { s.mu.Lock() }

// Unlock releases the lock Lock took.
func (s *Server) Unlock() { s.mu.Unlock() }

// CountsLocked returns platform p's live counts. Call with the lock held.
func (s *Server) CountsLocked(p string) *Counts { return s.counts[p] }

// TokenLocked returns the expiry of an access token the token endpoint issued. Call with
// the lock held.
func (s *Server) TokenLocked(tok string) (exp time.Time, issued bool) {
	exp, issued = s.tokens[tok]
	return exp, issued
}

// Now is the platforms' clock (Options.Now).
func (s *Server) Now() time.Time { return s.now() }

// Log is the Server's logger, for emulators.
func (s *Server) Log() *zap.Logger { return s.log }

// Options returns the options the Server was built with (defaults applied).
func (s *Server) Options() Options { return s.opts }

// WriteJSON writes v as an indented JSON answer with status.
func WriteJSON(w http.ResponseWriter, status int, v any) {
	w.Header().Set("Content-Type", "application/json; charset=utf-8")
	w.WriteHeader(status)
	enc := json.NewEncoder(w)
	enc.SetIndent("", "  ")
	_ = enc.Encode(v)
}

// ReadJSON reads a body for validation; the decoded value uses json.Number.
func ReadJSON(r *http.Request) ([]byte, any, error) {
	b, err := io.ReadAll(io.LimitReader(r.Body, maxBody+1))
	if err != nil {
		return nil, nil, fmt.Errorf("reading body: %w", err)
	}
	if len(b) > maxBody {
		return nil, nil, errors.New("request body too large")
	}
	dec := json.NewDecoder(strings.NewReader(string(b)))
	dec.UseNumber()
	var v any
	if err := dec.Decode(&v); err != nil {
		return b, nil, fmt.Errorf("invalid JSON: %w", err)
	}
	return b, v, nil
}

// ViolationsText renders at most max schema violations.
func ViolationsText(vs []schema.Violation, max int) []string {
	out := make([]string, 0, len(vs))
	for i, v := range vs {
		if i == max {
			break
		}
		out = append(out, v.String())
	}
	return out
}

// SortedKeys returns m's keys in order (stable JSON and logs).
func SortedKeys[V any](m map[string]V) []string {
	keys := make([]string, 0, len(m))
	for k := range m {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	return keys
}
