package e2e_test

import (
	"context"
	"fmt"
	"net/http/httptest"
	"testing"
	"time"

	"github.com/segmentio/kafka-go"
	"github.com/stretchr/testify/require"
	"go.uber.org/zap"
	"go.uber.org/zap/zaptest"

	"github.com/closedloop/closedloop/internal/config"
	"github.com/closedloop/closedloop/internal/crmsandbox"
	"github.com/closedloop/closedloop/internal/pii"
	"github.com/closedloop/closedloop/internal/testenv"
	"github.com/closedloop/closedloop/internal/worker"
	"github.com/closedloop/closedloop/store"
	"github.com/closedloop/closedloop/uploader"
	"github.com/closedloop/closedloop/uploader/meta"
	"github.com/closedloop/closedloop/uploader/platforms"
	"github.com/closedloop/closedloop/uploader/sandbox"
)

// enrichConfigYAML is the enrichment proof's worker config: one stage topic whose
// messages say their format in a header, three CRM connections on the emulator, Meta on
// the platform sandbox (through the recording proxy).
const enrichConfigYAML = `
log: {level: info, format: json}
admin: {listen: "127.0.0.1:0", shutdown_timeout: 10s}
pii: {default_region: US}
kafka:
  brokers: ["${E2E_BROKER}"]
  group_id: ${E2E_GROUP}
  stage_topics:
    - {topic: "${E2E_STAGE_TOPIC}", format: canonical}
  identity_topic: ""
  dead_letter_topic: "${E2E_DLQ_TOPIC}"
  batch_wait: 50ms
  sweep_interval: 5s
store:
  driver: postgres
  dsn: ${E2E_DSN}
  max_conns: 8
uploader: {poll_interval: 100ms, lease_for: 2m}
crms:
  batch: 100
  lease_for: 3s
  poll_interval: 100ms
  pause_for: 2s
  max_backoff: 2s
  connections:
    hubspot-main: {kind: hubspot, token: "${E2E_HS_TOKEN}", base_url: "${E2E_CRM}", rate_limit: 1000, burst: 50, timeout: 5s}
    pipedrive-main: {kind: pipedrive, token: "${E2E_PD_TOKEN}", base_url: "${E2E_CRM}", rate_limit: 1000, burst: 50, timeout: 5s}
    close-main: {kind: close, token: "${E2E_CLOSE_KEY}", base_url: "${E2E_CRM}", rate_limit: 1000, burst: 50, timeout: 5s}
    salesforce-main: {kind: salesforce, client_id: "${E2E_SF_CLIENT}", client_secret: "${E2E_SF_SECRET}", refresh_token: "${E2E_SF_REFRESH}",
      token_url: "${E2E_CRM}/services/oauth2/token", base_url: "${E2E_CRM}", rate_limit: 1000, burst: 50, timeout: 5s}
    attio-main: {kind: attio, token: "${E2E_ATTIO_TOKEN}", base_url: "${E2E_CRM}", rate_limit: 1000, burst: 50, timeout: 5s}
destinations:
  meta-crm:
    platform: meta
    base_url: ${E2E_SANDBOX}
    dataset_id: "123456789012345"
    access_token: e2e-meta-token
    batch_size: 500
    timeout: 2s
    max_attempts: 50
mappings:
  - name: hs-won
    match: {source: hubspot, stage: closedwon}
    value: {field: amount, currency_field: currency, default_currency: USD}
    destinations: [{destination: meta-crm, conversion: Purchase}]
  - name: hs-renewal
    match: {source: hubspot, stage: contractrenewed}
    value: {field: amount, currency_field: currency, default_currency: USD}
    destinations: [{destination: meta-crm, conversion: Purchase}]
  - name: pd-won
    match: {source: pipedrive, status: won}
    value: {field: amount, currency_field: currency, default_currency: USD}
    destinations: [{destination: meta-crm, conversion: Purchase}]
  - name: close-won
    match: {source: close, status: won}
    value: {field: amount, currency_field: currency, default_currency: USD}
    destinations: [{destination: meta-crm, conversion: Purchase}]
  - name: sf-won
    match: {source: salesforce, stage: "Closed Won"}
    value: {field: amount, currency_field: currency, default_currency: USD}
    destinations: [{destination: meta-crm, conversion: Purchase}]
  - name: attio-won
    match: {source: attio, stage: "Won 🎉"}
    value: {field: amount, currency_field: currency, default_currency: USD}
    destinations: [{destination: meta-crm, conversion: Purchase}]
`

// TestThinWebhooksEnrichedUnderFaults is issue 14's proof: native HubSpot deal webhooks
// (no amount, no contacts), Pipedrive and Close stage changes (a value, no contact data)
// through the whole worker on real Kafka and PostgreSQL, enriched from the CRM emulator
// while it answers 429s, 5xx and, for Close, a window of 401s, with the worker stopped
// mid-run and started again (half the HubSpot webhooks arrive while it is down). Every
// conversion must end accepted once in the platform sandbox, every event the platform saw
// must carry the deal's value and its contact's hashed email, and the emulator's counters
// must show nothing fetched more than the cache allows: a deal's second stage change
// fetches nothing.
func TestThinWebhooksEnrichedUnderFaults(t *testing.T) {
	t.Parallel()
	ctx, cancel := context.WithTimeout(context.Background(), 4*time.Minute)
	defer cancel()

	brokers := testenv.KafkaBrokers(t)
	stageTopic := testenv.CreateTopic(t, brokers, 3)
	dlqTopic := testenv.CreateTopic(t, brokers, 1)
	group := stageTopic + "-group"
	dsn := testenv.PostgresDSN(t)

	data := thinData{now: time.Now().UTC(), norm: pii.Normalizer{DefaultRegion: "US"}}
	want := data.expected()
	require.Len(t, want, hubspotDeals+renewals+pipedriveN+closeN+salesforceN+attioN)

	crmSB := crmsandbox.New()
	data.seed(crmSB)
	crmSrv := httptest.NewServer(crmSB)
	t.Cleanup(crmSrv.Close)

	faults := sandbox.Faults{Share5xx: 0.10, Share429: 0.05, RetryAfterSeconds: 1}
	sb := platforms.NewSandbox(sandbox.Options{Seed: 14, Faults: faults}, zaptest.NewLogger(t, zaptest.Level(zap.WarnLevel)))
	sbURL, err := sb.Start("127.0.0.1:0")
	require.NoError(t, err)
	t.Cleanup(func() {
		sctx, scancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer scancel()
		require.NoError(t, sb.Shutdown(sctx))
	})
	rec, err := newRecordingProxy(sbURL)
	require.NoError(t, err)
	recSrv := httptest.NewServer(rec)
	t.Cleanup(recSrv.Close)

	vars := map[string]string{
		"E2E_BROKER": brokers[0], "E2E_GROUP": group, "E2E_STAGE_TOPIC": stageTopic, "E2E_DLQ_TOPIC": dlqTopic,
		"E2E_DSN": dsn, "E2E_SANDBOX": recSrv.URL, "E2E_CRM": crmSrv.URL,
		"E2E_HS_TOKEN": crmsandbox.HubSpotToken, "E2E_PD_TOKEN": crmsandbox.PipedriveToken, "E2E_CLOSE_KEY": crmsandbox.CloseAPIKey,
		"E2E_SF_CLIENT": crmsandbox.SalesforceClientID, "E2E_SF_SECRET": crmsandbox.SalesforceClientSecret,
		"E2E_SF_REFRESH": crmsandbox.SalesforceRefreshToken, "E2E_ATTIO_TOKEN": crmsandbox.AttioToken,
	}
	cfg, err := config.Parse([]byte(enrichConfigYAML), func(k string) (string, bool) { v, ok := vars[k]; return v, ok })
	require.NoError(t, err)
	log := zaptest.NewLogger(t, zaptest.Level(zap.ErrorLevel))

	waitCtx, stopWaiting := context.WithCancelCause(ctx)
	defer stopWaiting(nil)
	run := startWorkers(ctx, t, cfg, log, stopWaiting)

	st, err := store.Open(ctx, store.Config{Driver: store.DriverPostgres, DSN: dsn, MaxConns: 2}, zap.NewNop())
	require.NoError(t, err)
	defer st.Close()
	transport := &kafka.Transport{}
	defer transport.CloseIdleConnections()
	client := &kafka.Client{Addr: kafka.TCP(brokers...), Timeout: 10 * time.Second, Transport: transport}
	states := func(ctx context.Context) (map[store.State]int, error) {
		byDest, err := st.CountByState(ctx)
		return byDest[enrichDestName], err
	}
	closePaused := func(ctx context.Context) (bool, error) {
		cs, err := st.ConnectionStates(ctx)
		for _, s := range cs {
			if s.Name == "close-main" && s.Paused(time.Now()) {
				return true, err
			}
		}
		return false, err
	}

	// 1. Faults on every CRM: HubSpot throttles and fails, Pipedrive fails and throttles,
	// Close refuses the API key until the window closes.
	crmSB.Inject(crmsandbox.HubSpot, crmsandbox.Fault{Status: 429, Times: 2, RetryAfter: time.Second})
	crmSB.Inject(crmsandbox.HubSpot, crmsandbox.Fault{Status: 503, Times: 2})
	crmSB.Inject(crmsandbox.Pipedrive, crmsandbox.Fault{Status: 500, Times: 2})
	crmSB.Inject(crmsandbox.Pipedrive, crmsandbox.Fault{Status: 429, Times: 1, RetryAfter: time.Second})
	crmSB.Inject(crmsandbox.Close, crmsandbox.Fault{Status: 401})
	// Salesforce: the org's API allocation runs out once (403 REQUEST_LIMIT_EXCEEDED) and
	// fails once; Attio throttles and fails. Attio's webhooks carry ids only: they wait as
	// pending stage changes and are planned after the fetch.
	crmSB.Inject(crmsandbox.Salesforce, crmsandbox.Fault{Status: 429, Times: 1})
	crmSB.Inject(crmsandbox.Salesforce, crmsandbox.Fault{Status: 503, Times: 1})
	crmSB.Inject(crmsandbox.Attio, crmsandbox.Fault{Status: 429, Times: 2, RetryAfter: time.Second})
	crmSB.Inject(crmsandbox.Attio, crmsandbox.Fault{Status: 503, Times: 1})
	at := data.now.Add(-time.Hour)
	half := hubspotDeals / 2
	first := data.hubspotWebhooks(0, half, "closedwon", at)
	for i := range pipedriveN {
		first = append(first, data.pipedriveWebhook(i, at))
	}
	for i := range closeN {
		first = append(first, data.closeWebhook(i, at))
	}
	for i := range salesforceN {
		first = append(first, data.salesforceWebhook(i, at))
	}
	for i := range attioN / 2 {
		first = append(first, data.attioWebhook(i))
	}
	require.NoError(t, produce(ctx, brokers, stageTopic, first))

	// 2. Mid-run: HubSpot and Pipedrive rows uploaded, Close paused by its 401s. Stop the
	// worker there; the second half of HubSpot's webhooks arrives while it is down.
	require.NoError(t, waitFor(waitCtx, "uploads under way and the Close connection paused", 50*time.Millisecond,
		func(ctx context.Context) (bool, string, error) {
			s, err := states(ctx)
			if err != nil {
				return false, "", err
			}
			paused, err := closePaused(ctx)
			return s[store.StateAccepted] > 0 && paused, fmt.Sprintf("states %v, close paused %v", s, paused), err
		}))
	before, err := states(ctx)
	require.NoError(t, err)
	require.Positive(t, before[store.StateAwaitingEnrichment], "the stop must come mid-enrichment: %v", before)
	run.stop(t)
	t.Logf("worker stopped with %v", before)
	second := data.hubspotWebhooks(half, hubspotDeals, "closedwon", at)
	for i := attioN / 2; i < attioN; i++ {
		second = append(second, data.attioWebhook(i))
	}
	require.NoError(t, produce(ctx, brokers, stageTopic, second))
	crmSB.ExpireSalesforceSessions() // the new worker's first Salesforce token is new anyway; this expires the old ones

	// 3. A new worker. The pause outlives the restart: the new worker probes Close after
	// pause_for, is refused again, and only then does the key work again.
	closeRefused := crmSB.Requests(crmsandbox.Close)
	run = startWorkers(ctx, t, cfg, log, stopWaiting)
	require.NoError(t, waitFor(waitCtx, "the new worker to probe Close", 50*time.Millisecond,
		func(ctx context.Context) (bool, string, error) {
			n := crmSB.Requests(crmsandbox.Close)
			return n > closeRefused, fmt.Sprintf("%d Close requests", n), nil
		}))
	crmSB.Clear(crmsandbox.Close)

	// 4. Drain: every message committed, nothing left awaiting, ready, in flight or sent.
	drain := func(what string, rows int) {
		t.Helper()
		dctx, dcancel := context.WithTimeout(waitCtx, 2*time.Minute)
		defer dcancel()
		require.NoError(t, waitFor(dctx, "the stage changes to be consumed", 100*time.Millisecond, func(ctx context.Context) (bool, string, error) {
			lag, err := groupLag(ctx, client, group, stageTopic)
			return err == nil && lag == 0, fmt.Sprintf("%d messages behind", lag), err
		}))
		require.NoError(t, waitFor(dctx, what, 100*time.Millisecond, func(ctx context.Context) (bool, string, error) {
			s, err := states(ctx)
			total := 0
			for _, n := range s {
				total += n
			}
			return total == rows && s[store.StateAccepted] == rows, fmt.Sprintf("%d rows of %d; states %v", total, rows, s), err
		}))
	}
	drain("every conversion to be accepted", hubspotDeals+pipedriveN+closeN+salesforceN+attioN)
	phase1 := map[string]int{}
	for _, c := range []string{crmsandbox.HubSpot, crmsandbox.Pipedrive, crmsandbox.Close, crmsandbox.Salesforce, crmsandbox.Attio} {
		phase1[c] = crmSB.Requests(c)
	}

	// 5. A second stage change of 300 HubSpot deals (another rule, new conversions): the
	// deals and their contacts are fresh in the cache, so the CRM is not asked again.
	require.NoError(t, produce(ctx, brokers, stageTopic, data.hubspotWebhooks(0, renewals, "contractrenewed", data.now.Add(-30*time.Minute))))
	drain("the renewals to be accepted", len(want))
	sandboxCounts := sb.Counts()
	run.stop(t)
	for c, n := range phase1 {
		require.Equal(t, n, crmSB.Requests(c), "%s: a second stage change fetched again", c)
	}

	// 6. The store: every expected conversion, accepted, with the deal's value, currency
	// and its contact's hashed email; nothing else.
	all, err := st.ListConversions(ctx, store.ListFilter{})
	require.NoError(t, err)
	require.Len(t, all, len(want), "one conversion per deal and rule: none lost, none extra")
	for _, c := range all {
		w, ok := want[c.Key]
		require.True(t, ok, "unexpected conversion %s %s %s", c.Source, c.ObjectID, c.Rule)
		require.Equal(t, store.StateAccepted, c.State, "%s %s %s: %s %s", c.Source, c.ObjectID, c.Rule, c.Reason, c.Detail)
		require.NotNil(t, c.Value, "%s %s has no value", c.Source, c.ObjectID)
		require.InDelta(t, w.value, *c.Value, 1e-9, "%s %s", c.Source, c.ObjectID)
		require.Equal(t, w.currency, c.Currency, "%s %s", c.Source, c.ObjectID)
		require.Equal(t, w.emailHash, c.Identity.Identifiers.Get(pii.KeyEmail), "%s %s joined to its contact", c.Source, c.ObjectID)
		require.Empty(t, c.LeaseOwner)
	}

	// 7. The platform: each conversion took effect once under its dedup key, and every
	// copy of its event that was sent carried the value and the contact's email hash.
	metaCounts := sandboxCounts[meta.Name]
	require.Equal(t, len(want), metaCounts.AcceptedUnique)
	require.Positive(t, metaCounts.Faulted, "the platform sandbox injected no fault")
	sent := rec.events()
	for key, w := range want {
		kc := metaCounts.Keys[enrichDataset+"/Purchase/"+key]
		require.NotNil(t, kc, "%s never reached the platform", key)
		require.Equal(t, 1, kc.Effective, "%s took effect %d times (received %d)", key, kc.Effective, kc.Received)
		require.NotEmpty(t, sent[key], "%s: no event recorded", key)
		for _, ev := range sent[key] {
			require.NotNil(t, ev.value, "%s was sent without a value", key)
			require.InDelta(t, w.value, *ev.value, 1e-9, key)
			require.Equal(t, w.currency, ev.currency, key)
			require.Contains(t, ev.em, w.emailHash, key)
		}
	}

	// 8. The emulator: every deal was read; a deal (or contact) is read again only when a
	// fetch of its batch failed or was cut by the stop before the cache write: at most one
	// extra batch per injected fault (7) and one for the stop, per CRM.
	faultsPerCRM := map[string]int{crmsandbox.HubSpot: 4, crmsandbox.Pipedrive: 3, crmsandbox.Close: 0, crmsandbox.Salesforce: 2, crmsandbox.Attio: 3}
	distinct := map[string]int{crmsandbox.HubSpot: hubspotDeals, crmsandbox.Pipedrive: pipedriveN, crmsandbox.Close: closeN,
		crmsandbox.Salesforce: salesforceN, crmsandbox.Attio: attioN}
	for _, c := range []string{crmsandbox.HubSpot, crmsandbox.Pipedrive, crmsandbox.Close, crmsandbox.Salesforce, crmsandbox.Attio} {
		most, objects := crmSB.MaxReads(c, "deal")
		require.Equal(t, distinct[c], objects, "%s: every deal read", c)
		reads := crmSB.TotalReads(c, "deal")
		allowance := 100 * (faultsPerCRM[c] + 1)
		require.LessOrEqual(t, reads-objects, allowance, "%s: %d deal reads for %d deals", c, reads, objects)
		require.LessOrEqual(t, most, 2+faultsPerCRM[c], c)
		people := "contact" // Close returns a lead's contacts with the lead
		if c == crmsandbox.Close {
			people = "lead"
		}
		t.Logf("%-9s requests %4d | deals %4d read %4d times (most %d) | %ss read %4d times (most %d)",
			c, crmSB.Requests(c), objects, reads, most, people, crmSB.TotalReads(c, people), first2(crmSB.MaxReads(c, people)))
	}
	t.Logf("salesforce token requests %d", crmSB.TokenRequests())
	pendingLeft, err := st.AwaitingEnrichmentSummary(ctx)
	require.NoError(t, err)
	require.Empty(t, pendingLeft, "nothing left awaiting enrichment")
	contactMost, _ := crmSB.MaxReads(crmsandbox.HubSpot, "contact")
	require.LessOrEqual(t, contactMost, 2+faultsPerCRM[crmsandbox.HubSpot], "a HubSpot contact shared by two deals is not read per deal")

	dead, err := endOffsets(ctx, client, dlqTopic)
	require.NoError(t, err)
	require.Zero(t, dead, "dead letters")
	t.Logf("platform: requests ok %d, faulted %d | events received %d, took effect %d, duplicates dropped %d",
		metaCounts.Requests, metaCounts.Faulted, metaCounts.Received, metaCounts.AcceptedUnique, metaCounts.Duplicates)
}

func first2(a, _ int) int { return a }

// workerRun is one running worker.
type workerRun struct {
	cancel context.CancelFunc
	done   chan error
}

// startWorkers starts a worker on cfg and waits until it serves; stopWaiting is called if
// it stops on its own.
func startWorkers(ctx context.Context, t *testing.T, cfg *config.Config, log *zap.Logger, stopWaiting context.CancelCauseFunc) *workerRun {
	t.Helper()
	wctx, cancel := context.WithCancel(ctx)
	r := &workerRun{cancel: cancel, done: make(chan error, 1)}
	served := make(chan struct{})
	go func() {
		err := worker.Run(wctx, cfg, log, worker.Options{
			Listening: func(string) { close(served) },
			Uploader: uploader.Options{
				PollInterval: 100 * time.Millisecond, LeaseSweepInterval: time.Second,
				RetryWaitMin: 100 * time.Millisecond, RetryWaitMax: time.Second,
				BackoffBase: 100 * time.Millisecond, BackoffMax: time.Second,
				PauseMin: 200 * time.Millisecond, PauseMax: time.Second,
			},
		})
		if wctx.Err() == nil {
			stopWaiting(fmt.Errorf("the worker stopped: %v", err))
		}
		r.done <- err
	}()
	select {
	case <-served:
	case err := <-r.done:
		t.Fatalf("worker stopped before serving: %v", err)
	case <-ctx.Done():
		t.Fatal("worker did not start")
	}
	return r
}

// stop cancels the worker and waits for it to return.
func (r *workerRun) stop(t *testing.T) {
	t.Helper()
	r.cancel()
	require.NoError(t, <-r.done)
}
