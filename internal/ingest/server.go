package ingest

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"strconv"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/segmentio/kafka-go"
	"go.uber.org/zap"
)

// Headers every published message carries.
const (
	// HeaderFormat is consumer.HeaderFormat (the consumer decodes by it), spelled here so
	// that this package does not import the consumer (internal/bench, which consumer's
	// tests use, imports this one); a test keeps the two equal.
	HeaderFormat     = "closedloop-format"
	HeaderSource     = "closedloop-ingest-source" // the source's name from the config
	HeaderReceivedAt = "closedloop-received-at"   // when the request arrived, RFC 3339 (ns), UTC
	HeaderEventID    = "closedloop-event-id"      // the CRM's event id(s), comma-separated; absent when none
)

// SalesforceAck is the exact answer Salesforce expects to an outbound message: without it
// Salesforce keeps resending the notifications for up to 24 hours.
const SalesforceAck = `<?xml version="1.0" encoding="UTF-8"?>
<soapenv:Envelope xmlns:soapenv="http://schemas.xmlsoap.org/soap/envelope/">
 <soapenv:Body>
  <notificationsResponse xmlns="http://soap.sforce.com/2005/09/outbound">
   <Ack>true</Ack>
  </notificationsResponse>
 </soapenv:Body>
</soapenv:Envelope>
`

// Kafka is where the server publishes.
type Kafka struct {
	Brokers  []string
	ClientID string
}

// Server is the webhook HTTP server. Build it with New, bind it with Listen, run it with
// Serve. Safe for concurrent requests; one Server serves once.
type Server struct {
	cfg     Config
	log     *zap.Logger
	metrics *metrics
	kafka   *producer
	closeW  func() error
	mux     *http.ServeMux
	srv     *http.Server
	ln      net.Listener
	now     func() time.Time
}

// source is one configured endpoint, ready to serve.
type source struct {
	cfg    SourceConfig
	verify verifier
	slots  chan struct{} // MaxConcurrent tokens
	m      *sourceMetrics
}

// New builds the server for cfg (validated, defaults applied) publishing to k. Its
// metrics are registered on reg (nil: a private registry).
func New(cfg Config, k Kafka, reg prometheus.Registerer, log *zap.Logger) (*Server, error) {
	if len(cfg.Sources) == 0 {
		return nil, errors.New("ingest: no sources configured (ingest.sources)")
	}
	if len(k.Brokers) == 0 {
		return nil, errors.New("ingest: no Kafka brokers (kafka.brokers)")
	}
	if reg == nil {
		reg = prometheus.NewRegistry()
	}
	s := &Server{cfg: cfg, log: log, metrics: newMetrics(reg), mux: http.NewServeMux(), now: time.Now}
	for _, sc := range cfg.Sources {
		v, err := newVerifier(sc)
		if err != nil {
			return nil, fmt.Errorf("ingest source %s: %w", sc.Name, err)
		}
		src := &source{cfg: sc, verify: v, slots: make(chan struct{}, sc.MaxConcurrent), m: s.metrics.source(sc.Name)}
		s.mux.Handle("POST "+sc.Path, s.handler(src))
	}
	tr := &kafka.Transport{ClientID: k.ClientID}
	// The batching limits are those the server had with kafka-go's Writer (BatchSize 200,
	// BatchBytes max_body + 64KiB, 3 attempts, publish_timeout per attempt); the producer
	// sends without lingering and coalesces concurrent requests instead.
	p := newProducer(&kafka.Client{Addr: kafka.TCP(k.Brokers...), Transport: tr, Timeout: cfg.PublishTimeout},
		200, int64(cfg.MaxBody)+64<<10, 3, cfg.PublishTimeout)
	p.observe = func(n int) { s.metrics.batch.Observe(float64(n)) }
	s.kafka = p
	s.closeW = func() error {
		err := p.Close()
		tr.CloseIdleConnections()
		return err
	}
	return s, nil
}

// Listen binds cfg.Listen (DefaultListen when empty) and returns the bound address.
func (s *Server) Listen() (string, error) {
	addr := s.cfg.Listen
	if addr == "" {
		addr = DefaultListen
	}
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		return "", fmt.Errorf("ingest server: %w", err)
	}
	s.ln = ln
	return ln.Addr().String(), nil
}

// Serve serves webhooks on the listener from Listen until ctx ends, then stops accepting,
// waits up to shutdownTimeout for the requests in flight (each finishes its publish and
// gets its answer), and closes the Kafka producer. It returns nil after a clean drain.
func (s *Server) Serve(ctx context.Context, shutdownTimeout time.Duration) error {
	if s.ln == nil {
		if _, err := s.Listen(); err != nil {
			_ = s.closeW()
			return err
		}
	}
	s.srv = &http.Server{
		Handler:           s.mux,
		ReadHeaderTimeout: min(5*time.Second, s.cfg.ReadTimeout),
		ReadTimeout:       s.cfg.ReadTimeout,
		WriteTimeout:      s.cfg.WriteTimeout,
		IdleTimeout:       s.cfg.IdleTimeout,
		MaxHeaderBytes:    64 << 10,
		ErrorLog:          zap.NewStdLog(s.log.Named("http")),
	}
	tls := s.cfg.TLSCert != ""
	s.log.Info("ingest server listening", zap.String("addr", s.ln.Addr().String()), zap.Bool("tls", tls), zap.Int("sources", len(s.cfg.Sources)))
	served := make(chan error, 1)
	go func() {
		var err error
		if tls {
			err = s.srv.ServeTLS(s.ln, s.cfg.TLSCert, s.cfg.TLSKey)
		} else {
			err = s.srv.Serve(s.ln)
		}
		served <- err
	}()
	var err error
	select {
	case err = <-served: // failed on its own
		if errors.Is(err, http.ErrServerClosed) {
			err = nil
		}
	case <-ctx.Done():
		sctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), shutdownTimeout)
		err = s.srv.Shutdown(sctx)
		cancel()
		if err != nil {
			_ = s.srv.Close()
			err = fmt.Errorf("ingest server: requests still in flight after %s: %w", shutdownTimeout, err)
		}
		<-served
	}
	if cerr := s.closeW(); cerr != nil && err == nil {
		err = fmt.Errorf("ingest: close producer: %w", cerr)
	}
	s.log.Info("ingest server stopped")
	return err
}

// Close releases what New and Listen took (the listener, the Kafka producer) for a
// Server whose Serve will not run. After Serve, it is not needed.
func (s *Server) Close() error {
	if s.ln != nil {
		_ = s.ln.Close()
	}
	return s.closeW()
}

// handler answers one source's webhooks: verify, split, publish, and only then 2xx.
func (s *Server) handler(src *source) http.Handler {
	log := s.log.With(zap.String("source", src.cfg.Name))
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		received := s.now()
		code := s.serve(w, r, src, received, log)
		src.m.observe(code, time.Since(received))
	})
}

func (s *Server) serve(w http.ResponseWriter, r *http.Request, src *source, received time.Time, log *zap.Logger) int {
	select {
	case src.slots <- struct{}{}:
		defer func() { <-src.slots }()
	default:
		w.Header().Set("Retry-After", "1")
		http.Error(w, "busy", http.StatusServiceUnavailable)
		return http.StatusServiceUnavailable
	}
	body, err := readBody(w, r, int64(s.cfg.MaxBody))
	if err != nil {
		var tooLarge *http.MaxBytesError
		if errors.As(err, &tooLarge) {
			http.Error(w, "body over "+strconv.FormatInt(int64(s.cfg.MaxBody), 10)+" bytes", http.StatusRequestEntityTooLarge)
			return http.StatusRequestEntityTooLarge
		}
		http.Error(w, "body could not be read", http.StatusBadRequest)
		return http.StatusBadRequest
	}
	req := &request{method: r.Method, query: r.URL.RawQuery, header: r.Header, body: body, now: received}
	if err := src.verify.verify(req); err != nil {
		reason := ReasonBadSignature
		var re *RefusedError
		if errors.As(err, &re) {
			reason = re.Reason
		}
		s.metrics.refused(src.cfg.Name, reason)
		log.Info("webhook refused", zap.String("reason", reason), zap.String("remote", r.RemoteAddr))
		http.Error(w, "unauthorized", http.StatusUnauthorized)
		return http.StatusUnauthorized
	}

	records, err := split(src.cfg.CRM, body)
	if err != nil {
		// Verified but of a shape we cannot key: publish it whole, so the consumer
		// dead-letters it with the decoder's reason and nothing the CRM sent is lost.
		log.Warn("webhook body not split: published whole, keyed by the source name", zap.Int("bytes", len(body)))
		s.metrics.unsplit(src.cfg.Name)
		records = []record{{key: src.cfg.Name, value: body}}
	}
	msgs := make([]kafka.Message, len(records))
	at := []byte(received.UTC().Format(time.RFC3339Nano))
	for i, rec := range records {
		hs := []kafka.Header{
			{Key: HeaderFormat, Value: []byte(src.cfg.CRM)},
			{Key: HeaderSource, Value: []byte(src.cfg.Name)},
			{Key: HeaderReceivedAt, Value: at},
		}
		if rec.eventID != "" {
			hs = append(hs, kafka.Header{Key: HeaderEventID, Value: []byte(rec.eventID)})
		}
		msgs[i] = kafka.Message{Topic: src.cfg.Topic, Key: []byte(rec.key), Value: rec.value, Headers: hs}
	}
	if len(msgs) > 0 {
		ctx, cancel := context.WithTimeout(r.Context(), s.cfg.PublishTimeout)
		err := s.kafka.Publish(ctx, msgs)
		cancel()
		if err != nil {
			// Some messages may be on the topic: the CRM's retry publishes them again, and
			// the pipeline is idempotent. What matters is that this request is not 2xx.
			log.Warn("publish failed: answered 503", zap.Int("messages", len(msgs)), zap.Error(err))
			w.Header().Set("Retry-After", "5")
			http.Error(w, "kafka unavailable", http.StatusServiceUnavailable)
			return http.StatusServiceUnavailable
		}
		src.m.messages.Add(float64(len(msgs)))
	}
	if src.cfg.CRM == CRMSalesforce {
		w.Header().Set("Content-Type", "text/xml; charset=utf-8")
		w.WriteHeader(http.StatusOK)
		_, _ = io.WriteString(w, SalesforceAck)
		return http.StatusOK
	}
	w.Header()["Content-Type"] = jsonContentType
	w.WriteHeader(http.StatusOK)
	_, _ = w.Write(strconv.AppendInt(append(make([]byte, 0, 24), `{"published":`...), int64(len(msgs)), 10))
	_, _ = io.WriteString(w, "}\n")
	return http.StatusOK
}

var jsonContentType = []string{"application/json"}

// readBody reads the request body, at most limit bytes (more: a *http.MaxBytesError),
// straight into a buffer of its Content-Length when it announces one (net/http ends the
// body there, and a body cut short is an error).
func readBody(w http.ResponseWriter, r *http.Request, limit int64) ([]byte, error) {
	rd := http.MaxBytesReader(w, r.Body, limit)
	if n := r.ContentLength; n > 0 && n <= limit {
		buf := make([]byte, n)
		if _, err := io.ReadFull(rd, buf); err != nil {
			return nil, err
		}
		return buf, nil
	}
	return io.ReadAll(rd)
}
