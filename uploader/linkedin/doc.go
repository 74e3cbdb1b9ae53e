// Package linkedin uploads conversions to the LinkedIn Conversions API (platform
// "linkedin"): `POST {base}/rest/conversionEvents` with `X-RestLi-Method: BATCH_CREATE`,
// `X-Restli-Protocol-Version: 2.0.0` and `LinkedIn-Version: YYYYMM`, up to 5,000 elements.
//
// LinkedIn versions are monthly and each is sunset about a year later; Spec.Versions lists
// the ones this package sends with LinkedIn's published sunsets (platforms-2026-12.md
// §2.6), so `config check` warns before and refuses after a sunset. A `426
// NONEXISTENT_VERSION` answer is a setup error naming the version to set.
//
// Rows become conversion events: conversion = urn:lla:llaPartnerConversion:<rule id> (the
// mapping's conversion name), conversionHappenedAt = the CRM change time in epoch ms,
// conversionValue {currencyCode, amount as a decimal string}, eventId = the conversion key
// (LinkedIn's dedup key), user.userIds = SHA256_EMAIL and/or
// LINKEDIN_FIRST_PARTY_ADS_TRACKING_UUID (the li_fat_id). The per-element statuses of the
// batch answer become per-row outcomes (ElementClass); a 422 listing "Index: N, ERROR ::"
// lines rejects those rows and retries the others.
//
// userInfo (first and last name, company, title, country) is not sent: LinkedIn wants it
// in plain text, and closedloop stores only hashes of personal data, so there is nothing
// to send it from. Windows, enforced in Check: an event older than 90 days (less
// AgeMargin) expires; one in the future waits. LinkedIn has no retraction or adjustment, so
// retraction rows are skipped.
//
// Auth: a fixed access_token (LinkedIn's 60-day member token; the destination pauses when
// it expires), or a programmatic refresh token with the app's client id and secret,
// refreshed through golang.org/x/oauth2 and resent once after a 401 on a cached token.
//
// Facts: /work/shared/reference/platforms.md §5 and platforms-2026-12.md §2.6. UNCONFIRMED
// there and chosen conservatively here: the email normalization (trim + lower case, the
// form integrations use), the meaning of per-element statuses (only 400/422 reject a row;
// statuses this package does not know are ClassUnknown, never rejected), rate limits (none
// applied; 429 is honoured), and consent (no field; denied ad_user_data consent skips the
// row).
package linkedin
