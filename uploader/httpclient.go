package uploader

import (
	"bytes"
	"context"
	"fmt"
	"io"
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
)

// maxResponseBody bounds how much of a response is read into memory.
const maxResponseBody = 16 << 20

// newHTTPClient builds the retrying client of one destination. The rate limiter is waited on
// before the first attempt (by the caller) and before every retry (PrepareRetry), outside
// the per-attempt timeout.
func newHTTPClient(name string, timeout time.Duration, o Options, lim waiter, log *zap.Logger, m *Metrics) *retryablehttp.Client {
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

type peekKey struct{}

// withPeek attaches the classifier checkRetry consults before retrying a response.
func withPeek(ctx context.Context, classify func(*http.Response, []byte) error) context.Context {
	return context.WithValue(ctx, peekKey{}, classify)
}

// checkRetry retries network errors, 408, 429 and 5xx (but 501), unless the server asks for
// a Retry-After longer than maxWait (that wait is persisted on the rows instead of spent
// holding a lease), or the request's classifier reads the body as something a retry cannot
// fix (a setup error inside a 5xx, a documented rejection): the body is read and classified
// before any retry.
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
		retry := false
		switch {
		case code == http.StatusTooManyRequests || code == http.StatusServiceUnavailable:
			if d, ok := RetryAfter(resp.Header, time.Now()); ok && d > maxWait {
				return false, nil
			}
			retry = true
		case code == http.StatusRequestTimeout:
			retry = true
		case code >= 500 && code != http.StatusNotImplemented:
			retry = true
		}
		if !retry {
			return false, nil
		}
		if classify, ok := ctx.Value(peekKey{}).(func(*http.Response, []byte) error); ok {
			body, rerr := io.ReadAll(io.LimitReader(resp.Body, maxResponseBody))
			_ = resp.Body.Close()
			resp.Body = io.NopCloser(bytes.NewReader(body))
			if rerr != nil {
				return true, nil
			}
			if cerr := classify(resp, body); cerr != nil {
				switch AsError(cerr).Class {
				case ClassTransient, ClassUnknown:
				default:
					return false, nil
				}
			}
		}
		return true, nil
	}
}

// backoff waits what Retry-After says on 429/503, else min·2^attempt capped at max with
// jitter in [d/2, d].
func backoff(spent counter) retryablehttp.Backoff {
	return func(lo, hi time.Duration, attempt int, resp *http.Response) time.Duration {
		var d time.Duration
		if resp != nil && (resp.StatusCode == http.StatusTooManyRequests || resp.StatusCode == http.StatusServiceUnavailable) {
			if ra, ok := RetryAfter(resp.Header, time.Now()); ok {
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

// RetryAfter reads a Retry-After header in either of its forms (RFC 9110 10.2.3): delay
// seconds, or an HTTP date (relative to now). ok is false when the header is absent or
// unreadable; a date in the past gives 0. The one parser of the header: platform packages
// call it too.
func RetryAfter(h http.Header, now time.Time) (time.Duration, bool) {
	v := strings.TrimSpace(h.Get("Retry-After"))
	if v == "" {
		return 0, false
	}
	if s, err := strconv.ParseInt(v, 10, 64); err == nil {
		if s < 0 {
			return 0, false
		}
		return time.Duration(s) * time.Second, true
	}
	t, err := http.ParseTime(v)
	if err != nil {
		return 0, false
	}
	return max(t.Sub(now), 0), true
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
