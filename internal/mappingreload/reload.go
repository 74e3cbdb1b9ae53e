package mappingreload

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"sync/atomic"
	"time"

	"github.com/fsnotify/fsnotify"
	"go.uber.org/zap"

	"github.com/closedloop/closedloop/crm"
)

// DefaultDebounce is how long the file must stay quiet after a change before it is loaded:
// editors and deploy tools often write a file in several steps.
const DefaultDebounce = 250 * time.Millisecond

// Loader re-reads the config file and compiles its mappings against its destinations. It
// returns the compiled mapping, or an error joining every problem found.
type Loader func() (*crm.Mapping, error)

// Config says what to watch and how to load it.
type Config struct {
	// Path is the config file. Its directory is watched; only events for this file (or a
	// Kubernetes "..data" symlink swap in the same directory) trigger a reload.
	Path string
	// Load reads Path and compiles the mappings. Required.
	Load Loader
	// Initial is the mapping active at start, typically compiled from the config the
	// process started with. When nil, New calls Load once and fails if it fails.
	Initial *crm.Mapping
	// Signals, when not nil, triggers a reload on every value received (the caller wires
	// SIGHUP to it with signal.Notify).
	Signals <-chan os.Signal
	// Debounce is the quiet time after a file event before loading; DefaultDebounce when 0.
	Debounce time.Duration
	// OnChange, when set, is called (on the reloader's goroutine) with each newly active
	// mapping, after it became Current.
	OnChange func(*crm.Mapping)
}

// Reloader holds the active mapping and replaces it when the config changes. Current is
// safe for concurrent use; Run must be called once.
type Reloader struct {
	cfg      Config
	log      *zap.Logger
	current  atomic.Pointer[crm.Mapping]
	requests chan struct{}
}

// New returns a Reloader holding cfg.Initial (or the result of a first load). It does not
// watch anything until Run.
func New(cfg Config, log *zap.Logger) (*Reloader, error) {
	if cfg.Path == "" {
		return nil, errors.New("mappingreload: Path is required")
	}
	if cfg.Load == nil {
		return nil, errors.New("mappingreload: Load is required")
	}
	if cfg.Debounce <= 0 {
		cfg.Debounce = DefaultDebounce
	}
	cfg.Path = filepath.Clean(cfg.Path)
	r := &Reloader{cfg: cfg, log: log, requests: make(chan struct{}, 1)}
	initial := cfg.Initial
	if initial == nil {
		m, err := cfg.Load()
		if err != nil {
			return nil, fmt.Errorf("mappingreload: initial load of %s: %w", cfg.Path, err)
		}
		initial = m
	}
	if initial == nil {
		return nil, errors.New("mappingreload: the loader returned no mapping")
	}
	r.current.Store(initial)
	return r, nil
}

// Current returns the active mapping. It never returns nil once New succeeded.
func (r *Reloader) Current() *crm.Mapping { return r.current.Load() }

// Reload asks Run to reload now. It never blocks; requests made while one is pending
// are coalesced.
func (r *Reloader) Reload() {
	select {
	case r.requests <- struct{}{}:
	default:
	}
}

// Run watches the config file and serves reload requests until ctx is done, then returns
// nil. It returns an error only when the watch cannot be set up.
func (r *Reloader) Run(ctx context.Context) error {
	w, err := fsnotify.NewWatcher()
	if err != nil {
		return fmt.Errorf("mappingreload: watcher: %w", err)
	}
	defer w.Close()
	dir := filepath.Dir(r.cfg.Path)
	if err := w.Add(dir); err != nil {
		return fmt.Errorf("mappingreload: watch %s: %w", dir, err)
	}
	r.log.Info("watching mappings", zap.String("path", r.cfg.Path), zap.String("version", r.Current().Version()))

	timer := time.NewTimer(time.Hour)
	timer.Stop()
	defer timer.Stop()
	for {
		select {
		case <-ctx.Done():
			return nil
		case ev, ok := <-w.Events:
			if !ok {
				return nil
			}
			if r.concerns(ev) {
				timer.Reset(r.cfg.Debounce)
			}
		case err, ok := <-w.Errors:
			if !ok {
				return nil
			}
			r.log.Warn("mapping watch error", zap.Error(err))
		case <-timer.C:
			r.reload("file changed")
		case sig := <-r.cfg.Signals: // a nil channel never receives
			r.reload("signal " + sig.String())
		case <-r.requests:
			r.reload("requested")
		}
	}
}

// concerns reports whether a directory event may have changed the config file.
func (r *Reloader) concerns(ev fsnotify.Event) bool {
	if ev.Op == fsnotify.Chmod {
		return false
	}
	name := filepath.Clean(ev.Name)
	return name == r.cfg.Path || filepath.Base(name) == "..data"
}

// reload loads the file and swaps the mapping in, or keeps the previous one on error.
func (r *Reloader) reload(why string) {
	old := r.Current()
	m, err := r.cfg.Load()
	if err == nil && m == nil {
		err = errors.New("the loader returned no mapping")
	}
	if err != nil {
		problems := flatten(err)
		for _, p := range problems {
			r.log.Error("mapping reload: invalid", zap.String("path", r.cfg.Path), zap.String("problem", p.Error()))
		}
		r.log.Error("mapping reload rejected; keeping the active mapping",
			zap.String("path", r.cfg.Path), zap.String("trigger", why),
			zap.String("version", old.Version()), zap.Int("problems", len(problems)))
		return
	}
	if m.Version() == old.Version() {
		r.log.Info("mapping unchanged", zap.String("trigger", why), zap.String("version", old.Version()))
		return
	}
	r.current.Store(m)
	r.log.Info("mapping reloaded", zap.String("trigger", why),
		zap.String("old_version", old.Version()), zap.String("new_version", m.Version()))
	if r.cfg.OnChange != nil {
		r.cfg.OnChange(m)
	}
}

// flatten lists the leaves of an error tree built with errors.Join, so each problem is
// logged on its own line; a wrapped join (fmt.Errorf("...: %w", errors.Join(...))) keeps
// its prefix on each line.
func flatten(err error) []error {
	type multi interface{ Unwrap() []error }
	if m, ok := err.(multi); ok {
		var out []error
		for _, e := range m.Unwrap() {
			out = append(out, flatten(e)...)
		}
		return out
	}
	inner := errors.Unwrap(err)
	if inner == nil {
		return []error{err}
	}
	if _, ok := inner.(multi); !ok {
		return []error{err}
	}
	// err wraps a join: keep err's own prefix on each problem.
	prefix := err.Error()
	if s := inner.Error(); len(prefix) > len(s) && prefix[len(prefix)-len(s):] == s {
		prefix = prefix[:len(prefix)-len(s)]
	} else {
		prefix = ""
	}
	var out []error
	for _, leaf := range flatten(inner) {
		if prefix == "" {
			out = append(out, leaf)
			continue
		}
		out = append(out, fmt.Errorf("%s%w", prefix, leaf))
	}
	return out
}
