package enrich_test

import (
	"context"
	"testing"
	"time"

	"github.com/segmentio/kafka-go"
	"github.com/stretchr/testify/require"

	"github.com/closedloop/closedloop/consumer"
	"github.com/closedloop/closedloop/crm"
	"github.com/closedloop/closedloop/internal/crmsandbox"
	"github.com/closedloop/closedloop/internal/pii"
	"github.com/closedloop/closedloop/store"
)

const (
	sfOpp1 = "0065g00000AbCdEAAZ"
	sfOpp2 = "0065g00000AbCdFAAZ"
	sfCon1 = "0035g00000XyZaBAAV"
	sfCon2 = "0035g00000XyZaCAAV"
)

func TestSalesforceOpportunityAndContactRolesInOneQuery(t *testing.T) {
	t.Parallel()
	v := setup(t)
	v.sb.AddDeal(crmsandbox.Salesforce, crmsandbox.Deal{ID: sfOpp1, Amount: "2500", Currency: "EUR", ContactIDs: []string{sfCon1, sfCon2}})
	v.sb.AddDeal(crmsandbox.Salesforce, crmsandbox.Deal{ID: sfOpp2, Amount: "10", Currency: "USD", ContactIDs: []string{sfCon1}})
	v.sb.AddContact(crmsandbox.Salesforce, crmsandbox.Contact{ID: sfCon1, Emails: []string{rawEmail}})
	v.sb.AddContact(crmsandbox.Salesforce, crmsandbox.Contact{ID: sfCon2, Phones: []string{"(415) 555-0132"}})
	k1 := v.thin(t, "salesforce", crm.ObjectOpportunity, sfOpp1)
	k2 := v.thin(t, "salesforce", crm.ObjectOpportunity, sfOpp2[:15]) // the 15-character form
	missing := v.thin(t, "salesforce", crm.ObjectOpportunity, "0065g00000ZZZZZAAZ")
	injection := v.thin(t, "salesforce", crm.ObjectOpportunity, "x') OR Id != ('")

	require.Equal(t, 4, v.pass(t))
	got := v.get(t, k1)
	require.Equal(t, store.StateReady, got.State)
	require.Equal(t, 2500.0, *got.Value)
	require.Equal(t, "EUR", got.Currency)
	require.Contains(t, got.SubjectKeys, "salesforce:contact:"+sfCon2)
	require.True(t, pii.IsSHA256Hex(got.Identity.Identifiers["email"]))
	require.Equal(t, 10.0, *v.get(t, k2).Value, "an 18-character answer matches the 15-character id")
	for _, k := range []string{missing, injection} {
		require.Equal(t, store.StateUnmatched, v.get(t, k).State)
		require.Equal(t, store.ReasonCRMRecordNotFound, v.get(t, k).Reason)
	}
	require.Equal(t, 1, v.sb.Requests(crmsandbox.Salesforce), "one SOQL query for every opportunity and its contacts")
	require.Equal(t, 1, v.sb.TokenRequests())
}

func TestSalesforceExpiredSessionRefreshedLimitRetriedBadTokenPauses(t *testing.T) {
	t.Parallel()
	v := setup(t)
	v.sb.AddDeal(crmsandbox.Salesforce, crmsandbox.Deal{ID: sfOpp1, Amount: "5", Currency: "USD", ContactIDs: []string{sfCon1}})
	v.sb.AddContact(crmsandbox.Salesforce, crmsandbox.Contact{ID: sfCon1, Emails: []string{rawEmail}})
	v.sb.AddDeal(crmsandbox.Salesforce, crmsandbox.Deal{ID: sfOpp2, Amount: "6", Currency: "USD", ContactIDs: []string{sfCon1}})

	// REQUEST_LIMIT_EXCEEDED (403) is the org's daily allocation: a retry, not a pause.
	k1 := v.thin(t, "salesforce", crm.ObjectOpportunity, sfOpp1)
	v.sb.Inject(crmsandbox.Salesforce, crmsandbox.Fault{Status: 429, Times: 1})
	require.Equal(t, 1, v.pass(t))
	got := v.get(t, k1)
	require.Equal(t, store.ReasonCRMRetry, got.Reason)
	require.Contains(t, got.Detail, "REQUEST_LIMIT_EXCEEDED")
	require.GreaterOrEqual(t, got.NextAttemptAt.Sub(v.clock.now()), 10*time.Minute-time.Millisecond, "waits, capped by max_backoff")

	// An expired session: refreshed and resent at once.
	v.clock.add(16 * time.Minute)
	v.sb.ExpireSalesforceSessions()
	require.Equal(t, 1, v.pass(t))
	require.Equal(t, store.StateReady, v.get(t, k1).State)
	require.Equal(t, 2, v.sb.TokenRequests(), "one refresh after INVALID_SESSION_ID")

	// A refused fresh token pauses the connection; the row is kept.
	k2 := v.thin(t, "salesforce", crm.ObjectOpportunity, sfOpp2)
	v.sb.Inject(crmsandbox.Salesforce, crmsandbox.Fault{Status: 401})
	require.Equal(t, 1, v.pass(t))
	got = v.get(t, k2)
	require.Equal(t, store.StateAwaitingEnrichment, got.State)
	require.Equal(t, store.ReasonCRMPaused, got.Reason)
	require.Contains(t, got.Detail, "INVALID_SESSION_ID")
	v.sb.Clear(crmsandbox.Salesforce)
	v.clock.add(6 * time.Minute)
	require.Equal(t, 1, v.pass(t))
	require.Equal(t, 6.0, *v.get(t, k2).Value)
}

func TestSalesforceSingleCurrencyOrg(t *testing.T) {
	t.Parallel()
	v := setup(t)
	v.sb.SetSalesforceSingleCurrency(true)
	v.sb.AddDeal(crmsandbox.Salesforce, crmsandbox.Deal{ID: sfOpp1, Amount: "7", ContactIDs: []string{sfCon1}})
	v.sb.AddContact(crmsandbox.Salesforce, crmsandbox.Contact{ID: sfCon1, Emails: []string{rawEmail}})
	k := v.thin(t, "salesforce", crm.ObjectOpportunity, sfOpp1)
	require.Equal(t, 1, v.pass(t))
	got := v.get(t, k)
	require.Equal(t, store.StateReady, got.State)
	require.Equal(t, 7.0, *got.Value)
	require.Equal(t, "USD", got.Currency, "the value rule's default currency")
}

// attioThin stores an Attio webhook as the consumer does: decoded, then pending.
func (v *env) attioThin(t *testing.T, payload string, offset int64) string {
	t.Helper()
	dec, err := crm.Decode(crm.FormatAttio, []byte(payload), pii.Normalizer{})
	require.NoError(t, err)
	require.Len(t, dec.Thin, 1)
	p := consumer.PendingFromThin(dec.Thin[0], &kafka.Message{Topic: "crm", Offset: offset, Time: v.clock.now()}, 0, v.clock.now())
	_, err = v.st.WriteBatch(context.Background(), store.Batch{Pending: []store.PendingChange{p}})
	require.NoError(t, err)
	return p.Key
}

const (
	attioObject = "97052eb9-e65e-443f-a297-f2d9a4a7f795"
	attioStage  = "41252299-f8c7-4b5e-99c9-4ff8321d2f96"
	attioName   = "5f1a9d3c-0000-4a2b-9c3d-5e6f7a8b9c0d"
	attioList   = "33ebdbe9-e529-47c9-b894-0ba25e9c15c0"
)

func attioRecordUpdated(record, attribute string) string {
	return `{"webhook_id":"23e42eaf-323a-41da-b5bb-fd67eebda553","events":[{"event_type":"record.updated","id":{"workspace_id":"14beef7a-99f7-4534-a87e-70b564330a4c","object_id":"` +
		attioObject + `","record_id":"` + record + `","attribute_id":"` + attribute + `"},"actor":{"type":"workspace-member","id":"50cf242c-7fa3-4cad-87d0-75b1af71c57b"}}]}`
}

func TestAttioThinEventPlannedAfterFetch(t *testing.T) {
	t.Parallel()
	v := setup(t)
	rec := "bf071e1f-6035-429d-b874-d83ea64ea13b"
	wonAt := v.clock.now().Add(-time.Minute).UTC().Truncate(time.Second)
	v.sb.AddDeal(crmsandbox.Attio, crmsandbox.Deal{ID: rec, Amount: "4200", Currency: "EUR", ContactIDs: []string{"p-1"},
		Stage: "Won 🎉", StageAttribute: attioStage, StageAt: wonAt})
	v.sb.AddContact(crmsandbox.Attio, crmsandbox.Contact{ID: "p-1", Emails: []string{rawEmail}})

	pk := v.attioThin(t, attioRecordUpdated(rec, attioStage), 1)
	require.Equal(t, 1, v.pass(t))
	p, err := v.st.GetPending(context.Background(), pk)
	require.NoError(t, err)
	require.Equal(t, store.PendingPlanned, p.State)
	require.Equal(t, 1, p.Conversions)
	key := crm.ConversionKey("attio", crm.ObjectDeal, rec, "attio-won", "meta-crm")
	got := v.get(t, key)
	require.Equal(t, store.StateReady, got.State, "planned with the rule the fetched stage matched")
	require.Equal(t, 4200.0, *got.Value)
	require.Equal(t, "EUR", got.Currency)
	require.True(t, got.OccurredAt.Equal(wonAt), "occurred_at is the stage's active_from")
	require.Contains(t, got.SubjectKeys, "attio:contact:p-1")
	require.Equal(t, 2, v.sb.Requests(crmsandbox.Attio), "the deal record, then its person")

	// The same webhook redelivered: nothing new. A second event for the record after it:
	// the record is fetched again (the stage comes from the fetch), the person is cached,
	// and the conversion is not planned twice.
	require.Equal(t, pk, v.attioThin(t, attioRecordUpdated(rec, attioStage), 1))
	require.Zero(t, v.pass(t))
	v.clock.add(time.Second)
	v.attioThin(t, attioRecordUpdated(rec, attioStage), 2)
	require.Equal(t, 1, v.pass(t))
	require.Equal(t, 3, v.sb.Requests(crmsandbox.Attio))
	require.Equal(t, 1, v.sb.Reads(crmsandbox.Attio, "contact", "p-1"))
	counts, err := v.st.CountByState(context.Background())
	require.NoError(t, err)
	require.Equal(t, 1, counts["meta-crm"][store.StateReady])

	// Another attribute (the name): the fetch shows it is no stage.
	ig := v.attioThin(t, attioRecordUpdated(rec, attioName), 3)
	// A record deleted meanwhile: unmatched.
	nf := v.attioThin(t, attioRecordUpdated("0a2e7b3c-1111-4a2b-9c3d-5e6f7a8b9c0d", attioStage), 4)
	require.Equal(t, 2, v.pass(t))
	p, err = v.st.GetPending(context.Background(), ig)
	require.NoError(t, err)
	require.Equal(t, store.PendingIgnored, p.State)
	p, err = v.st.GetPending(context.Background(), nf)
	require.NoError(t, err)
	require.Equal(t, store.StateUnmatched, p.State)
	require.Equal(t, store.ReasonCRMRecordNotFound, p.Reason)

	// A relay's thin canonical stage change of source attio names the record by its id:
	// enriched as any other thin conversion.
	v.clock.add(25 * time.Hour)
	k := v.thin(t, "attio", crm.ObjectDeal, rec)
	require.Equal(t, 1, v.pass(t))
	require.Equal(t, 4200.0, *v.get(t, k).Value)
}

func TestAttioListEntryAndFaults(t *testing.T) {
	t.Parallel()
	v := setup(t)
	rec, entry := "bf071e1f-6035-429d-b874-d83ea64ea13b", "2e6e29ea-c4e0-4f44-842d-78a891f8c156"
	v.sb.AddDeal(crmsandbox.Attio, crmsandbox.Deal{ID: rec, Amount: "99.5", Currency: "USD", ContactIDs: []string{"p-2"},
		Entries: []crmsandbox.Entry{{List: attioList, ID: entry, Stage: "Won 🎉", StageAttribute: attioStage, StageAt: v.clock.now().Add(-time.Hour)}}})
	v.sb.AddContact(crmsandbox.Attio, crmsandbox.Contact{ID: "p-2", Phones: []string{"+1 415 555 0132"}})
	payload := `{"webhook_id":"w","events":[{"event_type":"list-entry.updated","id":{"workspace_id":"14beef7a-99f7-4534-a87e-70b564330a4c","list_id":"` + attioList +
		`","entry_id":"` + entry + `","attribute_id":"` + attioStage + `"},"parent_object_id":"` + attioObject + `","parent_record_id":"` + rec +
		`","actor":{"type":"workspace-member","id":"50cf242c-7fa3-4cad-87d0-75b1af71c57b"}}]}`
	pk := v.attioThin(t, payload, 1)

	v.sb.Inject(crmsandbox.Attio, crmsandbox.Fault{Status: 429, Times: 1, RetryAfter: 2 * time.Second})
	require.Equal(t, 1, v.pass(t))
	p, err := v.st.GetPending(context.Background(), pk)
	require.NoError(t, err)
	require.Equal(t, store.ReasonCRMRetry, p.Reason)
	require.Contains(t, p.Detail, "429")

	v.clock.add(time.Minute)
	v.sb.Inject(crmsandbox.Attio, crmsandbox.Fault{Status: 401})
	require.Equal(t, 1, v.pass(t))
	p, err = v.st.GetPending(context.Background(), pk)
	require.NoError(t, err)
	require.Equal(t, store.ReasonCRMPaused, p.Reason, "401 pauses the connection, the stage change is kept")

	v.sb.Clear(crmsandbox.Attio)
	v.clock.add(6 * time.Minute)
	require.Equal(t, 1, v.pass(t))
	key := crm.ConversionKey("attio", crm.ObjectDeal, entry, "attio-won", "meta-crm")
	got := v.get(t, key)
	require.Equal(t, store.StateReady, got.State)
	require.Equal(t, 99.5, *got.Value, "the value of the entry's parent record")
	require.Contains(t, got.SubjectKeys, "attio:contact:p-2")
}
