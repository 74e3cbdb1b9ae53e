// Package bench drives the real closedloop binary against the real services for the
// benchmark (cmd/clbench) and the fault suite (internal/chaos): it owns the synthetic
// workload (identity captures and stage changes whose expected conversions are known), the
// Kafka helpers around it (topics, fast producing, a group's committed offsets against the
// end of its topics, reading a topic to its end), the worker as a subprocess (built once,
// configured from a template, started, killed with SIGKILL or stopped with SIGTERM, its
// peak RSS read from /proc), and the throwaway services started through scripts/kafka.sh
// and scripts/postgres.sh in a private state directory so they can be restarted in place.
//
// It depends on the binary's contracts only (config file, logs on stderr, the admin
// server) plus the sandbox package for the platforms. Nothing here is used in production.
//
// Sketch:
//
//	bin, _ := bench.Build(ctx, root, dir)                 // go build -o dir/closedloop ./cmd/closedloop
//	ds := bench.Dataset{Source: "bench", Prefix: "r1", Now: time.Now()}
//	_ = bench.Produce(ctx, brokers, topic, n, ds.StageChange)
//	w, _ := bench.StartWorker(ctx, bin, cfgPath, logFile)
//	_ = bench.WaitCaughtUp(ctx, brokers, group, []string{topic}, time.Second)
//	rss := w.PeakRSS()
package bench
