package ingest

import (
	"encoding/base64"
	"encoding/hex"
	"errors"
	"net/http"
	"strconv"
	"time"
)

// Sign returns the headers the CRM of source s would send with body, posted with method
// at time now: HubSpot v3 (and the v1 header beside it, as HubSpot does), Close, Attio,
// Pipedrive's HTTP Basic auth, the canonical X-Closedloop-Signature. Salesforce signs
// nothing (its OrganizationId is in the body): Sign returns only a Content-Type. It is
// what the demo, the benchmark and the tests sign with, and a reference for custom relays.
// s must be valid (Config.Validate) with its defaults applied.
func Sign(s SourceConfig, method string, body []byte, now time.Time) (http.Header, error) {
	h := http.Header{}
	h.Set("Content-Type", "application/json")
	switch s.CRM {
	case CRMHubSpot:
		ts := strconv.FormatInt(now.UnixMilli(), 10)
		h.Set(hubspotTimestamp, ts)
		h.Set(hubspotSigV3, base64.StdEncoding.EncodeToString(hubspotV3([]byte(s.Secret), method, hubspotURI(s.PublicURL, ""), body, ts)))
		h.Set(hubspotSig, hex.EncodeToString(hubspotV1([]byte(s.Secret), body)))
		h.Set(hubspotVersion, "v1")
	case CRMClose:
		key, err := decodeHexKey(s.Secret)
		if err != nil {
			return nil, errors.New("ingest: close secret is not hex")
		}
		ts := strconv.FormatInt(now.Unix(), 10)
		h.Set(closeSigTimestamp, ts)
		h.Set(closeSigHash, hex.EncodeToString(hmacSHA256(key, []byte(ts), body)))
	case CRMAttio:
		h.Set(attioSig, hex.EncodeToString(hmacSHA256([]byte(s.Secret), body)))
	case CRMPipedrive:
		h.Set("Authorization", "Basic "+base64.StdEncoding.EncodeToString([]byte(s.Username+":"+s.Secret)))
	case CRMSalesforce:
		h.Set("Content-Type", "text/xml; charset=utf-8")
		h.Set("SOAPAction", `""`)
	case CRMCanonical:
		ts := strconv.FormatInt(now.Unix(), 10)
		h.Set(CanonicalSignatureHeader, "t="+ts+",v1="+hex.EncodeToString(hmacSHA256([]byte(s.Secret), []byte(ts), []byte("."), body)))
	default:
		return nil, errors.New("ingest: unknown crm kind")
	}
	return h, nil
}
