// Package identity decodes identity captures (click IDs, contact data and consent a lead form
// or relay collected for one subject) into store.IdentityCapture, hashing every personal
// identifier on arrival through internal/pii so no raw email or phone outlives Decode, and
// imports capture files (CSV or JSON Lines) into anything that upserts captures.
//
// Canonical JSON (one object per Kafka message or JSONL line; at most MaxPayload bytes):
//
//	{"subject": {"type": "contact", "source": "hubspot", "id": "901"},
//	 "captured_at": "2026-10-01T12:00:00Z",
//	 "click_ids": {"gclid": "Cj0K...", "fbclid": {"id": "IwAR...", "clicked_at": "2026-09-30T08:00:00Z"}},
//	 "email": "...", "phone": "...", "first_name": "...", "last_name": "...", "city": "...",
//	 "state": "...", "zip": "..." (or "postal_code"), "country": "...", "date_of_birth": "...",
//	 "gender": "...", "external_id": "...", "ip": "...", "user_agent": "...", "lead_id": "...",
//	 "consent": {"ad_user_data": "granted", "ad_personalization": "denied"}}
//
// Contract:
//   - subject.type is contact, lead, deal, opportunity, external (subject key
//     crm.SubjectKey(source, type, id), source required) or email (id is the address; key
//     "email:" + SHA-256 of the trimmed, lowercased address; the address also counts as the
//     capture's email when "email" is absent).
//   - captured_at is RFC 3339 and required. A click ID given as a plain string was clicked at
//     captured_at; as {"id","clicked_at"} at clicked_at (RFC 3339).
//   - Click ID types: gclid gbraid wbraid fbc fbp fbclid ttclid msclkid li_fat_id; anything else
//     is an error. Click IDs are case-sensitive and kept exactly (trimmed).
//   - A capture with fbclid and no fbc gets a derived fbc "fb.1.<ms>.<fbclid>" (Meta's _fbc
//     format: subdomain index 1, the click time in Unix milliseconds, the fbclid unchanged).
//   - consent values are granted, denied or unknown (any case); Consent.CapturedAt is
//     captured_at when a consent object is present.
//   - null or empty values are absent. Unknown keys are errors (a misspelt key would silently
//     drop an identifier otherwise).
//
// Every error is a *FieldError naming the field (e.g. "phone", "click_ids.gclid",
// "subject.type", "payload") and what is wrong; none contains a submitted value.
//
// CSV files carry one capture per record after a header row; see CSVColumns.
package identity
