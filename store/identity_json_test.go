package store

import (
	"encoding/json"
	"math/rand/v2"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/closedloop/closedloop/internal/pii"
)

// appendIdentityJSON must write exactly what json.Marshal writes.
func TestAppendIdentityJSONMatchesEncodingJSON(t *testing.T) {
	t.Parallel()
	strs := []string{"", "a", "gclid", "Cj0KCQ-x_y.z", `q"uote`, `back\slash`, "<b>&", "é", "\u2028", "\x01", "\xff", "tab\t"}
	times := []time.Time{{}, time.Date(2026, 3, 2, 15, 4, 5, 123456000, time.UTC),
		time.Date(2026, 3, 2, 15, 4, 5, 0, time.FixedZone("x", 5*3600+1800)), time.Unix(1, 1).In(time.FixedZone("", -7200))}
	r := rand.New(rand.NewPCG(1, 2))
	pick := func() string { return strs[r.IntN(len(strs))] }
	for i := range 2000 {
		id := Identity{SubjectKey: pick(), IP: pick(), UserAgent: pick(), LeadID: pick(),
			Consent:   Consent{AdUserData: pick(), AdPersonalization: pick(), CapturedAt: times[r.IntN(len(times))]},
			UpdatedAt: times[r.IntN(len(times))]}
		switch i % 3 {
		case 0:
			id.Clicks = []Click{}
			id.Identifiers = pii.Set{}
		case 1:
			for range r.IntN(3) + 1 {
				id.Clicks = append(id.Clicks, Click{Type: pick(), ID: pick(), At: times[r.IntN(len(times))]})
			}
			id.Identifiers = pii.Set{"email": pick(), "phone/e164": pick(), pick(): pick()}
		}
		want, err := json.Marshal(id)
		require.NoError(t, err)
		got, err := appendIdentityJSON(nil, id)
		require.NoError(t, err)
		require.Equal(t, string(want), string(got))

		m := map[string]string{}
		stamps := map[string]time.Time{}
		for range r.IntN(4) {
			m[pick()] = pick()
			stamps[pick()] = times[r.IntN(len(times))]
		}
		want, err = json.Marshal(m)
		require.NoError(t, err)
		require.Equal(t, string(want), string(appendStringMapJSON(nil, m)))
		want, err = json.Marshal(stamps)
		require.NoError(t, err)
		got, err = appendStampsJSON(nil, stamps)
		require.NoError(t, err)
		require.Equal(t, string(want), string(got))

		subjects := []string{pick(), pick()}
		want, err = json.Marshal(subjects)
		require.NoError(t, err)
		require.Equal(t, string(want), string(appendStringsJSON(nil, subjects)))
	}
	_, err := appendIdentityJSON(nil, Identity{UpdatedAt: time.Date(10000, 1, 1, 0, 0, 0, 0, time.UTC)})
	require.Error(t, err, "a year json.Marshal refuses")
	_, err = appendStampsJSON(nil, map[string]time.Time{"@ip": time.Date(10000, 1, 1, 0, 0, 0, 0, time.UTC)})
	require.Error(t, err, "a year json.Marshal refuses")
	require.Equal(t, "{}", string(appendStringMapJSON(nil, nil)), "a nil map is the column's empty object")
}
