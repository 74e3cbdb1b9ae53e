package join

import (
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/closedloop/closedloop/internal/pii"
	"github.com/closedloop/closedloop/store"
)

var t0 = time.Date(2026, 10, 1, 12, 0, 0, 0, time.UTC)

func at(h int) time.Time { return t0.Add(time.Duration(h) * time.Hour) }

func TestResolveClicks(t *testing.T) {
	t.Parallel()
	deal := store.Identity{SubjectKey: "hubspot:deal:1", UpdatedAt: at(1), Clicks: []store.Click{
		{Type: "gclid", ID: "g-old", At: at(-48)},
		{Type: "gclid", ID: "g-after", At: at(30)}, // after the conversion: never joined
		{Type: "fbclid", ID: "f-undated"},
	}}
	contact := store.Identity{SubjectKey: "hubspot:contact:9", UpdatedAt: at(2), Clicks: []store.Click{
		{Type: "gclid", ID: "g-new", At: at(-2)},
		{Type: "fbclid", ID: "f-dated", At: at(-100)},
		{Type: "ttclid", ID: "t-exact", At: at(24)},
	}}
	got := Resolve([]store.Identity{deal, contact}, at(24))
	require.Equal(t, []store.Click{
		{Type: "fbclid", ID: "f-dated", At: at(-100)},
		{Type: "gclid", ID: "g-new", At: at(-2)},
		{Type: "ttclid", ID: "t-exact", At: at(24)},
	}, got.Clicks)
	require.Equal(t, "hubspot:deal:1,hubspot:contact:9", got.SubjectKey)
	require.Equal(t, at(2), got.UpdatedAt)

	early := Resolve([]store.Identity{deal, contact}, at(-10))
	require.Equal(t, []store.Click{
		{Type: "fbclid", ID: "f-dated", At: at(-100)},
		{Type: "gclid", ID: "g-old", At: at(-48)},
	}, early.Clicks)
}

func TestResolveIdentifiersPerFieldFromNewest(t *testing.T) {
	t.Parallel()
	older := store.Identity{SubjectKey: "a", UpdatedAt: at(1), IP: "192.0.2.1", LeadID: "111",
		Identifiers: pii.Set{"email": "e-old", "email/google": "eg-old", "phone/e164": "p-old", "phone/digits": "pd-old"}}
	newer := store.Identity{SubjectKey: "b", UpdatedAt: at(5), UserAgent: "ua-new",
		Identifiers: pii.Set{"email": "e-new", "email/google": "eg-new", "external_id": "x"}}
	got := Resolve([]store.Identity{older, newer}, at(10))
	require.Equal(t, pii.Set{
		"email": "e-new", "email/google": "eg-new", // both variants from the same capture
		"phone/e164": "p-old", "phone/digits": "pd-old",
		"external_id": "x",
	}, got.Identifiers)
	require.Equal(t, "192.0.2.1", got.IP, "latest non-empty")
	require.Equal(t, "ua-new", got.UserAgent)
	require.Equal(t, "111", got.LeadID)
}

func TestResolveTieGoesToFirst(t *testing.T) {
	t.Parallel()
	a := store.Identity{SubjectKey: "a", UpdatedAt: at(1), IP: "192.0.2.1", Identifiers: pii.Set{"email": "ea"}}
	b := store.Identity{SubjectKey: "b", UpdatedAt: at(1), IP: "192.0.2.2", Identifiers: pii.Set{"email": "eb"}}
	got := Resolve([]store.Identity{a, b}, at(2))
	require.Equal(t, "192.0.2.1", got.IP)
	require.Equal(t, "ea", got.Identifiers["email"])
}

func TestResolveConsentMostRecentlyCaptured(t *testing.T) {
	t.Parallel()
	granted := store.Consent{AdUserData: store.ConsentGranted, AdPersonalization: store.ConsentGranted, CapturedAt: at(-5)}
	denied := store.Consent{AdUserData: store.ConsentDenied, AdPersonalization: store.ConsentDenied, CapturedAt: at(40)}
	tests := []struct {
		name string
		ids  []store.Identity
		want store.Consent
	}{
		{"none", []store.Identity{{SubjectKey: "a"}}, store.Consent{}},
		{"one", []store.Identity{{Consent: granted}}, granted},
		// Captured after the conversion, updated earlier: the withdrawal still wins.
		{"later denial wins", []store.Identity{{UpdatedAt: at(50), Consent: granted}, {UpdatedAt: at(1), Consent: denied}}, denied},
		{"empty consent ignored", []store.Identity{{Consent: granted}, {UpdatedAt: at(60)}}, granted},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			require.Equal(t, tt.want, Resolve(tt.ids, at(0)).Consent)
		})
	}
}

func TestResolveEmpty(t *testing.T) {
	t.Parallel()
	require.Equal(t, store.Identity{}, Resolve(nil, at(0)))
}

func TestUsable(t *testing.T) {
	t.Parallel()
	click := func(typ string) store.Identity {
		return store.Identity{Clicks: []store.Click{{Type: typ, ID: "x", At: at(0)}}}
	}
	ids := func(s pii.Set) store.Identity { return store.Identity{Identifiers: s} }
	tests := []struct {
		name     string
		id       store.Identity
		platform string
		want     bool
	}{
		{"nothing google", store.Identity{}, "google", false},
		{"gclid google", click("gclid"), "google", true},
		{"wbraid google ads", click("wbraid"), "google_ads", true},
		{"fbclid google", click("fbclid"), "google", false},
		{"google email variant", ids(pii.Set{"email/google": "h"}), "google", true},
		{"only meta phone form for google", ids(pii.Set{"phone/digits": "h"}), "google", false},
		{"meta lead id", store.Identity{LeadID: "123456789012345"}, "meta", true},
		{"meta fbp", click("fbp"), "meta", true},
		{"meta phone digits", ids(pii.Set{"phone/digits": "h"}), "meta", true},
		{"meta external id", ids(pii.Set{"external_id": "h"}), "meta", true},
		{"meta gclid only", click("gclid"), "meta", false},
		{"meta country only", ids(pii.Set{"country": "h", "country/code": "US"}), "meta", false},
		{"tiktok ttclid", click("ttclid"), "tiktok", true},
		{"tiktok meta lead id only", store.Identity{LeadID: "1"}, "tiktok", false},
		{"tiktok email", ids(pii.Set{"email": "h"}), "tiktok", true},
		// The platform's own decision, the same its Check applies (issue 12: these two
		// passed the join and were then refused no_identifier).
		{"meta bare fbclid without its click time", store.Identity{Clicks: []store.Click{{Type: "fbclid", ID: "x"}}}, "meta", false},
		{"meta non-Meta lead id", store.Identity{LeadID: "00Q5e000001"}, "meta", false},
		{"meta fbclid with its click time", click("fbclid"), "meta", true},
		{"unknown platform any click", click("gclid"), "other", true},
		{"unknown platform nothing", store.Identity{}, "other", false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			require.Equal(t, tt.want, Usable(tt.id, tt.platform))
		})
	}
}
