package bench

import (
	"context"
	"fmt"
	"io"
	"net"
	"net/http"
	"sort"
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	"github.com/segmentio/kafka-go"
	vegeta "github.com/tsenart/vegeta/v12/lib"

	"github.com/closedloop/closedloop/internal/ingest"
)

// LoadResult is one load run: requests (or produce calls) answered, their rate and
// latency percentiles, and the non-2xx answers by status (0: transport error).
type LoadResult struct {
	Count     int         `json:"count"`
	Seconds   float64     `json:"seconds"`
	PerSecond float64     `json:"per_second"`
	P50       float64     `json:"p50_ms"`
	P99       float64     `json:"p99_ms"`
	Failed    map[int]int `json:"failed,omitempty"`
}

// HubSpotWebhook is single-event HubSpot webhook i (a deal reaching closedwon) and the
// record key the ingest server gives it. The deal's objectId is first+i: a JSON number,
// as HubSpot sends it (a body the splitter cannot read is published whole, keyed by the
// source name, so every message would land on one partition).
func HubSpotWebhook(first int64, i int, at time.Time) (key string, body []byte) {
	id := strconv.FormatInt(first+int64(i), 10)
	return "hubspot:deal:" + id, []byte(`[{"eventId":` + strconv.Itoa(i+1) + `,"subscriptionId":501,"portalId":62515,"appId":1160452,"occurredAt":` +
		strconv.FormatInt(at.UnixMilli(), 10) + `,"subscriptionType":"deal.propertyChange","attemptNumber":0,"objectId":` + id +
		`,"changeSource":"CRM_UI","propertyName":"dealstage","propertyValue":"closedwon"}]`)
}

// IngestLoad posts n single-event HubSpot webhooks (deals first, first+1, ...), signed for
// src, to url with vegeta at clients concurrent workers (as fast as they are answered).
func IngestLoad(ctx context.Context, url string, src ingest.SourceConfig, first int64, n, clients int) (LoadResult, error) {
	now := time.Now()
	targets := make([]vegeta.Target, n)
	for i := range targets {
		_, body := HubSpotWebhook(first, i, now)
		h, err := ingest.Sign(src, http.MethodPost, body, now)
		if err != nil {
			return LoadResult{}, err
		}
		targets[i] = vegeta.Target{Method: http.MethodPost, URL: url, Body: body, Header: h}
	}
	var next atomic.Int64
	targeter := func(t *vegeta.Target) error {
		i := next.Add(1) - 1
		if i >= int64(n) {
			return vegeta.ErrNoTargets
		}
		*t = targets[i]
		return nil
	}
	atk := vegeta.NewAttacker(vegeta.Workers(uint64(clients)), vegeta.MaxWorkers(uint64(clients)),
		vegeta.Connections(clients), vegeta.KeepAlive(true), vegeta.Timeout(30*time.Second), vegeta.MaxBody(0))
	res := LoadResult{Failed: map[int]int{}}
	lat := make([]time.Duration, 0, n)
	start := time.Now()
	var last time.Time
	for r := range atk.Attack(vegeta.Targeter(targeter), vegeta.Rate{Freq: 0}, 0, "ingest") {
		if r.Error == vegeta.ErrNoTargets.Error() {
			continue
		}
		if ctx.Err() != nil {
			atk.Stop()
		}
		lat = append(lat, r.Latency)
		if end := r.Timestamp.Add(r.Latency); end.After(last) {
			last = end
		}
		if r.Code < 200 || r.Code > 299 {
			res.Failed[int(r.Code)]++
		}
	}
	if err := ctx.Err(); err != nil {
		return res, err
	}
	return finishLoad(res, lat, last.Sub(start)), nil
}

// NullWebhookServer serves, on a loopback port of this process, webhooks answered as the
// ingest server answers them (body read, 200 {"published":1}) but neither verified nor
// published: the load against it is what the HTTP path alone allows on this machine
// with this load generator, the ceiling of any webhook server's line. Stop it with the
// returned function.
func NullWebhookServer() (url string, stop func(), err error) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return "", nil, err
	}
	srv := &http.Server{ReadHeaderTimeout: 5 * time.Second, Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		_, _ = io.Copy(io.Discard, r.Body)
		w.Header().Set("Content-Type", "application/json")
		_, _ = io.WriteString(w, `{"published":1}`+"\n")
	})}
	go func() { _ = srv.Serve(ln) }()
	return "http://" + ln.Addr().String() + "/webhooks/null", func() { _ = srv.Close() }, nil
}

// RawProduce writes msgs to topic with kafka-go from clients goroutines, one synchronous
// WriteMessages of one message at a time each, on a writer set as the ingest server's
// (hash balancer, acks=all, 2 ms batch timeout, LZ4): what the server does for a request,
// without HTTP and verification.
func RawProduce(ctx context.Context, brokers []string, topic string, msgs []kafka.Message, clients int) (LoadResult, error) {
	tr := &kafka.Transport{}
	w := &kafka.Writer{Addr: kafka.TCP(brokers...), Topic: topic, Balancer: &kafka.Hash{}, RequiredAcks: kafka.RequireAll,
		BatchSize: 200, BatchTimeout: 2 * time.Millisecond, MaxAttempts: 3, Compression: kafka.Lz4, Transport: tr}
	defer func() { _ = w.Close(); tr.CloseIdleConnections() }()
	var next atomic.Int64
	lat := make([]time.Duration, len(msgs))
	var failed atomic.Int64
	var firstErr error
	var once sync.Once
	var wg sync.WaitGroup
	start := time.Now()
	for c := 0; c < clients; c++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for {
				i := next.Add(1) - 1
				if i >= int64(len(msgs)) || ctx.Err() != nil {
					return
				}
				t := time.Now()
				if err := w.WriteMessages(ctx, msgs[i]); err != nil {
					failed.Add(1)
					once.Do(func() { firstErr = err })
				}
				lat[i] = time.Since(t)
			}
		}()
	}
	wg.Wait()
	d := time.Since(start)
	if err := ctx.Err(); err != nil {
		return LoadResult{}, err
	}
	res := LoadResult{Failed: map[int]int{}}
	if f := failed.Load(); f > 0 {
		res.Failed[0] = int(f)
		return finishLoad(res, lat, d), fmt.Errorf("raw produce: %d failed, first: %w", f, firstErr)
	}
	return finishLoad(res, lat, d), nil
}

func finishLoad(res LoadResult, lat []time.Duration, d time.Duration) LoadResult {
	res.Count = len(lat)
	res.Seconds = d.Seconds()
	if d > 0 {
		res.PerSecond = float64(res.Count) / d.Seconds()
	}
	sort.Slice(lat, func(i, j int) bool { return lat[i] < lat[j] })
	pct := func(p float64) float64 {
		if len(lat) == 0 {
			return 0
		}
		return float64(lat[min(len(lat)-1, int(p*float64(len(lat))))].Microseconds()) / 1000
	}
	res.P50, res.P99 = pct(0.50), pct(0.99)
	if len(res.Failed) == 0 {
		res.Failed = nil
	}
	return res
}
