package main

import (
	"context"
	"encoding/json"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"time"

	"github.com/segmentio/kafka-go"

	"github.com/closedloop/closedloop/internal/bench"
	"github.com/closedloop/closedloop/internal/ingest"
)

// ingestClients is the concurrency of the webhook run: 64 CRM connections at once.
const ingestClients = 64

// ingestWebhooks measures `closedloop ingest` against a raw kafka-go produce of the same
// messages, min(N, 200,000) of each.
func (e *env) ingestWebhooks(ctx context.Context) error {
	n := min(e.o.N, 200_000)
	port, err := freePort()
	if err != nil {
		return err
	}
	listen := fmt.Sprintf("127.0.0.1:%d", port)
	src := ingest.SourceConfig{Name: "hubspot-bench", CRM: ingest.CRMHubSpot, Secret: "bench-hubspot-secret",
		PublicURL: "https://hooks.bench.invalid/webhooks/hubspot-bench", Topic: e.topics.ingest, MaxConcurrent: 1024}
	cfg := map[string]any{
		"log":   map[string]any{"level": "warn"},
		"admin": map[string]any{"listen": "127.0.0.1:0"},
		"kafka": map[string]any{"brokers": e.o.Brokers, "stage_topics": []map[string]string{{"topic": e.topics.ingest, "format": "hubspot"}}},
		"store": map[string]any{"driver": "sqlite", "path": filepath.Join(e.dir, "ingest-unused.db")},
		"ingest": map[string]any{"listen": listen, "sources": []map[string]any{{
			"name": src.Name, "crm": src.CRM, "secret": src.Secret, "public_url": src.PublicURL, "max_concurrent": src.MaxConcurrent,
		}}},
	}
	b, err := json.MarshalIndent(cfg, "", "  ")
	if err != nil {
		return err
	}
	path := filepath.Join(e.dir, "ingest.yaml")
	if err := os.WriteFile(path, b, 0o600); err != nil {
		return err
	}
	w, err := bench.Start(e.bin, []string{"ingest", "--config", path}, filepath.Join(e.dir, "ingest.log"))
	if err != nil {
		return err
	}
	defer w.Stop(30 * time.Second)
	if err := waitListening(ctx, listen, w); err != nil {
		return err
	}
	src = ingest.Config{Sources: []ingest.SourceConfig{src}}.WithDefaults(e.topics.ingest).Sources[0]
	url := "http://" + listen + src.Path
	// Warm both paths (connections, the broker's produce path) untimed.
	if _, err := bench.IngestLoad(ctx, url, src, 1_000_000_000, min(n, 2000), ingestClients); err != nil {
		return err
	}
	res, err := bench.IngestLoad(ctx, url, src, 2_000_000_000, n, ingestClients)
	if err != nil {
		return err
	}
	if len(res.Failed) > 0 {
		return fmt.Errorf("ingest: non-2xx answers %v (log %s)", res.Failed, filepath.Join(e.dir, "ingest.log"))
	}
	at := []byte(time.Now().UTC().Format(time.RFC3339Nano))
	msgs := make([]kafka.Message, n)
	for i := range msgs {
		key, body := bench.HubSpotWebhook(3_000_000_000, i, time.Now())
		msgs[i] = kafka.Message{Key: []byte(key), Value: body, Headers: []kafka.Header{
			{Key: ingest.HeaderFormat, Value: []byte("hubspot")}, {Key: ingest.HeaderSource, Value: []byte(src.Name)},
			{Key: ingest.HeaderReceivedAt, Value: at}, {Key: ingest.HeaderEventID, Value: []byte(fmt.Sprint(i + 1))},
		}}
	}
	raw, err := bench.RawProduce(ctx, e.o.Brokers, e.topics.ingestRaw, msgs, ingestClients)
	if err != nil {
		return err
	}
	e.res.Ingest = IngestResult{Clients: ingestClients, Ingest: res, Raw: raw}
	logf("ingest %d webhooks: %.0f/s p50 %.1fms p99 %.1fms; raw produce %.0f/s p50 %.1fms p99 %.1fms",
		n, res.PerSecond, res.P50, res.P99, raw.PerSecond, raw.P50, raw.P99)
	// Not a result: the same load against a server that only reads and answers, to show
	// how much of the gap to the raw produce is the HTTP path itself on this machine.
	nullURL, stop, err := bench.NullWebhookServer()
	if err != nil {
		return err
	}
	defer stop()
	if null, err := bench.IngestLoad(ctx, nullURL, src, 4_000_000_000, n, ingestClients); err == nil && len(null.Failed) == 0 {
		logf("ingest ceiling (same load, HTTP only: no verification, no Kafka): %.0f/s p50 %.1fms p99 %.1fms, %.2f of the raw produce",
			null.PerSecond, null.P50, null.P99, null.PerSecond/raw.PerSecond)
	}
	return nil
}

func freePort() (int, error) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return 0, err
	}
	defer ln.Close()
	return ln.Addr().(*net.TCPAddr).Port, nil
}

// waitListening waits until addr accepts connections, the process exits, or 30 s pass.
func waitListening(ctx context.Context, addr string, w *bench.Worker) error {
	deadline := time.Now().Add(30 * time.Second)
	for time.Now().Before(deadline) {
		if c, err := net.DialTimeout("tcp", addr, time.Second); err == nil {
			c.Close()
			return nil
		}
		select {
		case <-w.Done():
			return fmt.Errorf("closedloop ingest exited: %v", w.Err())
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(100 * time.Millisecond):
		}
	}
	return fmt.Errorf("closedloop ingest not listening on %s after 30s", addr)
}
