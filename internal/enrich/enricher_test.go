package enrich_test

import (
	"context"
	"net/http"
	"net/http/httptest"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
	"go.uber.org/zap/zaptest"

	"github.com/closedloop/closedloop/crm"
	"github.com/closedloop/closedloop/internal/crmsandbox"
	"github.com/closedloop/closedloop/internal/enrich"
	"github.com/closedloop/closedloop/internal/pii"
	"github.com/closedloop/closedloop/store"
	"github.com/closedloop/closedloop/uploader/platforms"
)

// clock is a settable clock shared by the enricher and the test.
type clock struct {
	mu sync.Mutex
	t  time.Time
}

func (c *clock) now() time.Time { c.mu.Lock(); defer c.mu.Unlock(); return c.t }
func (c *clock) add(d time.Duration) {
	c.mu.Lock()
	c.t = c.t.Add(d)
	c.mu.Unlock()
}

type env struct {
	st    *store.Store
	sb    *crmsandbox.Server
	e     *enrich.Enricher
	clock *clock
}

const rawEmail = "jane.doe@example.com"

func setup(t *testing.T) *env {
	t.Helper()
	ctx := context.Background()
	cfg := store.DefaultConfig()
	cfg.Path = filepath.Join(t.TempDir(), "closedloop.db")
	st, err := store.Open(ctx, cfg, zaptest.NewLogger(t))
	require.NoError(t, err)
	t.Cleanup(func() { require.NoError(t, st.Close()) })

	sb := crmsandbox.New()
	srv := httptest.NewServer(sb)
	t.Cleanup(srv.Close)

	mapping, err := crm.CompileMappings([]crm.MappingRule{{
		Name:         "won",
		Match:        crm.RuleMatch{Status: crm.MappingStrings{"won"}},
		Value:        &crm.ValueRule{Field: "amount", DefaultCurrency: "USD"},
		Destinations: []crm.RuleDestination{{Destination: "meta-crm", Conversion: "Purchase"}},
	}, {
		Name:         "attio-won",
		Match:        crm.RuleMatch{Source: "attio", Stage: crm.MappingStrings{"Won 🎉"}},
		Value:        &crm.ValueRule{Field: "amount", DefaultCurrency: "USD"},
		Destinations: []crm.RuleDestination{{Destination: "meta-crm", Conversion: "Purchase"}},
	}}, platforms.Targets(map[string]string{"meta-crm": "meta"}))
	require.NoError(t, err)

	c := &clock{t: time.Now()}
	conns := map[string]enrich.Connection{
		"hs":    {Kind: enrich.KindHubSpot, Token: crmsandbox.HubSpotToken, BaseURL: srv.URL, RateLimit: 1000},
		"pd":    {Kind: enrich.KindPipedrive, Token: crmsandbox.PipedriveToken, BaseURL: srv.URL, RateLimit: 1000},
		"close": {Kind: enrich.KindClose, Token: crmsandbox.CloseAPIKey, BaseURL: srv.URL, RateLimit: 1000},
		"sf": {Kind: enrich.KindSalesforce, ClientID: crmsandbox.SalesforceClientID, ClientSecret: crmsandbox.SalesforceClientSecret,
			RefreshToken: crmsandbox.SalesforceRefreshToken, TokenURL: srv.URL + "/services/oauth2/token", BaseURL: srv.URL, RateLimit: 1000},
		"attio": {Kind: enrich.KindAttio, Token: crmsandbox.AttioToken, BaseURL: srv.URL, RateLimit: 1000},
	}
	ecfg := enrich.DefaultConfig()
	ecfg.Connections = conns
	e, err := enrich.New(enrich.Options{
		Config: ecfg, Store: st, Mapping: func() *crm.Mapping { return mapping },
		Normalizer: pii.Normalizer{DefaultRegion: "US"}, HTTPClient: srv.Client(),
		Metrics: enrich.NewMetrics(nil), Log: zaptest.NewLogger(t), Now: c.now, Owner: "test",
	})
	require.NoError(t, err)
	return &env{st: st, sb: sb, e: e, clock: c}
}

// thin writes a conversion as the consumer leaves a thin webhook's: awaiting enrichment,
// no value, no identity.
func (v *env) thin(t *testing.T, source, objectType, id string) string {
	t.Helper()
	key := crm.ConversionKey(source, objectType, id, "won", "meta-crm")
	_, err := v.st.WriteBatch(context.Background(), store.Batch{Conversions: []store.Conversion{{
		Key: key, Kind: store.KindConversion, Destination: "meta-crm", Platform: "meta", Rule: "won",
		Source: source, ObjectType: objectType, ObjectID: id, ConversionName: "Purchase",
		SubjectKeys: []string{crm.SubjectKey(source, objectType, id)}, OccurredAt: v.clock.now().Add(-time.Hour),
		State: store.StateAwaitingEnrichment, Reason: store.ReasonEnrichmentPending,
		CreatedAt: v.clock.now(), NextAttemptAt: v.clock.now(),
	}}})
	require.NoError(t, err)
	return key
}

func (v *env) pass(t *testing.T) int {
	t.Helper()
	n, err := v.e.Pass(context.Background())
	require.NoError(t, err)
	return n
}

func (v *env) get(t *testing.T, key string) store.Conversion {
	t.Helper()
	c, err := v.st.Get(context.Background(), key)
	require.NoError(t, err)
	return c
}

func TestHubSpotDealEnrichedWithBatchReadsAndCached(t *testing.T) {
	t.Parallel()
	v := setup(t)
	v.sb.AddDeal(crmsandbox.HubSpot, crmsandbox.Deal{ID: "9001", Amount: "1500.50", Currency: "eur", ContactIDs: []string{"51", "52"}})
	v.sb.AddContact(crmsandbox.HubSpot, crmsandbox.Contact{ID: "51", Emails: []string{rawEmail}, ClickIDs: map[string]string{"gclid": "g-1"}})
	v.sb.AddContact(crmsandbox.HubSpot, crmsandbox.Contact{ID: "52", Phones: []string{"(415) 555-0132"}})
	key := v.thin(t, "hubspot", crm.ObjectDeal, "9001")

	require.Equal(t, 1, v.pass(t))
	got := v.get(t, key)
	require.Equal(t, store.StateReady, got.State)
	require.NotNil(t, got.Value)
	require.Equal(t, 1500.5, *got.Value)
	require.Equal(t, "EUR", got.Currency)
	require.Contains(t, got.SubjectKeys, "hubspot:contact:51")
	require.Contains(t, got.SubjectKeys, "hubspot:contact:52")
	require.True(t, pii.IsSHA256Hex(got.Identity.Identifiers["email"]), "the fetched email arrives hashed")
	require.Equal(t, 3, v.sb.Requests(crmsandbox.HubSpot), "one batch read each: deals, associations, contacts")

	ids, err := v.st.LookupIdentities(context.Background(), []string{"hubspot:contact:51"})
	require.NoError(t, err)
	require.NotEmpty(t, ids["hubspot:contact:51"].Clicks, "contact click ids stored as the contact's identity")

	// The same deal's second conversion (another stage change, a replay): no refetch.
	key2 := crm.ConversionKey("hubspot", crm.ObjectDeal, "9001", "won-again", "meta-crm")
	c := v.get(t, key)
	c.Key, c.Rule, c.State, c.Value, c.Currency, c.Identity = key2, "won", store.StateAwaitingEnrichment, nil, "", store.Identity{}
	c.NextAttemptAt, c.CreatedAt, c.UpdatedAt = v.clock.now(), v.clock.now(), v.clock.now()
	_, err = v.st.WriteBatch(context.Background(), store.Batch{Conversions: []store.Conversion{c}})
	require.NoError(t, err)
	require.Equal(t, 1, v.pass(t))
	require.Equal(t, store.StateReady, v.get(t, key2).State)
	require.Equal(t, 3, v.sb.Requests(crmsandbox.HubSpot), "fresh in the fetch cache: nothing fetched again")

	// After the TTL the deal is fetched again.
	c.Key = crm.ConversionKey("hubspot", crm.ObjectDeal, "9001", "third", "meta-crm")
	_, err = v.st.WriteBatch(context.Background(), store.Batch{Conversions: []store.Conversion{c}})
	require.NoError(t, err)
	v.clock.add(25 * time.Hour)
	require.Equal(t, 1, v.pass(t))
	require.Equal(t, 6, v.sb.Requests(crmsandbox.HubSpot))
	most, _ := v.sb.MaxReads(crmsandbox.HubSpot, "deal")
	require.Equal(t, 2, most, "once per TTL")
}

func TestHubSpotBatchReadsAtMost100IDs(t *testing.T) {
	t.Parallel()
	v := setup(t)
	for i := 0; i < 150; i++ {
		id := strings.Repeat("1", 1) + string(rune('0'+i/100)) + string(rune('0'+i/10%10)) + string(rune('0'+i%10))
		v.sb.AddDeal(crmsandbox.HubSpot, crmsandbox.Deal{ID: id, Amount: "10", Currency: "USD", ContactIDs: []string{"7" + id}})
		v.sb.AddContact(crmsandbox.HubSpot, crmsandbox.Contact{ID: "7" + id, Emails: []string{"p" + id + "@example.com"}})
		v.thin(t, "hubspot", crm.ObjectDeal, id)
	}
	require.Equal(t, 100, v.pass(t), "one claim takes crms.batch rows")
	require.Equal(t, 50, v.pass(t))
	require.Equal(t, 6, v.sb.Requests(crmsandbox.HubSpot), "two passes of three batch reads each (the sandbox refuses over 100 ids)")
	counts, err := v.st.CountByState(context.Background())
	require.NoError(t, err)
	require.Equal(t, 150, counts["meta-crm"][store.StateReady])
}

func TestRateLimitedAndFailingCRMRetriesHonouringItsHeaders(t *testing.T) {
	t.Parallel()
	v := setup(t)
	v.sb.AddDeal(crmsandbox.HubSpot, crmsandbox.Deal{ID: "1", Amount: "10", Currency: "USD", ContactIDs: []string{"2"}})
	v.sb.AddContact(crmsandbox.HubSpot, crmsandbox.Contact{ID: "2", Emails: []string{rawEmail}})
	key := v.thin(t, "hubspot", crm.ObjectDeal, "1")

	v.sb.Inject(crmsandbox.HubSpot, crmsandbox.Fault{Status: 429, Times: 1, RetryAfter: 10 * time.Second})
	require.Equal(t, 1, v.pass(t))
	got := v.get(t, key)
	require.Equal(t, store.StateAwaitingEnrichment, got.State, "kept, not lost")
	require.Equal(t, store.ReasonCRMRetry, got.Reason)
	require.Contains(t, got.Detail, "429")
	require.GreaterOrEqual(t, got.NextAttemptAt.Sub(v.clock.now()), 10*time.Second-time.Millisecond, "X-HubSpot-RateLimit-Interval-Milliseconds honoured")
	require.Zero(t, v.pass(t), "not due before the CRM said")

	v.clock.add(11 * time.Second)
	v.sb.Inject(crmsandbox.HubSpot, crmsandbox.Fault{Status: 503, Times: 1})
	require.Equal(t, 1, v.pass(t))
	require.Equal(t, store.ReasonCRMRetry, v.get(t, key).Reason)

	v.clock.add(time.Minute)
	require.Equal(t, 1, v.pass(t))
	got = v.get(t, key)
	require.Equal(t, store.StateReady, got.State)
	require.Equal(t, 10.0, *got.Value)
	require.Equal(t, 3, got.Attempts)
}

func TestLaterRequestFailingDoesNotRefetchWhatWasFetched(t *testing.T) {
	t.Parallel()
	v := setup(t)
	v.sb.AddDeal(crmsandbox.HubSpot, crmsandbox.Deal{ID: "1", Amount: "10", Currency: "USD", ContactIDs: []string{"2"}})
	v.sb.AddContact(crmsandbox.HubSpot, crmsandbox.Contact{ID: "2", Emails: []string{rawEmail}})
	key := v.thin(t, "hubspot", crm.ObjectDeal, "1")

	// Deals and associations answer; the contacts batch read fails.
	v.sb.Inject(crmsandbox.HubSpot, crmsandbox.Fault{Status: 503, Times: 1, After: 2})
	require.Equal(t, 1, v.pass(t))
	require.Equal(t, store.ReasonCRMRetry, v.get(t, key).Reason)
	require.Equal(t, 3, v.sb.Requests(crmsandbox.HubSpot))

	v.clock.add(time.Minute)
	require.Equal(t, 1, v.pass(t))
	got := v.get(t, key)
	require.Equal(t, store.StateReady, got.State)
	require.Equal(t, 10.0, *got.Value)
	require.Equal(t, 4, v.sb.Requests(crmsandbox.HubSpot), "the retry reads only the contacts: the deal was cached when it answered")
	most, _ := v.sb.MaxReads(crmsandbox.HubSpot, "deal")
	require.Equal(t, 1, most)

	// Pipedrive: the second deal of a round fails; the first is not fetched again.
	v.sb.AddDeal(crmsandbox.Pipedrive, crmsandbox.Deal{ID: "7", Amount: "7", Currency: "USD"})
	v.sb.AddDeal(crmsandbox.Pipedrive, crmsandbox.Deal{ID: "8", Amount: "8", Currency: "USD"})
	k7, k8 := v.thin(t, "pipedrive", crm.ObjectDeal, "7"), v.thin(t, "pipedrive", crm.ObjectDeal, "8")
	v.sb.Inject(crmsandbox.Pipedrive, crmsandbox.Fault{Status: 500, Times: 1, After: 1})
	require.Equal(t, 2, v.pass(t))
	v.clock.add(time.Minute)
	require.Equal(t, 2, v.pass(t))
	require.Equal(t, 8.0, *v.get(t, k8).Value)
	require.Equal(t, 7.0, *v.get(t, k7).Value)
	for _, id := range []string{"7", "8"} {
		require.Equal(t, 1, v.sb.Reads(crmsandbox.Pipedrive, "deal", id), "deal %s read once", id)
	}
}

func TestUnauthorizedPausesTheConnectionAndKeepsRows(t *testing.T) {
	t.Parallel()
	v := setup(t)
	v.sb.AddDeal(crmsandbox.Pipedrive, crmsandbox.Deal{ID: "42", Amount: "99", Currency: "USD", ContactIDs: []string{"18"}})
	v.sb.AddContact(crmsandbox.Pipedrive, crmsandbox.Contact{ID: "18", Emails: []string{rawEmail}})
	v.sb.AddDeal(crmsandbox.HubSpot, crmsandbox.Deal{ID: "5", Amount: "1", Currency: "USD", ContactIDs: []string{"6"}})
	v.sb.AddContact(crmsandbox.HubSpot, crmsandbox.Contact{ID: "6", Emails: []string{rawEmail}})
	pd := v.thin(t, "pipedrive", crm.ObjectDeal, "42")
	hs := v.thin(t, "hubspot", crm.ObjectDeal, "5")

	v.sb.Inject(crmsandbox.Pipedrive, crmsandbox.Fault{Status: 401})
	require.Equal(t, 2, v.pass(t))
	require.Equal(t, store.StateReady, v.get(t, hs).State, "another CRM's failure blocks nobody else")
	got := v.get(t, pd)
	require.Equal(t, store.StateAwaitingEnrichment, got.State)
	require.Equal(t, store.ReasonCRMPaused, got.Reason)
	states := v.e.Statuses()
	var paused store.ConnectionState
	for _, s := range states {
		if s.Name == "pd" {
			paused = s
		}
	}
	require.True(t, paused.Paused(v.clock.now()))
	require.Equal(t, "crm_unauthorized", paused.Reason)
	ov, err := enrich.Overview(context.Background(), v.st, enrich.Config{Connections: map[string]enrich.Connection{"pd": {Kind: enrich.KindPipedrive}}}, v.clock.now())
	require.NoError(t, err)
	require.Len(t, ov, 1)
	require.True(t, ov[0].Paused, "the report and the status page say it is paused")
	require.Equal(t, "crm_unauthorized", ov[0].PauseReason)
	require.Equal(t, 1, ov[0].Conversions)
	require.Equal(t, 1, ov[0].Reasons[store.ReasonCRMPaused])
	requests := v.sb.Requests(crmsandbox.Pipedrive)
	v.clock.add(time.Minute)
	require.Zero(t, v.pass(t))
	require.Equal(t, requests, v.sb.Requests(crmsandbox.Pipedrive), "a paused connection sends nothing")

	v.sb.Clear(crmsandbox.Pipedrive)
	v.clock.add(5 * time.Minute) // pause_for over: probe again
	require.Equal(t, 1, v.pass(t))
	got = v.get(t, pd)
	require.Equal(t, store.StateReady, got.State)
	require.Equal(t, 99.0, *got.Value)
	require.Contains(t, got.SubjectKeys, "pipedrive:contact:18")
}

func TestDealNotFoundEndsUnmatched(t *testing.T) {
	t.Parallel()
	v := setup(t)
	hs := v.thin(t, "hubspot", crm.ObjectDeal, "404")
	pd := v.thin(t, "pipedrive", crm.ObjectDeal, "404")
	cl := v.thin(t, "close", crm.ObjectOpportunity, "oppo_missing")
	require.Equal(t, 3, v.pass(t))
	for _, k := range []string{hs, pd, cl} {
		got := v.get(t, k)
		require.Equal(t, store.StateUnmatched, got.State)
		require.Equal(t, store.ReasonCRMRecordNotFound, got.Reason)
	}
}

func TestCloseOpportunityGetsItsLeadsContacts(t *testing.T) {
	t.Parallel()
	v := setup(t)
	v.sb.AddDeal(crmsandbox.Close, crmsandbox.Deal{ID: "oppo_1", Amount: "1000", Currency: "USD", LeadID: "lead_1", ContactIDs: []string{"cont_1", "cont_2"}})
	v.sb.AddContact(crmsandbox.Close, crmsandbox.Contact{ID: "cont_1"})
	v.sb.AddContact(crmsandbox.Close, crmsandbox.Contact{ID: "cont_2", Emails: []string{rawEmail}})
	key := v.thin(t, "close", crm.ObjectOpportunity, "oppo_1")
	require.Equal(t, 1, v.pass(t))
	got := v.get(t, key)
	require.Equal(t, store.StateReady, got.State, "the lead's second contact has the email")
	require.Equal(t, 1000.0, *got.Value, "cents read back as units")
	require.Contains(t, got.SubjectKeys, "close:contact:cont_2")
	require.Contains(t, got.SubjectKeys, "close:lead:lead_1")
	require.Equal(t, 2, v.sb.Requests(crmsandbox.Close), "opportunity, then lead")
}

func TestSlowCRMTimesOutAndRetries(t *testing.T) {
	t.Parallel()
	v := setup(t)
	v.sb.AddDeal(crmsandbox.Pipedrive, crmsandbox.Deal{ID: "1", Amount: "5", Currency: "USD"})
	key := v.thin(t, "pipedrive", crm.ObjectDeal, "1")
	v.sb.Inject(crmsandbox.Pipedrive, crmsandbox.Fault{Delay: 2 * time.Second, Times: 1})
	ctx, cancel := context.WithTimeout(context.Background(), 200*time.Millisecond)
	defer cancel()
	_, err := v.e.Pass(ctx)
	require.Error(t, err, "the pass gives up with its context")
	// The lease runs out; the row is still there and enriched later.
	v.clock.add(2 * time.Minute)
	require.Equal(t, 1, v.pass(t))
	require.Equal(t, store.StateAwaitingIdentity, v.get(t, key).State, "a deal without a person waits for an identifier")
	require.Equal(t, 5.0, *v.get(t, key).Value)
}

func TestNoRawContactDataAtRest(t *testing.T) {
	t.Parallel()
	v := setup(t)
	v.sb.AddDeal(crmsandbox.HubSpot, crmsandbox.Deal{ID: "1", Amount: "10", Currency: "USD", ContactIDs: []string{"2"}})
	v.sb.AddContact(crmsandbox.HubSpot, crmsandbox.Contact{ID: "2", Emails: []string{rawEmail}, Phones: []string{"(415) 555-0132"}})
	v.thin(t, "hubspot", crm.ObjectDeal, "1")
	require.Equal(t, 1, v.pass(t))
	rows, err := v.st.ListConversions(context.Background(), store.ListFilter{})
	require.NoError(t, err)
	ids, err := v.st.LookupIdentities(context.Background(), []string{"hubspot:contact:2"})
	require.NoError(t, err)
	cache, err := v.st.FetchCache(context.Background(), "hs", "deal", []string{"1"}, time.Time{})
	require.NoError(t, err)
	for _, s := range []string{sprint(rows), sprint(ids), sprint(cache)} {
		require.NotContains(t, s, "example.com")
		require.NotContains(t, s, "555-0132")
		require.NotContains(t, s, "4155550132")
	}
	_ = http.StatusOK
}

func sprint(v any) string { return strings.ReplaceAll(fmtAny(v), " ", "") }
