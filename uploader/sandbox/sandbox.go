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

// Platform names used in counts and fault scopes.
const (
	Google    = "google"
	GoogleAds = "google_ads"
	Meta      = "meta"
	TikTok    = "tiktok"
	Microsoft = "microsoft"
	LinkedIn  = "linkedin"
)

// DefaultRejectMarker is the event name (Meta event_name, TikTok event, Google conversion
// action ID) whose rows the sandbox rejects when Faults.RejectMarker is empty.
const DefaultRejectMarker = "reject-me"

// maxBody is the largest request body the sandbox reads.
const maxBody = 32 << 20

// Options configure a Server. The zero value works: any non-empty credentials are accepted.
type Options struct {
	Seed int64            // seeds the fault draws
	Now  func() time.Time // the platforms' clock; default time.Now

	// Google OAuth. When set, the token endpoint only accepts these; any other refresh
	// token gets invalid_grant. Empty accepts any non-empty value.
	ClientID, ClientSecret, RefreshToken string
	TokenTTL                             time.Duration // access token lifetime; default 1h

	MetaAccessToken   string // when set, the only accepted Meta token
	TikTokAccessToken string // when set, the only accepted TikTok token

	MicrosoftDeveloperToken string   // when set, the only accepted Microsoft DeveloperToken
	MicrosoftGoals          []string // when set, the only offline conversion goal names that exist
	// LinkedInAccessToken, when set, is also accepted as a LinkedIn token besides those the
	// token endpoint issued (a LinkedIn app without programmatic refresh uses a fixed one).
	LinkedInAccessToken string

	// StatusDelay is how long a Data Manager request reports PROCESSING.
	StatusDelay time.Duration

	Faults Faults
}

// Faults are injected failures. Shares are probabilities in [0,1] drawn per request.
type Faults struct {
	// Platforms limits the faults to these platforms (google, google_ads, meta, tiktok,
	// microsoft, linkedin);
	// empty means all.
	Platforms []string `json:"platforms,omitempty"`

	Share5xx          float64 `json:"share_5xx,omitempty"`           // 500/503 answers
	Share429          float64 `json:"share_429,omitempty"`           // throttled answers with Retry-After
	RetryAfterSeconds int     `json:"retry_after_seconds,omitempty"` // for 429; default 1
	ShareTimeout      float64 `json:"share_timeout,omitempty"`       // processed, answered after TimeoutDelayMS
	TimeoutDelayMS    int     `json:"timeout_delay_ms,omitempty"`    // default 30000
	ShareBatchReject  float64 `json:"share_batch_reject,omitempty"`  // valid requests rejected whole, naming no row
	// ShareUnknownError answers valid requests with an error the uploaders do not list
	// (Meta 400 code 2388099 "not ready yet", Google 400 reason SERVICE_NOT_READY, TikTok
	// code 41999): a request-level answer that names no row.
	ShareUnknownError float64 `json:"share_unknown_error,omitempty"`
	// ShareSetupIn5xx answers valid requests with an auth error inside an HTTP 500 (Meta
	// OAuthException 190, Google PERMISSION_DENIED, TikTok 40001).
	ShareSetupIn5xx float64 `json:"share_setup_in_5xx,omitempty"`

	// RejectMarker: rows whose event name / conversion action ID equals it are invalid
	// (default DefaultRejectMarker). RejectKeys: rows whose dedup key value (transactionId,
	// orderId, event_id) is listed are invalid.
	RejectMarker string   `json:"reject_marker,omitempty"`
	RejectKeys   []string `json:"reject_keys,omitempty"`
	// AsyncRejectKeys: Data Manager accepts these transactionIds, then reports them failed
	// (PROCESSING_ERROR_REASON_INVALID_EVENT) in requestStatus.
	AsyncRejectKeys []string `json:"async_reject_keys,omitempty"`

	// TooRecentGoals: Microsoft answers rows of these offline conversion goals with
	// OfflineConversionGoalTooRecent (created less than two hours ago).
	TooRecentGoals []string `json:"too_recent_goals,omitempty"`

	// ExpiredToken answers every API call as if the access token had expired: Google 401
	// UNAUTHENTICATED, Meta OAuthException 190/463, TikTok code 40105, Microsoft 109
	// AuthenticationTokenExpired, LinkedIn 401 EXPIRED_ACCESS_TOKEN.
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
	Retracted      int                  `json:"retracted"`       // retractions applied (Google Ads, Microsoft)
	Keys           map[string]*KeyCount `json:"keys"`
	// Restated counts restatements applied (Google Ads RESTATEMENT, Microsoft Restate, a
	// Data Manager transactionId resent with another value); AdjustmentDuplicates the
	// adjustments the platform ignored as already applied; Adjustments is per adjustment
	// key (see adjustments.go). Conversions' counts above never include adjustments.
	Restated             int                  `json:"restated"`
	AdjustmentDuplicates int                  `json:"adjustment_duplicates"`
	Adjustments          map[string]*KeyCount `json:"adjustments,omitempty"`
}

// Server emulates the platforms. It is an http.Handler; safe for concurrent use.
type Server struct {
	opts Options
	log  *zap.Logger
	now  func() time.Time

	schemas map[string]*schema.Schema

	mu       sync.Mutex
	rng      *rand.Rand
	faults   Faults
	seq      int
	tokens   map[string]time.Time // Google access token → expiry
	counts   map[string]*Counts
	dmReqs   map[string]*dmRequestState
	ads      map[string]*adsConversion // Google Ads key → stored conversion
	metaSeen map[string]time.Time      // Meta dedup key → first effective time
	adj      map[string]*adjState      // platform/conversion key → its adjustments (adjustments.go)

	httpSrv *http.Server
}

// New returns a Server. log may be zap.NewNop().
func New(opts Options, log *zap.Logger) *Server {
	if opts.Now == nil {
		opts.Now = time.Now
	}
	if opts.TokenTTL == 0 {
		opts.TokenTTL = time.Hour
	}
	s := &Server{
		opts: opts,
		log:  log,
		now:  opts.Now,
		schemas: map[string]*schema.Schema{
			Google:    schema.MustLoad(schema.GoogleDataManager),
			GoogleAds: schema.MustLoad(schema.GoogleAds),
			Meta:      schema.MustLoad(schema.Meta),
			TikTok:    schema.MustLoad(schema.TikTok),
			Microsoft: schema.MustLoad(schema.Microsoft),
			LinkedIn:  schema.MustLoad(schema.LinkedIn),
		},
		rng:    rand.New(rand.NewPCG(uint64(opts.Seed), 0x5eed)),
		faults: opts.Faults,
	}
	s.resetLocked()
	return s
}

func (s *Server) resetLocked() {
	s.tokens = map[string]time.Time{}
	s.counts = map[string]*Counts{}
	for _, p := range []string{Google, GoogleAds, Meta, TikTok, Microsoft, LinkedIn} {
		s.counts[p] = &Counts{Keys: map[string]*KeyCount{}, Adjustments: map[string]*KeyCount{}}
	}
	s.adj = map[string]*adjState{}
	s.dmReqs = map[string]*dmRequestState{}
	s.ads = map[string]*adsConversion{}
	s.metaSeen = map[string]time.Time{}
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
	case path == "/token", path == "/common/oauth2/v2.0/token", path == "/oauth/v2/accessToken":
		s.handleToken(w, r) // Google's, the Microsoft identity platform's and LinkedIn's paths
	case path == "/CampaignManagement/v13/OfflineConversions/Apply":
		s.handleMicrosoft(w, r)
	case path == "/CampaignManagement/v13/OfflineConversionAdjustments/Apply":
		s.handleMicrosoftAdjustments(w, r)
	case path == "/rest/conversionEvents":
		s.handleLinkedIn(w, r)
	case path == "/sandbox/counts":
		writeJSON(w, http.StatusOK, s.Counts())
	case path == "/sandbox/reset" && r.Method == http.MethodPost:
		s.Reset()
		writeJSON(w, http.StatusOK, map[string]bool{"reset": true})
	case path == "/sandbox/faults":
		s.handleFaults(w, r)
	case path == "/v1/events:ingest":
		s.handleDMIngest(w, r)
	case path == "/v1/requestStatus:retrieve":
		s.handleDMStatus(w, r)
	case path == "/open_api/v1.3/event/track/":
		s.handleTikTok(w, r)
	default:
		parts := strings.Split(strings.Trim(path, "/"), "/")
		switch {
		case len(parts) == 3 && parts[1] == "customers":
			s.handleAds(w, r, parts[0], parts[2])
		case len(parts) == 3 && parts[2] == "events":
			s.handleMeta(w, r, parts[0], parts[1])
		case len(parts) == 4 && parts[1] == "customers" && parts[3] == "googleAds:search":
			s.handleAdsSearch(w, r, parts[0], parts[2])
		case len(parts) == 2 && r.Method == http.MethodGet:
			s.handleMetaDataset(w, r, parts[0], parts[1])
		default:
			http.NotFound(w, r)
		}
	}
}

func (s *Server) handleFaults(w http.ResponseWriter, r *http.Request) {
	switch r.Method {
	case http.MethodGet:
		writeJSON(w, http.StatusOK, s.Faults())
	case http.MethodPost, http.MethodPut:
		var f Faults
		dec := json.NewDecoder(io.LimitReader(r.Body, maxBody))
		dec.DisallowUnknownFields()
		if err := dec.Decode(&f); err != nil {
			writeJSON(w, http.StatusBadRequest, map[string]string{"error": "faults: " + err.Error()})
			return
		}
		s.SetFaults(f)
		writeJSON(w, http.StatusOK, f)
	default:
		w.Header().Set("Allow", "GET, POST")
		http.Error(w, "method not allowed", http.StatusMethodNotAllowed)
	}
}

// fault is what the dice decided for one request.
type fault int

const (
	noFault fault = iota
	fault5xx
	fault429
	faultTimeout
	faultUnknown
	faultSetupIn5xx
)

// RevokeTokens makes every Google access token issued so far expire now, as a routine
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

// draw decides the random fault for one request on platform p.
func (s *Server) draw(p string) (fault, Faults) {
	s.mu.Lock()
	defer s.mu.Unlock()
	f := s.faults
	if len(f.Platforms) > 0 {
		in := false
		for _, q := range f.Platforms {
			in = in || q == p
		}
		if !in {
			return noFault, Faults{RejectMarker: f.RejectMarker, RejectKeys: f.RejectKeys, AsyncRejectKeys: f.AsyncRejectKeys, TooRecentGoals: f.TooRecentGoals, Lookup: f.Lookup}
		}
	}
	x := s.rng.Float64()
	switch {
	case x < f.Share5xx:
		s.counts[p].Faulted++
		return fault5xx, f
	case x < f.Share5xx+f.Share429:
		s.counts[p].Faulted++
		return fault429, f
	case x < f.Share5xx+f.Share429+f.ShareTimeout:
		s.counts[p].Faulted++
		return faultTimeout, f
	case x < f.Share5xx+f.Share429+f.ShareTimeout+f.ShareUnknownError:
		s.counts[p].Faulted++
		return faultUnknown, f
	case x < f.Share5xx+f.Share429+f.ShareTimeout+f.ShareUnknownError+f.ShareSetupIn5xx:
		s.counts[p].Faulted++
		return faultSetupIn5xx, f
	}
	return noFault, f
}

// batchReject draws the whole-batch rejection fault.
func (s *Server) batchReject(p string, f Faults) bool {
	if f.ShareBatchReject <= 0 {
		return false
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.rng.Float64() < f.ShareBatchReject
}

func (f Faults) marker() string {
	if f.RejectMarker == "" {
		return DefaultRejectMarker
	}
	return f.RejectMarker
}

func (f Faults) rejectsKey(k string) bool {
	for _, x := range f.RejectKeys {
		if x == k {
			return true
		}
	}
	return false
}

func (f Faults) asyncRejects(k string) bool {
	for _, x := range f.AsyncRejectKeys {
		if x == k {
			return true
		}
	}
	return false
}

func (f Faults) retryAfter() string {
	if f.RetryAfterSeconds <= 0 {
		return "1"
	}
	return fmt.Sprint(f.RetryAfterSeconds)
}

func (f Faults) timeoutDelay() time.Duration {
	if f.TimeoutDelayMS <= 0 {
		return 30 * time.Second
	}
	return time.Duration(f.TimeoutDelayMS) * time.Millisecond
}

// hold delays an answer for the timeout fault, returning early if the client gives up.
func hold(ctx context.Context, d time.Duration) {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-ctx.Done():
	case <-t.C:
	}
}

// record counts one event that arrived in an accepted request under dedup key k; effective
// says whether it took effect (false = the platform's dedup dropped it).
func (s *Server) recordLocked(p, k string, effective bool) {
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

func (s *Server) refused(p string, events int) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.counts[p].Refused++
	s.counts[p].Rejected += events
}

func (s *Server) nextID(prefix string) string {
	s.seq++
	return fmt.Sprintf("%s-%06d", prefix, s.seq)
}

func writeJSON(w http.ResponseWriter, status int, v any) {
	w.Header().Set("Content-Type", "application/json; charset=utf-8")
	w.WriteHeader(status)
	enc := json.NewEncoder(w)
	enc.SetIndent("", "  ")
	_ = enc.Encode(v)
}

// readJSON reads a body for validation; the decoded value uses json.Number.
func readJSON(r *http.Request) ([]byte, any, error) {
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

func violationsText(vs []schema.Violation, max int) []string {
	out := make([]string, 0, len(vs))
	for i, v := range vs {
		if i == max {
			break
		}
		out = append(out, v.String())
	}
	return out
}

// sortedKeys returns m's keys in order (stable JSON and logs).
func sortedKeys[V any](m map[string]V) []string {
	keys := make([]string, 0, len(m))
	for k := range m {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	return keys
}
