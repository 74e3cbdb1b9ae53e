// Package pii normalizes and SHA-256 hashes personal identifiers by named normalization
// rules. Raw values enter here and never leave: callers keep only the Set of hashes, and
// errors (*Error) name the field and the problem, never the value. pii knows no platform:
// each platform package chooses one rule per field it takes (uploader.Spec.Hashes) and
// reads its hashes from a Set with Get.
//
// The rules (reference/platforms.md 1.7, 2.7, 3.7, 4.7, 5.7 say which platform wants
// which), named by Key* constants that are also the Set keys Add writes:
//
//	email         "email"              trim, lowercase                       KeyEmail
//	              "email/google"       also drop all whitespace; for gmail.com/googlemail.com
//	                                   drop the dots and the +suffix of the local part
//	                                                                         KeyEmailCanonical
//	phone         "phone/e164"         E.164 with "+", parsed with libphonenumber,
//	                                   Normalizer.DefaultRegion when no country code
//	                                                                         KeyPhoneE164
//	              "phone/digits"       the same digits without "+"           KeyPhoneDigits
//	first_name    "first_name"         lowercase, no punctuation, NFC UTF-8  KeyFirstName
//	              "first_name/google"  lowercase, trimmed, no honorific prefix
//	                                                                         KeyFirstNameNoTitle
//	last_name     "last_name"          lowercase, no punctuation, NFC UTF-8  KeyLastName
//	              "last_name/google"   also no Jr./Sr./III suffix           KeyLastNameNoSuffix
//	city          "city"               lowercase letters only                KeyCity
//	state         "state"              lowercase letters only, US state names to 2-letter codes
//	zip           "zip"                lowercase, no spaces or dashes, US ZIP+4 to 5 digits
//	country       "country"            ISO 3166-1 alpha-2 lowercase, from a code or English name
//	              "country/code"       the alpha-2 code upper case IN CLEAR (CountryCodeKey)
//	date_of_birth "date_of_birth"      YYYYMMDD
//	gender        "gender"             f or m
//	external_id   "external_id"        trimmed, case kept
//
// The "/google" in three key strings is history (the rule was first written for Google);
// they are stored in every identity, so they stay.
//
// Some platforms take address parts unhashed. A Set never holds raw values: the only clear
// value kept is the country code, which identifies no one. Address matching that needs the
// clear postal code is therefore not available from stored identities.
//
// A value that already is a SHA-256 hex passes through unchanged (lowercased) and is stored
// under every key of its field, so it serves every rule. Every key of a field is written
// on each Add, so merging Sets key by key never mixes two different values of one field.
//
// Depends on github.com/nyaruka/phonenumbers and golang.org/x/text. Everything here is pure
// and safe for concurrent use.
package pii
