package tiktok_test

import (
	"path/filepath"
	"strconv"
	"testing"
	"time"

	"github.com/closedloop/closedloop/store"
	"github.com/closedloop/closedloop/uploader"
	"github.com/closedloop/closedloop/uploader/platformtest"
	"github.com/closedloop/closedloop/uploader/sandbox/schema"
	"github.com/closedloop/closedloop/uploader/tiktok"
)

func envelope(code int) string {
	return `{"code":` + strconv.Itoa(code) + `,"message":"m","request_id":"r1"}`
}

func TestConformance(t *testing.T) {
	platformtest.Run(t, platformtest.Suite{
		Spec: tiktok.Spec(), Now: now,
		Config: func(url string) uploader.DestinationConfig { return config(url) },
		Rows:   func(time.Time) []store.Conversion { return rows(t) },
		Schema: schema.TikTok, Root: "EventTrackRequest",
		Golden: filepath.Join("..", "..", "testdata", "requests", "tiktok_event_track.json"), Update: *update,
		DedupField: "event_id", // TikTok documents no CRM age limit: no window case
		Responses: []platformtest.Response{
			{Name: "ok", Status: 200, Body: envelope(0), Want: uploader.ClassAccepted},
			{Name: "partial success (per-event detail undocumented)", Status: 200, Body: envelope(20001), Want: uploader.ClassAccepted},
			{Name: "invalid parameter names an event", Status: 200, Body: envelope(40002), Want: uploader.ClassBatchRejected},
			{Name: "token expired", Status: 200, Body: envelope(40102), Want: uploader.ClassSetup},
			{Name: "token invalid inside a 5xx", Status: 500, Body: envelope(40105), Want: uploader.ClassSetup},
			{Name: "throttled in a 200 body", Status: 200, Body: envelope(40100), Want: uploader.ClassTransient, RetryAfter: time.Minute},
			{Name: "server error", Status: 200, Body: envelope(50000), Want: uploader.ClassTransient},
			{Name: "a code this package does not list", Status: 200, Body: envelope(40999), Want: uploader.ClassUnknown},
			{Name: "429 Retry-After seconds", Status: 429, Header: platformtest.RetryAfterSeconds(20), Want: uploader.ClassTransient, RetryAfter: 20 * time.Second},
			{Name: "503 Retry-After HTTP date", Status: 503, Header: platformtest.RetryAfterDate(3 * time.Minute), Want: uploader.ClassTransient, RetryAfter: 3 * time.Minute},
		},
	})
}
