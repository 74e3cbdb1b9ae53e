package e2e_test

import (
	"context"
	"fmt"
	"maps"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/segmentio/kafka-go"
	"github.com/stretchr/testify/require"
	"go.uber.org/zap"
	"go.uber.org/zap/zapcore"
	"go.uber.org/zap/zaptest"
	"go.uber.org/zap/zaptest/observer"

	"github.com/closedloop/closedloop/internal/config"
	"github.com/closedloop/closedloop/internal/testenv"
	"github.com/closedloop/closedloop/internal/worker"
	"github.com/closedloop/closedloop/store"
	"github.com/closedloop/closedloop/uploader"
	"github.com/closedloop/closedloop/uploader/google"
	"github.com/closedloop/closedloop/uploader/meta"
	"github.com/closedloop/closedloop/uploader/platforms"
	"github.com/closedloop/closedloop/uploader/sandbox"
	"github.com/closedloop/closedloop/uploader/tiktok"
)

// Destinations of the proof's config, one per platform, all pointing at the sandbox.
const (
	destGoogle = "google-dm"
	destMeta   = "meta-crm"
	destTikTok = "tiktok-crm"
)

var destinations = []string{destGoogle, destMeta, destTikTok}

// sandboxPlatform is the sandbox's count name of each destination's platform.
var sandboxPlatform = map[string]string{destGoogle: google.DataManagerName, destMeta: meta.Name, destTikTok: tiktok.Name}

// sandboxKey is the sandbox's count key of conversion key on destination: the platform's
// dedup scope (account and conversion action, dataset and event name, event set and event)
// then the key.
func sandboxKey(destination, key string) string {
	switch destination {
	case destGoogle:
		return "1234567890/987654321/" + key
	case destMeta:
		return "123456789012345/Purchase/" + key
	default:
		return "7300000000000000001/CompletePayment/" + key
	}
}

// rejectReason is the reason code each platform's uploader records for a row the sandbox
// rejected (its RejectKeys): Data Manager's ErrorInfo reason, the Graph API error code,
// TikTok's envelope code.
var rejectReason = map[string]string{destGoogle: "INVALID_ARGUMENT", destMeta: "100", destTikTok: "40002"}

// configYAML is the worker's config; ${...} are filled from the test's services.
const configYAML = `
log: {level: info, format: json}
admin: {listen: "127.0.0.1:0", shutdown_timeout: 10s}
pii: {default_region: US}
kafka:
  brokers: ["${E2E_BROKER}"]
  group_id: ${E2E_GROUP}
  stage_topics:
    - {topic: "${E2E_STAGE_TOPIC}", format: canonical}
  identity_topic: "${E2E_IDENTITY_TOPIC}"
  dead_letter_topic: "${E2E_DLQ_TOPIC}"
  batch_wait: 50ms
  sweep_interval: 5s
store:
  driver: postgres
  dsn: ${E2E_DSN}
  max_conns: 8
uploader: {poll_interval: 100ms, lease_for: 2m}
destinations:
  google-dm:
    platform: google
    base_url: ${E2E_SANDBOX}
    token_url: ${E2E_SANDBOX}/token
    customer_id: "1234567890"
    client_id: e2e-client
    client_secret: e2e-secret
    refresh_token: e2e-refresh
    batch_size: 500
    timeout: 2s
    max_attempts: 50
  meta-crm:
    platform: meta
    base_url: ${E2E_SANDBOX}
    dataset_id: "123456789012345"
    access_token: e2e-meta-token
    batch_size: 500
    timeout: 2s
    max_attempts: 50
  tiktok-crm:
    platform: tiktok
    base_url: ${E2E_SANDBOX}
    event_source_id: "7300000000000000001"
    access_token: e2e-tiktok-token
    batch_size: 500
    timeout: 2s
    max_attempts: 50
mappings:
  - name: closed-won
    match: {source: relay, status: won}
    value: {field: amount, currency_field: currency, default_currency: USD}
    destinations:
      - {destination: google-dm, conversion: "987654321"}
      - {destination: meta-crm, conversion: Purchase}
      - {destination: tiktok-crm, conversion: CompletePayment}
`

const (
	deals      = 4800 // distinct won deals (and contacts)
	redelivers = 200  // stage changes the relay sends twice: 5,000 messages in all
)

// TestPipelineUnderFaults is issue 5's proof: 5,000 stage changes through the whole worker
// (real Kafka, real PostgreSQL) to Google Data Manager, Meta and TikTok in the sandbox, which
// answers 20% of upload requests with 5xx, 10% with 429 (Retry-After 1s), holds 5% past the
// client timeout (processed, answer lost: the resend must not count twice), rejects a known
// set of rows, and refuses every token for a window mid-run.
func TestPipelineUnderFaults(t *testing.T) {
	t.Parallel()
	ctx, cancel := context.WithTimeout(context.Background(), 8*time.Minute)
	defer cancel()

	brokers := testenv.KafkaBrokers(t)
	stageTopic := testenv.CreateTopic(t, brokers, 3)
	identityTopic := testenv.CreateTopic(t, brokers, 3)
	dlqTopic := testenv.CreateTopic(t, brokers, 1)
	group := stageTopic + "-group"
	dsn := testenv.PostgresDSN(t)

	ds := dataset{now: time.Now().UTC()}
	var rejectKeys []string
	for i := range deals {
		for _, dest := range destinations {
			if ds.rejectedOn(i, dest) {
				rejectKeys = append(rejectKeys, ds.key(i, dest))
			}
		}
	}
	faults := sandbox.Faults{
		Share5xx: 0.20, Share429: 0.10, RetryAfterSeconds: 1,
		ShareTimeout: 0.05, TimeoutDelayMS: 5000, // the destinations time out after 2s
		RejectKeys: rejectKeys,
	}
	sb := platforms.NewSandbox(sandbox.Options{Seed: 5, StatusDelay: 500 * time.Millisecond, Faults: faults}, zaptest.NewLogger(t, zaptest.Level(zap.WarnLevel)))
	sbURL, err := sb.Start("127.0.0.1:0")
	require.NoError(t, err)
	t.Cleanup(func() {
		sctx, scancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer scancel()
		require.NoError(t, sb.Shutdown(sctx))
	})

	vars := map[string]string{
		"E2E_BROKER": brokers[0], "E2E_GROUP": group, "E2E_STAGE_TOPIC": stageTopic,
		"E2E_IDENTITY_TOPIC": identityTopic, "E2E_DLQ_TOPIC": dlqTopic, "E2E_DSN": dsn, "E2E_SANDBOX": sbURL,
	}
	cfg, err := config.Parse([]byte(configYAML), func(k string) (string, bool) { v, ok := vars[k]; return v, ok })
	require.NoError(t, err)

	// The worker logs errors to the test log; pause and resume lines are also observed.
	obsCore, observed := observer.New(zap.InfoLevel)
	testCore := zaptest.NewLogger(t, zaptest.Level(zap.ErrorLevel)).Core()
	log := zap.New(zapcore.NewTee(testCore, obsCore))

	wctx, stopWorker := context.WithCancel(ctx)
	defer stopWorker()
	// The waits below end at once, with the worker's error, if it stops on its own.
	waitCtx, stopWaiting := context.WithCancelCause(ctx)
	defer stopWaiting(nil)
	adminAddr := make(chan string, 1)
	workerDone := make(chan error, 1)
	go func() {
		err := worker.Run(wctx, cfg, log, worker.Options{
			Listening: func(a string) { adminAddr <- a },
			Uploader: uploader.Options{
				PollInterval: 100 * time.Millisecond, StatusPollInterval: 300 * time.Millisecond,
				LeaseSweepInterval: time.Second,
				RetryWaitMin:       100 * time.Millisecond, RetryWaitMax: 2 * time.Second,
				BackoffBase: 200 * time.Millisecond, BackoffMax: 2 * time.Second,
				PauseMin: 200 * time.Millisecond, PauseMax: time.Second,
			},
		})
		stopWaiting(fmt.Errorf("the worker stopped: %v", err))
		workerDone <- err
	}()
	var admin string
	select {
	case admin = <-adminAddr:
	case err := <-workerDone:
		t.Fatalf("worker stopped before serving: %v", err)
	case <-ctx.Done():
		t.Fatal("worker did not start")
	}
	// The worker migrated the database before serving; the test reads it directly.
	st, err := store.Open(ctx, store.Config{Driver: store.DriverPostgres, DSN: dsn, MaxConns: 2}, zap.NewNop())
	require.NoError(t, err)
	defer st.Close()

	transport := &kafka.Transport{}
	defer transport.CloseIdleConnections()
	client := &kafka.Client{Addr: kafka.TCP(brokers...), Timeout: 10 * time.Second, Transport: transport}
	lagIs0 := func(group, topic string) func(context.Context) (bool, string, error) {
		return func(ctx context.Context) (bool, string, error) {
			lag, err := groupLag(ctx, client, group, topic)
			return err == nil && lag == 0, fmt.Sprintf("group %s is %d messages behind on %s", group, lag, topic), err
		}
	}
	counts := func(ctx context.Context) (map[string]map[store.State]int, error) { return st.CountByState(ctx) }

	// 1. Identities first, so every deal joins on arrival.
	ids := make([]kafka.Message, 0, deals)
	for i := range deals {
		ids = append(ids, ds.identity(i))
	}
	require.NoError(t, produce(ctx, brokers, identityTopic, ids))
	require.NoError(t, waitFor(waitCtx, "the identities to be consumed", 100*time.Millisecond, lagIs0(group+"-identities", identityTopic)))

	// 2. The stage changes, in two halves around the token window. Every 24th deal is
	// also redelivered later (a relay retry): same conversion keys, nothing new.
	var stages []kafka.Message
	for i := range deals {
		stages = append(stages, ds.stageChange(i))
		if i%24 == 0 && len(stages) < deals+redelivers {
			stages = append(stages, ds.stageChange(i/2))
		}
	}
	require.Len(t, stages, deals+redelivers)
	half := len(stages) / 2
	require.NoError(t, produce(ctx, brokers, stageTopic, stages[:half]))

	// Every destination uploads through the faults before the token window opens.
	require.NoError(t, waitFor(waitCtx, "a first accepted conversion on every destination", 100*time.Millisecond,
		func(ctx context.Context) (bool, string, error) {
			byDest, err := counts(ctx)
			for _, d := range destinations {
				if byDest[d][store.StateAccepted] == 0 {
					return false, fmt.Sprintf("states: %v", byDest), err
				}
			}
			return true, "", err
		}))

	// 3. The token window: every API call is refused as expired while the second half
	// arrives, until every destination has paused; then the tokens work again.
	windowFaults := faults
	windowFaults.ExpiredToken = true
	windowOpened := time.Now()
	sb.SetFaults(windowFaults)
	require.NoError(t, produce(ctx, brokers, stageTopic, stages[half:]))
	pctx, pcancel := context.WithTimeout(waitCtx, 2*time.Minute)
	defer pcancel()
	require.NoError(t, waitFor(pctx, "every destination to pause for the expired token", 50*time.Millisecond,
		func(ctx context.Context) (bool, string, error) {
			g, err := pausedGauges(ctx, admin)
			for _, d := range destinations {
				if g[d] != 1 {
					return false, fmt.Sprintf("closedloop_destination_paused: %v", g), err
				}
			}
			return true, "", err
		}))
	sb.SetFaults(faults)
	windowClosed := time.Now()

	// 4. Drain: every message committed, then no conversion ready, in flight or sent.
	dctx, dcancel := context.WithTimeout(waitCtx, 4*time.Minute)
	defer dcancel()
	require.NoError(t, waitFor(dctx, "the stage changes to be consumed", 100*time.Millisecond, lagIs0(group, stageTopic)))
	require.NoError(t, waitFor(dctx, "the uploads to settle", 200*time.Millisecond,
		func(ctx context.Context) (bool, string, error) {
			byDest, err := counts(ctx)
			busy := 0
			for _, states := range byDest {
				busy += states[store.StateReady] + states[store.StateInFlight] + states[store.StateSent]
			}
			return busy == 0, fmt.Sprintf("%d conversions still ready, in flight or sent; states: %v", busy, byDest), err
		}))
	g, err := pausedGauges(ctx, admin)
	require.NoError(t, err)
	sandboxCounts := sb.Counts()
	stopWorker()
	require.NoError(t, <-workerDone)

	// 5. The store: every conversion in the state its deal calls for, with its reason.
	all, err := st.ListConversions(ctx, store.ListFilter{})
	require.NoError(t, err)
	byKey := map[string]store.Conversion{}
	for _, c := range all {
		byKey[c.Key] = c
		require.Empty(t, c.LeaseOwner, "%s %s is still leased", c.Destination, c.Key)
		require.True(t, c.LeaseUntil.IsZero(), "%s %s keeps a lease until %s", c.Destination, c.Key, c.LeaseUntil)
		require.True(t, c.State.Terminal(), "%s %s is %s", c.Destination, c.Key, c.State)
	}
	require.Len(t, all, deals*len(destinations), "one conversion per deal and destination, duplicates included")
	accepted := map[string]map[string]bool{} // destination → accepted keys
	for _, d := range destinations {
		accepted[d] = map[string]bool{}
		for i := range deals {
			k := ds.key(i, d)
			c, ok := byKey[k]
			require.True(t, ok, "deal %d has no conversion on %s", i, d)
			require.Equal(t, d, c.Destination)
			switch {
			case ds.consentDenied(i):
				require.Equal(t, store.StateSkipped, c.State, "deal %d on %s: %s %s", i, d, c.Reason, c.Detail)
				require.Equal(t, "consent_denied", c.Reason)
			case ds.rejectedOn(i, d):
				require.Equal(t, store.StateRejected, c.State, "deal %d on %s: %s %s", i, d, c.Reason, c.Detail)
				require.Equal(t, rejectReason[d], c.Reason, "deal %d on %s: %s", i, d, c.Detail)
				require.Contains(t, c.Detail, "sandbox reject", "deal %d on %s", i, d)
			default:
				require.Equal(t, store.StateAccepted, c.State, "deal %d on %s: %s %s", i, d, c.Reason, c.Detail)
				accepted[d][k] = true
			}
		}
	}

	// 6. The sandbox: every accepted conversion took effect exactly once under its dedup
	// key, nothing else took effect (no rejected or skipped row, no key twice).
	for _, d := range destinations {
		pc := sandboxCounts[sandboxPlatform[d]]
		for k := range accepted[d] {
			kc := pc.Keys[sandboxKey(d, k)]
			require.NotNil(t, kc, "%s %s accepted but never reached the sandbox", d, k)
			require.Equal(t, 1, kc.Effective, "%s %s took effect %d times (received %d)", d, k, kc.Effective, kc.Received)
		}
		effective := 0
		for sk, kc := range pc.Keys {
			require.LessOrEqual(t, kc.Effective, 1, "%s %s took effect %d times", d, sk, kc.Effective)
			if kc.Effective > 0 {
				effective++
				k := sk[strings.LastIndex(sk, "/")+1:]
				require.True(t, accepted[d][k], "%s %s took effect in the sandbox but is %s in the store", d, k, byKey[k].State)
			}
		}
		require.Equal(t, len(accepted[d]), effective, d)
		require.Equal(t, len(accepted[d]), pc.AcceptedUnique, d)
		require.Positive(t, pc.Faulted, "%s: no fault was injected", d)
	}

	// 7. Pause and resume around the token window, in the metric (1 during the window,
	// 0 after the drain) and in the log: one pause per destination, begun in the window
	// (5xx, 429 and timeouts never pause), and a resume after it.
	for _, d := range destinations {
		require.Zero(t, g[d], "%s is still paused after the drain", d)
		pauses := entriesOf(observed.FilterMessageSnippet("DESTINATION PAUSED"), d)
		require.Len(t, pauses, 1, "%s: one pause, for the token window", d)
		require.False(t, pauses[0].Time.Before(windowOpened), "%s paused before the token window: %s", d, pauses[0].ContextMap()["reason"])
		resumes := entriesOf(observed.FilterMessage("destination resumed"), d)
		require.Len(t, resumes, 1, "%s: one resume", d)
		require.True(t, resumes[0].Time.After(pauses[0].Time), "%s resumed before it paused", d)
		t.Logf("%-10s paused %s into the %s token window (%s), %d failed probes, resumed %s after it closed",
			d, pauses[0].Time.Sub(windowOpened).Round(time.Millisecond), windowClosed.Sub(windowOpened).Round(time.Millisecond),
			pauses[0].ContextMap()["reason"], len(entriesOf(observed.FilterMessage("destination still paused"), d)),
			resumes[0].Time.Sub(windowClosed).Round(time.Millisecond))
	}

	// 8. Nothing was dead-lettered.
	dead, err := endOffsets(ctx, client, dlqTopic)
	require.NoError(t, err)
	require.Zero(t, dead, "dead letters")

	for _, d := range destinations {
		pc := sandboxCounts[sandboxPlatform[d]]
		t.Logf("%-10s requests ok %4d, faulted %4d, refused %4d | events received %5d, took effect %5d, duplicates dropped %4d, rejected events %4d | store: accepted %d",
			d, pc.Requests, pc.Faulted, pc.Refused, pc.Received, pc.AcceptedUnique, pc.Duplicates, pc.Rejected, len(accepted[d]))
	}
	states := map[store.State]int{}
	for _, c := range all {
		states[c.State]++
	}
	keys := slices.Sorted(maps.Keys(states))
	parts := make([]string, 0, len(keys))
	for _, s := range keys {
		parts = append(parts, fmt.Sprintf("%s %d", s, states[s]))
	}
	t.Logf("store: %s", strings.Join(parts, ", "))
}

// entriesOf returns the entries logged for destination.
func entriesOf(logs *observer.ObservedLogs, destination string) []observer.LoggedEntry {
	var out []observer.LoggedEntry
	for _, e := range logs.All() {
		if e.ContextMap()["destination"] == destination {
			out = append(out, e)
		}
	}
	return out
}
