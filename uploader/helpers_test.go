package uploader

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"slices"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/stretchr/testify/require"
	"go.uber.org/zap/zaptest"

	"github.com/closedloop/closedloop/store"
)

const testDest = "dest"

// keysPlatform is a tiny platform: the request body lists the batch's keys, the response
// says per key ok | bad | retry | sent | expired. Check turns away keys by prefix:
// "expired…" (expired), "skip…" (skipped), "young…" (not yet: transient, 1h).
type keysPlatform struct {
	url      string
	max      int
	setupErr func() error // when set and non-nil, BuildRequest fails with it
}

var _ Platform = (*keysPlatform)(nil)

func (p *keysPlatform) MaxBatch() int { return p.max }

func (p *keysPlatform) Check(c *store.Conversion, _ time.Time) *Error {
	switch {
	case strings.HasPrefix(c.Key, "expired"):
		return &Error{Class: ClassExpired, Reason: "too_old", Detail: "outside the 7 day window"}
	case strings.HasPrefix(c.Key, "skip"):
		return &Error{Class: ClassSkipped, Reason: "consent_denied", Detail: "ad_user_data denied"}
	case strings.HasPrefix(c.Key, "young"):
		return &Error{Class: ClassTransient, Reason: "too_recent", Detail: "click under 6h old", RetryAfter: time.Hour}
	}
	return nil
}

type keysBody struct {
	Keys []string `json:"keys"`
}

func (p *keysPlatform) BuildRequest(ctx context.Context, batch []store.Conversion, _ time.Time) (*http.Request, error) {
	if p.setupErr != nil {
		if err := p.setupErr(); err != nil {
			return nil, err
		}
	}
	var b keysBody
	for _, c := range batch {
		b.Keys = append(b.Keys, c.Key)
	}
	raw, err := json.Marshal(b)
	if err != nil {
		return nil, err
	}
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, p.url+"/upload?access_token=SECRET-TOKEN", bytes.NewReader(raw))
	if err != nil {
		return nil, err
	}
	req.Header.Set("Content-Type", "application/json")
	return req, nil
}

type keyResult struct {
	Status string `json:"status"`
	Ref    string `json:"ref,omitempty"`
}

type keysResponse struct {
	Results []keyResult `json:"results"`
}

func (p *keysPlatform) ParseResponse(resp *http.Response, body []byte, batch []store.Conversion) ([]RowResult, error) {
	switch code := resp.StatusCode; {
	case code == http.StatusOK:
		var r keysResponse
		if err := json.Unmarshal(body, &r); err != nil {
			return nil, &Error{Class: ClassTransient, Reason: "bad_json", Detail: err.Error()}
		}
		out := make([]RowResult, len(r.Results))
		for i, k := range r.Results {
			switch k.Status {
			case "ok":
				out[i] = RowResult{Class: ClassAccepted}
			case "bad":
				out[i] = RowResult{Class: ClassPermanent, Reason: "INVALID_KEY", Detail: "key rejected"}
			case "retry":
				out[i] = RowResult{Class: ClassTransient, Reason: "TRY_LATER"}
			case "sent":
				out[i] = RowResult{Class: ClassSent, PlatformRef: k.Ref}
			case "expired":
				out[i] = RowResult{Class: ClassExpired, Reason: "EXPIRED_EVENT"}
			case "setup":
				out[i] = RowResult{Class: ClassSetup, Reason: "ACCOUNT_SUSPENDED"}
			case "held":
				out[i] = RowResult{Class: ClassHeld, Reason: "NO_CONVERSION_ACTION_FOUND", Detail: "conversion action not found"}
			case "unknown":
				out[i] = RowResult{Class: ClassUnknown, Reason: "A_FUTURE_ENUM"}
			}
		}
		return out, nil
	case code == http.StatusBadRequest:
		return nil, &Error{Class: ClassBatchRejected, Reason: "INVALID_ARGUMENT", Detail: "an event is invalid"}
	case code == http.StatusUnauthorized || code == http.StatusForbidden:
		return nil, &Error{Class: ClassSetup, Reason: "http_" + strconv.Itoa(code), Detail: "credentials refused"}
	case (code == http.StatusTooManyRequests || code >= 500) && strings.Contains(string(body), "SETUP"):
		return nil, &Error{Class: ClassSetup, Reason: "AUTH_IN_5XX", Detail: "a setup error inside a 5xx"}
	case code == http.StatusTooManyRequests || code >= 500:
		return nil, &Error{Class: ClassTransient, Reason: "http_" + strconv.Itoa(code)}
	}
	return nil, fmt.Errorf("unexpected status %d", resp.StatusCode)
}

// pollingPlatform accepts asynchronously: rows come back "sent", GET /status?ref= says
// {"done":bool,"results":[...]}.
type pollingPlatform struct{ keysPlatform }

var _ StatusPoller = (*pollingPlatform)(nil)

func (p *pollingPlatform) PollRequest(ctx context.Context, ref string) (*http.Request, error) {
	return http.NewRequestWithContext(ctx, http.MethodGet, p.url+"/status?ref="+ref, nil)
}

func (p *pollingPlatform) ParsePoll(resp *http.Response, body []byte, rows []store.Conversion) ([]RowResult, bool, error) {
	var r struct {
		Done    bool        `json:"done"`
		Results []keyResult `json:"results"`
	}
	if err := json.Unmarshal(body, &r); err != nil {
		return nil, false, err
	}
	if !r.Done {
		return nil, false, nil
	}
	res, err := p.ParseResponse(&http.Response{StatusCode: 200}, mustJSON(keysResponse{Results: r.Results}), rows)
	return res, true, err
}

// groupingPlatform batches keys by their first letter.
type groupingPlatform struct{ keysPlatform }

func (p *groupingPlatform) BatchGroup(c *store.Conversion) string { return c.Key[:1] }

func mustJSON(v any) []byte {
	b, err := json.Marshal(v)
	if err != nil {
		panic(err)
	}
	return b
}

// reply is what fakeAPI answers to one request.
type reply struct {
	code   int
	header map[string]string
	body   any
}

// fakeAPI records every request (retries included) and answers with respond.
type fakeAPI struct {
	srv *httptest.Server

	mu       sync.Mutex
	requests []apiRequest
	respond  func(keys []string) reply
}

type apiRequest struct {
	at   time.Time
	path string
	keys []string
}

func newFakeAPI(t testing.TB, respond func(keys []string) reply) *fakeAPI {
	t.Helper()
	a := &fakeAPI{respond: respond}
	a.srv = httptest.NewServer(http.HandlerFunc(a.serve))
	t.Cleanup(a.srv.Close)
	return a
}

func (a *fakeAPI) serve(w http.ResponseWriter, r *http.Request) {
	raw, _ := io.ReadAll(r.Body)
	var b keysBody
	_ = json.Unmarshal(raw, &b)
	a.mu.Lock()
	a.requests = append(a.requests, apiRequest{at: time.Now(), path: r.URL.Path, keys: b.Keys})
	respond := a.respond
	a.mu.Unlock()
	rep := respond(b.Keys)
	if r.URL.Path == "/status" {
		rep = a.status(r.URL.Query().Get("ref"))
	}
	for k, v := range rep.header {
		w.Header().Set(k, v)
	}
	if rep.code == 0 {
		rep.code = http.StatusOK
	}
	w.WriteHeader(rep.code)
	if rep.body != nil {
		_, _ = w.Write(mustJSON(rep.body))
	}
}

// status answers polls: done, every row accepted.
func (a *fakeAPI) status(ref string) reply {
	a.mu.Lock()
	defer a.mu.Unlock()
	n := 0
	for _, r := range a.requests {
		if r.path == "/upload" && len(r.keys) > 0 && "ref-"+r.keys[0] == ref {
			n = len(r.keys)
		}
	}
	res := make([]keyResult, n)
	for i := range res {
		res[i] = keyResult{Status: "ok"}
	}
	return reply{body: map[string]any{"done": true, "results": res}}
}

func (a *fakeAPI) setRespond(f func(keys []string) reply) {
	a.mu.Lock()
	defer a.mu.Unlock()
	a.respond = f
}

// uploads returns the /upload requests so far.
func (a *fakeAPI) uploads() []apiRequest {
	a.mu.Lock()
	defer a.mu.Unlock()
	var out []apiRequest
	for _, r := range a.requests {
		if r.path == "/upload" {
			out = append(out, r)
		}
	}
	return out
}

// allOK answers every key ok.
func allOK(keys []string) reply { return perKey(keys, func(string) string { return "ok" }) }

func perKey(keys []string, status func(key string) string) reply {
	res := make([]keyResult, len(keys))
	for i, k := range keys {
		res[i] = keyResult{Status: status(k)}
		if res[i].Status == "sent" {
			res[i].Ref = "ref-" + keys[0]
		}
	}
	return reply{body: keysResponse{Results: res}}
}

// rejectBatchesWith answers 400 for any batch holding one of bad, else all ok.
func rejectBatchesWith(bad ...string) func([]string) reply {
	return func(keys []string) reply {
		for _, k := range keys {
			if slices.Contains(bad, k) {
				return reply{code: http.StatusBadRequest, body: map[string]string{"error": "INVALID_ARGUMENT"}}
			}
		}
		return allOK(keys)
	}
}

// newRows makes n ready, due rows named prefix000, prefix001, ...
func newRows(prefix string, n int) []store.Conversion {
	due := time.Now().Add(-time.Minute).UTC().Truncate(time.Microsecond)
	rows := make([]store.Conversion, n)
	for i := range rows {
		rows[i] = store.Conversion{
			Key: fmt.Sprintf("%s%03d", prefix, i), Kind: store.KindConversion, Destination: testDest,
			Platform: "test", Rule: "won", Source: "hubspot", ObjectType: "deal", ObjectID: fmt.Sprint(i),
			ConversionName: "purchase", OccurredAt: due.Add(-time.Hour),
			State: store.StateReady, NextAttemptAt: due, CreatedAt: due,
		}
	}
	return rows
}

// testOutbox is the real SQLite store, recording the claims made through it.
type testOutbox struct {
	*store.Store
	t *testing.T

	mu     sync.Mutex
	claims []store.Claim
}

// openStore opens a migrated SQLite store in a temp dir holding rows.
func openStore(t *testing.T, rows ...store.Conversion) *testOutbox {
	t.Helper()
	ctx := context.Background()
	st, err := store.Open(ctx, store.Config{Driver: store.DriverSQLite, Path: t.TempDir() + "/x.db", MigrateOnStart: true}, zaptest.NewLogger(t))
	require.NoError(t, err)
	t.Cleanup(func() { require.NoError(t, st.Close()) })
	if len(rows) > 0 {
		res, err := st.WriteBatch(ctx, store.Batch{Conversions: rows})
		require.NoError(t, err)
		require.Equal(t, len(rows), res.Created)
	}
	return &testOutbox{Store: st, t: t}
}

func (o *testOutbox) ClaimDue(ctx context.Context, c store.Claim) ([]store.Conversion, error) {
	o.mu.Lock()
	o.claims = append(o.claims, c)
	o.mu.Unlock()
	return o.Store.ClaimDue(ctx, c)
}

func (o *testOutbox) claimLog() []store.Claim {
	o.mu.Lock()
	defer o.mu.Unlock()
	return slices.Clone(o.claims)
}

// all returns every row, by key.
func (o *testOutbox) all() []store.Conversion {
	o.t.Helper()
	rows, err := o.ListConversions(context.Background(), store.ListFilter{Destination: testDest})
	require.NoError(o.t, err)
	slices.SortFunc(rows, func(a, b store.Conversion) int { return strings.Compare(a.Key, b.Key) })
	return rows
}

func (o *testOutbox) get(key string) store.Conversion {
	o.t.Helper()
	c, err := o.Get(context.Background(), key)
	require.NoError(o.t, err)
	return c
}

// testOptions are short intervals for tests; the row backoff is long so that retried rows
// stay put while a test looks at them.
func testOptions() Options {
	return Options{
		Owner:              "test-owner",
		LeaseFor:           time.Minute,
		PollInterval:       5 * time.Millisecond,
		PauseMin:           20 * time.Millisecond,
		PauseMax:           80 * time.Millisecond,
		RetryWaitMin:       time.Millisecond,
		RetryWaitMax:       20 * time.Millisecond,
		BackoffBase:        time.Hour,
		BackoffMax:         8 * time.Hour,
		LeaseSweepInterval: 10 * time.Millisecond,
		StatusPollInterval: 10 * time.Millisecond,
	}
}

type fixture struct {
	out *testOutbox
	api *fakeAPI
	d   *Dispatcher
	reg *prometheus.Registry
	m   *Metrics

	cancel context.CancelFunc
	done   chan error
}

type setupArgs struct {
	rows     []store.Conversion
	cfg      DestinationConfig
	opts     *Options
	respond  func([]string) reply
	platform func(url string) Platform
}

func setup(t *testing.T, a setupArgs) *fixture {
	t.Helper()
	if a.respond == nil {
		a.respond = allOK
	}
	api := newFakeAPI(t, a.respond)
	var p Platform = &keysPlatform{url: api.srv.URL, max: 10}
	if a.platform != nil {
		p = a.platform(api.srv.URL)
	}
	opts := testOptions()
	if a.opts != nil {
		opts = *a.opts
	}
	if a.cfg.Platform == "" {
		a.cfg.Platform = "test"
	}
	if a.cfg.MaxAttempts == 0 {
		a.cfg.MaxAttempts = 5
	}
	reg := prometheus.NewRegistry()
	m := NewMetrics(reg)
	out := openStore(t, a.rows...)
	d := New(testDest, a.cfg, p, out, opts, zaptest.NewLogger(t), m)
	return &fixture{out: out, api: api, d: d, reg: reg, m: m}
}

// start runs the dispatcher until stop or the end of the test.
func (f *fixture) start(t *testing.T) {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	f.cancel, f.done = cancel, make(chan error, 1)
	go func() { f.done <- f.d.Run(ctx) }()
	t.Cleanup(func() { f.stop(t) })
}

// stop cancels Run and waits (bounded) for it to return.
func (f *fixture) stop(t *testing.T) {
	t.Helper()
	if f.cancel == nil {
		return
	}
	f.cancel()
	select {
	case err := <-f.done:
		require.NoError(t, err)
	case <-time.After(10 * time.Second):
		t.Fatal("Run did not return after cancel")
	}
	f.cancel = nil
}

// settled waits until no row is ready-and-due or in flight.
func (f *fixture) settled(t *testing.T) {
	t.Helper()
	require.Eventually(t, func() bool {
		now := time.Now()
		for _, r := range f.out.all() {
			if r.State == store.StateInFlight || (r.State == store.StateReady && !r.NextAttemptAt.After(now)) {
				return false
			}
		}
		return true
	}, 10*time.Second, 5*time.Millisecond)
}

func requireNoLeases(t *testing.T, rows []store.Conversion) {
	t.Helper()
	for _, r := range rows {
		require.NotEqual(t, store.StateInFlight, r.State, "row %s still in flight", r.Key)
		require.Empty(t, r.LeaseOwner, "row %s still leased", r.Key)
		require.True(t, r.LeaseUntil.IsZero(), "row %s still has a lease", r.Key)
	}
}

func batchSizes(reqs []apiRequest) []int {
	out := make([]int, len(reqs))
	for i, r := range reqs {
		out[i] = len(r.keys)
	}
	return out
}
