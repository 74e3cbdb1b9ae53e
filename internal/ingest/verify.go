package ingest

import (
	"crypto/hmac"
	"crypto/sha256"
	"crypto/subtle"
	"encoding/base64"
	"encoding/hex"
	"errors"
	"fmt"
	"net/http"
	"strconv"
	"strings"
	"time"
)

// Reasons a request is refused (the reason label of closedloop_ingest_refused_total): a
// short, bounded vocabulary that never carries request data.
const (
	ReasonMissingHeader     = "missing_header"       // the signature (or auth) header is absent
	ReasonBadSignature      = "bad_signature"        // the signature does not match: tampered body, wrong secret
	ReasonBadTimestamp      = "bad_timestamp"        // the timestamp header is not a number
	ReasonStaleTimestamp    = "stale_timestamp"      // older (or further in the future) than max_age
	ReasonBadCredentials    = "bad_credentials"      // HTTP Basic user or password wrong
	ReasonUnknownOrg        = "unknown_organization" // a Salesforce org not in organization_ids
	ReasonUnreadable        = "unreadable"           // a Salesforce message whose OrganizationId cannot be read
	ReasonVersionNotAllowed = "version_not_allowed"  // a HubSpot signature version not in signature_versions
)

// RefusedError says why a request failed verification. It carries a Reason only: never a
// header value, a secret or a byte of the body.
type RefusedError struct {
	Reason string
}

func (e *RefusedError) Error() string { return "webhook refused: " + e.Reason }

func refused(reason string) error { return &RefusedError{Reason: reason} }

// request is what a verifier sees of one HTTP request: the raw body as received.
type request struct {
	method string
	query  string // raw query, without '?'
	header http.Header
	body   []byte
	now    time.Time
}

// verifier checks one request against one source's credentials. Implementations compare
// in constant time and are safe for concurrent use.
type verifier interface {
	verify(r *request) error
}

// newVerifier builds the verifier of a validated source.
func newVerifier(s SourceConfig) (verifier, error) {
	switch s.CRM {
	case CRMHubSpot:
		v := hubspotVerifier{secret: []byte(s.Secret), publicURL: s.PublicURL, maxAge: s.MaxAge}
		for _, ver := range s.SignatureVersions {
			switch ver {
			case "v1":
				v.v1 = true
			case "v2":
				v.v2 = true
			case "v3":
				v.v3 = true
			}
		}
		return v, nil
	case CRMClose:
		key, err := decodeHexKey(s.Secret)
		if err != nil {
			return nil, errors.New("secret: must be Close's signature_key, hex-encoded")
		}
		return closeVerifier{key: key, maxAge: s.MaxAge}, nil
	case CRMAttio:
		return attioVerifier{secret: []byte(s.Secret)}, nil
	case CRMPipedrive:
		return basicVerifier{user: sha256.Sum256([]byte(s.Username)), pass: sha256.Sum256([]byte(s.Secret))}, nil
	case CRMSalesforce:
		return salesforceVerifier{orgs: s.OrganizationIDs}, nil
	case CRMCanonical:
		return canonicalVerifier{secret: []byte(s.Secret), maxAge: s.MaxAge}, nil
	}
	return nil, fmt.Errorf("crm: unknown kind %q", s.CRM)
}

func decodeHexKey(s string) ([]byte, error) {
	k, err := hex.DecodeString(strings.TrimSpace(s))
	if err == nil && len(k) == 0 {
		err = errors.New("empty key")
	}
	return k, err
}

func hmacSHA256(key []byte, parts ...[]byte) []byte {
	m := hmac.New(sha256.New, key)
	for _, p := range parts {
		m.Write(p)
	}
	return m.Sum(nil)
}

// equalHex compares a hex signature from a header with the expected MAC in constant time
// (for a given length). Case and surrounding space in the header are ignored.
func equalHex(header string, want []byte) bool {
	got, err := hex.DecodeString(strings.TrimSpace(header))
	return err == nil && hmac.Equal(got, want)
}

// fresh checks a timestamp against now within maxAge, either way.
func fresh(ts, now time.Time, maxAge time.Duration) error {
	if d := now.Sub(ts); d > maxAge || d < -maxAge {
		return refused(ReasonStaleTimestamp)
	}
	return nil
}

func parseEpoch(s string, unit time.Duration) (time.Time, error) {
	n, err := strconv.ParseInt(strings.TrimSpace(s), 10, 64)
	if err != nil || n < 0 || n > (1<<62)/int64(unit) {
		return time.Time{}, refused(ReasonBadTimestamp)
	}
	return time.Unix(0, n*int64(unit)), nil
}

// HubSpot headers.
const (
	hubspotSigV3     = "X-HubSpot-Signature-v3"
	hubspotTimestamp = "X-HubSpot-Request-Timestamp"
	hubspotSig       = "X-HubSpot-Signature"
	hubspotVersion   = "X-HubSpot-Signature-Version"
)

// hubspotVerifier checks v3 when the request carries it, else v2 or v1 as its version
// header says, each only if allowed.
type hubspotVerifier struct {
	secret     []byte
	publicURL  string
	maxAge     time.Duration
	v1, v2, v3 bool
}

func (v hubspotVerifier) verify(r *request) error {
	if sig := r.header.Get(hubspotSigV3); sig != "" {
		if !v.v3 {
			return refused(ReasonVersionNotAllowed)
		}
		tsHeader := r.header.Get(hubspotTimestamp)
		if tsHeader == "" {
			return refused(ReasonMissingHeader)
		}
		ts, err := parseEpoch(tsHeader, time.Millisecond)
		if err != nil {
			return err
		}
		if err := fresh(ts, r.now, v.maxAge); err != nil {
			return err
		}
		want := hubspotV3(v.secret, r.method, hubspotURI(v.publicURL, r.query), r.body, tsHeader)
		got, err := base64.StdEncoding.DecodeString(strings.TrimSpace(sig))
		if err != nil || !hmac.Equal(got, want) {
			return refused(ReasonBadSignature)
		}
		return nil
	}
	sig := r.header.Get(hubspotSig)
	if sig == "" {
		return refused(ReasonMissingHeader)
	}
	var want []byte
	switch strings.ToLower(strings.TrimSpace(r.header.Get(hubspotVersion))) {
	case "v1", "": // HubSpot's webhooks API sends v1; a missing version header means v1
		if !v.v1 {
			return refused(ReasonVersionNotAllowed)
		}
		want = hubspotV1(v.secret, r.body)
	case "v2":
		if !v.v2 {
			return refused(ReasonVersionNotAllowed)
		}
		want = hubspotV2(v.secret, r.method, withQuery(v.publicURL, r.query), r.body)
	default:
		return refused(ReasonVersionNotAllowed)
	}
	if !equalHex(sig, want) {
		return refused(ReasonBadSignature)
	}
	return nil
}

func withQuery(u, query string) string {
	if query == "" {
		return u
	}
	return u + "?" + query
}

// hubspotURIDecoder undoes the escapes HubSpot's v3 instructions list: the request URI is
// signed with these characters decoded (the '?' starting the query is never encoded).
var hubspotURIDecoder = strings.NewReplacer(
	"%3A", ":", "%2F", "/", "%3F", "?", "%40", "@", "%21", "!", "%24", "$",
	"%27", "'", "%28", "(", "%29", ")", "%2A", "*", "%2C", ",", "%3B", ";",
	"%3a", ":", "%2f", "/", "%3f", "?", "%2a", "*", "%2c", ",", "%3b", ";",
)

func hubspotURI(publicURL, query string) string {
	return hubspotURIDecoder.Replace(withQuery(publicURL, query))
}

// hubspotV3 is base64(HMAC-SHA256(secret, method + uri + body + timestamp)), raw bytes.
func hubspotV3(secret []byte, method, uri string, body []byte, timestamp string) []byte {
	return hmacSHA256(secret, []byte(method), []byte(uri), body, []byte(timestamp))
}

// hubspotV2 is hex(SHA-256(secret + method + uri + body)), raw bytes.
func hubspotV2(secret []byte, method, uri string, body []byte) []byte {
	h := sha256.New()
	h.Write(secret)
	h.Write([]byte(method))
	h.Write([]byte(uri))
	h.Write(body)
	return h.Sum(nil)
}

// hubspotV1 is hex(SHA-256(secret + body)), raw bytes.
func hubspotV1(secret, body []byte) []byte {
	h := sha256.New()
	h.Write(secret)
	h.Write(body)
	return h.Sum(nil)
}

// Close headers.
const (
	closeSigHash      = "Close-Sig-Hash"
	closeSigTimestamp = "Close-Sig-Timestamp"
)

// closeVerifier: hex(HMAC-SHA256(hex-decoded signature_key, timestamp + body)).
type closeVerifier struct {
	key    []byte
	maxAge time.Duration
}

func (v closeVerifier) verify(r *request) error {
	sig, tsHeader := r.header.Get(closeSigHash), r.header.Get(closeSigTimestamp)
	if sig == "" || tsHeader == "" {
		return refused(ReasonMissingHeader)
	}
	ts, err := parseEpoch(tsHeader, time.Second)
	if err != nil {
		return err
	}
	if err := fresh(ts, r.now, v.maxAge); err != nil {
		return err
	}
	if !equalHex(sig, hmacSHA256(v.key, []byte(tsHeader), r.body)) {
		return refused(ReasonBadSignature)
	}
	return nil
}

// Attio headers: the second is Attio's duplicate for legacy middleware.
const (
	attioSig       = "Attio-Signature"
	attioSigLegacy = "X-Attio-Signature"
)

// attioVerifier: hex(HMAC-SHA256(webhook secret, body)).
type attioVerifier struct{ secret []byte }

func (v attioVerifier) verify(r *request) error {
	sig := r.header.Get(attioSig)
	if sig == "" {
		sig = r.header.Get(attioSigLegacy)
	}
	if sig == "" {
		return refused(ReasonMissingHeader)
	}
	if !equalHex(sig, hmacSHA256(v.secret, r.body)) {
		return refused(ReasonBadSignature)
	}
	return nil
}

// basicVerifier checks HTTP Basic credentials (Pipedrive's http_auth_user and
// http_auth_password). Both sides are hashed first so the comparison takes the same time
// whatever the lengths.
type basicVerifier struct{ user, pass [sha256.Size]byte }

func (v basicVerifier) verify(r *request) error {
	auth := r.header.Get("Authorization")
	if auth == "" {
		return refused(ReasonMissingHeader)
	}
	user, pass, ok := parseBasic(auth)
	if !ok {
		return refused(ReasonBadCredentials)
	}
	u, p := sha256.Sum256([]byte(user)), sha256.Sum256([]byte(pass))
	if subtle.ConstantTimeCompare(u[:], v.user[:])&subtle.ConstantTimeCompare(p[:], v.pass[:]) != 1 {
		return refused(ReasonBadCredentials)
	}
	return nil
}

func parseBasic(auth string) (user, pass string, ok bool) {
	const prefix = "Basic "
	if len(auth) < len(prefix) || !strings.EqualFold(auth[:len(prefix)], prefix) {
		return "", "", false
	}
	c, err := base64.StdEncoding.DecodeString(strings.TrimSpace(auth[len(prefix):]))
	if err != nil {
		return "", "", false
	}
	return strings.Cut(string(c), ":")
}

// salesforceVerifier accepts outbound messages of the listed organizations. Outbound
// messages carry no signature: the org allow-list, an unguessable path and (ideally)
// Salesforce's client certificate checked by the TLS terminator in front are the checks.
type salesforceVerifier struct{ orgs []string }

func (v salesforceVerifier) verify(r *request) error {
	msg, err := parseOutbound(r.body)
	if err != nil || msg.orgID == "" {
		return refused(ReasonUnreadable)
	}
	for _, id := range v.orgs {
		if id == msg.orgID || (len(id) == 15 && len(msg.orgID) == 18 && msg.orgID[:15] == id) {
			return nil
		}
	}
	return refused(ReasonUnknownOrg)
}

// CanonicalSignatureHeader is the header a custom relay signs canonical stage changes
// with: "t=<unix seconds>,v1=<hex HMAC-SHA256(secret, "<t>.<body>")>". Several v1= entries
// may be listed (a secret rotation); one match is enough.
const CanonicalSignatureHeader = "X-Closedloop-Signature"

type canonicalVerifier struct {
	secret []byte
	maxAge time.Duration
}

func (v canonicalVerifier) verify(r *request) error {
	h := r.header.Get(CanonicalSignatureHeader)
	if h == "" {
		return refused(ReasonMissingHeader)
	}
	var tsHeader string
	var sigs []string
	for _, part := range strings.Split(h, ",") {
		k, val, _ := strings.Cut(strings.TrimSpace(part), "=")
		switch k {
		case "t":
			tsHeader = val
		case "v1":
			sigs = append(sigs, val)
		}
	}
	if tsHeader == "" || len(sigs) == 0 {
		return refused(ReasonMissingHeader)
	}
	ts, err := parseEpoch(tsHeader, time.Second)
	if err != nil {
		return err
	}
	if err := fresh(ts, r.now, v.maxAge); err != nil {
		return err
	}
	want := hmacSHA256(v.secret, []byte(tsHeader), []byte("."), r.body)
	ok := false
	for _, s := range sigs {
		ok = equalHex(s, want) || ok // check every entry: the time does not say which matched
	}
	if !ok {
		return refused(ReasonBadSignature)
	}
	return nil
}
