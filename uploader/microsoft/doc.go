// Package microsoft uploads offline conversions to Microsoft Advertising (platform
// "microsoft"): Campaign Management v13 REST `POST {base}/CampaignManagement/v13/
// OfflineConversions/Apply`, up to 1,000 OfflineConversion per call. It is REST only: the
// SOAP API is fully deprecated on 2027-01-31 (platforms-2026-12.md §2.5).
//
// Auth is a Microsoft identity platform refresh token (golang.org/x/oauth2, token URL and
// scope configurable, default scope `https://ads.microsoft.com/msads.manage
// offline_access`); the access token is cached, never logged, and sent as `Authorization:
// Bearer` with the `DeveloperToken`, `CustomerId` and `CustomerAccountId` headers. A
// refused token that was cached is dropped and the request resent once with a fresh one
// (transient, Refreshed); refused right after a refresh it is setup (the destination
// pauses).
//
// Rows become OfflineConversion: ConversionName = the offline conversion goal's name,
// ConversionTime = the CRM change time in UTC to the second (Microsoft ignores a second
// conversion with the same MicrosoftClickId and ConversionTime, so a resend is a no-op),
// MicrosoftClickId = the msclkid, ConversionValue/ConversionCurrencyCode, and the hashed
// email and phone (enhanced conversions: a row without msclkid is sent when a hash is
// present). The answer's PartialErrors name failed rows by Index; every other row is
// accepted (RowClass maps each documented error name to a class).
//
// Windows, enforced in Check before anything is sent: a ConversionTime older than 90 days
// (less AgeMargin) expires; one in the future waits until it is not. Microsoft takes
// conversions for a goal only 2 hours after the goal is created: an
// OfflineConversionGoalTooRecent answer holds that goal's rows for 2 hours (state held,
// never dropped), and Check holds the goal's other rows for the rest of that wait without
// sending them.
//
// Facts: /work/shared/reference/platforms.md §4 and the Campaign Management v13 reference
// (ApplyOfflineConversions, OfflineConversion, DailySummary.Status for the error names).
// Where platforms.md says UNCONFIRMED this package chooses conservatively:
//   - per-call limit: 1,000, the figure of the ApplyOfflineConversions reference; an
//     OfflineConversionBatchSizeExceedsLimit answer is bisected, never rejected;
//   - error codes: only the documented names are classified (their numeric codes and the
//     REST HTTP statuses are unconfirmed, so the name decides, not the status); any other
//     code is ClassUnknown: retried with backoff, never rejected;
//   - normalization: email trimmed and lower-cased, phone E.164 with the + (pii.KeyEmail,
//     pii.KeyPhoneE164), SHA-256 hex, the forms Microsoft's field descriptions name;
//   - consent: Microsoft has no consent field; a row whose ad_user_data consent is denied
//     is skipped.
//
// Retractions and restatements go to `OfflineConversionAdjustments/Apply` (adjustments.go,
// platforms.md §4.1-4.2), never in one request with conversions (BatchGroup). An
// OfflineConversionAdjustment names the original as Microsoft knows it: its
// ConversionName, ConversionTime, MicrosoftClickId and hashes, all taken from the accepted
// original the dispatcher attaches (store.Conversion.Adjusted), with AdjustmentType
// Retract (no value) or Restate (AdjustmentValue = the new total, AdjustmentCurrencyCode),
// AdjustmentTime = the CRM change time. UNCONFIRMED and chosen conservatively: the per-call
// limit for adjustments (the conversions' 1,000 is assumed; a batch-size error is
// bisected), and the error codes for an unknown or already retracted original (only the
// reporting enum names AdjustmentOriginalNotFound / ConversionAlreadyRetracted are
// documented): any code this package does not know is retried, never rejected.
package microsoft
