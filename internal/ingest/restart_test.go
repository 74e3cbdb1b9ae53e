package ingest

import (
	"bytes"
	"context"
	"fmt"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
)

// privateBroker starts a Kafka broker of the test's own with scripts/kafka.sh (state in a
// temp dir), so it can be restarted without disturbing the shared one; it returns the
// brokers and a restart function. The broker is stopped when the test ends.
func privateBroker(t *testing.T) ([]string, func(ctx context.Context) error) {
	t.Helper()
	_, file, _, _ := runtime.Caller(0)
	script := filepath.Join(filepath.Dir(file), "..", "..", "scripts", "kafka.sh")
	dir := t.TempDir()
	run := func(ctx context.Context, verb string) (string, error) {
		cmd := exec.CommandContext(ctx, script, verb)
		cmd.Env = append(os.Environ(), "CLOSEDLOOP_KAFKA_DIR="+filepath.Join(dir, "kafka"))
		var stderr bytes.Buffer
		cmd.Stderr = &stderr
		out, err := cmd.Output()
		if err != nil {
			return "", fmt.Errorf("kafka.sh %s: %w\n%s", verb, err, stderr.String())
		}
		return strings.TrimSpace(string(out)), nil
	}
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	line, err := run(ctx, "start")
	require.NoError(t, err)
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
		defer cancel()
		if _, err := run(ctx, "stop"); err != nil {
			t.Errorf("%v", err)
		}
	})
	_, v, ok := strings.Cut(line, "=")
	require.True(t, ok, line)
	return strings.Split(v, ","), func(ctx context.Context) error { _, err := run(ctx, "restart"); return err }
}

// TestBrokerRestartUnderLoad: signed requests flow from 8 clients while the broker is
// restarted. Every request answered 2xx is on the topic (counted by record); every other
// one got a non-2xx answer (503 while the broker was away).
func TestBrokerRestartUnderLoad(t *testing.T) {
	if testing.Short() {
		t.Skip("restarts a broker of its own")
	}
	t.Parallel()
	brokers, restart := privateBroker(t)
	ts := setup(t, brokers, func(c *Config) { c.PublishTimeout = 2 * time.Second })
	src := ts.sources["canonical"]

	ctx, cancel := context.WithTimeout(context.Background(), 4*time.Minute)
	defer cancel()
	var (
		mu       sync.Mutex
		accepted = map[string]bool{}
		others   = map[int]int{}
		next     atomic.Int64
		okCount  atomic.Int64
		stop     atomic.Bool
		wg       sync.WaitGroup
	)
	client := &http.Client{Timeout: 20 * time.Second}
	for w := 0; w < 8; w++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for !stop.Load() && ctx.Err() == nil && next.Load() < 20000 {
				id := fmt.Sprintf("R-%d", next.Add(1))
				body := []byte(`{"source":"relay","object_type":"deal","object_id":"` + id + `","stage":"closed-won","status":"won","occurred_at":"2024-05-01T10:00:00Z"}`)
				h, _ := Sign(src, http.MethodPost, body, time.Now())
				req, _ := http.NewRequestWithContext(ctx, http.MethodPost, ts.url+src.Path, bytes.NewReader(body))
				req.Header = h
				resp, err := client.Do(req)
				code := 0
				if err == nil {
					code = resp.StatusCode
					resp.Body.Close()
				}
				mu.Lock()
				if code >= 200 && code < 300 {
					accepted["relay:deal:"+id] = true
					okCount.Add(1)
				} else {
					others[code]++
				}
				mu.Unlock()
			}
		}()
	}
	waitFor := func(n int64) {
		for okCount.Load() < n && ctx.Err() == nil {
			t := time.NewTimer(20 * time.Millisecond)
			select {
			case <-ctx.Done():
			case <-t.C:
			}
		}
	}
	waitFor(200)
	before := okCount.Load()
	t.Log("restarting the broker under load")
	require.NoError(t, restart(ctx))
	waitFor(before + 200)
	stop.Store(true)
	wg.Wait()
	require.NoError(t, ctx.Err())

	n := endOffsets(t, brokers, ts.topic)
	onTopic := map[string]bool{}
	for _, m := range readAll(t, brokers, ts.topic, int(n)) {
		onTopic[string(m.Key)] = true
	}
	missing := 0
	for k := range accepted {
		if !onTopic[k] {
			missing++
		}
	}
	t.Logf("%d requests: %d answered 2xx, others by status %v; %d messages on the topic", next.Load(), len(accepted), others, n)
	require.Zero(t, missing, "requests answered 2xx but not on the topic")
	require.GreaterOrEqual(t, len(accepted), 400)
	require.NotContains(t, others, 0, "a request got no answer")
}
