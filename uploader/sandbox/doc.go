// Package sandbox is a local HTTP server that emulates the ad platform APIs closedloop
// uploads to, so tests, the demo and the benchmark can run the real uploaders end to end:
//
//	POST /token                                      Google OAuth2 token endpoint (refresh_token grant)
//	POST /v1/events:ingest                           Google Data Manager ingest
//	GET  /v1/requestStatus:retrieve?requestId=…      Google Data Manager request status
//	POST /{v}/customers/{cid}:uploadClickConversions Google Ads API (partial failure per row)
//	POST /{v}/customers/{cid}:uploadConversionAdjustments
//	POST /{v}/{dataset_id}/events                    Meta Conversions API
//	POST /open_api/v1.3/event/track/                 TikTok Events API
//	POST /CampaignManagement/v13/OfflineConversions/Apply  Microsoft Advertising (PartialErrors per row)
//	POST /rest/conversionEvents                      LinkedIn Conversions API (BATCH_CREATE)
//	POST /common/oauth2/v2.0/token, /oauth/v2/accessToken  the same token endpoint as /token
//	GET  /sandbox/counts   POST /sandbox/reset   GET|POST /sandbox/faults
//
// Each endpoint checks auth the way the platform does, validates the body against the
// schema facts (package schema: unknown fields, types, enums, required fields, limits)
// and the platform's own format rules (hex SHA-256 hashes, time zones and formats, batch
// limits, Meta's 7-day window, both braids), and answers with the platform's real success
// and error shapes. It applies each platform's dedup key and counts, per platform and
// dedup key, how many events it received and how many took effect, so a test can assert
// exactly-once effect while still seeing resends.
//
// Faults (Options.Faults, or POST /sandbox/faults at run time) inject 5xx, 429 with
// Retry-After, slow responses (the request is processed, then the answer is held past the
// client's timeout), row rejections by a marker name or key, whole-batch rejections and an
// expired-token window. Random faults draw from a math/rand source seeded by Options.Seed,
// so a run is reproducible for a given request order.
package sandbox
