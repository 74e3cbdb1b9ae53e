package bench

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"
)

// ModuleRoot returns the directory of the main module's go.mod (via `go env GOMOD`).
func ModuleRoot(ctx context.Context) (string, error) {
	out, err := exec.CommandContext(ctx, "go", "env", "GOMOD").Output()
	if err != nil {
		return "", fmt.Errorf("go env GOMOD: %w", err)
	}
	mod := strings.TrimSpace(string(out))
	if mod == "" || mod == os.DevNull {
		return "", errors.New("not inside the closedloop module")
	}
	return filepath.Dir(mod), nil
}

// Build compiles cmd/closedloop from the module at root into dir and returns the binary.
func Build(ctx context.Context, root, dir string) (string, error) {
	bin := filepath.Join(dir, "closedloop")
	cmd := exec.CommandContext(ctx, "go", "build", "-o", bin, "./cmd/closedloop")
	cmd.Dir = root
	if out, err := cmd.CombinedOutput(); err != nil {
		return "", fmt.Errorf("go build ./cmd/closedloop: %w\n%s", err, out)
	}
	return bin, nil
}

// Destinations the generated config defines, one per platform, all pointing at the sandbox.
const (
	DestGoogle    = "google-dm"
	DestMeta      = "meta-crm"
	DestTikTok    = "tiktok-crm"
	DestMicrosoft = "microsoft-crm"
	DestLinkedIn  = "linkedin-crm"
)

// Default is the destinations a generated config sends to unless told otherwise; All adds
// the two platforms whose click ids only a Dataset with AllPlatforms carries.
var (
	Default = []string{DestGoogle, DestMeta, DestTikTok}
	All     = []string{DestGoogle, DestMeta, DestTikTok, DestMicrosoft, DestLinkedIn}
)

// PlatformOf maps a generated destination to its sandbox platform name.
var PlatformOf = map[string]string{DestGoogle: "google", DestMeta: "meta", DestTikTok: "tiktok", DestMicrosoft: "microsoft", DestLinkedIn: "linkedin"}

// conversionOf is the conversion each generated destination's rule sends.
var conversionOf = map[string]string{DestGoogle: "987654321", DestMeta: "Purchase", DestTikTok: "CompletePayment", DestMicrosoft: "Closed Won", DestLinkedIn: "104857"}

// SandboxKey is the sandbox's count key of subject i's conversion on destination: the
// platform's dedup scope (account or dataset, conversion) and then its dedup key, which is
// our conversion key everywhere but on Microsoft (click id and conversion time).
func (d Dataset) SandboxKey(i int, destination string) string {
	key := d.Key(i, destination)
	switch destination {
	case DestGoogle:
		return "1234567890/987654321/" + key
	case DestMeta:
		return "123456789012345/Purchase/" + key
	case DestMicrosoft:
		return "7890123/Closed Won/" + d.MSClickID(i) + "/" + d.ConvertedAt().Format(time.RFC3339)
	case DestLinkedIn:
		return "urn:lla:llaPartnerConversion:104857/" + key
	default:
		return "7300000000000000001/CompletePayment/" + key
	}
}

// WorkerConfig is what the generated config file varies.
type WorkerConfig struct {
	Brokers                                    []string
	Group                                      string
	StageTopic, IdentityTopic, DeadLetterTopic string
	DSN                                        string
	MaxConns                                   int // postgres pool; 0 = the default
	Upload                                     bool
	SandboxURL                                 string
	// Destinations the mapping rule sends to (default: Default, three).
	Destinations []string
	Source       string
	BatchSize    int           // kafka.batch_size; 0 = the default
	BatchWait    time.Duration // kafka.batch_wait; 0 = 100ms
	LeaseFor     time.Duration // uploader.lease_for; 0 = 30s
	PollInterval time.Duration // uploader.poll_interval; 0 = 200ms
	Timeout      time.Duration // per upload request; 0 = 10s
	LogLevel     string        // default info
	Pprof        bool          // admin.pprof: serve /debug/pprof/ (block and mutex sampling on)
	// RatePerSecond, when set, is every destination's rate_per_second (burst 1).
	RatePerSecond float64
}

func durStr(d, def time.Duration) string {
	if d == 0 {
		d = def
	}
	return d.String()
}

// WriteConfig writes c as a closedloop config file (JSON, which YAML reads) at path.
func WriteConfig(path string, c WorkerConfig) error {
	if c.LogLevel == "" {
		c.LogLevel = "info"
	}
	dests := c.Destinations
	if len(dests) == 0 {
		dests = Default
	}
	var ruleDests []map[string]string
	for _, d := range dests {
		ruleDests = append(ruleDests, map[string]string{"destination": d, "conversion": conversionOf[d]})
	}
	sb := c.SandboxURL
	if sb == "" {
		sb = "http://127.0.0.1:9" // never called: the uploader is off
	}
	timeout := durStr(c.Timeout, 10*time.Second)
	kafkaCfg := map[string]any{
		"brokers":           c.Brokers,
		"group_id":          c.Group,
		"stage_topics":      []map[string]string{{"topic": c.StageTopic, "format": "canonical"}},
		"identity_topic":    c.IdentityTopic,
		"dead_letter_topic": c.DeadLetterTopic,
		"batch_wait":        durStr(c.BatchWait, 100*time.Millisecond),
		"sweep_interval":    "5s",
	}
	if c.BatchSize > 0 {
		kafkaCfg["batch_size"] = c.BatchSize
	}
	storeCfg := map[string]any{"driver": "postgres", "dsn": c.DSN, "migrate_on_start": true}
	if c.MaxConns > 0 {
		storeCfg["max_conns"] = c.MaxConns
	}
	admin := map[string]any{"listen": "127.0.0.1:0", "shutdown_timeout": "20s"}
	if c.Pprof {
		admin["pprof"] = true
	}
	platforms := map[string]any{
		DestGoogle: map[string]any{
			"platform": "google", "base_url": sb, "token_url": sb + "/token",
			"customer_id": "1234567890", "client_id": "bench-client", "client_secret": "bench-secret",
			"refresh_token": "bench-refresh", "timeout": timeout,
		},
		DestMeta: map[string]any{
			"platform": "meta", "base_url": sb, "dataset_id": "123456789012345",
			"access_token": "bench-meta-token", "timeout": timeout,
		},
		DestTikTok: map[string]any{
			"platform": "tiktok", "base_url": sb, "event_source_id": "7300000000000000001",
			"access_token": "bench-tiktok-token", "timeout": timeout,
		},
		DestMicrosoft: map[string]any{
			"platform": "microsoft", "base_url": sb, "token_url": sb + "/token",
			"customer_id": "123456", "customer_account_id": "7890123", "developer_token": "bench-ms-developer-token",
			"client_id": "bench-ms-client", "client_secret": "bench-ms-secret", "refresh_token": "bench-ms-refresh", "timeout": timeout,
		},
		DestLinkedIn: map[string]any{
			"platform": "linkedin", "base_url": sb, "access_token": "bench-linkedin-token", "timeout": timeout,
		},
	}
	if c.RatePerSecond > 0 {
		for _, d := range platforms {
			d.(map[string]any)["rate_per_second"] = c.RatePerSecond
		}
	}
	cfg := map[string]any{
		"log":   map[string]any{"level": c.LogLevel, "format": "json"},
		"admin": admin,
		"pii":   map[string]any{"default_region": "US"},
		"kafka": kafkaCfg,
		"store": storeCfg,
		"uploader": map[string]any{
			"enabled":       c.Upload,
			"poll_interval": durStr(c.PollInterval, 200*time.Millisecond),
			"lease_for":     durStr(c.LeaseFor, 30*time.Second),
		},
		"destinations": platforms,
		"mappings": []map[string]any{{
			"name":         Rule,
			"match":        map[string]any{"source": c.Source, "status": "won"},
			"value":        map[string]any{"field": "amount", "currency_field": "currency", "default_currency": "USD"},
			"destinations": ruleDests,
		}},
	}
	b, err := json.MarshalIndent(cfg, "", "  ")
	if err != nil {
		return err
	}
	return os.WriteFile(path, b, 0o600)
}

// Worker is one `closedloop run` subprocess. Its stderr (the JSON log) is appended to a file.
type Worker struct {
	cmd     *exec.Cmd
	done    chan struct{}
	waitErr error
	log     *os.File

	mu        sync.Mutex
	admin     string
	adminSeen chan struct{}
}

// StartWorker starts `bin run --config cfgPath`, appending its stderr to logPath.
func StartWorker(bin, cfgPath, logPath string) (*Worker, error) {
	return Start(bin, []string{"run", "--config", cfgPath}, logPath)
}

// Start starts bin with args, appending its stderr to logPath and scanning it for the
// admin server's address.
func Start(bin string, args []string, logPath string) (*Worker, error) {
	f, err := os.OpenFile(logPath, os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o600)
	if err != nil {
		return nil, err
	}
	cmd := exec.Command(bin, args...)
	cmd.Stdout = f
	pr, err := cmd.StderrPipe()
	if err != nil {
		f.Close()
		return nil, err
	}
	if err := cmd.Start(); err != nil {
		f.Close()
		return nil, fmt.Errorf("start %s: %w", bin, err)
	}
	w := &Worker{cmd: cmd, done: make(chan struct{}), log: f, adminSeen: make(chan struct{})}
	copied := make(chan struct{})
	go func() {
		defer close(copied)
		w.scan(pr)
	}()
	go func() {
		<-copied
		w.waitErr = cmd.Wait()
		f.Close()
		close(w.done)
	}()
	return w, nil
}

// scan copies the log to the file and notes the admin address.
func (w *Worker) scan(r io.Reader) {
	br := bufio.NewReaderSize(r, 1<<16)
	for {
		line, err := br.ReadBytes('\n')
		if len(line) > 0 {
			_, _ = w.log.Write(line)
			if bytes.Contains(line, []byte("admin server listening")) {
				var rec struct {
					Addr string `json:"addr"`
				}
				if json.Unmarshal(line, &rec) == nil && rec.Addr != "" {
					w.mu.Lock()
					if w.admin == "" {
						w.admin = rec.Addr
						close(w.adminSeen)
					}
					w.mu.Unlock()
				}
			}
		}
		if err != nil {
			return
		}
	}
}

// PID is the process id.
func (w *Worker) PID() int { return w.cmd.Process.Pid }

// Done is closed when the process has exited.
func (w *Worker) Done() <-chan struct{} { return w.done }

// Err is the exit status once Done is closed.
func (w *Worker) Err() error { <-w.done; return w.waitErr }

// Admin waits for the admin server's address (from the log) or ctx's end.
func (w *Worker) Admin(ctx context.Context) (string, error) {
	select {
	case <-w.adminSeen:
		w.mu.Lock()
		defer w.mu.Unlock()
		return w.admin, nil
	case <-w.done:
		return "", fmt.Errorf("worker exited before its admin server listened: %v", w.waitErr)
	case <-ctx.Done():
		return "", ctx.Err()
	}
}

// Kill sends SIGKILL and waits for the exit.
func (w *Worker) Kill() {
	_ = w.cmd.Process.Signal(syscall.SIGKILL)
	<-w.done
}

// Stop sends SIGTERM and waits up to timeout, then SIGKILL. It returns the exit error of a
// process that did not stop cleanly.
func (w *Worker) Stop(timeout time.Duration) error {
	_ = w.cmd.Process.Signal(syscall.SIGTERM)
	t := time.NewTimer(timeout)
	defer t.Stop()
	select {
	case <-w.done:
		return w.waitErr
	case <-t.C:
		w.Kill()
		return fmt.Errorf("worker %d did not stop within %s after SIGTERM; killed", w.PID(), timeout)
	}
}

// CPU is the user and system CPU time the process has used so far (from /proc; 0 when it
// cannot be read).
func (w *Worker) CPU() time.Duration {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", w.PID()))
	if err != nil {
		return 0
	}
	// Fields after the command name (which may hold spaces) start after the last ')'.
	i := bytes.LastIndexByte(b, ')')
	if i < 0 {
		return 0
	}
	f := strings.Fields(string(b[i+1:]))
	if len(f) < 13 {
		return 0
	}
	utime, _ := strconv.ParseInt(f[11], 10, 64)
	stime, _ := strconv.ParseInt(f[12], 10, 64)
	const ticks = 100 // USER_HZ on Linux
	return time.Duration(utime+stime) * time.Second / ticks
}

// PeakRSS reads the process's peak resident set (VmHWM) in bytes from /proc; the process
// must still be running.
func (w *Worker) PeakRSS() (int64, error) { return PeakRSS(w.PID()) }

// PeakRSS reads VmHWM of pid in bytes.
func PeakRSS(pid int) (int64, error) {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		return 0, err
	}
	for _, line := range strings.Split(string(b), "\n") {
		if rest, ok := strings.CutPrefix(line, "VmHWM:"); ok {
			f := strings.Fields(rest)
			if len(f) >= 1 {
				kb, err := strconv.ParseInt(f[0], 10, 64)
				return kb * 1024, err
			}
		}
	}
	return 0, errors.New("no VmHWM in /proc status")
}
