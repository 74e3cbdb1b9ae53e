package ingest

import (
	"bufio"
	"bytes"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"errors"
	"fmt"
	"io"
	"math/big"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"sort"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus/testutil"
	"github.com/stretchr/testify/require"

	"github.com/closedloop/closedloop/internal/testenv"
)

// The tests here wait on what the server does, never on how long it takes: a request is
// held in flight by sending its body only in part (its handler holds the source's
// concurrency slot until the rest comes), and every wait on the server is bounded by a
// deadline (patience) far beyond anything a loaded machine needs.
const patience = 60 * time.Second

// heldRequest is a request whose headers and first body bytes are sent on a connection
// of its own; the rest waits for finish.
type heldRequest struct {
	conn net.Conn
	rest []byte
}

// holdRequest sends method, path, h and the first half of body to addr.
func holdRequest(t *testing.T, addr, path string, h http.Header, body []byte) *heldRequest {
	t.Helper()
	conn, err := net.DialTimeout("tcp", addr, patience)
	require.NoError(t, err)
	t.Cleanup(func() { _ = conn.Close() })
	var b bytes.Buffer
	fmt.Fprintf(&b, "POST %s HTTP/1.1\r\nHost: %s\r\nContent-Length: %d\r\n", path, addr, len(body))
	require.NoError(t, h.Write(&b))
	b.WriteString("\r\n")
	half := len(body) / 2
	b.Write(body[:half])
	require.NoError(t, conn.SetDeadline(time.Now().Add(patience)))
	_, err = conn.Write(b.Bytes())
	require.NoError(t, err)
	return &heldRequest{conn: conn, rest: body[half:]}
}

// finish sends the rest of the body and reads the answer.
func (hr *heldRequest) finish(t *testing.T) (int, string) {
	t.Helper()
	require.NoError(t, hr.conn.SetDeadline(time.Now().Add(patience)))
	_, err := hr.conn.Write(hr.rest)
	require.NoError(t, err)
	resp, err := http.ReadResponse(bufio.NewReader(hr.conn), nil)
	require.NoError(t, err)
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	require.NoError(t, err)
	return resp.StatusCode, string(b)
}

// probeCode posts an unsigned body to source: 401 when the request gets a slot (nothing
// published), 503 when the source is at its cap. 0 on a transport error. It does not
// fail the test, so that it can run inside require.Eventually.
func (ts *testServer) probeCode(source string) int {
	req, err := http.NewRequest(http.MethodPost, ts.url+ts.sources[source].Path, bytes.NewReader([]byte("{}")))
	if err != nil {
		return 0
	}
	resp, err := ts.client.Do(req)
	if err != nil {
		return 0
	}
	_, _ = io.Copy(io.Discard, resp.Body)
	resp.Body.Close()
	return resp.StatusCode
}

func canonicalBody(id string) []byte {
	return []byte(`{"source":"relay","object_type":"deal","object_id":"` + id + `","stage":"closed-won","status":"won","occurred_at":"2024-05-01T10:00:00Z"}`)
}

func (ts *testServer) signedHeader(t *testing.T, source string, body []byte) http.Header {
	t.Helper()
	h, err := Sign(ts.sources[source], http.MethodPost, body, time.Now())
	require.NoError(t, err)
	return h
}

// keysOnTopic reads the topic's n messages and returns their keys, sorted, after
// checking that the topic holds exactly n.
func keysOnTopic(t *testing.T, ts *testServer, n int) []string {
	t.Helper()
	require.Equal(t, int64(n), endOffsets(t, ts.brokers, ts.topic), "messages on the topic")
	var keys []string
	for _, m := range readAll(t, ts.brokers, ts.topic, n) {
		keys = append(keys, string(m.Key))
	}
	sort.Strings(keys)
	return keys
}

// TestConcurrencyCapRefusesExcessRequests: with max_concurrent 2, two requests in flight
// make the source answer the next one 503 with Retry-After, publishing nothing for it;
// other sources are not affected, and once the two are answered the source takes
// requests again.
func TestConcurrencyCapRefusesExcessRequests(t *testing.T) {
	t.Parallel()
	ts := setup(t, testenv.KafkaBrokers(t), func(c *Config) {
		c.ReadTimeout, c.WriteTimeout = 2*patience, 2*patience // the held requests must not time out
		for i := range c.Sources {
			c.Sources[i].MaxConcurrent = 2
		}
	})
	const src = "canonical"
	path := ts.sources[src].Path
	b1, b2 := canonicalBody("D-1"), canonicalBody("D-2")
	held1 := holdRequest(t, ts.addr, path, ts.signedHeader(t, src, b1), b1)
	held2 := holdRequest(t, ts.addr, path, ts.signedHeader(t, src, b2), b2)
	// Both handlers hold a slot once an (unsigned, never published) probe is refused for
	// want of one; until then a probe may get a slot and its 401.
	require.Eventually(t, func() bool { return ts.probeCode(src) == http.StatusServiceUnavailable }, patience, 10*time.Millisecond,
		"the source never reached its cap of 2 with 2 requests held in flight")

	// A signed request over the cap: 503, Retry-After, and (below) nothing on the topic.
	b3 := canonicalBody("D-3")
	req, err := http.NewRequest(http.MethodPost, ts.url+path, bytes.NewReader(b3))
	require.NoError(t, err)
	req.Header = ts.signedHeader(t, src, b3)
	resp, err := ts.client.Do(req)
	require.NoError(t, err)
	_, _ = io.Copy(io.Discard, resp.Body)
	resp.Body.Close()
	require.Equal(t, http.StatusServiceUnavailable, resp.StatusCode)
	require.Equal(t, "1", resp.Header.Get("Retry-After"))

	// The cap is per source: another source still serves.
	code, body := ts.signed(t, "hubspot", sampleBody(CRMHubSpot, "5"))
	require.Equal(t, http.StatusOK, code, body)

	for _, hr := range []*heldRequest{held1, held2} {
		code, body := hr.finish(t)
		require.Equal(t, http.StatusOK, code, body)
		require.JSONEq(t, `{"published":1}`, body)
	}
	code, body = ts.signed(t, src, canonicalBody("D-4"))
	require.Equal(t, http.StatusOK, code, "the source takes requests again once under its cap: %s", body)

	require.Equal(t, []string{"hubspot:deal:5", "relay:deal:D-1", "relay:deal:D-2", "relay:deal:D-4"}, keysOnTopic(t, ts, 4))
	require.GreaterOrEqual(t, testutil.ToFloat64(mustCounter(t, ts.reg, "closedloop_ingest_requests_total", "503", src)), float64(2))
}

// TestShutdownDrainsInFlightRequests: when the server is told to stop with a request in
// flight, it stops accepting connections at once, lets that request finish, publishes
// it and answers it 200, and only then returns (nil).
func TestShutdownDrainsInFlightRequests(t *testing.T) {
	t.Parallel()
	ts, stop := startServer(t, testenv.KafkaBrokers(t), 2*patience, func(c *Config) {
		c.ReadTimeout, c.WriteTimeout = 2*patience, 2*patience
		for i := range c.Sources {
			c.Sources[i].MaxConcurrent = 1
		}
	})
	const src = "canonical"
	body := canonicalBody("D-drain")
	held := holdRequest(t, ts.addr, ts.sources[src].Path, ts.signedHeader(t, src, body), body)
	require.Eventually(t, func() bool { return ts.probeCode(src) == http.StatusServiceUnavailable }, patience, 10*time.Millisecond,
		"the held request never reached its handler")
	ts.client.CloseIdleConnections()

	stopped := make(chan error, 1)
	go func() { stopped <- stop() }()
	require.Eventually(t, func() bool {
		c, err := net.DialTimeout("tcp", ts.addr, time.Second)
		if err != nil {
			return true
		}
		c.Close()
		return false
	}, patience, 10*time.Millisecond, "still accepting connections after shutdown began")
	select {
	case err := <-stopped:
		t.Fatalf("Serve returned (%v) with a request in flight", err)
	default:
	}

	code, resp := held.finish(t)
	require.Equal(t, http.StatusOK, code, resp)
	require.JSONEq(t, `{"published":1}`, resp)
	select {
	case err := <-stopped:
		require.NoError(t, err)
	case <-time.After(patience):
		t.Fatal("Serve did not return after its last request was answered")
	}
	require.Equal(t, []string{"relay:deal:D-drain"}, keysOnTopic(t, ts, 1))
}

// TestShutdownTimeoutCutsStragglers: a request still in flight when the shutdown timeout
// ends is cut off, nothing of it is published, and Serve says so.
func TestShutdownTimeoutCutsStragglers(t *testing.T) {
	t.Parallel()
	ts, stop := startServer(t, testenv.KafkaBrokers(t), 200*time.Millisecond, func(c *Config) {
		c.ReadTimeout, c.WriteTimeout = 2*patience, 2*patience
		for i := range c.Sources {
			c.Sources[i].MaxConcurrent = 1
		}
	})
	const src = "canonical"
	body := canonicalBody("D-late")
	held := holdRequest(t, ts.addr, ts.sources[src].Path, ts.signedHeader(t, src, body), body)
	require.Eventually(t, func() bool { return ts.probeCode(src) == http.StatusServiceUnavailable }, patience, 10*time.Millisecond,
		"the held request never reached its handler")
	ts.client.CloseIdleConnections()

	err := stop() // the held request never finishes on its own
	require.ErrorContains(t, err, "still in flight")
	require.NoError(t, held.conn.SetDeadline(time.Now().Add(patience)))
	_, err = http.ReadResponse(bufio.NewReader(held.conn), nil)
	require.Error(t, err, "the cut request got an answer")
	require.False(t, isTimeout(err), "the cut request's connection was left open: %v", err)
	require.Zero(t, endOffsets(t, ts.brokers, ts.topic))
}

// TestTLS: with tls_cert and tls_key the server speaks TLS: a signed request over TLS
// is published and answered 200; plain HTTP to the same port is refused and publishes
// nothing.
func TestTLS(t *testing.T) {
	t.Parallel()
	certFile, keyFile, pool := testCertificate(t)
	ts := setup(t, testenv.KafkaBrokers(t), func(c *Config) { c.TLSCert, c.TLSKey = certFile, keyFile })
	ts.client = &http.Client{Timeout: patience, Transport: &http.Transport{TLSClientConfig: &tls.Config{RootCAs: pool, MinVersion: tls.VersionTLS12}}}
	defer ts.client.CloseIdleConnections()
	require.Contains(t, ts.url, "https://")

	code, body := ts.signed(t, "canonical", canonicalBody("D-tls"))
	require.Equal(t, http.StatusOK, code, body)

	plain := canonicalBody("D-plain")
	req, err := http.NewRequest(http.MethodPost, "http://"+ts.addr+ts.sources["canonical"].Path, bytes.NewReader(plain))
	require.NoError(t, err)
	req.Header = ts.signedHeader(t, "canonical", plain)
	client := &http.Client{Timeout: patience, Transport: &http.Transport{}}
	defer client.CloseIdleConnections()
	if resp, err := client.Do(req); err == nil {
		_, _ = io.Copy(io.Discard, resp.Body)
		resp.Body.Close()
		require.Equal(t, http.StatusBadRequest, resp.StatusCode, "plain HTTP to the TLS port") // Go's TLS server answers HTTP so
	} else {
		require.False(t, isTimeout(err), "plain HTTP to the TLS port hung: %v", err)
	}

	require.Equal(t, []string{"relay:deal:D-tls"}, keysOnTopic(t, ts, 1))
}

// testCertificate writes a self-signed certificate for 127.0.0.1 and its key as PEM
// files and returns them with a pool that trusts the certificate.
func testCertificate(t *testing.T) (certFile, keyFile string, pool *x509.CertPool) {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	require.NoError(t, err)
	tmpl := &x509.Certificate{
		SerialNumber:          big.NewInt(1),
		Subject:               pkix.Name{CommonName: "closedloop ingest test"},
		NotBefore:             time.Now().Add(-time.Hour),
		NotAfter:              time.Now().Add(24 * time.Hour),
		IPAddresses:           []net.IP{net.ParseIP("127.0.0.1")},
		DNSNames:              []string{"localhost"},
		KeyUsage:              x509.KeyUsageDigitalSignature | x509.KeyUsageCertSign,
		ExtKeyUsage:           []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
		BasicConstraintsValid: true,
		IsCA:                  true,
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	require.NoError(t, err)
	cert, err := x509.ParseCertificate(der)
	require.NoError(t, err)
	keyDER, err := x509.MarshalECPrivateKey(key)
	require.NoError(t, err)
	dir := t.TempDir()
	certFile, keyFile = filepath.Join(dir, "cert.pem"), filepath.Join(dir, "key.pem")
	require.NoError(t, os.WriteFile(certFile, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}), 0o600))
	require.NoError(t, os.WriteFile(keyFile, pem.EncodeToMemory(&pem.Block{Type: "EC PRIVATE KEY", Bytes: keyDER}), 0o600))
	pool = x509.NewCertPool()
	pool.AddCert(cert)
	return certFile, keyFile, pool
}

// TestSlowClientsAreCutOff: read_timeout cuts off a client that never finishes its
// headers or its body (slowloris), publishing nothing of it; idle_timeout closes a
// kept-alive connection nobody uses.
func TestSlowClientsAreCutOff(t *testing.T) {
	t.Parallel()
	ts := setup(t, testenv.KafkaBrokers(t), func(c *Config) {
		c.ReadTimeout, c.IdleTimeout = 300*time.Millisecond, 300*time.Millisecond
	})
	path := ts.sources["canonical"].Path
	dial := func() net.Conn {
		c, err := net.DialTimeout("tcp", ts.addr, patience)
		require.NoError(t, err)
		t.Cleanup(func() { _ = c.Close() })
		return c
	}

	t.Run("headers never finished", func(t *testing.T) {
		c := dial()
		_, err := io.WriteString(c, "POST "+path+" HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n")
		require.NoError(t, err)
		requireCutOff(t, c)
	})
	t.Run("body never finished", func(t *testing.T) {
		body := canonicalBody("D-slow")
		held := holdRequest(t, ts.addr, path, ts.signedHeader(t, "canonical", body), body)
		requireCutOff(t, held.conn)
	})
	t.Run("idle keep-alive connection", func(t *testing.T) {
		body := canonicalBody("D-idle")
		c := dial()
		var b bytes.Buffer
		fmt.Fprintf(&b, "POST %s HTTP/1.1\r\nHost: x\r\nContent-Length: %d\r\n", path, len(body))
		require.NoError(t, ts.signedHeader(t, "canonical", body).Write(&b))
		b.WriteString("\r\n")
		b.Write(body)
		require.NoError(t, c.SetDeadline(time.Now().Add(patience)))
		_, err := c.Write(b.Bytes())
		require.NoError(t, err)
		br := bufio.NewReader(c)
		resp, err := http.ReadResponse(br, nil)
		require.NoError(t, err)
		_, _ = io.Copy(io.Discard, resp.Body)
		resp.Body.Close()
		require.Equal(t, http.StatusOK, resp.StatusCode)
		require.NotEqual(t, "close", resp.Header.Get("Connection"), "the connection is kept alive")
		_, err = br.ReadByte() // blocks until the server closes the idle connection
		require.Error(t, err)
		require.False(t, isTimeout(err), "idle connection still open after %s", patience)
	})

	require.Equal(t, []string{"relay:deal:D-idle"}, keysOnTopic(t, ts, 1))
}

// requireCutOff reads from c until the server closes it. An error answer before the
// close is fine; a 2xx is not, and neither is a connection still open after patience.
func requireCutOff(t *testing.T, c net.Conn) {
	t.Helper()
	require.NoError(t, c.SetDeadline(time.Now().Add(patience)))
	br := bufio.NewReader(c)
	resp, err := http.ReadResponse(br, nil)
	if err == nil {
		_, _ = io.Copy(io.Discard, resp.Body)
		resp.Body.Close()
		require.GreaterOrEqual(t, resp.StatusCode, 400, "a request never finished got %d", resp.StatusCode)
		_, err = br.ReadByte()
		require.Error(t, err)
	}
	require.False(t, isTimeout(err), "connection still open after %s: %v", patience, err)
}

func isTimeout(err error) bool {
	var ne net.Error
	return errors.As(err, &ne) && ne.Timeout()
}
