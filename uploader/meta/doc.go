// Package meta uploads conversions to the Meta Conversions API (platform "meta"):
// `POST {base}/{version}/{dataset_id}/events` with up to 1,000 server events.
//
// Rows become events named by the conversion name, timed in Unix seconds, deduplicated by
// event_id = the conversion key, with action_source "system_generated". Rows with a Meta
// Lead Ads lead id follow the Conversion Leads (CRM) payload: user_data.lead_id as an
// integer and custom_data.event_source "crm" with lead_event_source; other rows are sent as
// standard events (platforms.md 2.2). Meta measures age against upload time: an event more
// than 7 days old makes Meta reject the whole request, so Check expires such rows first.
//
// The access token is sent in an `Authorization: Bearer` header rather than the
// access_token query parameter, so it can never appear in a logged URL or transport error.
// Meta rejects the whole batch for any invalid event (*uploader.BatchRejectedError); Graph
// API error codes are classified by ErrorClass.
package meta
