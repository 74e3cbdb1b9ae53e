// Package platformtest is the conformance suite every platform package runs with its own
// cases, in the spirit of river's riverdrivertest: what the dispatcher, the join and the
// report rely on from a platform, checked the same way for each.
//
// A platform's test calls Run with a Suite: a config pointed at the sandbox, sendable rows,
// its schema facts and golden body, its window, its dedup field and a table of responses
// (status × body → class). Run adds the cases every platform must pass whatever its table
// says: an unrecognised answer never rejects a row, a setup error inside a 5xx is not
// retried as transient, Retry-After is read in both its forms.
//
// Depends on: uploader (the seam), uploader/sandbox (the emulated API), store.
package platformtest

import (
	"bytes"
	"context"
	"encoding/json"
	"io"
	"net/http"
	"net/http/httptest"
	"os"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
	"go.uber.org/zap/zaptest"

	"github.com/closedloop/closedloop/store"
	"github.com/closedloop/closedloop/uploader"
	"github.com/closedloop/closedloop/uploader/platforms"
	"github.com/closedloop/closedloop/uploader/sandbox"
	"github.com/closedloop/closedloop/uploader/sandbox/schema"
)

// Suite is one platform's cases.
type Suite struct {
	Spec uploader.Spec
	// Now is the platforms' clock for the whole suite (fixed, so golden bodies are stable).
	Now time.Time
	// Config returns a valid destination of the platform whose API root (and token
	// endpoint) is baseURL.
	Config func(baseURL string) uploader.DestinationConfig
	// Rows returns at least two rows that pass Check at now and are accepted by the sandbox.
	Rows func(now time.Time) []store.Conversion
	// Schema and Root name the schema facts the request body must fit.
	Schema, Root string
	// Golden is the path of the golden request body of Rows (pretty JSON); Update rewrites it.
	Golden string
	Update bool
	// Window is the oldest event age Check accepts (0: the platform has none); Check must
	// accept a row a minute inside it and expire one a minute outside. WindowOf says which
	// time the window is measured on: the event time (default) or a click's.
	Window time.Duration
	// DedupField is the JSON field of each event that carries the conversion key, the
	// platform's own dedup key (event_id, transactionId, orderId). Empty for a platform
	// whose dedup key is not ours (Microsoft: MicrosoftClickId + ConversionTime): only the
	// sent-twice-counted-once half of the case runs.
	DedupField string
	// Responses is the platform's table of answers (status × body → class).
	Responses []Response
	// SandboxPlatform is the sandbox's counter name; default Spec.Name.
	SandboxPlatform string
}

// Response is one row of the response table.
type Response struct {
	Name   string
	Status int
	Header http.Header
	Body   string
	// Want is the class of the answer: the request-level error's class, or the class of
	// every row when the platform answered per row.
	Want uploader.Class
	// RetryAfter, when set, is the wait the answer must carry (±2s).
	RetryAfter time.Duration
}

// Run runs the suite.
func Run(t *testing.T, s Suite) {
	t.Helper()
	now := s.Now
	sb := platforms.NewSandbox(sandbox.Options{Now: func() time.Time { return now }}, zaptest.NewLogger(t))
	srv := httptest.NewServer(sb)
	t.Cleanup(srv.Close)
	cfg := s.Config(srv.URL)
	p, err := s.Spec.New("conformance", cfg.WithDefaults(s.Spec), zaptest.NewLogger(t))
	require.NoError(t, err)
	rows := s.Rows(now)
	require.GreaterOrEqual(t, len(rows), 2, "Suite.Rows must give at least two rows")
	counter := s.SandboxPlatform
	if counter == "" {
		counter = s.Spec.Name
	}

	t.Run("spec", func(t *testing.T) {
		require.Equal(t, s.Spec.MaxBatch, p.MaxBatch(), "MaxBatch is the Spec's limit unless batch_size is smaller")
		if len(s.Spec.Versions) > 0 {
			require.Equal(t, s.Spec.Versions[0].Name, cfg.WithDefaults(s.Spec).APIVersion, "the default version is the newest supported")
		}
	})

	t.Run("golden body fits the schema facts", func(t *testing.T) {
		body := requestBody(t, p, rows, now)
		sc, err := schema.Load(s.Schema)
		require.NoError(t, err)
		require.Empty(t, sc.ValidateJSON(s.Root, body))
		var pretty bytes.Buffer
		require.NoError(t, json.Indent(&pretty, body, "", "  "))
		pretty.WriteByte('\n')
		if s.Update {
			require.NoError(t, os.WriteFile(s.Golden, pretty.Bytes(), 0o644))
		}
		want, err := os.ReadFile(s.Golden)
		require.NoError(t, err)
		require.Equal(t, string(want), pretty.String())
	})

	t.Run("dedup key is the conversion key", func(t *testing.T) {
		body := string(requestBody(t, p, rows, now))
		for _, r := range rows {
			if s.DedupField == "" {
				break
			}
			key := r.Key
			if r.Kind == store.KindRetraction {
				key = r.RetractsKey
			}
			require.Contains(t, body, `"`+s.DedupField+`":"`+key+`"`, "row %s", r.Key)
		}
		// Sent twice, counted once.
		for range 2 {
			res, err := send(t, p, rows, now)
			require.NoError(t, err)
			for _, r := range res {
				require.Contains(t, []uploader.Class{uploader.ClassAccepted, uploader.ClassSent}, r.Class, "%s: %s", r.Reason, r.Detail)
			}
		}
		c := sb.Counts()[counter]
		require.Equal(t, len(rows), c.AcceptedUnique, "the platform keeps one of each")
	})

	t.Run("batch maximum", func(t *testing.T) {
		full := make([]store.Conversion, s.Spec.MaxBatch+1)
		for i := range full {
			full[i] = rows[i%len(rows)]
			full[i].Key = rows[i%len(rows)].Key + "-" + strconv.Itoa(i)
		}
		_, err := p.BuildRequest(context.Background(), full[:s.Spec.MaxBatch], now)
		require.NoError(t, err, "a full batch builds")
		_, err = p.BuildRequest(context.Background(), full, now)
		require.Error(t, err, "one row over the maximum is refused before sending")
	})

	t.Run("identity usable agrees with Check", func(t *testing.T) {
		for _, r := range rows {
			require.True(t, s.Spec.Usable(r.Identity), "row %s", r.Key)
			require.Nil(t, p.Check(&r, now), "row %s", r.Key)
		}
		bare := rows[0]
		bare.Identity = store.Identity{}
		require.False(t, s.Spec.Usable(bare.Identity))
		e := p.Check(&bare, now)
		require.NotNil(t, e, "a row the join would keep waiting is never sent")
		require.Equal(t, uploader.ClassPermanent, e.Class)
	})

	t.Run("consent", func(t *testing.T) {
		denied := rows[0]
		denied.Identity.Consent.AdUserData = store.ConsentDenied
		e := p.Check(&denied, now)
		require.NotNil(t, e)
		require.Equal(t, uploader.ClassSkipped, e.Class)
		require.Equal(t, "consent_denied", e.Reason)
	})

	if s.Window > 0 {
		t.Run("window edges", func(t *testing.T) {
			inside := rows[0]
			inside.OccurredAt = now.Add(-s.Window + time.Minute)
			require.Nil(t, p.Check(&inside, now), "a minute inside the window")
			outside := rows[0]
			outside.OccurredAt = now.Add(-s.Window - time.Minute)
			e := p.Check(&outside, now)
			require.NotNil(t, e, "a minute outside the window")
			require.Equal(t, uploader.ClassExpired, e.Class)
		})
	}

	t.Run("responses", func(t *testing.T) {
		table := append(append([]Response{}, s.Responses...),
			Response{Name: "unrecognised status and body", Status: http.StatusTeapot, Body: "<html>no</html>", Want: uploader.ClassUnknown},
			Response{Name: "400 that is not the platform's error shape", Status: http.StatusBadRequest, Body: "<html>bad gateway page</html>", Want: uploader.ClassUnknown},
		)
		for _, tc := range table {
			t.Run(tc.Name, func(t *testing.T) {
				h := tc.Header
				if h == nil {
					h = http.Header{}
				}
				resp := &http.Response{StatusCode: tc.Status, Header: h, Body: io.NopCloser(strings.NewReader(tc.Body))}
				results, err := p.ParseResponse(resp, []byte(tc.Body), rows)
				var got uploader.Class
				var wait time.Duration
				if err != nil {
					e := uploader.AsError(err)
					got, wait = e.Class, e.RetryAfter
				} else {
					require.Len(t, results, len(rows))
					got, wait = results[0].Class, results[0].RetryAfter
				}
				require.Equal(t, tc.Want, got, "%d %s: %v", tc.Status, tc.Body, err)
				if tc.RetryAfter > 0 {
					require.InDelta(t, tc.RetryAfter.Seconds(), wait.Seconds(), 2, "Retry-After")
				}
				if got == uploader.ClassPermanent || got == uploader.ClassBatchRejected {
					require.NotContains(t, []string{"unrecognised status and body", "400 that is not the platform's error shape"}, tc.Name,
						"an answer the package does not recognise never rejects a row")
				}
			})
		}
	})
}

// RetryAfterDate is a Retry-After header in the HTTP-date form, d from now.
func RetryAfterDate(d time.Duration) http.Header {
	return http.Header{"Retry-After": {time.Now().Add(d).UTC().Format(http.TimeFormat)}}
}

// RetryAfterSeconds is a Retry-After header in the delay-seconds form.
func RetryAfterSeconds(s int) http.Header {
	return http.Header{"Retry-After": {strconv.Itoa(s)}}
}

func requestBody(t *testing.T, p uploader.Platform, rows []store.Conversion, now time.Time) []byte {
	t.Helper()
	req, err := p.BuildRequest(context.Background(), rows, now)
	require.NoError(t, err)
	body, err := io.ReadAll(req.Body)
	require.NoError(t, err)
	return body
}

func send(t *testing.T, p uploader.Platform, rows []store.Conversion, now time.Time) ([]uploader.RowResult, error) {
	t.Helper()
	req, err := p.BuildRequest(context.Background(), rows, now)
	require.NoError(t, err)
	resp, err := http.DefaultClient.Do(req)
	require.NoError(t, err)
	defer resp.Body.Close()
	body, err := io.ReadAll(resp.Body)
	require.NoError(t, err)
	return p.ParseResponse(resp, body, rows)
}
