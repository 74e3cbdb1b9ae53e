package ingest

import (
	"net/http"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
)

// fuzzVerify: for any body, the request signed as the CRM signs it verifies, the same
// request with one byte of the body changed does not (for the schemes that sign the
// body), and arbitrary header values never panic.
func fuzzVerify(f *testing.F, kind string) {
	var src SourceConfig
	for _, s := range testSources("t") {
		if s.CRM == kind {
			src = s
		}
	}
	v, err := newVerifier(src)
	require.NoError(f, err)
	f.Add(sampleBody(kind, "1"), "sig", "1700000000000")
	f.Add([]byte{}, "", "")
	f.Add([]byte("[]"), "t=1,v1=00", "-1")
	f.Fuzz(func(t *testing.T, body []byte, sig, ts string) {
		now := time.Unix(1714557600, 0)
		h, err := Sign(src, http.MethodPost, body, now)
		require.NoError(t, err)
		r := &request{method: http.MethodPost, header: h, body: body, now: now}
		err = v.verify(r)
		if kind != CRMSalesforce {
			require.NoError(t, err)
		}
		if len(body) > 0 && kind != CRMPipedrive && kind != CRMSalesforce {
			tampered := append([]byte{}, body...)
			tampered[len(tampered)-1] ^= 0x20
			require.Error(t, v.verify(&request{method: http.MethodPost, header: h, body: tampered, now: now}))
		}
		junk := http.Header{}
		for _, k := range []string{hubspotSigV3, hubspotTimestamp, hubspotSig, hubspotVersion, closeSigHash, closeSigTimestamp,
			attioSig, "Authorization", CanonicalSignatureHeader} {
			junk.Set(k, sig)
		}
		junk.Set(hubspotTimestamp, ts)
		junk.Set(closeSigTimestamp, ts)
		_ = v.verify(&request{method: http.MethodPost, header: junk, body: body, now: now})
	})
}

func FuzzVerifyHubSpot(f *testing.F)    { fuzzVerify(f, CRMHubSpot) }
func FuzzVerifyClose(f *testing.F)      { fuzzVerify(f, CRMClose) }
func FuzzVerifyAttio(f *testing.F)      { fuzzVerify(f, CRMAttio) }
func FuzzVerifyPipedrive(f *testing.F)  { fuzzVerify(f, CRMPipedrive) }
func FuzzVerifySalesforce(f *testing.F) { fuzzVerify(f, CRMSalesforce) }
func FuzzVerifyCanonical(f *testing.F)  { fuzzVerify(f, CRMCanonical) }

// fuzzSplit: split never panics, and every record it yields splits again into exactly
// itself (same key, same bytes): a record is one CRM record, in a body of the same shape.
func fuzzSplit(f *testing.F, kind string) {
	f.Add(sampleBody(kind, "1"))
	f.Add(append(append([]byte{}, sampleBody(kind, "2")...), ' '))
	switch kind {
	case CRMHubSpot:
		f.Add([]byte(`[{"eventId":1,"subscriptionType":"deal.creation","objectId":1},{"eventId":2,"subscriptionType":"contact.creation","objectId":"1"},{"eventId":3,"subscriptionType":"deal.propertyChange","objectId":1}]`))
		f.Add([]byte(`[{"subscriptionType":"object.propertyChange","objectTypeId":"0-3","objectId":5}]`))
	case CRMSalesforce:
		two := string(sampleSalesforce("00D5g000001AbCdEAK", "1"))
		f.Add([]byte(two[:len(two)-60] + `<Notification><Id>x</Id><sObject xsi:type="sf:Lead"><sf:Id>L1</sf:Id></sObject></Notification>` + two[len(two)-60:]))
	case CRMAttio:
		f.Add([]byte(`{"webhook_id":"w","events":[{"id":{"object_id":"o","record_id":"1"}},{"id":{"list_id":"l","entry_id":"e"}},{"id":{"object_id":"o","record_id":"1"}}]}`))
	}
	f.Fuzz(func(t *testing.T, body []byte) {
		recs, err := split(kind, body)
		if err != nil {
			return
		}
		keys := map[string]bool{}
		for _, r := range recs {
			require.NotEmpty(t, r.key)
			require.False(t, keys[r.key], "key %q twice", r.key)
			keys[r.key] = true
			again, err := split(kind, r.value)
			require.NoError(t, err, "a record's value does not split again")
			require.Len(t, again, 1)
			require.Equal(t, r.key, again[0].key)
			require.Equal(t, r.value, again[0].value)
		}
	})
}

func FuzzSplitHubSpot(f *testing.F)    { fuzzSplit(f, CRMHubSpot) }
func FuzzSplitSalesforce(f *testing.F) { fuzzSplit(f, CRMSalesforce) }
func FuzzSplitPipedrive(f *testing.F)  { fuzzSplit(f, CRMPipedrive) }
func FuzzSplitClose(f *testing.F)      { fuzzSplit(f, CRMClose) }
func FuzzSplitAttio(f *testing.F)      { fuzzSplit(f, CRMAttio) }
func FuzzSplitCanonical(f *testing.F)  { fuzzSplit(f, CRMCanonical) }
