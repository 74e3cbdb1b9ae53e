package main

import (
	"context"
	"encoding/json"
	"fmt"
	"os"
	"runtime"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/closedloop/closedloop/internal/bench"
)

// Rate is count things in seconds.
type Rate struct {
	Count     int     `json:"count"`
	Seconds   float64 `json:"seconds"`
	PerSecond float64 `json:"per_second"`
}

func rate(n int, d time.Duration) Rate {
	return Rate{Count: n, Seconds: d.Seconds(), PerSecond: float64(n) / d.Seconds()}
}

// Fill is one platform's batches during the upload run.
type Fill struct {
	Requests int     `json:"requests"`
	Events   int     `json:"events"`
	Max      int     `json:"max_batch"`
	Mean     float64 `json:"mean_fill"` // events / requests / max
}

// UploadResult is the upload run.
type UploadResult struct {
	Rows      int             `json:"rows"`
	Seconds   float64         `json:"seconds"` // until the sandbox had accepted every row
	PerSecond float64         `json:"per_second"`
	PeakRSS   int64           `json:"peak_rss_bytes"`
	Fill      map[string]Fill `json:"fill"`
}

// ReplayResult is the replay run.
type ReplayResult struct {
	Messages    int             `json:"messages"`
	Seconds     float64         `json:"seconds"`
	RowsCreated int             `json:"rows_created"`
	PeakRSS     int64           `json:"peak_rss_bytes"`
	Summary     json.RawMessage `json:"summary,omitempty"` // closedloop replay --json
}

// Machine says where the numbers come from.
type Machine struct {
	CPU, Kernel, Go, Postgres, Kafka string
	Cores                            int
	MemoryMiB                        int
}

// Results are one clbench run.
type Results struct {
	Started time.Time `json:"started"`
	Machine Machine   `json:"machine"`
	N       int       `json:"n"`
	UploadN int       `json:"upload_n"`

	ProduceIdentities Rate `json:"produce_identities"`
	ProduceStages     Rate `json:"produce_stage_changes"`

	RawRead   Rate    `json:"raw_kafka_read"`
	RawInsert Rate    `json:"raw_outbox_insert"`
	Ceiling   float64 `json:"ceiling_per_second"` // N / (t_read + t_insert)

	EndToEnd      Rate    `json:"end_to_end"`
	EndToEndRatio float64 `json:"end_to_end_ratio"`
	EndToEndSmall Rate    `json:"end_to_end_small"`
	PeakRSS       int64   `json:"peak_rss_bytes"`
	PeakRSSSmall  int64   `json:"peak_rss_small_bytes"`

	IdentityIngest    Rate    `json:"identity_ingest"`
	RawIdentityInsert Rate    `json:"raw_identity_insert"`
	IdentityRatio     float64 `json:"identity_ratio"`

	Uploads UploadResult `json:"uploads"`
	Replay  ReplayResult `json:"replay"`

	Ingest IngestResult `json:"ingest"`
	Enrich EnrichResult `json:"enrichment"`

	CatchUp CatchUpResult `json:"catch_up"`
}

// IngestResult is the webhook run: closedloop ingest under vegeta beside a raw kafka-go
// produce of the same messages.
type IngestResult struct {
	Clients int              `json:"clients"`
	Ingest  bench.LoadResult `json:"ingest"`
	Raw     bench.LoadResult `json:"raw_produce"`
	Ratio   float64          `json:"ratio"`
}

func (r *Results) finish() {
	if r.RawRead.Seconds+r.RawInsert.Seconds > 0 {
		r.Ceiling = float64(r.N) / (r.RawRead.Seconds + r.RawInsert.Seconds)
	}
	if r.Ceiling > 0 {
		r.EndToEndRatio = r.EndToEnd.PerSecond / r.Ceiling
	}
	if r.RawIdentityInsert.PerSecond > 0 {
		r.IdentityRatio = r.IdentityIngest.PerSecond / r.RawIdentityInsert.PerSecond
	}
	if r.Ingest.Raw.PerSecond > 0 {
		r.Ingest.Ratio = r.Ingest.Ingest.PerSecond / r.Ingest.Raw.PerSecond
	}
}

func mib(b int64) string { return fmt.Sprintf("%d MiB", b>>20) }

func verdict(ok bool) string {
	if ok {
		return "met"
	}
	return "MISSED"
}

// uploadPlatforms lists the platforms of an upload run's fill in the registry's order
// (results of older runs hold three).
func uploadPlatforms(fill map[string]Fill) []string {
	var out []string
	for _, d := range bench.All {
		if _, ok := fill[bench.PlatformOf[d]]; ok {
			out = append(out, bench.PlatformOf[d])
		}
	}
	return out
}

// rows are the table's lines: measure, value, target, verdict.
func (r *Results) rows() [][4]string {
	fillRows := [][4]string{}
	for _, p := range uploadPlatforms(r.Uploads.Fill) {
		f := r.Uploads.Fill[p]
		fillRows = append(fillRows, [4]string{
			fmt.Sprintf("batch fill, %s (%d events / %d requests, max %d)", p, f.Events, f.Requests, f.Max),
			fmt.Sprintf("%.1f%%", 100*f.Mean), "≥ 95%", verdict(f.Mean >= 0.95),
		})
	}
	out := [][4]string{
		{fmt.Sprintf("raw kafka-go group read of %d stage changes", r.N), fmt.Sprintf("%.0f/s (%.1fs)", r.RawRead.PerSecond, r.RawRead.Seconds), "", ""},
		{fmt.Sprintf("raw Postgres COPY of %d outbox rows (1,000 per tx)", r.N), fmt.Sprintf("%.0f/s (%.1fs)", r.RawInsert.PerSecond, r.RawInsert.Seconds), "", ""},
		{"raw ceiling N/(t_read+t_insert)", fmt.Sprintf("%.0f/s", r.Ceiling), "", ""},
		{fmt.Sprintf("closedloop end to end, %d stage changes → outbox → committed", r.N), fmt.Sprintf("%.0f/s (%.1fs)", r.EndToEnd.PerSecond, r.EndToEnd.Seconds), "≥ 25,000/s", verdict(r.EndToEnd.PerSecond >= 25000)},
		{"  ratio to the raw ceiling", fmt.Sprintf("%.2f", r.EndToEndRatio), "≥ 0.5", verdict(r.EndToEndRatio >= 0.5)},
		{fmt.Sprintf("closedloop identity captures ingested (%d)", r.N), fmt.Sprintf("%.0f/s (%.1fs)", r.IdentityIngest.PerSecond, r.IdentityIngest.Seconds), "", ""},
		{"raw Postgres COPY of the same identities + clicks", fmt.Sprintf("%.0f/s (%.1fs)", r.RawIdentityInsert.PerSecond, r.RawIdentityInsert.Seconds), "", ""},
		{"  identity ratio to raw insert", fmt.Sprintf("%.2f", r.IdentityRatio), "≥ 0.5", verdict(r.IdentityRatio >= 0.5)},
		{fmt.Sprintf("uploads to the sandbox, backlog of %d rows (%d platforms)", r.Uploads.Rows, len(r.Uploads.Fill)), fmt.Sprintf("%.0f/s (%.1fs)", r.Uploads.PerSecond, r.Uploads.Seconds), "", ""},
	}
	out = append(out, fillRows...)
	out = append(out,
		[4]string{fmt.Sprintf("worker peak RSS, backlog %d", r.EndToEndSmall.Count), mib(r.PeakRSSSmall), "≤ 150 MiB", verdict(r.PeakRSSSmall <= 150<<20)},
		[4]string{fmt.Sprintf("worker peak RSS, backlog %d", r.N), mib(r.PeakRSS), "≤ 150 MiB, flat", verdict(r.PeakRSS <= 150<<20)},
		[4]string{"worker peak RSS, uploading", mib(r.Uploads.PeakRSS), "≤ 150 MiB", verdict(r.Uploads.PeakRSS <= 150<<20)},
		[4]string{fmt.Sprintf("replay of %d processed stage changes", r.Replay.Messages), fmt.Sprintf("%.1fs, %d rows created, peak RSS %s", r.Replay.Seconds, r.Replay.RowsCreated, mib(r.Replay.PeakRSS)), "≤ 60 s, 0 rows", verdict(r.Replay.Seconds <= 60 && r.Replay.RowsCreated == 0)},
		[4]string{fmt.Sprintf("closedloop ingest, %d single-event HubSpot webhooks, %d clients (vegeta)", r.Ingest.Ingest.Count, r.Ingest.Clients), fmt.Sprintf("%.0f/s, p50 %.1f ms, p99 %.1f ms", r.Ingest.Ingest.PerSecond, r.Ingest.Ingest.P50, r.Ingest.Ingest.P99), "", ""},
		[4]string{fmt.Sprintf("raw kafka-go produce of the same messages, %d clients, acks=all", r.Ingest.Clients), fmt.Sprintf("%.0f/s, p50 %.1f ms, p99 %.1f ms", r.Ingest.Raw.PerSecond, r.Ingest.Raw.P50, r.Ingest.Raw.P99), "", ""},
		[4]string{"  ingest ratio to raw produce", fmt.Sprintf("%.2f", r.Ingest.Ratio), "≥ 0.5", verdict(r.Ingest.Ratio >= 0.5)},
	)
	out = append(out, r.enrichRows()...)
	out = append(out, r.CatchUp.rows()...)
	return out
}

// rows are the catch-up case's lines of the table.
func (c CatchUpResult) rows() [][4]string {
	if len(c.Runs) == 0 {
		return nil
	}
	out := [][4]string{
		{fmt.Sprintf("catch-up: raw kafka-go group read of %d stage messages (%d partitions)", c.Messages, c.Partitions), fmt.Sprintf("%.0f/s (%.1fs)", c.RawRead.PerSecond, c.RawRead.Seconds), "", ""},
		{fmt.Sprintf("catch-up: raw Postgres COPY of %d outbox rows (%d destinations)", c.RawInsert.Count, c.Destinations), fmt.Sprintf("%.0f/s (%.1fs)", c.RawInsert.PerSecond, c.RawInsert.Seconds), "", ""},
		{"catch-up: raw ceiling messages/(t_read+t_insert)", fmt.Sprintf("%.0f/s", c.Ceiling), "", ""},
		{fmt.Sprintf("catch-up: raw Postgres COPY of the %d identities + clicks", c.Identities), fmt.Sprintf("%.0f/s (%.1fs)", c.RawIdentity.PerSecond, c.RawIdentity.Seconds), "", ""},
	}
	for _, run := range c.Runs {
		out = append(out,
			[4]string{fmt.Sprintf("catch-up, %d instance(s): %d stage messages (%d duplicates, %d garbage) and %d identities backlogged", run.Instances, c.Messages, c.Duplicates, c.Garbage, c.Identities),
				fmt.Sprintf("stages %.0f/s (%.1fs), identities %.0f/s (%.1fs)", run.Stages.PerSecond, run.Stages.Seconds, run.Identities.PerSecond, run.Identities.Seconds), "", ""},
			[4]string{"  stage changes: ratio to the raw ceiling", fmt.Sprintf("%.2f", run.StageRatio), "≥ 0.5", verdict(run.StageRatio >= 0.5)},
			[4]string{"  identities: ratio to the raw COPY", fmt.Sprintf("%.2f", run.IdentityRatio), "≥ 0.5", verdict(run.IdentityRatio >= 0.5)},
			[4]string{"  peak RSS (largest instance), CPU", fmt.Sprintf("%s, %.2f cores", mib(run.PeakRSS), run.CPU), "≤ 150 MiB", verdict(run.PeakRSS <= 150<<20)},
			[4]string{"  outbox rows (all ready), released after waiting, dead letters", fmt.Sprintf("%d (%d), %d, %d", run.Rows, run.Ready, run.Released, run.DeadLetters),
				fmt.Sprintf("%d, -, %d", 3*c.Identities, c.Garbage), verdict(run.Rows == 3*c.Identities && run.Ready == run.Rows && run.DeadLetters == int64(c.Garbage))},
		)
	}
	for _, q := range c.Quota {
		worst := 0.0
		for _, v := range q.PerSecond {
			worst = max(worst, v)
		}
		out = append(out, [4]string{
			fmt.Sprintf("quota: %d instance(s) uploading, rate_per_second %.0f on each destination (%.0fs)", q.Instances, q.Limit, q.Seconds),
			fmt.Sprintf("requests/s google %.2f, meta %.2f, tiktok %.2f", q.PerSecond["google"], q.PerSecond["meta"], q.PerSecond["tiktok"]),
			fmt.Sprintf("≤ %.0f/s, whatever the instances", q.Limit), verdict(worst <= q.Limit*1.1)})
	}
	return out
}

// Table renders the results for a terminal.
func (r *Results) Table() string {
	var b strings.Builder
	fmt.Fprintf(&b, "\nclosedloop bench, %s, N=%d\n%s\n\n", r.Started.Format(time.RFC3339), r.N, r.Machine)
	tw := tabwriter.NewWriter(&b, 0, 0, 2, ' ', 0)
	fmt.Fprintln(tw, "measure\tresult\ttarget\t")
	for _, row := range r.rows() {
		fmt.Fprintf(tw, "%s\t%s\t%s\t%s\n", row[0], row[1], row[2], row[3])
	}
	tw.Flush()
	return b.String()
}

// Markdown renders the results as the README's Performance table.
func (r *Results) Markdown() string {
	var b strings.Builder
	fmt.Fprintf(&b, "# Benchmark results\n\nWritten by `make bench` (cmd/clbench); the JSON is in results.json beside this file.\n\n")
	fmt.Fprintf(&b, "Run %s, N = %d, on %s.\n\n", r.Started.Format(time.RFC3339), r.N, r.Machine)
	b.WriteString("| measure | result | target | |\n|---|---|---|---|\n")
	for _, row := range r.rows() {
		fmt.Fprintf(&b, "| %s | %s | %s | %s |\n", row[0], row[1], row[2], row[3])
	}
	b.WriteString(methodology)
	return b.String()
}

const methodology = `
## What each line measures

All on the same services in one run: the Kafka broker of scripts/kafka.sh and the
PostgreSQL of scripts/postgres.sh (fsync off: a test server), topics with 4 partitions.
Every closedloop figure is the real binary (` + "`closedloop run --config`" + `) started as a
process; its time runs from process start until the consumer group's committed offsets
(kafka-go Client.OffsetFetch, polled every 100 ms) reach the end of every partition. The
worker runs with its own defaults (GOGC=200, set by cmd/closedloop unless GOGC is set).
Before the first measure the identity topic is read once, untimed (a fresh broker's JVM
compiles its fetch path during its first seconds of reads); before every timed step the
run's databases are vacuumed and analyzed and a checkpoint is taken, so no step shares the
cores with autovacuum of the tables the previous one filled.

- **raw kafka-go group read**: a plain consumer group reader, FetchMessage and
  CommitMessages every 1,000 messages, same fetch settings as the worker.
- **raw Postgres COPY of outbox rows**: pgx CopyFrom of rows shaped like real outbox rows
  (the identity snapshot and subject keys copied from a real row) into a copy of the
  conversions table with all its indexes, 1,000 rows per transaction.
- **raw ceiling** = N / (t_read + t_insert): reading and writing the same rows back to back.
- **closedloop end to end**: N canonical won-deal stage changes whose contacts' identities
  are already stored, decoded, mapped (one rule, one destination: one row each), joined,
  written to the outbox (every row checked ready afterwards) and committed; uploader off.
- **identity captures ingested**: N canonical captures of new contacts (gclid, ttclid,
  email, phone, consent) read from Kafka, decoded, normalized and hashed (two forms each
  of the email and the phone; the phone parsed by libphonenumber, ~8 µs of CPU each) and
  merged into the identities and clicks tables; beside it a raw COPY of the same rows
  (identities + 2 clicks each, 1,000 captures per transaction), which reads nothing and
  hashes nothing. On 2 cores shared with Kafka and PostgreSQL this ratio moves from run
  to run: four runs of one build on fresh services gave 0.51, 0.47, 0.46 and 0.46
  (2026-11-26; the raw COPY itself ranged 72,000-81,000/s).
- **uploads**: a backlog of upload-n stage changes × 5 destinations (Google Data Manager,
  Meta CAPI, TikTok, Microsoft Advertising, LinkedIn) filled with the uploader off, then uploaded by one worker to the
  sandbox (in process, no faults) until nothing is ready or in flight. Batch fill is the
  sandbox's events received / requests answered / the platform's maximum. Data Manager's
  status polling (sent → accepted) is not part of the time.
- **peak RSS**: VmHWM of the worker process just before it is stopped, with a backlog of
  min(N, 100,000) and of N stage changes: it must not grow with the backlog.
- **ingest**: ` + "`closedloop ingest --config`" + ` (the real binary) serving one HubSpot source;
  vegeta (as a Go library) posts single-event HubSpot webhooks signed v3 (and v1) from 64
  workers as fast as they are answered; each is verified, keyed and produced with acks=all
  before its 200. Beside it, 64 goroutines write the same messages (key, body, headers)
  with one synchronous kafka-go WriteMessages each, on a writer set as the server's.
- **catch-up, both topics backlogged**: a day of downtime. N identity captures are
  produced first (as a relay would), then N won deals as stage changes with every 21st
  message a re-sent duplicate and N/1370 garbage messages, on 6 partitions each. Workers
  (1, 2, then 3 in one consumer group, each count on a fresh database) start with the
  rule sending closed-won to 3 destinations and the uploader off; the time runs from the
  first start until both groups have committed the end of their topics. Checked after
  each run: 3N rows, all ready, one dead letter per garbage message, and how many rows were
  written awaiting identity and released later (written twice). Beside it, on the first
  run's vacuumed database: a raw group read of the stage topic, a raw COPY of its 3N
  outbox rows (ceiling = messages / (t_read + t_copy)) and a raw COPY of the identities.
  CPU is the instances' user+system time over the wall time.
- **quota**: after each catch-up, the same instances upload that outbox with every
  destination at rate_per_second 1 (one token bucket per destination in the database,
  shared by every worker); the sandbox's requests per second over 20 s must stay at the
  limit however many instances send.
- **replay**: ` + "`closedloop replay --config --from 2000-01-01 --topic <main topic> --json`" + ` over
  all N already-processed stage changes; rows created counted in the outbox before and
  after; peak RSS from the process's rusage.
`

func (m Machine) String() string {
	return fmt.Sprintf("%d cores (%s), %d MiB RAM, Linux %s, %s, %s, %s", m.Cores, m.CPU, m.MemoryMiB, m.Kernel, m.Go, m.Postgres, m.Kafka)
}

func machine(ctx context.Context, dsn string) Machine {
	m := Machine{Cores: runtime.NumCPU(), Go: runtime.Version(), Kafka: "Kafka " + envOr("CLOSEDLOOP_KAFKA_VERSION", "4.1.2") + " (scripts/kafka.sh)"}
	if b, err := os.ReadFile("/proc/cpuinfo"); err == nil {
		for _, l := range strings.Split(string(b), "\n") {
			if k, v, ok := strings.Cut(l, ":"); ok && strings.TrimSpace(k) == "model name" {
				m.CPU = strings.TrimSpace(v)
				break
			}
		}
	}
	if b, err := os.ReadFile("/proc/sys/kernel/osrelease"); err == nil {
		m.Kernel = strings.TrimSpace(string(b))
	}
	if b, err := os.ReadFile("/proc/meminfo"); err == nil {
		var kb int
		fmt.Sscanf(strings.SplitN(string(b), "\n", 2)[0], "MemTotal: %d kB", &kb)
		m.MemoryMiB = kb / 1024
	}
	if conn, err := pgx.Connect(ctx, dsn); err == nil {
		var v string
		if conn.QueryRow(ctx, "SHOW server_version").Scan(&v) == nil {
			m.Postgres = "PostgreSQL " + strings.Fields(v)[0]
		}
		conn.Close(ctx)
	}
	return m
}

func envOr(k, def string) string {
	if v := os.Getenv(k); v != "" {
		return v
	}
	return def
}
