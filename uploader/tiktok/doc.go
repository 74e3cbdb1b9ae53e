// Package tiktok uploads conversions to the TikTok Events API 2.0 (platform "tiktok"):
// `POST {base}/open_api/v1.3/event/track/` with the `Access-Token` header, event_source
// "crm" and the CRM event set ID as event_source_id, up to 1,000 events per request.
//
// TikTok answers errors inside HTTP 200 bodies ({"code","message","request_id","data"});
// ErrorClass maps each documented code (platforms.md 3.5) to a class. The dedup key is
// event_source_id + event + event_id, and event_id is the conversion key.
//
// The store's Identity.LeadID is a Meta Lead Ads id, so no TikTok lead_id is sent; the CRM
// name goes in lead.lead_event_source.
package tiktok
