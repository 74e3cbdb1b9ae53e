package e2e_test

import (
	"context"
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"testing"
	"time"

	"github.com/segmentio/kafka-go"
	"github.com/stretchr/testify/require"
	"go.uber.org/zap"
	"go.uber.org/zap/zaptest"

	"github.com/closedloop/closedloop/crm"
	"github.com/closedloop/closedloop/internal/bench"
	"github.com/closedloop/closedloop/internal/config"
	"github.com/closedloop/closedloop/internal/replay"
	"github.com/closedloop/closedloop/internal/report"
	"github.com/closedloop/closedloop/internal/testenv"
	"github.com/closedloop/closedloop/store"
	"github.com/closedloop/closedloop/uploader/google"
	"github.com/closedloop/closedloop/uploader/linkedin"
	"github.com/closedloop/closedloop/uploader/meta"
	"github.com/closedloop/closedloop/uploader/microsoft"
	"github.com/closedloop/closedloop/uploader/platforms"
	"github.com/closedloop/closedloop/uploader/sandbox"
	"github.com/closedloop/closedloop/uploader/tiktok"
)

// lifecycleDest is one destination of the lifecycle proof: its sandbox platform and which
// adjustments its platform makes.
type lifecycleDest struct {
	name, platform       string
	restates, retracts   bool
	conversion           string
	notSupportedPerDeals int // adjustments per deal the report counts not_supported
}

var lifecycleDests = []lifecycleDest{
	{name: "google-dm", platform: google.DataManagerName, restates: true, conversion: "987654321", notSupportedPerDeals: 1},
	{name: "google-ads", platform: google.AdsName, restates: true, retracts: true, conversion: "555"},
	{name: "meta-crm", platform: meta.Name, conversion: "Purchase", notSupportedPerDeals: 2},
	{name: "tiktok-crm", platform: tiktok.Name, conversion: "CompletePayment", notSupportedPerDeals: 2},
	{name: "microsoft-crm", platform: microsoft.Name, restates: true, retracts: true, conversion: "Closed Won"},
	{name: "linkedin-crm", platform: linkedin.Name, conversion: "123456", notSupportedPerDeals: 2},
}

// lifecycleConfig is the `closedloop run` config of the proof (JSON is YAML).
func lifecycleConfig(brokers []string, group, stages, ids, dlq, dsn, sb string) map[string]any {
	dest := func(platform string, kv ...any) map[string]any {
		m := map[string]any{"platform": platform, "base_url": sb, "timeout": "1500ms", "max_attempts": 50, "batch_size": 50}
		for i := 0; i+1 < len(kv); i += 2 {
			m[kv[i].(string)] = kv[i+1]
		}
		return m
	}
	google := []any{"token_url", sb + "/token", "customer_id", "1234567890", "client_id", "e2e-client", "client_secret", "e2e-secret", "refresh_token", "e2e-refresh"}
	var ruleDests []map[string]any
	for _, d := range lifecycleDests {
		ruleDests = append(ruleDests, map[string]any{"destination": d.name, "conversion": d.conversion})
	}
	return map[string]any{
		"log":   map[string]any{"level": "info", "format": "json"},
		"admin": map[string]any{"listen": "127.0.0.1:0", "shutdown_timeout": "10s"},
		"pii":   map[string]any{"default_region": "US"},
		"kafka": map[string]any{
			"brokers": brokers, "group_id": group,
			"stage_topics":   []map[string]any{{"topic": stages, "format": "canonical"}},
			"identity_topic": ids, "dead_letter_topic": dlq, "batch_wait": "50ms", "sweep_interval": "5s",
		},
		"store":    map[string]any{"driver": "postgres", "dsn": dsn, "max_conns": 6},
		"uploader": map[string]any{"poll_interval": "100ms", "lease_for": "5s", "status_poll_interval": "1s", "adjustment_wait": "200ms"},
		"destinations": map[string]any{
			"google-dm":  dest("google", google...),
			"google-ads": dest("google_ads", google...),
			"meta-crm":   dest("meta", "dataset_id", "123456789012345", "access_token", "e2e-meta-token"),
			"tiktok-crm": dest("tiktok", "event_source_id", "7300000000000000001", "access_token", "e2e-tiktok-token"),
			"microsoft-crm": dest("microsoft", "token_url", sb+"/token", "customer_id", "123456", "customer_account_id", "7890123",
				"developer_token", "e2e-ms-developer-token", "client_id", "e2e-ms-client", "client_secret", "e2e-ms-secret", "refresh_token", "e2e-ms-refresh"),
			"linkedin-crm": dest("linkedin", "access_token", "e2e-linkedin-token"),
		},
		"mappings": []map[string]any{{
			"name":         rule,
			"match":        map[string]any{"source": source, "status": "won"},
			"value":        map[string]any{"field": "amount", "currency_field": "currency", "default_currency": "USD"},
			"retract_on":   map[string]any{"status": []string{"lost"}},
			"restate_on":   map[string]any{"amount_changed": true},
			"destinations": ruleDests,
		}},
	}
}

// lifecycleChange is deal i's stage change at time at: won or lost, with amount.
func lifecycleChange(i int, status string, at time.Time, amount int) kafka.Message {
	stage := map[string]string{"won": "closedwon", "lost": "closedlost"}[status]
	v, err := json.Marshal(map[string]any{
		"source": source, "object_type": "deal", "object_id": fmt.Sprintf("L-%d", i), "pipeline": "default",
		"stage": stage, "status": status, "occurred_at": rfc3339(at),
		"amount": fmt.Sprintf("%d.00", amount), "currency": "EUR", "contact_ids": []string{fmt.Sprintf("LC-%d", i)},
	})
	if err != nil {
		panic(err)
	}
	return kafka.Message{Key: []byte(fmt.Sprintf("L-%d", i)), Value: v}
}

// lifecycleIdentity is contact i's capture: an email, a gclid and an msclkid from a click
// three days ago.
func lifecycleIdentity(i int, now time.Time) kafka.Message {
	click := rfc3339(now.Add(-72 * time.Hour))
	v, err := json.Marshal(map[string]any{
		"subject": map[string]string{"type": "contact", "source": source, "id": fmt.Sprintf("LC-%d", i)}, "captured_at": click,
		"click_ids": map[string]clickAt{"gclid": {ID: fmt.Sprintf("Cj0KCQiA-life-%d", i), ClickedAt: click}, "msclkid": {ID: fmt.Sprintf("f894f652ea334e739002f7167ab8%04d", i), ClickedAt: click}},
		"email":     fmt.Sprintf("Life.%d@Example.com", i),
		"consent":   map[string]string{"ad_user_data": "granted", "ad_personalization": "granted"},
	})
	if err != nil {
		panic(err)
	}
	return kafka.Message{Key: []byte(fmt.Sprintf("LC-%d", i)), Value: v}
}

// TestLifecycleWonRestatedLost is issue 13's lifecycle bar: every deal is won (1000+i
// EUR), then still won with a new amount (1500+i: a restatement), for even deals won once
// more with that same amount (nothing), then lost (a retraction), through the real worker
// binary, real Kafka and PostgreSQL, to all six destinations in the sandbox (which
// answers some requests with 5xx, 429 and timeouts). The worker is killed (SIGKILL)
// mid-run and restarted, and the whole topic is replayed at the end. Each platform must
// end with exactly the adjustments it supports, each applied once: Data Manager
// restatements (the transactionId resent with the new value), Google Ads and Microsoft
// restatements and retractions; Meta, TikTok and LinkedIn none, their rows skipped and
// counted not_supported in the report.
func TestLifecycleWonRestatedLost(t *testing.T) {
	t.Parallel()
	ctx, cancel := context.WithTimeout(context.Background(), 6*time.Minute)
	defer cancel()
	const n = 40

	brokers := testenv.KafkaBrokers(t)
	stageTopic := testenv.CreateTopic(t, brokers, 3)
	identityTopic := testenv.CreateTopic(t, brokers, 3)
	dlqTopic := testenv.CreateTopic(t, brokers, 1)
	group := stageTopic + "-group"
	dsn := testenv.PostgresDSN(t)

	sb := platforms.NewSandbox(sandbox.Options{Seed: 13, StatusDelay: 300 * time.Millisecond, Faults: sandbox.Faults{
		Share5xx: 0.10, Share429: 0.05, RetryAfterSeconds: 1, ShareTimeout: 0.05, TimeoutDelayMS: 2500,
	}}, zaptest.NewLogger(t, zaptest.Level(zap.WarnLevel)))
	sbURL, err := sb.Start("127.0.0.1:0")
	require.NoError(t, err)
	t.Cleanup(func() {
		sctx, scancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer scancel()
		require.NoError(t, sb.Shutdown(sctx))
	})

	dir := t.TempDir()
	root, err := bench.ModuleRoot(ctx)
	require.NoError(t, err)
	bin, err := bench.Build(ctx, root, dir)
	require.NoError(t, err)
	raw, err := json.MarshalIndent(lifecycleConfig(brokers, group, stageTopic, identityTopic, dlqTopic, dsn, sbURL), "", "  ")
	require.NoError(t, err)
	cfgPath := filepath.Join(dir, "closedloop.yaml")
	require.NoError(t, os.WriteFile(cfgPath, raw, 0o600))
	logPath := func(n int) string { return filepath.Join(dir, fmt.Sprintf("worker-%d.log", n)) }
	t.Cleanup(func() {
		if t.Failed() {
			for i := 1; i <= 2; i++ {
				if b, err := os.ReadFile(logPath(i)); err == nil {
					lines := strings.Split(strings.TrimSpace(string(b)), "\n")
					t.Logf("worker %d log, last lines:\n%s", i, strings.Join(lines[max(0, len(lines)-30):], "\n"))
				}
			}
		}
	})

	w, err := bench.StartWorker(bin, cfgPath, logPath(1))
	require.NoError(t, err)
	_, err = w.Admin(ctx)
	require.NoError(t, err, "worker 1 did not serve")
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

	now := time.Now().UTC().Truncate(time.Second)
	ids := make([]kafka.Message, n)
	for i := range n {
		ids[i] = lifecycleIdentity(i, now)
	}
	require.NoError(t, produce(ctx, brokers, identityTopic, ids))
	require.NoError(t, waitFor(ctx, "the identities to be consumed", 100*time.Millisecond, lagIs0(group+"-identities", identityTopic)))

	// Won, then the crash while it uploads.
	won := make([]kafka.Message, n)
	for i := range n {
		won[i] = lifecycleChange(i, "won", now.Add(-3*time.Hour), 1000+i)
	}
	require.NoError(t, produce(ctx, brokers, stageTopic, won))
	require.NoError(t, waitFor(ctx, "a first accepted conversion", 50*time.Millisecond, func(ctx context.Context) (bool, string, error) {
		byDest, err := st.CountByState(ctx)
		for _, d := range byDest {
			if d[store.StateAccepted] > 0 {
				return true, "", err
			}
		}
		return false, fmt.Sprintf("states: %v", byDest), err
	}))
	w.Kill()
	<-w.Done()
	t.Log("worker 1 killed (SIGKILL) mid-run")
	w, err = bench.StartWorker(bin, cfgPath, logPath(2))
	require.NoError(t, err)
	defer func() { _ = w.Stop(30 * time.Second) }()

	// Restated, the same amount again for even deals, then lost.
	var later []kafka.Message
	for i := range n {
		later = append(later, lifecycleChange(i, "won", now.Add(-2*time.Hour), 1500+i))
		if i%2 == 0 {
			later = append(later, lifecycleChange(i, "won", now.Add(-90*time.Minute), 1500+i))
		}
		later = append(later, lifecycleChange(i, "lost", now.Add(-time.Hour), 0))
	}
	require.NoError(t, produce(ctx, brokers, stageTopic, later))

	settle := func(what string) {
		t.Helper()
		require.NoError(t, waitFor(ctx, "the stage changes to be consumed "+what, 100*time.Millisecond, lagIs0(group, stageTopic)))
		require.NoError(t, waitFor(ctx, "every row to end "+what, 200*time.Millisecond, func(ctx context.Context) (bool, string, error) {
			byDest, err := st.CountByState(ctx)
			total, busy := 0, 0
			for _, states := range byDest {
				for s, c := range states {
					total += c
					if !s.Terminal() {
						busy += c
					}
				}
			}
			want := n * 3 * len(lifecycleDests) // conversion, restatement, retraction per deal and destination
			return busy == 0 && total == want, fmt.Sprintf("%d of %d rows, %d not ended; states: %v", total, want, busy, byDest), err
		}))
	}
	settle("after the crash")
	before := sb.Counts()

	// The replay: the whole topic again, through the replay path.
	cfg, err := config.Parse(raw, func(string) (string, bool) { return "", false })
	require.NoError(t, err)
	rp, err := replay.NewFromConfig(cfg, st, zaptest.NewLogger(t, zaptest.Level(zap.WarnLevel)))
	require.NoError(t, err)
	sum, err := rp.Kafka(ctx, replay.KafkaOptions{})
	require.NoError(t, err)
	require.Equal(t, int64(len(won)+len(later)), sum.Read)
	require.Zero(t, sum.Conversions.New, "the replay creates nothing")
	settle("after the replay")
	after := sb.Counts()
	require.NoError(t, w.Stop(30*time.Second))

	// The store: per destination, every deal's conversion accepted, its restatement and
	// retraction each accepted where the platform makes them, skipped not_supported where not.
	all, err := st.ListConversions(ctx, store.ListFilter{})
	require.NoError(t, err)
	type cell struct{ dest, kind string }
	states := map[cell]map[string]int{}
	for _, c := range all {
		k := cell{c.Destination, c.Kind}
		if states[k] == nil {
			states[k] = map[string]int{}
		}
		what := string(c.State) // accepted rows carry the platform's own reason (uploaded, ORDER_ID_ALREADY_IN_USE, ...)
		if c.State != store.StateAccepted {
			what += " " + c.Reason
		}
		states[k][what]++
		if c.Kind == store.KindRestatement {
			require.Equal(t, float64(1500+dealOf(t, c.ObjectID)), *c.Value, "%s %s", c.Destination, c.Key)
			require.Equal(t, crm.RestateKey(source, "deal", c.ObjectID, rule, c.Destination, now.Add(-2*time.Hour)), c.Key,
				"the restatement is the first changed amount's; the repeat made none")
		}
	}
	for _, d := range lifecycleDests {
		require.Equal(t, map[string]int{"accepted": n}, states[cell{d.name, store.KindConversion}], "%s conversions", d.name)
		wantRestate := map[string]int{"skipped " + store.ReasonRestatementUnsupported: n}
		if d.restates {
			wantRestate = map[string]int{"accepted": n}
		}
		require.Equal(t, wantRestate, states[cell{d.name, store.KindRestatement}], "%s restatements", d.name)
		wantRetract := map[string]int{"skipped " + store.ReasonRetractionUnsupported: n}
		if d.retracts {
			wantRetract = map[string]int{"accepted": n}
		}
		require.Equal(t, wantRetract, states[cell{d.name, store.KindRetraction}], "%s retractions", d.name)
	}

	// The sandbox: the replay changed nothing; every conversion and adjustment took effect
	// once; each platform has exactly the adjustments it makes.
	var table strings.Builder
	fmt.Fprintf(&table, "\n%-14s %-10s %11s %11s %11s %10s %13s %8s %8s\n", "destination", "platform", "conversions", "restated", "retracted", "duplicates", "adj. dupl.", "faulted", "requests")
	for _, d := range lifecycleDests {
		pc := after[d.platform]
		require.Equal(t, before[d.platform].AcceptedUnique, pc.AcceptedUnique, "%s: the replay uploaded", d.name)
		require.Equal(t, before[d.platform].Restated, pc.Restated, "%s: the replay restated", d.name)
		require.Equal(t, before[d.platform].Retracted, pc.Retracted, "%s: the replay retracted", d.name)
		require.Equal(t, n, pc.AcceptedUnique, "%s conversions", d.name)
		for k, kc := range pc.Keys {
			require.LessOrEqual(t, kc.Effective, 1, "%s conversion %s took effect %d times", d.name, k, kc.Effective)
		}
		for k, kc := range pc.Adjustments {
			require.Equal(t, 1, kc.Effective, "%s adjustment %s took effect %d times (received %d)", d.name, k, kc.Effective, kc.Received)
		}
		wantRestated, wantRetracted := 0, 0
		if d.restates {
			wantRestated = n
		}
		if d.retracts {
			wantRetracted = n
		}
		require.Equal(t, wantRestated, pc.Restated, "%s restatements applied", d.name)
		require.Equal(t, wantRetracted, pc.Retracted, "%s retractions applied", d.name)
		require.Len(t, pc.Adjustments, wantRestated+wantRetracted, "%s adjustment keys", d.name)
		fmt.Fprintf(&table, "%-14s %-10s %11d %11d %11d %10d %13d %8d %8d\n", d.name, d.platform, pc.AcceptedUnique, pc.Restated, pc.Retracted,
			pc.Duplicates, pc.AdjustmentDuplicates, pc.Faulted, pc.Requests)
	}

	// The report: adjustments a platform cannot make are counted not_supported, per destination.
	rep, err := report.Build(ctx, st, report.Options{Since: now.Add(-24 * time.Hour), Until: time.Now().Add(time.Hour)})
	require.NoError(t, err)
	notSupported := map[string]int{}
	for _, c := range rep.Conversions {
		notSupported[c.Destination] += c.Total.NotSupported
	}
	fmt.Fprintf(&table, "report not_supported:")
	names := make([]string, 0, len(lifecycleDests))
	for _, d := range lifecycleDests {
		require.Equal(t, d.notSupportedPerDeals*n, notSupported[d.name], "%s not_supported", d.name)
		names = append(names, fmt.Sprintf(" %s %d", d.name, notSupported[d.name]))
	}
	sort.Strings(names)
	table.WriteString(strings.Join(names, ","))
	t.Logf("sandbox counts after won → restated → lost for %d deals, a SIGKILL mid-run and a replay of %d messages:%s", n, sum.Read, table.String())
}

func dealOf(t *testing.T, objectID string) int {
	var i int
	_, err := fmt.Sscanf(objectID, "L-%d", &i)
	require.NoError(t, err)
	return i
}
