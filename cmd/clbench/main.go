// Command clbench measures closedloop against the raw ceiling of the same services in one
// run: the real worker binary (built here) against the Kafka broker and PostgreSQL named by
// CLOSEDLOOP_TEST_KAFKA_BROKERS and CLOSEDLOOP_TEST_POSTGRES_DSN (`make bench` starts both
// with scripts/with-services.sh) and the platform sandbox in process. It prints a table and
// writes it as JSON (-out) and Markdown (-md). See testdata/bench/README.md for what each
// line measures.
//
//	go run ./cmd/clbench -n 1000000 -out testdata/bench/results.json -md testdata/bench/README.md
package main

import (
	"context"
	"flag"
	"fmt"
	"os"
	"os/signal"
	"strings"
	"syscall"
	"time"
)

func main() {
	var o options
	flag.IntVar(&o.N, "n", 1_000_000, "stage changes (and identity captures) in the main backlog")
	flag.IntVar(&o.Partitions, "partitions", 4, "partitions of every topic")
	flag.IntVar(&o.UploadN, "upload-n", 100_000, "stage changes (× 5 destinations) in the upload backlog (at most -n)")
	flag.StringVar(&o.Out, "out", "testdata/bench/results.json", "results as JSON (empty: none)")
	flag.StringVar(&o.MD, "md", "testdata/bench/README.md", "results as a Markdown table (empty: none)")
	flag.StringVar(&o.Bin, "bin", "", "closedloop binary (default: go build ./cmd/closedloop into a temp dir)")
	flag.StringVar(&o.WorkDir, "workdir", "", "directory for configs and worker logs (default: a temp dir, kept on failure)")
	flag.StringVar(&o.Pprof, "pprof", "", "also profile an end-to-end run of min(n,100000) with the worker in process; CPU profile written here")
	flag.StringVar(&o.Only, "only", "", "run only the steps whose name contains this (after producing), e.g. uploads")
	flag.BoolVar(&o.WorkerPprof, "worker-pprof", false, "workers serve /debug/pprof/ on their admin address (see their logs), for diagnosis; costs some speed")
	flag.StringVar(&o.WorkerLog, "worker-log", "info", "workers' log level (debug logs every batch's timings)")
	flag.IntVar(&o.CatchMax, "catch-instances", 3, "the catch-up case runs with 1 up to this many instances")
	flag.DurationVar(&o.Timeout, "timeout", 30*time.Minute, "give up after this long")
	flag.Parse()
	o.Brokers = splitList(os.Getenv("CLOSEDLOOP_TEST_KAFKA_BROKERS"))
	o.AdminDSN = os.Getenv("CLOSEDLOOP_TEST_POSTGRES_DSN")
	if len(o.Brokers) == 0 || o.AdminDSN == "" {
		fmt.Fprintln(os.Stderr, "clbench: CLOSEDLOOP_TEST_KAFKA_BROKERS and CLOSEDLOOP_TEST_POSTGRES_DSN must be set (run `make bench`, or scripts/with-services.sh go run ./cmd/clbench)")
		os.Exit(2)
	}
	if o.UploadN > o.N {
		o.UploadN = o.N
	}
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	ctx, cancel := context.WithTimeout(ctx, o.Timeout)
	defer cancel()
	if err := run(ctx, o); err != nil {
		fmt.Fprintln(os.Stderr, "clbench:", err)
		os.Exit(1)
	}
}

func splitList(s string) []string {
	var out []string
	for _, p := range strings.Split(s, ",") {
		if p = strings.TrimSpace(p); p != "" {
			out = append(out, p)
		}
	}
	return out
}
