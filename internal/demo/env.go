// Package demo runs closedloop on embedded defaults: an in-process Kafka broker (kfake) on
// 127.0.0.1, SQLite in a temporary directory and the platform sandbox, so that a newcomer
// sees the real worker work with one command (`make demo`) and nothing leaves the machine.
// It also publishes a realistic sample whose outcome is known, and checks the worker's
// reconciliation report against that truth and against the sandbox's own counts.
package demo

import (
	"context"
	_ "embed"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"time"

	"go.uber.org/zap"

	"github.com/closedloop/closedloop/internal/config"
	"github.com/closedloop/closedloop/internal/crmsandbox"
	"github.com/closedloop/closedloop/internal/devbroker"
	"github.com/closedloop/closedloop/uploader/platforms"
	"github.com/closedloop/closedloop/uploader/sandbox"
)

//go:embed demo.yaml
var demoYAML string

// Topics of the embedded broker.
const (
	StageTopic      = "crm.stage-changes"
	IdentityTopic   = "identity.captures"
	DeadLetterTopic = "closedloop.dead-letters"
)

// Env is a running set of embedded dependencies and the config that points at them.
type Env struct {
	dir     string
	broker  *devbroker.Broker
	sandbox *sandbox.Server
	sbURL   string
	crm     *crmsandbox.Server // the CRM emulator the enricher reads
	crmSrv  *http.Server
	crmURL  string
	cfg     *config.Config
	cfgPath string
}

// Start brings up the in-process broker, the sandbox and a temp dir, and writes the demo
// config there (so edits to its mappings are picked up by the running worker).
func Start(ctx context.Context, log *zap.Logger) (*Env, error) {
	dir, err := os.MkdirTemp("", "closedloop-demo-")
	if err != nil {
		return nil, err
	}
	e := &Env{dir: dir}
	e.broker, err = devbroker.Start(0, 3, StageTopic, IdentityTopic, DeadLetterTopic)
	if err != nil {
		e.Close()
		return nil, err
	}
	e.sandbox = platforms.NewSandbox(sandbox.Options{Seed: 1, StatusDelay: 300 * time.Millisecond}, log.Named("sandbox"))
	addr, err := e.sandbox.Start("127.0.0.1:0")
	if err != nil {
		e.Close()
		return nil, fmt.Errorf("sandbox: %w", err)
	}
	e.sbURL = addr
	e.crm = crmsandbox.New()
	SeedCRM(e.crm)
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		e.Close()
		return nil, fmt.Errorf("crm emulator: %w", err)
	}
	e.crmSrv = &http.Server{Handler: e.crm, ReadHeaderTimeout: 5 * time.Second}
	go func() { _ = e.crmSrv.Serve(ln) }()
	e.crmURL = "http://" + ln.Addr().String()
	vars := map[string]string{
		"DEMO_BROKER":        e.broker.Addrs()[0],
		"DEMO_SANDBOX":       e.sbURL,
		"DEMO_DB":            filepath.Join(dir, "closedloop.db"),
		"DEMO_CRM":           e.crmURL,
		"DEMO_HUBSPOT_TOKEN": crmsandbox.HubSpotToken,
	}
	lookup := func(k string) (string, bool) { v, ok := vars[k]; return v, ok }
	if _, err := config.Parse([]byte(demoYAML), lookup); err != nil {
		e.Close()
		return nil, fmt.Errorf("demo config: %w", err)
	}
	// Write the config with the addresses filled in, so that what the worker watches and
	// what a person edits is one plain file.
	e.cfgPath = filepath.Join(dir, "closedloop.yaml")
	expanded := os.Expand(demoYAML, func(k string) string { return vars[k] })
	if err := os.WriteFile(e.cfgPath, []byte(expanded), 0o600); err != nil {
		e.Close()
		return nil, err
	}
	e.cfg, err = config.Load(e.cfgPath, lookup)
	if err != nil {
		e.Close()
		return nil, err
	}
	return e, nil
}

// Config is the configuration that points at the embedded dependencies.
func (e *Env) Config() *config.Config { return e.cfg }

// ConfigPath is the demo config file in the temp dir.
func (e *Env) ConfigPath() string { return e.cfgPath }

// Brokers are the in-process broker's addresses.
func (e *Env) Brokers() []string { return e.broker.Addrs() }

// SandboxURL is the platform sandbox's base URL.
func (e *Env) SandboxURL() string { return e.sbURL }

// Sandbox is the running platform sandbox.
func (e *Env) Sandbox() *sandbox.Server { return e.sandbox }

// CRM is the running CRM emulator (HubSpot, Pipedrive, Close APIs) the enricher reads.
func (e *Env) CRM() *crmsandbox.Server { return e.crm }

// CRMURL is the CRM emulator's base URL.
func (e *Env) CRMURL() string { return e.crmURL }

// PrintHowTo returns a callback for worker.Options.Listening that tells a person how to
// publish more messages and where the admin endpoints are.
func (e *Env) PrintHowTo(w io.Writer) func(addr string) {
	return func(addr string) {
		b := e.broker.Addrs()[0]
		fmt.Fprintf(w, `
closedloop is running on embedded defaults (nothing leaves this machine).
  status page   http://%[1]s/        metrics http://%[1]s/metrics   ready http://%[1]s/readyz
  sandbox       %[2]s/sandbox/counts  (what the "platforms" accepted, per dedup key)
  CRM emulator  %[9]s  (HubSpot, Pipedrive, Close APIs the enricher reads)
  config        %[3]s  (edit the mappings: they reload live)
Publish more with kcat:
  echo '{"source":"relay","object_type":"deal","object_id":"D-2001","stage":"won","status":"won","occurred_at":"%[5]s","amount":990,"currency":"USD","email":"buyer@example.com"}' \
    | kcat -P -b %[4]s -t %[6]s
  kcat -P -b %[4]s -t %[6]s -H closedloop-format=hubspot FILE.json
  kcat -P -b %[4]s -t %[7]s FILE.jsonl       # identity captures, one JSON per line
  kcat -C -b %[4]s -t %[8]s -J -e            # the dead letters, with their reasons
Stop with Ctrl-C.
`, addr, e.sbURL, e.cfgPath, b, time.Now().UTC().Add(-time.Hour).Format(time.RFC3339), StageTopic, IdentityTopic, DeadLetterTopic, e.crmURL)
	}
}

// Close stops everything Start started and removes the temp dir.
func (e *Env) Close() {
	if e.sandbox != nil {
		ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
		_ = e.sandbox.Shutdown(ctx)
		cancel()
	}
	if e.crmSrv != nil {
		ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
		_ = e.crmSrv.Shutdown(ctx)
		cancel()
	}
	if e.broker != nil {
		e.broker.Close()
	}
	if e.dir != "" {
		_ = os.RemoveAll(e.dir)
	}
}
