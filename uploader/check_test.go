package uploader

import (
	"math"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/closedloop/closedloop/store"
)

func TestCheckRow(t *testing.T) {
	t.Parallel()
	f := func(v float64) *float64 { return &v }
	ok := func() store.Conversion {
		return store.Conversion{Kind: store.KindConversion, ConversionName: "Purchase", OccurredAt: time.Unix(1_790_000_000, 0), Value: f(10), Currency: "EUR"}
	}
	rules := RowRules{API: "the Events API", NameField: "event", NonNegativeValue: true}
	for _, tc := range []struct {
		name   string
		edit   func(*store.Conversion)
		rules  RowRules
		class  Class
		reason string
	}{
		{"fine", func(*store.Conversion) {}, rules, "", ""},
		{"retraction the API cannot make", func(c *store.Conversion) { c.Kind = store.KindRetraction }, rules, ClassSkipped, "retraction_unsupported"},
		{"retraction the API can make", func(c *store.Conversion) { c.Kind = store.KindRetraction }, RowRules{Retracts: true}, "", ""},
		{"consent denied", func(c *store.Conversion) { c.Identity.Consent.AdUserData = store.ConsentDenied }, rules, ClassSkipped, "consent_denied"},
		{"no event time", func(c *store.Conversion) { c.OccurredAt = time.Time{} }, rules, ClassPermanent, "missing_event_time"},
		{"no name", func(c *store.Conversion) { c.ConversionName = "" }, rules, ClassPermanent, "missing_event_name"},
		{"no name, platform checks names itself", func(c *store.Conversion) { c.ConversionName = "" }, RowRules{}, "", ""},
		{"NaN value", func(c *store.Conversion) { c.Value = f(math.NaN()) }, rules, ClassPermanent, "invalid_value"},
		{"negative value", func(c *store.Conversion) { c.Value = f(-1) }, rules, ClassPermanent, "invalid_value"},
		{"negative value allowed", func(c *store.Conversion) { c.Value = f(-1) }, RowRules{}, "", ""},
		{"bad currency", func(c *store.Conversion) { c.Currency = "euro" }, rules, ClassPermanent, "invalid_currency"},
		{"no value needs no currency", func(c *store.Conversion) { c.Value, c.Currency = nil, "" }, rules, "", ""},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			c := ok()
			tc.edit(&c)
			e := CheckRow(&c, tc.rules)
			if tc.class == "" {
				require.Nil(t, e)
				return
			}
			require.NotNil(t, e)
			require.Equal(t, tc.class, e.Class)
			require.Equal(t, tc.reason, e.Reason)
		})
	}
}
