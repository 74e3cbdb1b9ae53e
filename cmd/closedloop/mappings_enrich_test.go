package main

import (
	"encoding/json"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/closedloop/closedloop/internal/crmsandbox"
	"github.com/closedloop/closedloop/internal/pii"
)

// enrichExplainConfig is the golden tests' config plus a HubSpot connection on crmURL.
func enrichExplainConfig(t *testing.T, crmURL string) string {
	t.Helper()
	base, err := os.ReadFile(explainFixture("config.yaml"))
	require.NoError(t, err)
	cfg := string(base) + "crms:\n  connections:\n    hubspot-main: {kind: hubspot, token: " + crmsandbox.HubSpotToken + ", base_url: \"" + crmURL + "\"}\n"
	path := filepath.Join(t.TempDir(), "config.yaml")
	require.NoError(t, os.WriteFile(path, []byte(cfg), 0o600))
	return path
}

type enrichedExplain struct {
	Conversions []struct {
		Destination string          `json:"destination"`
		State       string          `json:"state"`
		Reason      string          `json:"reason"`
		Value       json.RawMessage `json:"value"`
		Currency    string          `json:"currency"`
		Request     *struct {
			Body json.RawMessage `json:"body"`
		} `json:"request"`
		Enrichment *struct {
			Connection string   `json:"connection"`
			Kind       string   `json:"kind"`
			Supplies   []string `json:"supplies"`
			Fetched    *struct {
				Found bool `json:"found"`
				Deal  *struct {
					Amount     string   `json:"amount"`
					Currency   string   `json:"currency"`
					ContactIDs []string `json:"contact_ids"`
				} `json:"deal"`
				Contacts []struct {
					ID          string            `json:"id"`
					Identifiers map[string]string `json:"identifiers"`
				} `json:"contacts"`
			} `json:"fetched"`
		} `json:"enrichment"`
	} `json:"conversions"`
}

func runEnrichExplain(t *testing.T, sb *crmsandbox.Server, extra ...string) (enrichedExplain, string) {
	t.Helper()
	srv := httptest.NewServer(sb)
	t.Cleanup(srv.Close)
	args := append([]string{"explain", "--config", enrichExplainConfig(t, srv.URL), "--format", "hubspot",
		"--payload", explainFixture("hubspot.json"), "--now", "2026-10-15T08:00:00Z"}, extra...)
	out, _, err := runMappings(t, args...)
	require.NoError(t, err)
	var got enrichedExplain
	require.NoError(t, json.Unmarshal([]byte(out), &got))
	require.NotContains(t, out, crmsandbox.HubSpotToken, "explain must never print a CRM token")
	for _, raw := range []string{"jane.doe", "example.com", "555-0132", "4155550132"} {
		require.NotContains(t, out, raw, "explain must never print a raw identifier")
	}
	return got, out
}

// A thin HubSpot deal webhook without --enrich: every conversion waits for enrichment, says
// which connection and which fields, and the CRM is not asked.
func TestMappingsExplainSaysWhatEnrichmentSupplies(t *testing.T) {
	t.Parallel()
	sb := crmsandbox.New()
	got, _ := runEnrichExplain(t, sb)
	require.Len(t, got.Conversions, 4)
	for _, c := range got.Conversions {
		require.Equal(t, "awaiting_enrichment", c.State, c.Destination)
		require.Equal(t, "enrichment_pending", c.Reason, c.Destination)
		require.Nil(t, c.Request, c.Destination)
		require.NotNil(t, c.Enrichment, c.Destination)
		require.Equal(t, "hubspot-main", c.Enrichment.Connection)
		require.Equal(t, "hubspot", c.Enrichment.Kind)
		require.Equal(t, []string{"amount", "currency", "contacts", "email", "phone", "click_ids"}, c.Enrichment.Supplies)
		require.Nil(t, c.Enrichment.Fetched)
	}
	require.Zero(t, sb.Requests(crmsandbox.HubSpot), "explain without --enrich asks no CRM")
}

// With --enrich, explain fetches the deal and its contacts from the connection (here the
// emulator) and shows the request bodies with the CRM's amount and the contact's hashed email.
func TestMappingsExplainEnrichFetchesAndShowsBodies(t *testing.T) {
	t.Parallel()
	sb := crmsandbox.New()
	sb.AddDeal(crmsandbox.HubSpot, crmsandbox.Deal{ID: "8841", Amount: "1000", Currency: "eur", ContactIDs: []string{"51"}})
	sb.AddContact(crmsandbox.HubSpot, crmsandbox.Contact{ID: "51", Emails: []string{"jane.doe@example.com"}, Phones: []string{"(415) 555-0132"},
		ClickIDs: map[string]string{"gclid": "Cj0KCQiA-explain"}})
	got, out := runEnrichExplain(t, sb, "--enrich")
	require.Equal(t, 3, sb.Requests(crmsandbox.HubSpot), "deal, associations and contacts: one batch read each")

	set := pii.Set{}
	require.NoError(t, pii.Normalizer{DefaultRegion: "US"}.Add(set, pii.Email, "jane.doe@example.com"))
	emailHash := set.Get(pii.KeyEmail)
	require.Len(t, got.Conversions, 4)
	for _, c := range got.Conversions {
		require.NotNil(t, c.Enrichment, c.Destination)
		f := c.Enrichment.Fetched
		require.NotNil(t, f, c.Destination)
		require.True(t, f.Found)
		require.Equal(t, "1000", f.Deal.Amount)
		require.Equal(t, "EUR", f.Deal.Currency)
		require.Equal(t, []string{"51"}, f.Deal.ContactIDs)
		require.Len(t, f.Contacts, 1)
		require.Equal(t, emailHash, f.Contacts[0].Identifiers[pii.KeyEmail], "fetched contacts are shown hashed")
		require.Equal(t, "EUR", c.Currency, c.Destination)
		require.NotEqual(t, "null", string(c.Value), "%s: the CRM's amount values the conversion", c.Destination)
	}
	meta := got.Conversions[2]
	require.Equal(t, "meta-crm", meta.Destination)
	require.Equal(t, "ready", meta.State, meta.Reason)
	require.Equal(t, "1000", string(meta.Value), "meta-crm's value rule takes the whole amount")
	require.NotNil(t, meta.Request)
	body := string(meta.Request.Body)
	require.Contains(t, body, emailHash)
	require.Regexp(t, `"value":\s*1000\b`, body)
	require.True(t, strings.Contains(out, `"google-main"`))
}

// A deal the CRM does not have ends unmatched, as the enricher would leave it.
func TestMappingsExplainEnrichDealNotFound(t *testing.T) {
	t.Parallel()
	got, _ := runEnrichExplain(t, crmsandbox.New(), "--enrich")
	for _, c := range got.Conversions {
		require.Equal(t, "unmatched", c.State, c.Destination)
		require.Equal(t, "crm_record_not_found", c.Reason, c.Destination)
		require.False(t, c.Enrichment.Fetched.Found)
	}
}

// An Attio webhook names only ids: without --enrich explain lists it as a thin change and
// what enrichment supplies (the stage among it), plans nothing and asks no CRM; with
// --enrich it fetches the record, plans the stage change it describes and shows the bodies.
func TestMappingsExplainAttioEnrichBeforePlan(t *testing.T) {
	t.Parallel()
	sb := crmsandbox.New()
	sb.AddDeal(crmsandbox.Attio, crmsandbox.Deal{ID: "bf071e1f-6035-429d-b874-d83ea64ea13b", Amount: "4200", Currency: "USD",
		ContactIDs: []string{"891dcbfc-9141-415d-9b2a-2238a6cc012d"}, Stage: "closedwon",
		StageAttribute: "41252299-f8c7-4b5e-99c9-4ff8321d2f96", StageAt: time.Date(2026, 10, 14, 9, 0, 0, 0, time.UTC)})
	sb.AddContact(crmsandbox.Attio, crmsandbox.Contact{ID: "891dcbfc-9141-415d-9b2a-2238a6cc012d", Emails: []string{"jane.doe@example.com"}})
	srv := httptest.NewServer(sb)
	t.Cleanup(srv.Close)
	base, err := os.ReadFile(explainFixture("config.yaml"))
	require.NoError(t, err)
	cfgPath := filepath.Join(t.TempDir(), "config.yaml")
	require.NoError(t, os.WriteFile(cfgPath, []byte(string(base)+"crms:\n  connections:\n    attio-main: {kind: attio, token: "+
		crmsandbox.AttioToken+", base_url: \""+srv.URL+"\"}\n"), 0o600))
	args := []string{"explain", "--config", cfgPath, "--format", "attio",
		"--payload", filepath.Join("..", "..", "crm", "testdata", "attio", "documented_record_updated.json"), "--now", "2026-10-15T08:00:00Z"}

	type thinOut struct {
		ThinChanges []struct {
			FetchRef   string `json:"fetch_ref"`
			Enrichment struct {
				Connection string   `json:"connection"`
				Supplies   []string `json:"supplies"`
				Fetched    *struct {
					Found bool `json:"found"`
				} `json:"fetched"`
			} `json:"enrichment"`
		} `json:"thin_changes"`
		StageChanges []struct {
			Stage      string    `json:"stage"`
			OccurredAt time.Time `json:"occurred_at"`
		} `json:"stage_changes"`
		Conversions []struct {
			Destination string          `json:"destination"`
			State       string          `json:"state"`
			Value       json.RawMessage `json:"value"`
		} `json:"conversions"`
	}
	out, _, err := runMappings(t, args...)
	require.NoError(t, err)
	var plain thinOut
	require.NoError(t, json.Unmarshal([]byte(out), &plain))
	require.Len(t, plain.ThinChanges, 1)
	require.Equal(t, "attio-main", plain.ThinChanges[0].Enrichment.Connection)
	require.Contains(t, plain.ThinChanges[0].Enrichment.Supplies, "stage")
	require.Nil(t, plain.ThinChanges[0].Enrichment.Fetched)
	require.Empty(t, plain.Conversions, "nothing can be planned before the fetch")
	require.Zero(t, sb.Requests(crmsandbox.Attio))

	out, _, err = runMappings(t, append(args, "--enrich")...)
	require.NoError(t, err)
	require.NotContains(t, out, crmsandbox.AttioToken)
	require.NotContains(t, out, "example.com")
	var enriched thinOut
	require.NoError(t, json.Unmarshal([]byte(out), &enriched))
	require.True(t, enriched.ThinChanges[0].Enrichment.Fetched.Found)
	require.Len(t, enriched.StageChanges, 1)
	require.Equal(t, "closedwon", enriched.StageChanges[0].Stage)
	require.True(t, enriched.StageChanges[0].OccurredAt.Equal(time.Date(2026, 10, 14, 9, 0, 0, 0, time.UTC)))
	require.Len(t, enriched.Conversions, 4)
	for _, c := range enriched.Conversions {
		if c.Destination == "meta-crm" {
			require.Equal(t, "ready", c.State)
			require.Equal(t, "4200", string(c.Value))
		}
	}
	require.Equal(t, 2, sb.Requests(crmsandbox.Attio), "the record, then its person")
}
