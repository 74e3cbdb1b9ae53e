package storetest

import (
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/closedloop/closedloop/internal/pii"
	"github.com/closedloop/closedloop/store"
)

// testIdentifierCounts: per creation day, destination and conversion, how many conversions
// carry a click id, an email, a phone, a lead id.
func testIdentifierCounts(t *testing.T, open Opener) {
	s := open(t)
	mk := func(key string, created time.Time, id store.Identity) store.Conversion {
		c := conv(key)
		c.CreatedAt, c.Identity = created, id
		if len(id.Clicks) == 0 && len(id.Identifiers) == 0 && id.LeadID == "" {
			c.State, c.Reason = store.StateAwaitingIdentity, "no_identifier"
		}
		return c
	}
	click := []store.Click{{Type: "gclid", ID: "g", At: at(-72)}}
	write(t, s,
		mk("a", day1.Add(time.Hour), store.Identity{Clicks: click, Identifiers: pii.Set{"email": "e", "email/google": "e"}}),
		mk("b", day1.Add(2*time.Hour), store.Identity{Identifiers: pii.Set{"phone/e164": "p", "phone/digits": "p"}}),
		mk("c", day1.Add(3*time.Hour), store.Identity{Identifiers: pii.Set{"phone/digits": "p"}, LeadID: "123"}),
		mk("d", day1.Add(4*time.Hour), store.Identity{}),
		mk("e", day1.Add(25*time.Hour), store.Identity{Clicks: click}),
		mk("f", day1.Add(-time.Hour), store.Identity{Clicks: click}), // before since
	)
	got, err := s.IdentifierCounts(ctx(t), day1, day1.Add(48*time.Hour))
	require.NoError(t, err)
	base := store.IdentifierCount{Destination: "google", Platform: "google", ConversionName: "customers/1/conversionActions/2"}
	d1, d2 := base, base
	d1.Day, d1.Count, d1.WithClickID, d1.WithEmail, d1.WithPhone, d1.WithLeadID = day1, 4, 1, 1, 2, 1
	d2.Day, d2.Count, d2.WithClickID = day1.Add(24*time.Hour), 1, 1
	require.Equal(t, []store.IdentifierCount{d1, d2}, got)
}
