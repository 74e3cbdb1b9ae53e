package join

import (
	"sort"
	"strings"

	"github.com/closedloop/closedloop/internal/pii"
	"github.com/closedloop/closedloop/store"
)

// Merge folds identity captures into one Identity per subject, following the merge rules
// documented on store.IdentityCapture, for callers that hold captures in memory (`mappings
// explain`, tests) rather than in a store:
//
//   - clicks accumulate; the same click (type and id) captured twice keeps its earliest time,
//     and a later capture lacking a click never removes it;
//   - identifiers: per field (email, phone, ...), every hash of the field from the latest
//     capture that has it; ip, user agent and lead id: the latest non-empty value;
//   - consent: the most recently captured non-empty answer (a capture's consent without its
//     own CapturedAt counts as captured with the capture);
//   - UpdatedAt: the latest CapturedAt.
//
// Identities come back in order of each subject's first capture. Captures without a
// subject key are skipped.
func Merge(captures []store.IdentityCapture) []store.Identity {
	order := make([]int, len(captures))
	for i := range order {
		order[i] = i
	}
	sort.SliceStable(order, func(a, b int) bool {
		return captures[order[a]].CapturedAt.Before(captures[order[b]].CapturedAt)
	})

	index := map[string]int{} // subject key -> position in out
	var out []store.Identity
	for i, c := range captures { // first appearance fixes the output order
		if c.SubjectKey == "" {
			continue
		}
		if _, ok := index[c.SubjectKey]; !ok {
			index[c.SubjectKey] = len(out)
			out = append(out, store.Identity{SubjectKey: captures[i].SubjectKey})
		}
	}
	for _, i := range order {
		c := captures[i]
		pos, ok := index[c.SubjectKey]
		if !ok {
			continue
		}
		apply(&out[pos], c)
	}
	return out
}

// apply merges one capture into id; captures arrive oldest first.
func apply(id *store.Identity, c store.IdentityCapture) {
	for _, click := range c.Clicks {
		if click.Type == "" || click.ID == "" {
			continue
		}
		found := false
		for j, have := range id.Clicks {
			if have.Type == click.Type && have.ID == click.ID {
				found = true
				if !click.At.IsZero() && (have.At.IsZero() || click.At.Before(have.At)) {
					id.Clicks[j].At = click.At
				}
				break
			}
		}
		if !found {
			id.Clicks = append(id.Clicks, click)
		}
	}
	byField := map[string][]string{}
	for k, v := range c.Identifiers {
		if v == "" {
			continue
		}
		field, _, _ := strings.Cut(k, "/")
		byField[field] = append(byField[field], k)
	}
	for field, keys := range byField {
		if id.Identifiers == nil {
			id.Identifiers = pii.Set{}
		}
		for k := range id.Identifiers {
			if f, _, _ := strings.Cut(k, "/"); f == field {
				delete(id.Identifiers, k)
			}
		}
		for _, k := range keys {
			id.Identifiers[k] = c.Identifiers[k]
		}
	}
	if c.IP != "" {
		id.IP = c.IP
	}
	if c.UserAgent != "" {
		id.UserAgent = c.UserAgent
	}
	if c.LeadID != "" {
		id.LeadID = c.LeadID
	}
	if consent := c.Consent; consent.AdUserData != "" || consent.AdPersonalization != "" {
		if consent.CapturedAt.IsZero() {
			consent.CapturedAt = c.CapturedAt
		}
		if id.Consent == (store.Consent{}) || !consent.CapturedAt.Before(id.Consent.CapturedAt) {
			id.Consent = consent
		}
	}
	if c.CapturedAt.After(id.UpdatedAt) {
		id.UpdatedAt = c.CapturedAt
	}
}
