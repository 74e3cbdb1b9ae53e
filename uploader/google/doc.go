// Package google uploads conversions to Google's two offline-conversion surfaces:
//
//   - DataManager (platform "google"): the Data Manager API `POST /v1/events:ingest`, the
//     path Google recommends for new integrations. A request fails as a whole on any bad
//     row (*uploader.BatchRejectedError, the dispatcher bisects); an accepted request is
//     processed asynchronously, so rows end in ClassSent with the requestId as PlatformRef,
//     and DataManager's StatusPoller (`GET /v1/requestStatus:retrieve`) turns them into
//     accepted or rejected. Data Manager cannot retract a conversion.
//   - AdsAPI (platform "google_ads"): the Google Ads API `customers/{id}:uploadClickConversions`
//     with partialFailure (per-row outcomes by index) and, for retractions,
//     `:uploadConversionAdjustments` with adjustmentType RETRACTION by orderId.
//
// Both authenticate with an OAuth2 refresh token (golang.org/x/oauth2) against a
// configurable token URL; the access token is cached, never logged, refreshed when it
// expires or after a 401. A refresh rejected with invalid_grant (revoked or wrong refresh
// token) is an *uploader.SetupError.
//
// Facts come from /work/shared/reference/platforms.md section 1 and the schema facts in
// testdata/schemas (google_datamanager_v1.json, google_ads_upload.json); tests check every
// body built here against them.
package google
