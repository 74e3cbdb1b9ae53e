package ingest

import (
	"bytes"
	"context"
	"encoding/xml"
	"fmt"
	"io"
	"net/http"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"
	"github.com/segmentio/kafka-go"
	"github.com/stretchr/testify/require"
	"go.uber.org/zap/zaptest"

	"github.com/closedloop/closedloop/consumer"
	"github.com/closedloop/closedloop/internal/testenv"
)

type testServer struct {
	addr    string
	url     string
	brokers []string
	topic   string
	sources map[string]SourceConfig
	reg     *prometheus.Registry
	client  *http.Client
}

// setup starts a server with one source per CRM kind on a topic of its own on the real
// broker; it stops (and is checked to drain) when the test ends.
func setup(t *testing.T, brokers []string, mutate func(*Config)) *testServer {
	t.Helper()
	ts, stop := startServer(t, brokers, 10*time.Second, mutate)
	t.Cleanup(func() { require.NoError(t, stop()) })
	return ts
}

// startServer starts the server of setup and returns it with its stop: cancel Serve's
// context and wait for Serve (draining within shutdownTimeout) to return.
func startServer(t *testing.T, brokers []string, shutdownTimeout time.Duration, mutate func(*Config)) (*testServer, func() error) {
	t.Helper()
	topic := testenv.CreateTopic(t, brokers, 3)
	// A generous publish_timeout: a loaded machine and a fresh topic can take seconds to
	// acknowledge the first messages (tests that want 503s set their own).
	cfg := Config{Listen: "127.0.0.1:0", Sources: testSources(topic), PublishTimeout: 30 * time.Second}
	if mutate != nil {
		mutate(&cfg)
	}
	cfg = cfg.WithDefaults(topic)
	require.Empty(t, cfg.Validate("ingest"))
	reg := prometheus.NewRegistry()
	srv, err := New(cfg, Kafka{Brokers: brokers, ClientID: "ingest-test"}, reg, zaptest.NewLogger(t))
	require.NoError(t, err)
	addr, err := srv.Listen()
	require.NoError(t, err)
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- srv.Serve(ctx, shutdownTimeout) }()
	var once sync.Once
	var serveErr error
	stop := func() error {
		once.Do(func() { cancel(); serveErr = <-done })
		return serveErr
	}
	scheme := "http://"
	if cfg.TLSCert != "" {
		scheme = "https://"
	}
	ts := &testServer{addr: addr, url: scheme + addr, brokers: brokers, topic: topic, sources: map[string]SourceConfig{}, reg: reg, client: http.DefaultClient}
	for _, s := range cfg.Sources {
		ts.sources[s.Name] = s
	}
	return ts, stop
}

func (ts *testServer) post(t *testing.T, source string, h http.Header, body []byte) (int, string) {
	t.Helper()
	req, err := http.NewRequest(http.MethodPost, ts.url+ts.sources[source].Path, bytes.NewReader(body))
	require.NoError(t, err)
	for k, v := range h {
		req.Header[k] = v
	}
	resp, err := ts.client.Do(req)
	require.NoError(t, err)
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	require.NoError(t, err)
	return resp.StatusCode, string(b)
}

func (ts *testServer) signed(t *testing.T, source string, body []byte) (int, string) {
	t.Helper()
	h, err := Sign(ts.sources[source], http.MethodPost, body, time.Now())
	require.NoError(t, err)
	return ts.post(t, source, h, body)
}

// endOffsets sums the end offsets of topic's partitions: how many messages it holds.
func endOffsets(t *testing.T, brokers []string, topic string) int64 {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	conn, err := kafka.DialContext(ctx, "tcp", brokers[0])
	require.NoError(t, err)
	ps, err := conn.ReadPartitions(topic)
	conn.Close()
	require.NoError(t, err)
	var n int64
	for _, p := range ps {
		// A topic created moments ago may not have its leader elected yet ("Not Leader
		// For Partition"): ask again until it answers.
		var last int64
		var lastErr error
		require.Eventually(t, func() bool {
			pc, err := kafka.DialLeader(ctx, "tcp", brokers[0], topic, p.ID)
			if err != nil {
				lastErr = err
				return false
			}
			last, lastErr = pc.ReadLastOffset()
			pc.Close()
			return lastErr == nil
		}, 20*time.Second, 50*time.Millisecond, "end offset of %s/%d: %v", topic, p.ID, lastErr)
		n += last
	}
	return n
}

// readAll reads the n messages of topic (every partition, from the start).
func readAll(t *testing.T, brokers []string, topic string, n int) []kafka.Message {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	r := kafka.NewReader(kafka.ReaderConfig{Brokers: brokers, GroupID: topic + "-reader", Topic: topic,
		StartOffset: kafka.FirstOffset, MinBytes: 1, MaxBytes: 16 << 20, MaxWait: 100 * time.Millisecond})
	defer r.Close()
	out := make([]kafka.Message, 0, n)
	for len(out) < n {
		m, err := r.FetchMessage(ctx)
		require.NoError(t, err, "read %d of %d messages", len(out), n)
		out = append(out, m)
	}
	return out
}

func header(m kafka.Message, key string) string {
	for _, h := range m.Headers {
		if h.Key == key {
			return string(h.Value)
		}
	}
	return ""
}

// TestSignedRequestsOfEveryCRMArePublished: a request signed as each CRM signs it is
// answered 2xx and is on the topic, keyed by the CRM record, with the ingest headers.
func TestSignedRequestsOfEveryCRMArePublished(t *testing.T) {
	t.Parallel()
	ts := setup(t, testenv.KafkaBrokers(t), nil)
	want := map[string]struct{ key, format, eventID string }{
		"hubspot":    {"hubspot:deal:7", "hubspot", "701"},
		"close":      {"close:opportunity:oppo_7", "close", "ev_7"},
		"attio":      {"attio:deals:rec_7", "attio", ""},
		"pipedrive":  {"pipedrive:deal:7", "pipedrive", "evt-7"},
		"salesforce": {"salesforce:opportunity:0065g00000Ab7", "salesforce", "04l5g00000AAAAA7"},
		"canonical":  {"relay:deal:D-7", "canonical", ""},
	}
	sent := map[string][]byte{}
	before := time.Now().UTC()
	for name, src := range ts.sources {
		body := sampleBody(src.CRM, "7")
		sent[want[name].key] = body
		code, resp := ts.signed(t, name, body)
		require.Equal(t, http.StatusOK, code, "%s: %s", name, resp)
		if src.CRM == CRMSalesforce {
			require.Equal(t, SalesforceAck, resp)
			var ack struct {
				Body struct {
					Response struct {
						Ack bool `xml:"Ack"`
					} `xml:"http://soap.sforce.com/2005/09/outbound notificationsResponse"`
				} `xml:"Body"`
			}
			require.NoError(t, xml.Unmarshal([]byte(resp), &ack))
			require.True(t, ack.Body.Response.Ack)
		} else {
			require.JSONEq(t, `{"published":1}`, resp)
		}
	}
	msgs := readAll(t, ts.brokers, ts.topic, len(want))
	got := map[string]kafka.Message{}
	for _, m := range msgs {
		got[header(m, HeaderSource)] = m
	}
	for name, w := range want {
		m, ok := got[name]
		require.True(t, ok, "no message from %s", name)
		require.Equal(t, w.key, string(m.Key), name)
		require.Equal(t, sent[w.key], m.Value, "%s: the raw body, byte for byte", name)
		require.Equal(t, w.format, header(m, consumer.HeaderFormat), name)
		require.Equal(t, w.eventID, header(m, HeaderEventID), name)
		at, err := time.Parse(time.RFC3339Nano, header(m, HeaderReceivedAt))
		require.NoError(t, err, name)
		require.WithinDuration(t, before, at, time.Minute)
	}
	require.Equal(t, float64(1), testutil.ToFloat64(mustCounter(t, ts.reg, "closedloop_ingest_messages_published_total", "hubspot")))
}

func mustCounter(t *testing.T, reg *prometheus.Registry, name string, labels ...string) prometheus.Collector {
	t.Helper()
	mfs, err := reg.Gather()
	require.NoError(t, err)
	for _, mf := range mfs {
		if mf.GetName() != name {
			continue
		}
		for _, m := range mf.GetMetric() {
			vals := make([]string, 0, len(m.GetLabel()))
			for _, l := range m.GetLabel() {
				vals = append(vals, l.GetValue())
			}
			if strings.Join(vals, ",") == strings.Join(labels, ",") {
				return prometheus.NewCounterFunc(prometheus.CounterOpts{Name: "x", Help: "x"}, func() float64 { return m.GetCounter().GetValue() })
			}
		}
	}
	t.Fatalf("no series %s%v", name, labels)
	return nil
}

// TestHubSpotBatchIsSplitPerRecord: a batch of events of three records becomes three
// messages, each with its record's raw events in order.
func TestHubSpotBatchIsSplitPerRecord(t *testing.T) {
	t.Parallel()
	ts := setup(t, testenv.KafkaBrokers(t), nil)
	ev := func(eventID, object, id, prop string) string {
		return fmt.Sprintf(`{"eventId":%s,"subscriptionType":"%s.propertyChange","objectId":%s,"propertyName":"%s","propertyValue":"x","occurredAt":1714557600000}`, eventID, object, id, prop)
	}
	body := []byte("[" + strings.Join([]string{
		ev("1", "deal", "9001", "dealstage"), ev("2", "contact", "31", "lifecyclestage"),
		ev("3", "deal", "9001", "amount"), ev("4", "deal", "9002", "dealstage"),
	}, ",") + "]")
	code, resp := ts.signed(t, "hubspot", body)
	require.Equal(t, http.StatusOK, code, resp)
	require.JSONEq(t, `{"published":3}`, resp)
	byKey := map[string]kafka.Message{}
	for _, m := range readAll(t, ts.brokers, ts.topic, 3) {
		byKey[string(m.Key)] = m
	}
	require.Equal(t, "["+ev("1", "deal", "9001", "dealstage")+","+ev("3", "deal", "9001", "amount")+"]", string(byKey["hubspot:deal:9001"].Value))
	require.Equal(t, "1,3", header(byKey["hubspot:deal:9001"], HeaderEventID))
	require.Equal(t, "["+ev("2", "contact", "31", "lifecyclestage")+"]", string(byKey["hubspot:contact:31"].Value))
	require.Equal(t, "["+ev("4", "deal", "9002", "dealstage")+"]", string(byKey["hubspot:deal:9002"].Value))
}

// TestRefusedRequestsPublishNothing: tampered body, wrong secret, stale timestamp and a
// missing header each get 401, are counted by source and reason, and nothing reaches
// the topic.
func TestRefusedRequestsPublishNothing(t *testing.T) {
	t.Parallel()
	ts := setup(t, testenv.KafkaBrokers(t), nil)
	now := time.Now()
	refusedCount := 0
	for name, src := range ts.sources {
		body := sampleBody(src.CRM, "8")
		good, err := Sign(src, http.MethodPost, body, now)
		require.NoError(t, err)
		wrong := src
		wrong.Secret, wrong.Username = "not-the-secret", src.Username
		if src.CRM == CRMClose {
			wrong.Secret = "ffffffffffffffffffffffffffffffff"
		}
		cases := map[string]struct {
			h      http.Header
			body   []byte
			reason string
		}{}
		if src.CRM != CRMPipedrive && src.CRM != CRMSalesforce {
			tampered := bytes.Replace(body, []byte("8"), []byte("9"), 1)
			cases["tampered body"] = struct {
				h      http.Header
				body   []byte
				reason string
			}{good, tampered, ReasonBadSignature}
		}
		switch src.CRM {
		case CRMSalesforce:
			cases["other org"] = struct {
				h      http.Header
				body   []byte
				reason string
			}{good, sampleSalesforce("00D5g000009ZzZzEAK", "8"), ReasonUnknownOrg}
		default:
			hw, err := Sign(wrong, http.MethodPost, body, now)
			require.NoError(t, err)
			reason := ReasonBadSignature
			if src.CRM == CRMPipedrive {
				reason = ReasonBadCredentials
			}
			cases["wrong secret"] = struct {
				h      http.Header
				body   []byte
				reason string
			}{hw, body, reason}
			cases["missing header"] = struct {
				h      http.Header
				body   []byte
				reason string
			}{http.Header{"Content-Type": {"application/json"}}, body, ReasonMissingHeader}
		}
		if src.CRM == CRMHubSpot || src.CRM == CRMClose || src.CRM == CRMCanonical {
			stale, err := Sign(src, http.MethodPost, body, now.Add(-src.MaxAge-time.Minute))
			require.NoError(t, err)
			stale.Del(hubspotSig)
			cases["stale timestamp"] = struct {
				h      http.Header
				body   []byte
				reason string
			}{stale, body, ReasonStaleTimestamp}
		}
		for cname, c := range cases {
			code, resp := ts.post(t, name, c.h, c.body)
			require.Equal(t, http.StatusUnauthorized, code, "%s %s: %s", name, cname, resp)
			require.NotContains(t, resp, string(body[:10]))
			refusedCount++
			require.GreaterOrEqual(t, testutil.ToFloat64(mustCounter(t, ts.reg, "closedloop_ingest_refused_total", c.reason, name)), float64(1), "%s %s", name, cname)
		}
	}
	require.Greater(t, refusedCount, 15)
	require.Zero(t, endOffsets(t, ts.brokers, ts.topic), "a refused request published something")
}

func TestHeaderFormatIsTheConsumers(t *testing.T) {
	t.Parallel()
	require.Equal(t, consumer.HeaderFormat, HeaderFormat)
}

func TestBodyOverMaxBodyIs413(t *testing.T) {
	t.Parallel()
	ts := setup(t, testenv.KafkaBrokers(t), func(c *Config) { c.MaxBody = 4096 })
	body := []byte(`[` + strings.Repeat(`{"eventId":1,"subscriptionType":"deal.creation","objectId":1},`, 100) + `{}]`)
	code, _ := ts.signed(t, "hubspot", body)
	require.Equal(t, http.StatusRequestEntityTooLarge, code)
	code, _ = ts.post(t, "nosuch", nil, []byte("{}"))
	require.Equal(t, http.StatusNotFound, code)
	require.Zero(t, endOffsets(t, ts.brokers, ts.topic))
}

// TestKafkaUnavailableIs503: with no broker to take the messages, the answer is 503
// within publish_timeout, never 2xx.
func TestKafkaUnavailableIs503(t *testing.T) {
	t.Parallel()
	cfg := Config{Listen: "127.0.0.1:0", Sources: testSources("nowhere"), PublishTimeout: 500 * time.Millisecond}.WithDefaults("nowhere")
	srv, err := New(cfg, Kafka{Brokers: []string{"127.0.0.1:1"}}, nil, zaptest.NewLogger(t))
	require.NoError(t, err)
	addr, err := srv.Listen()
	require.NoError(t, err)
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- srv.Serve(ctx, 5*time.Second) }()
	defer func() { cancel(); require.NoError(t, <-done) }()
	ts := &testServer{addr: addr, url: "http://" + addr, sources: map[string]SourceConfig{}, client: http.DefaultClient}
	for _, s := range cfg.Sources {
		ts.sources[s.Name] = s
	}
	start := time.Now()
	code, _ := ts.signed(t, "canonical", sampleBody(CRMCanonical, "1"))
	require.Equal(t, http.StatusServiceUnavailable, code)
	require.Less(t, time.Since(start), 5*time.Second)
}
