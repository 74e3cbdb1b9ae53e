package join

import (
	"testing"

	"github.com/stretchr/testify/require"

	"github.com/closedloop/closedloop/internal/pii"
	"github.com/closedloop/closedloop/store"
)

func TestMergeCaptures(t *testing.T) {
	t.Parallel()
	granted := store.Consent{AdUserData: store.ConsentGranted, AdPersonalization: store.ConsentGranted}
	denied := store.Consent{AdUserData: store.ConsentDenied, AdPersonalization: store.ConsentDenied}
	captures := []store.IdentityCapture{
		// Listed out of time order on purpose: merging goes by CapturedAt.
		{SubjectKey: "hubspot:contact:9", CapturedAt: at(3), Consent: denied,
			Identifiers: pii.Set{"email": "e2", "email/google": "eg2"}, UserAgent: "ua2",
			Clicks: []store.Click{{Type: "gclid", ID: "g1", At: at(0)}}},
		{SubjectKey: "hubspot:contact:9", CapturedAt: at(1), Consent: granted, IP: "192.0.2.1", LeadID: "123",
			Identifiers: pii.Set{"email": "e1", "email/google": "eg1", "phone/e164": "p1", "phone/digits": "pd1"},
			Clicks:      []store.Click{{Type: "gclid", ID: "g1", At: at(1)}, {Type: "fbclid", ID: "f1", At: at(1)}}},
		{SubjectKey: "", CapturedAt: at(9)},
		{SubjectKey: "hubspot:deal:1", CapturedAt: at(2), Clicks: []store.Click{{Type: "ttclid", ID: "t1"}}},
	}
	got := Merge(captures)
	require.Equal(t, []store.Identity{
		{
			SubjectKey: "hubspot:contact:9",
			Clicks:     []store.Click{{Type: "gclid", ID: "g1", At: at(0)}, {Type: "fbclid", ID: "f1", At: at(1)}},
			// email from the later capture (both variants), phone kept from the earlier one.
			Identifiers: pii.Set{"email": "e2", "email/google": "eg2", "phone/e164": "p1", "phone/digits": "pd1"},
			IP:          "192.0.2.1",
			UserAgent:   "ua2",
			LeadID:      "123",
			Consent:     store.Consent{AdUserData: store.ConsentDenied, AdPersonalization: store.ConsentDenied, CapturedAt: at(3)},
			UpdatedAt:   at(3),
		},
		{SubjectKey: "hubspot:deal:1", Clicks: []store.Click{{Type: "ttclid", ID: "t1"}}, UpdatedAt: at(2)},
	}, got)
}

func TestMergeEmpty(t *testing.T) {
	t.Parallel()
	require.Empty(t, Merge(nil))
}
