package google_test

import (
	"net/http"
	"path/filepath"
	"strconv"
	"testing"
	"time"

	"github.com/closedloop/closedloop/store"
	"github.com/closedloop/closedloop/uploader"
	"github.com/closedloop/closedloop/uploader/google"
	"github.com/closedloop/closedloop/uploader/platformtest"
	"github.com/closedloop/closedloop/uploader/sandbox/schema"
)

func rpcErr(code int, status, reason string) string {
	return `{"error":{"code":` + strconv.Itoa(code) + `,"message":"m","status":"` + status + `","details":[{"@type":"type.googleapis.com/google.rpc.ErrorInfo","reason":"` + reason + `"}]}}`
}

// Google's window runs from the click to the conversion (click_window), not from the
// event to now: the package's own Check tests cover it, so these suites set no Window.
func TestConformanceDataManager(t *testing.T) {
	platformtest.Run(t, platformtest.Suite{
		Spec: google.DataManagerSpec(), Now: now,
		Config: func(url string) uploader.DestinationConfig { return baseConfig("google", url) },
		Rows:   func(time.Time) []store.Conversion { return rows(t) },
		Schema: schema.GoogleDataManager, Root: "IngestEventsRequest",
		Golden: filepath.Join("..", "..", "testdata", "requests", "google_datamanager_ingest.json"), Update: *update,
		DedupField: "transactionId",
		Responses: []platformtest.Response{
			{Name: "ingested", Status: 200, Body: `{"requestId":"r-1"}`, Want: uploader.ClassSent},
			{Name: "invalid argument names an event", Status: 400, Body: rpcErr(400, "INVALID_ARGUMENT", "INVALID_SHA256_FORMAT"), Want: uploader.ClassBatchRejected},
			{Name: "unknown destination", Status: 400, Body: rpcErr(400, "INVALID_ARGUMENT", "INVALID_DESTINATION"), Want: uploader.ClassSetup},
			{Name: "permission denied", Status: 403, Body: rpcErr(403, "PERMISSION_DENIED", "PERMISSION_DENIED"), Want: uploader.ClassSetup},
			{Name: "quota, Retry-After seconds", Status: 429, Header: platformtest.RetryAfterSeconds(40), Body: rpcErr(429, "RESOURCE_EXHAUSTED", "RATE_LIMIT_EXCEEDED"), Want: uploader.ClassTransient, RetryAfter: 40 * time.Second},
			{Name: "unavailable, Retry-After HTTP date", Status: 503, Header: platformtest.RetryAfterDate(90 * time.Second), Body: rpcErr(503, "UNAVAILABLE", "UNAVAILABLE"), Want: uploader.ClassTransient, RetryAfter: 90 * time.Second},
			{Name: "permission error inside a 5xx", Status: 500, Body: rpcErr(403, "PERMISSION_DENIED", "PERMISSION_DENIED"), Want: uploader.ClassSetup},
			// A 401 on a cached token: refreshed and resent at once (Refreshed), not a pause.
			{Name: "expired token", Status: http.StatusUnauthorized, Body: rpcErr(401, "UNAUTHENTICATED", "ACCESS_TOKEN_EXPIRED"), Want: uploader.ClassTransient},
		},
	})
}

func TestConformanceAds(t *testing.T) {
	adsFailure := func(status int, typ, enum string) string {
		return `{"error":{"code":` + strconv.Itoa(status) + `,"message":"m","status":"INVALID_ARGUMENT","details":[{"@type":"type.googleapis.com/google.ads.googleads.v25.errors.GoogleAdsFailure","errors":[{"errorCode":{"` + typ + `":"` + enum + `"},"message":"m"}]}]}}`
	}
	platformtest.Run(t, platformtest.Suite{
		Spec: google.AdsSpec(), Now: now,
		Config: func(url string) uploader.DestinationConfig { return baseConfig("google_ads", url) },
		Rows:   func(time.Time) []store.Conversion { return rows(t) },
		Schema: schema.GoogleAds, Root: "UploadClickConversionsRequest",
		Golden: filepath.Join("..", "..", "testdata", "requests", "google_ads_upload_click_conversions.json"), Update: *update,
		DedupField:      "orderId",
		SandboxPlatform: "google_ads",
		Responses: []platformtest.Response{
			{Name: "uploaded", Status: 200, Body: `{"results":[{},{},{}]}`, Want: uploader.ClassAccepted},
			{Name: "an unknown enum names a row", Status: 400, Body: adsFailure(400, "conversionUploadError", "A_FUTURE_ENUM"), Want: uploader.ClassBatchRejected},
			{Name: "not allowlisted", Status: 400, Body: adsFailure(400, "notAllowlistedError", "CUSTOMER_NOT_ALLOWLISTED_FOR_THIS_FEATURE"), Want: uploader.ClassSetup},
			{Name: "daily quota used up", Status: 429, Body: adsFailure(429, "quotaError", "RESOURCE_EXHAUSTED"), Want: uploader.ClassSetup},
			{Name: "temporarily exhausted, Retry-After seconds", Status: 429, Header: platformtest.RetryAfterSeconds(60), Body: adsFailure(429, "quotaError", "RESOURCE_TEMPORARILY_EXHAUSTED"), Want: uploader.ClassTransient, RetryAfter: time.Minute},
			{Name: "internal error, Retry-After HTTP date", Status: 503, Header: platformtest.RetryAfterDate(2 * time.Minute), Body: rpcErr(503, "UNAVAILABLE", "UNAVAILABLE"), Want: uploader.ClassTransient, RetryAfter: 2 * time.Minute},
			{Name: "authorization error inside a 5xx", Status: 500, Body: adsFailure(500, "authorizationError", "USER_PERMISSION_DENIED"), Want: uploader.ClassSetup},
		},
	})
}
