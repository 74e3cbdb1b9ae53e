// Package pii normalizes and SHA-256 hashes personal identifiers the way each ad platform
// wants them. Raw values enter here and never leave: callers keep only the Set of hashes,
// and errors (*Error) name the field and the problem, never the value.
//
// Rules (reference/platforms.md 1.7, 2.7, 3.7, 4.7, 5.7), and the Set keys Add writes:
//
//	email         "email"         trim, lowercase (Meta, TikTok, Microsoft, LinkedIn)
//	              "email/google"  also drop all whitespace; for gmail.com/googlemail.com drop
//	                              the dots and the +suffix of the local part (Google)
//	phone         "phone/e164"    E.164 with "+" (Google, TikTok, Microsoft), parsed with
//	                              libphonenumber, Normalizer.DefaultRegion when no country code
//	              "phone/digits"  the same digits without "+" (Meta); LinkedIn takes no phone
//	first_name    "first_name"         lowercase, no punctuation, NFC UTF-8 (Meta)
//	last_name     "first_name/google"  lowercase, trimmed, no honorific prefix (Google);
//	              "last_name/google"   Google's last name also has no punctuation and no
//	                                   Jr./Sr./III suffix
//	city          "city"          lowercase letters only (Meta)
//	state         "state"         lowercase letters only, US state names to 2-letter codes (Meta)
//	zip           "zip"           lowercase, no spaces or dashes, US ZIP+4 to 5 digits (Meta)
//	country       "country"       ISO 3166-1 alpha-2 lowercase, from a code or English name (Meta)
//	              "country/code"  the alpha-2 code upper case IN CLEAR (see CountryCodeKey)
//	date_of_birth "date_of_birth" YYYYMMDD (Meta)
//	gender        "gender"        f or m (Meta)
//	external_id   "external_id"   trimmed, case kept (Meta, TikTok)
//
// Google takes city, state, postal code and country unhashed. A Set never holds raw values, so
// Set.For(Google, Zip) etc. are "": the only clear value kept is the country code, which
// identifies no one. Google address matching (which needs the clear postal code) is therefore
// not available from stored identities.
//
// A value that already is a SHA-256 hex passes through unchanged (lowercased) and is stored
// under every key of its field, so it serves every platform. Every key of a field is written
// on each Add, so merging Sets key by key never mixes two different values of one field.
//
// Depends on github.com/nyaruka/phonenumbers and golang.org/x/text. Everything here is pure
// and safe for concurrent use.
package pii
