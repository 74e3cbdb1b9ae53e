// Package google uploads conversions to Google's two offline-conversion surfaces:
//
//   - DataManager (platform "google"): the Data Manager API `POST /v1/events:ingest`, the
//     path Google recommends for new integrations. A request fails as a whole on any bad
//     row (*uploader.BatchRejectedError, the dispatcher bisects); an accepted request is
//     processed asynchronously, so rows end in ClassSent with the requestId as PlatformRef,
//     and DataManager's StatusPoller (`GET /v1/requestStatus:retrieve`) turns them into
//     accepted or rejected. Data Manager cannot retract a conversion (retraction rows are
//     skipped, retraction_unsupported); it restates one by the same event sent again
//     under its transactionId with the new value ("re-sending the same transactionId
//     with an updated value ... is treated as an adjustment", platforms.md §1.6): a
//     restatement row's body is its original conversion's event (store.Conversion.Adjusted,
//     set by the dispatcher once the original is accepted) carrying the new value.
//   - AdsAPI (platform "google_ads"): the Google Ads API `customers/{id}:uploadClickConversions`
//     with partialFailure (per-row outcomes by index) and, for adjustments,
//     `:uploadConversionAdjustments` by orderId (the conversion key): adjustmentType
//     RETRACTION for a retraction row, RESTATEMENT with restatementValue{adjustedValue (the
//     new total), currencyCode} for a restatement row, adjustmentDateTime = the CRM change
//     time (Google ignores a second restatement without a newer one, so a resend is
//     harmless; RESTATEMENT_ALREADY_EXISTS and MORE_RECENT_RESTATEMENT_FOUND count as
//     accepted). Conversions and adjustments never share a request (BatchGroup). Google's
//     own waits (an adjustment 24 h after the conversion, TOO_RECENT_CONVERSION) are
//     retried later like any transient row.
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
