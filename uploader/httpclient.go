package uploader

import (
	"context"
	"fmt"
	"math"
	"math/rand/v2"
	"net/http"
	"regexp"
	"strconv"
	"strings"
	"time"

	"github.com/hashicorp/go-cleanhttp"
	"github.com/hashicorp/go-retryablehttp"
	"go.uber.org/zap"
	"golang.org/x/time/rate"
)

// maxResponseBody bounds how much of a response is read into memory.
const maxResponseBody = 16 << 20

// newHTTPClient builds the retrying client of one destination. The rate limiter is waited on
// before the first attempt (by the caller) and before every retry (PrepareRetry), outside
// the per-attempt timeout.
func newHTTPClient(name string, timeout time.Duration, o Options, lim *rate.Limiter, log *zap.Logger, m *Metrics) *retryablehttp.Client {
	tr := o.Transport
	if tr == nil {
		tr = cleanhttp.DefaultPooledTransport()
	}
	return &retryablehttp.Client{
		HTTPClient:   &http.Client{Transport: tr, Timeout: timeout},
		Logger:       zapLeveled{log: log.WithOptions(zap.AddCallerSkip(1))},
		RetryWaitMin: o.RetryWaitMin,
		RetryWaitMax: o.RetryWaitMax,
		RetryMax:     o.RetryMax,
		CheckRetry:   checkRetry(o.RetryWaitMax, m.Throttled.WithLabelValues(name)),
		Backoff:      backoff(m.Backoff.WithLabelValues(name)),
		ErrorHandler: retryablehttp.PassthroughErrorHandler,
		PrepareRetry: func(req *http.Request) error { return lim.Wait(req.Context()) },
	}
}

type counter interface{ Add(float64) }

// checkRetry retries network errors, 408, 429 and 5xx (but 501), unless the server asks for
// a Retry-After longer than maxWait: that wait is persisted on the rows instead of spent
// holding a lease.
func checkRetry(maxWait time.Duration, throttled counter) retryablehttp.CheckRetry {
	return func(ctx context.Context, resp *http.Response, err error) (bool, error) {
		if ctx.Err() != nil {
			return false, ctx.Err()
		}
		if err != nil {
			// The default policy knows which transport errors are not worth retrying
			// (bad scheme, too many redirects, untrusted certificate).
			return retryablehttp.DefaultRetryPolicy(ctx, resp, err)
		}
		code := resp.StatusCode
		if code == http.StatusTooManyRequests {
			throttled.Add(1)
		}
		switch {
		case code == http.StatusTooManyRequests || code == http.StatusServiceUnavailable:
			if d, ok := retryAfter(resp); ok && d > maxWait {
				return false, nil
			}
			return true, nil
		case code == http.StatusRequestTimeout:
			return true, nil
		case code >= 500 && code != http.StatusNotImplemented:
			return true, nil
		}
		return false, nil
	}
}

// backoff waits what Retry-After says on 429/503, else min·2^attempt capped at max with
// jitter in [d/2, d].
func backoff(spent counter) retryablehttp.Backoff {
	return func(lo, hi time.Duration, attempt int, resp *http.Response) time.Duration {
		var d time.Duration
		if resp != nil && (resp.StatusCode == http.StatusTooManyRequests || resp.StatusCode == http.StatusServiceUnavailable) {
			if ra, ok := retryAfter(resp); ok {
				d = min(ra, hi)
			}
		}
		if d == 0 {
			d = jitter(expBackoff(lo, hi, attempt))
		}
		spent.Add(d.Seconds())
		return d
	}
}

// expBackoff returns base·2^n capped at limit.
func expBackoff(base, limit time.Duration, n int) time.Duration {
	f := float64(base) * math.Pow(2, float64(n))
	if f >= float64(limit) || math.IsInf(f, 0) || math.IsNaN(f) {
		return limit
	}
	return time.Duration(f)
}

// jitter returns a uniformly random duration in [d/2, d].
func jitter(d time.Duration) time.Duration {
	if d <= 1 {
		return d
	}
	half := d / 2
	return half + rand.N(d-half+1)
}

// retryAfter parses the Retry-After header (seconds or HTTP date).
func retryAfter(resp *http.Response) (time.Duration, bool) {
	if resp == nil {
		return 0, false
	}
	h := strings.TrimSpace(resp.Header.Get("Retry-After"))
	if h == "" {
		return 0, false
	}
	if s, err := strconv.ParseInt(h, 10, 64); err == nil {
		if s < 0 {
			return 0, false
		}
		return time.Duration(s) * time.Second, true
	}
	t, err := http.ParseTime(h)
	if err != nil {
		return 0, false
	}
	return max(time.Until(t), 0), true
}

// zapLeveled adapts zap to retryablehttp.LeveledLogger. Every value is passed through
// redact, so neither query strings (Meta's access_token) nor bodies reach a log line;
// retryablehttp itself never logs headers or bodies.
type zapLeveled struct{ log *zap.Logger }

var _ retryablehttp.LeveledLogger = zapLeveled{}

func (l zapLeveled) Error(msg string, kv ...any) { l.log.Warn(msg, kvFields(kv)...) }
func (l zapLeveled) Warn(msg string, kv ...any)  { l.log.Warn(msg, kvFields(kv)...) }
func (l zapLeveled) Info(msg string, kv ...any)  { l.log.Info(msg, kvFields(kv)...) }
func (l zapLeveled) Debug(msg string, kv ...any) { l.log.Debug(msg, kvFields(kv)...) }

func kvFields(kv []any) []zap.Field {
	fs := make([]zap.Field, 0, len(kv)/2)
	for i := 0; i+1 < len(kv); i += 2 {
		key := fmt.Sprint(kv[i])
		switch v := kv[i+1].(type) {
		case time.Duration:
			fs = append(fs, zap.Duration(key, v))
		case int:
			fs = append(fs, zap.Int(key, v))
		case error:
			fs = append(fs, zap.String(key, redact(v.Error())))
		default:
			fs = append(fs, zap.String(key, redact(fmt.Sprint(v))))
		}
	}
	return fs
}

var (
	urlQuery    = regexp.MustCompile(`(?i)(https?://[^\s?#"']*)\?[^\s#"']*`)
	secretParam = regexp.MustCompile(`(?i)((?:access_token|refresh_token|client_secret|token)=)[^&\s"']*`)
)

// redact removes URL query strings and token parameters from s.
func redact(s string) string {
	s = urlQuery.ReplaceAllString(s, "$1?REDACTED")
	return secretParam.ReplaceAllString(s, "${1}REDACTED")
}

// errText is err's message, redacted, for logs and row details.
func errText(err error) string {
	if err == nil {
		return ""
	}
	return redact(err.Error())
}
