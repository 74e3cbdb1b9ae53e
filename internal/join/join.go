package join

import (
	"sort"
	"strings"
	"time"

	"github.com/closedloop/closedloop/internal/pii"
	"github.com/closedloop/closedloop/store"
	"github.com/closedloop/closedloop/uploader/platforms"
)

// Resolve merges the identities of several subjects into one snapshot for a conversion that
// occurred at `at`:
//
//   - Clicks: for each click type, the latest click at or before `at` across all subjects;
//     clicks after `at` cannot have led to the conversion and are dropped. A click with an
//     unknown time (zero At) counts as before `at` but loses to any dated click of its type.
//   - Identifiers: per field (email, phone, first_name, ...), all hashes of that field from
//     the most recently updated identity that has the field, so the variants of one field
//     (email and email/google) always come from the same capture.
//   - IP, UserAgent, LeadID: the most recently updated non-empty value.
//   - Consent: the most recently captured answer (by Consent.CapturedAt), whenever it was
//     captured: a later denial withdraws an earlier grant.
//   - UpdatedAt: the latest of the identities'. SubjectKey: the distinct subject keys that
//     were merged, in input order, joined with ",".
//
// Ties go to the identity listed first, so callers pass the stage change's own object before
// its contacts (crm.StageChange.SubjectKeys order). No identities gives the zero Identity.
func Resolve(identities []store.Identity, at time.Time) store.Identity {
	var out store.Identity
	if len(identities) == 0 {
		return out
	}
	// newestFirst orders identities by UpdatedAt descending, input order on ties.
	newestFirst := make([]*store.Identity, len(identities))
	for i := range identities {
		newestFirst[i] = &identities[i]
	}
	sort.SliceStable(newestFirst, func(i, j int) bool {
		return newestFirst[i].UpdatedAt.After(newestFirst[j].UpdatedAt)
	})

	var keys []string
	seenKey := map[string]bool{}
	for _, id := range identities {
		if id.SubjectKey != "" && !seenKey[id.SubjectKey] {
			seenKey[id.SubjectKey] = true
			keys = append(keys, id.SubjectKey)
		}
		if id.UpdatedAt.After(out.UpdatedAt) {
			out.UpdatedAt = id.UpdatedAt
		}
	}
	out.SubjectKey = strings.Join(keys, ",")
	out.Clicks = latestClicks(identities, at)

	taken := map[string]bool{} // identifier fields already taken from a newer identity
	for _, id := range newestFirst {
		fields := map[string]bool{}
		for k, v := range id.Identifiers {
			field, _, _ := strings.Cut(k, "/")
			if v == "" || taken[field] {
				continue
			}
			if out.Identifiers == nil {
				out.Identifiers = pii.Set{}
			}
			out.Identifiers[k] = v
			fields[field] = true
		}
		for f := range fields {
			taken[f] = true
		}
		if out.IP == "" {
			out.IP = id.IP
		}
		if out.UserAgent == "" {
			out.UserAgent = id.UserAgent
		}
		if out.LeadID == "" {
			out.LeadID = id.LeadID
		}
	}

	consentSet := false
	for _, id := range identities {
		c := id.Consent
		if c == (store.Consent{}) {
			continue
		}
		if !consentSet || c.CapturedAt.After(out.Consent.CapturedAt) {
			out.Consent = c
			consentSet = true
		}
	}
	return out
}

// latestClicks returns, per click type, the latest click at or before at, sorted by type.
func latestClicks(identities []store.Identity, at time.Time) []store.Click {
	best := map[string]store.Click{}
	for _, id := range identities {
		for _, c := range id.Clicks {
			if c.Type == "" || c.ID == "" || c.At.After(at) {
				continue
			}
			if cur, ok := best[c.Type]; !ok || c.At.After(cur.At) {
				best[c.Type] = c
			}
		}
	}
	if len(best) == 0 {
		return nil
	}
	out := make([]store.Click, 0, len(best))
	for _, c := range best {
		out = append(out, c)
	}
	sort.Slice(out, func(i, j int) bool { return out[i].Type < out[j].Type })
	return out
}

// Click returns the identity's click of type t, if any.
func Click(id store.Identity, t string) (store.Click, bool) {
	for _, c := range id.Clicks {
		if c.Type == t {
			return c, true
		}
	}
	return store.Click{}, false
}

// Usable reports whether id carries at least one identifier platform can match a
// conversion on: the platform package's own decision (uploader.Spec.Usable), the same one
// its Check applies before sending, so a row that leaves awaiting_identity is never refused
// for want of an identifier. An unknown platform accepts any click or identifier.
func Usable(id store.Identity, platform string) bool {
	if spec, ok := platforms.Lookup(platform); ok {
		return spec.Usable(id)
	}
	return len(id.Clicks) > 0 || len(id.Identifiers) > 0 || id.LeadID != ""
}
