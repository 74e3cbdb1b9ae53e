// Package mappingreload keeps the active stage mapping (*crm.Mapping) current while the
// worker runs, so sales ops can change mappings without a restart.
//
// It owns the reload loop only: the caller passes in the config file's path (to watch), a
// loader that re-reads that file and compiles its mappings (so this package does not depend
// on internal/config), and optionally the SIGHUP channel it has set up with signal.Notify
// (this package never installs signal handlers).
//
// A change of the file (seen through fsnotify on its directory, which survives editors that
// save by renaming a new file over the old one, and Kubernetes ConfigMap symlink swaps), a
// signal, or a Reload call leads, after a short debounce for file events, to one load. A
// mapping that compiles is swapped in atomically and the old → new version is logged; one
// that does not is rejected with every error logged, and the previous mapping stays active.
//
//	r, err := mappingreload.New(mappingreload.Config{Path: path, Load: load, Signals: hup}, log)
//	go r.Run(ctx)
//	planned, unmatched := r.Current().Plan(sc)
//
// Depends on: crm (Mapping), fsnotify, zap.
package mappingreload
