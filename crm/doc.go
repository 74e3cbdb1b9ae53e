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
// One conversion lifecycle, created → restated → retracted, per rule and destination:
//
//	match                       → the conversion, keyed ConversionKey(source, type, id, rule, destination)
//	restate_on: {amount_changed: true}
//	                            → a later matching change plans a restatement candidate too
//	                              (Planned.RestateKey, keyed by the change's time); the store
//	                              makes it only when the value (or currency) differs from the
//	                              latest one sent and the change is newer (mapping_restate.go)
//	retract_on: {stage|status}  → a retraction, keyed rule+":retract"
//
// Whether a platform can restate or retract is the platform's (uploader.Spec Restates,
// Retracts, passed in as Target); where it cannot, the rows still exist and end skipped
// (restatement_unsupported, retraction_unsupported), Summary says "has no effect" per
// destination, and the report counts them not_supported.
//
// Depends on internal/pii and shopspring/decimal only; knows nothing of Kafka or the store.
package crm
