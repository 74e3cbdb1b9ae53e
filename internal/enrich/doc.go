// Package enrich fetches from a CRM's own API what a thin stage change lacked — a deal's
// amount and currency, its contacts and their emails, phones and click ids — for the
// conversions the consumer left in state awaiting_enrichment, and moves them on to ready
// or awaiting_identity (or unmatched, crm_record_not_found, when the CRM has no such deal).
//
// One Enricher serves every configured CRM connection (config `crms:`: HubSpot, Pipedrive,
// Close, Salesforce, Attio), each in its own loop: it claims the connection's due rows with
// a lease (store.ClaimEnrichment), so a crash loses nothing and several instances share the
// work; it never blocks a Kafka partition, and a slow or failing CRM delays only its own
// rows (the other connections' loops run on).
//
// Attio's webhooks carry ids only, so no rule can be chosen before the fetch: the consumer
// stores them as pending stage changes (store.PendingChange) and the enricher fetches the
// record, builds the stage change, plans the mapping and writes the conversions ("enrich
// before plan", plan.go). Contact data is normalized and hashed on arrival (internal/pii) and stored
// as identities of subject "<source>:contact:<id>", so the ordinary join — late identities
// included — does the rest. Every fetch is recorded in the store's fetch cache for the
// connection's cache_ttl: a deal's second stage change, a replay or a restart does not
// fetch again. 429 and 5xx reschedule the rows (persisted next_attempt_at), honouring the
// CRM's retry headers; 401/403 pause the connection (rows kept, visible in the report and
// the status page) and probe again after pause_for.
//
// Depends on store (through the small Store interface declared here), crm (the mapping's
// value rules and plans), consumer (Row: the same conversion rows the pipeline builds),
// internal/join, internal/pii, internal/oauthtoken (Salesforce), golang.org/x/time/rate.
//
//	e, err := enrich.New(enrich.Options{Config: cfg.CRMs, Store: st, Mapping: reload.Current, Normalizer: n, Log: log})
//	g.Go(func() error { return e.Run(ctx) })
package enrich
