package demo

import (
	"bytes"
	"context"
	"io"
	"net/http"
	"os/exec"
	"regexp"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
	"go.uber.org/zap/zaptest"
)

// TestDemoMatchesKnownTruth runs `closedloop demo` in process: the real worker on the
// embedded broker, SQLite and the sandbox. The report must match the sample's truth and the
// sandbox's counts; while the worker runs, /readyz is ready, /metrics carries the pipeline's
// series, and the status page shown in a real headless browser agrees with the report.
func TestDemoMatchesKnownTruth(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 90*time.Second)
	defer cancel()
	var out bytes.Buffer
	inspected := false
	res, err := Run(ctx, Options{
		Out: &out, Log: zaptest.NewLogger(t),
		Inspect: func(ctx context.Context, in Inspection) {
			inspected = true
			checkReady(t, ctx, in.AdminAddr)
			checkMetrics(t, ctx, in.AdminAddr)
			checkStatusPage(t, ctx, in)
		},
	})
	require.NoError(t, err)
	require.True(t, inspected)
	require.Empty(t, res.Mismatches, "demo output:\n%s", out.String())
	require.Contains(t, out.String(), "Every count matches")
	for _, line := range strings.Split(out.String(), "\n") {
		require.LessOrEqual(t, len([]rune(line)), 100, "demo line too wide: %q", line)
	}
	for _, raw := range []string{"Ada.Lovelace@example.com", "ada.lovelace@example.com", "555-0101", "grace.hopper@example.com"} {
		require.NotContains(t, out.String(), raw)
	}
}

func get(t *testing.T, ctx context.Context, url string) (int, string) {
	t.Helper()
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
	require.NoError(t, err)
	resp, err := http.DefaultClient.Do(req)
	require.NoError(t, err)
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	require.NoError(t, err)
	return resp.StatusCode, string(b)
}

func checkReady(t *testing.T, ctx context.Context, addr string) {
	code, body := get(t, ctx, "http://"+addr+"/readyz")
	require.Equal(t, http.StatusOK, code, body)
	code, _ = get(t, ctx, "http://"+addr+"/healthz")
	require.Equal(t, http.StatusOK, code)
}

func checkMetrics(t *testing.T, ctx context.Context, addr string) {
	code, body := get(t, ctx, "http://"+addr+"/metrics")
	require.Equal(t, http.StatusOK, code)
	for _, series := range []string{
		"closedloop_messages_consumed_total",
		"closedloop_messages_dead_lettered_total",
		"closedloop_upload_requests_total",
		"closedloop_upload_batch_size",
		"closedloop_upload_duration_seconds",
		"closedloop_destination_paused",
		"closedloop_consumer_lag",
		"closedloop_oldest_awaiting_conversion_age_seconds",
	} {
		require.Contains(t, body, series)
	}
}

// checkStatusPage renders / in headless Chromium and compares the numbers it shows with
// the report for the same 24 hours.
func checkStatusPage(t *testing.T, ctx context.Context, in Inspection) {
	addr := in.AdminAddr
	chromium, err := exec.LookPath("chromium")
	if err != nil {
		t.Fatalf("chromium not found: run `make test` (scripts/ensure-chromium.sh installs Debian's chromium) or apt-get install chromium")
	}
	dir := t.TempDir()
	cctx, cancel := context.WithTimeout(ctx, 30*time.Second)
	defer cancel()
	cmd := exec.CommandContext(cctx, chromium, "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic",
		"--no-first-run", "--disable-background-networking", "--disable-component-update", "--disable-sync",
		"--user-data-dir="+dir, "--dump-dom", "http://"+addr+"/")
	cmd.Stderr = io.Discard
	dom, err := cmd.Output()
	require.NoError(t, err, "chromium --dump-dom")
	page := string(dom)

	// The page's window is the 24 hours ending at the next full hour.
	until := time.Now().UTC().Truncate(time.Hour).Add(time.Hour)
	rep, err := in.Report(ctx, until.Add(-24*time.Hour), until)
	require.NoError(t, err)
	want := map[string][3]int{}
	for _, c := range rep.Conversions {
		w := want[c.Destination]
		w[0] += c.Total.Accepted
		w[1] += c.Total.Rejected
		w[2] += c.Total.Expired
		want[c.Destination] = w
	}
	require.NotEmpty(t, want)
	for dest, w := range want {
		row := regexp.MustCompile(`(?s)data-destination="` + regexp.QuoteMeta(dest) + `".*?</tr>`).FindString(page)
		require.NotEmpty(t, row, "destination %s not on the page", dest)
		require.Contains(t, row, `data-health="healthy"`)
		for i, attr := range []string{"data-accepted", "data-rejected", "data-expired"} {
			m := regexp.MustCompile(attr + `="(\d+)"`).FindStringSubmatch(row)
			require.Len(t, m, 2, "%s %s", dest, attr)
			n, _ := strconv.Atoi(m[1])
			require.Equal(t, w[i], n, "%s %s on the page vs the report", dest, attr)
		}
	}
	require.Regexp(t, `id="mapping-version">[0-9a-f]{6,}<`, page)
}
