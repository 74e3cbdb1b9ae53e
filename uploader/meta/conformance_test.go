package meta_test

import (
	"net/http"
	"path/filepath"
	"strconv"
	"testing"
	"time"

	"github.com/closedloop/closedloop/store"
	"github.com/closedloop/closedloop/uploader"
	"github.com/closedloop/closedloop/uploader/meta"
	"github.com/closedloop/closedloop/uploader/platformtest"
	"github.com/closedloop/closedloop/uploader/sandbox/schema"
)

func graphErr(code, sub int, transient bool) string {
	return `{"error":{"message":"m","type":"OAuthException","code":` + strconv.Itoa(code) + `,"error_subcode":` + strconv.Itoa(sub) +
		`,"is_transient":` + map[bool]string{true: "true", false: "false"}[transient] + `,"fbtrace_id":"A1"}}`
}

func TestConformance(t *testing.T) {
	platformtest.Run(t, platformtest.Suite{
		Spec: meta.Spec(), Now: now,
		Config: func(url string) uploader.DestinationConfig { return config(url) },
		Rows:   func(time.Time) []store.Conversion { return rows(t) },
		Schema: schema.Meta, Root: "EventRequest",
		Golden: filepath.Join("..", "..", "testdata", "requests", "meta_events.json"), Update: *update,
		Window:     meta.MaxEventAge - meta.AgeMargin,
		DedupField: "event_id",
		Responses: []platformtest.Response{
			{Name: "events received", Status: 200, Body: `{"events_received":2,"fbtrace_id":"A1"}`, Want: uploader.ClassAccepted},
			{Name: "invalid parameter: an event of the batch", Status: 400, Body: graphErr(100, 2804003, false), Want: uploader.ClassBatchRejected},
			{Name: "token expired", Status: 400, Body: graphErr(190, 463, false), Want: uploader.ClassSetup},
			{Name: "auth error inside a 5xx", Status: 500, Body: graphErr(190, 0, false), Want: uploader.ClassSetup},
			{Name: "throttled", Status: 400, Body: graphErr(4, 0, false), Want: uploader.ClassTransient, RetryAfter: 5 * time.Minute},
			{Name: "documented transient", Status: 400, Body: graphErr(2, 0, true), Want: uploader.ClassTransient},
			{Name: "a code this package does not list", Status: 400, Body: graphErr(2388099, 0, false), Want: uploader.ClassUnknown},
			{Name: "429 Retry-After seconds", Status: 429, Header: platformtest.RetryAfterSeconds(30), Body: "", Want: uploader.ClassTransient, RetryAfter: 30 * time.Second},
			{Name: "503 Retry-After HTTP date", Status: 503, Header: platformtest.RetryAfterDate(2 * time.Minute), Body: "", Want: uploader.ClassTransient, RetryAfter: 2 * time.Minute},
			{Name: "401 without a body", Status: http.StatusUnauthorized, Body: "", Want: uploader.ClassSetup},
		},
	})
}
