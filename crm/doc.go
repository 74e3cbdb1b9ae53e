// Package crm owns what a CRM stage change means to closedloop: decoding each CRM's
// webhook format into the one canonical StageChange, and the stage-mapping rules that turn
// a StageChange into Planned conversions.
//
// Decoding (decode.go and one file per format):
//
//	payload bytes ──► Decode(format, payload, pii.Normalizer) ──► Decoded{Changes, Ignored, Bad, Dropped}
//	                   canonical  : one JSON stage change (CANONICAL.md), strict about unknown fields
//	                   hubspot    : webhook batch array (dealstage, lifecyclestage property changes)
//	                   salesforce : Change Data Capture JSON (Opportunity, Lead) or Outbound Message SOAP XML
//	                   pipedrive  : deal webhooks v1 (current/previous) and v2 (meta/data/previous)
//
// A message that cannot be decoded as a whole returns a *DecodeError (it belongs on the
// dead-letter topic); one bad event in a batch is listed in Decoded.Bad and the rest still
// decode. Raw email and phone values are hashed through internal/pii on arrival and never
// kept, logged or echoed in an error. Decode holds no state and is safe for concurrent use.
//
// Mapping (mapping*.go): MappingRule as sales ops write it in YAML, CompileMappings to
// validate, Mapping.Plan to turn one StageChange into Planned conversions.
//
// Depends on internal/pii and shopspring/decimal only; knows nothing of Kafka or the store.
package crm
