package main

import (
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"slices"
	"strings"
	"time"

	"github.com/spf13/cobra"
	"go.uber.org/zap"
	"golang.org/x/term"

	"github.com/closedloop/closedloop/internal/logging"
	"github.com/closedloop/closedloop/internal/replay"
	"github.com/closedloop/closedloop/store"
)

// newReplayCmd is `closedloop replay`: an analyst's backfill of a Kafka time range or a CRM
// export through the live pipeline, idempotent by conversion key.
func newReplayCmd() *cobra.Command {
	var (
		path, from, to, file, format string
		topics, dests                []string
		dryRun, asJSON, dev          bool
		every                        time.Duration
	)
	cmd := &cobra.Command{
		Use:   "replay --config FILE (--from T [--to T] [--topic NAME ...] | --file EXPORT [--format F]) [--destination NAME ...] [--dry-run] [--json]",
		Short: "Replay a Kafka time range or a CRM export through the pipeline; never uploads a conversion twice",
		Long: `replay sends history through the same decode → map → join → outbox path as the live
consumer. Conversion keys make it idempotent: a conversion already in the outbox is skipped,
so running the same replay twice creates nothing the second time. Rows it creates are
marked as replay rows; the uploader sends them under each destination's replay_share cap so
live traffic keeps its share.

With --from (and --to, default: the end of each partition now) it reads every partition
of the stage topics (--topic limits them) from the offset of the first message at or after
--from up to the first at or after --to, without a consumer group: the live group's
offsets never move. With --file it reads a CRM export: CSV in the layout of
internal/replay/EXPORT.md, or JSON lines (--format jsonl or canonical: canonical stage
changes; hubspot, salesforce, pipedrive, close: one webhook payload per line). Records with errors
are skipped and listed by line; raw emails and phones are hashed on arrival.

--destination (repeatable) limits the replay to some destinations: a newly added one gets
its history while the others see nothing new. --dry-run writes nothing and reports what a
replay would create, per destination and rule. Either way the summary forecasts, per
destination, how many new conversions the platform's window will expire (Meta: 7 days
after the close; Google: the click window) before anything is sent.

Times are RFC 3339 (2024-05-01T00:00:00Z) or a UTC date (2024-05-01). A progress bar is
drawn on a terminal, a log line every --progress-every otherwise. Ctrl-C stops after the
batch in hand; the summary says how far each partition got (exit code 130).`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			fromT, toT, err := replayTimes(from, to)
			if err != nil {
				return err
			}
			switch {
			case file == "" && from == "":
				return usageError("replay: give --from (a Kafka time range) or --file (a CRM export)")
			case file != "" && len(topics) > 0:
				return usageError("replay: --topic applies to a Kafka replay, not to --file")
			case file == "" && format != "":
				return usageError("replay: --format applies to --file")
			case format != "" && !slices.Contains(replay.FileFormats, strings.ToLower(format)):
				return usageError("replay: --format %q: want one of %s", format, strings.Join(replay.FileFormats, ", "))
			}
			cfg, err := loadConfig(path)
			if err != nil {
				return usageError("%v", err)
			}
			log, err := logging.New(cfg.Log.Level, cfg.Log.Format, dev)
			if err != nil {
				return usageError("log: %v", err)
			}
			defer func() { _ = log.Sync() }()
			for _, d := range dests {
				if _, ok := cfg.Destinations[d]; !ok {
					return usageError("replay: --destination %q is not configured (destinations: %s)", d, strings.Join(cfg.DestinationNames(), ", "))
				}
			}
			storeCfg := cfg.Store
			if dryRun {
				storeCfg.MigrateOnStart = false // a dry run changes nothing, not even the schema
				if storeCfg.Driver == store.DriverSQLite {
					if _, err := os.Stat(storeCfg.Path); err != nil {
						return fmt.Errorf("replay: store %s: %w (a dry run does not create it)", storeCfg.Path, err)
					}
				}
			}
			ctx := cmd.Context()
			st, err := store.Open(ctx, storeCfg, log)
			if err != nil {
				return fmt.Errorf("open store: %w", err)
			}
			defer st.Close()
			if dryRun {
				v, dirty, err := st.MigrationVersion(ctx)
				switch {
				case err != nil:
					return err
				case v == 0 || dirty:
					return fmt.Errorf("replay: the store's schema is not migrated (version %d, dirty %t): run `closedloop migrate up --config %s` first", v, dirty, path)
				}
			}

			r, err := replay.NewFromConfig(cfg, st, log.Named("replay"))
			if err != nil {
				return err
			}
			unit := "messages"
			if file != "" {
				unit = "records"
			}
			progress := newReplayProgress(cmd.ErrOrStderr(), log.Named("replay"), unit, every)
			opts := replay.Options{Destinations: dests, DryRun: dryRun, Progress: progress.Update}
			var sum *replay.Summary
			if file != "" {
				sum, err = r.File(ctx, replay.FileOptions{Options: opts, Path: file, Format: format, From: fromT, To: toT})
			} else {
				sum, err = r.Kafka(ctx, replay.KafkaOptions{Options: opts, Topics: topics, From: fromT, To: toT})
			}
			progress.Finish()
			if sum != nil {
				if perr := printSummary(cmd.OutOrStdout(), sum, asJSON); perr != nil {
					return perr
				}
			}
			switch {
			case sum != nil && sum.Interrupted:
				return &exitError{code: 130, err: errors.New("replay interrupted: the summary says how far it got; running the same replay again is safe")}
			case err != nil:
				return err
			case len(sum.Errors) > 0:
				return fmt.Errorf("replay: %d records had errors and were skipped (listed in the summary)", len(sum.Errors)+sum.MoreErrors)
			}
			return nil
		},
	}
	f := cmd.Flags()
	f.StringVar(&path, "config", "", "config file (YAML)")
	f.StringVar(&from, "from", "", "Kafka replay: first message time, RFC 3339 or YYYY-MM-DD (UTC); with --file: earliest close time kept")
	f.StringVar(&to, "to", "", "end of the range (exclusive), RFC 3339 or YYYY-MM-DD (UTC); default: the end of each partition now")
	f.StringSliceVar(&topics, "topic", nil, "stage topic to replay (repeatable; default: every configured stage topic)")
	f.StringVar(&file, "file", "", "CRM export to replay instead of Kafka: .csv (EXPORT.md layout) or JSON lines")
	f.StringVar(&format, "format", "", "format of --file: "+strings.Join(replay.FileFormats, ", ")+" (default: by extension)")
	f.StringSliceVar(&dests, "destination", nil, "replay only for this destination (repeatable; default: all)")
	f.BoolVar(&dryRun, "dry-run", false, "write nothing; report what a replay would create")
	f.BoolVar(&asJSON, "json", false, "print the summary as JSON")
	f.BoolVar(&dev, "dev", false, "readable console logs at debug level")
	f.DurationVar(&every, "progress-every", 10*time.Second, "interval of progress log lines when standard error is not a terminal")
	_ = cmd.MarkFlagRequired("config")
	return cmd
}

// replayTimes parses --from and --to.
func replayTimes(from, to string) (time.Time, time.Time, error) {
	var ft, tt time.Time
	var err error
	if from != "" {
		if ft, err = replay.ParseTime(from); err != nil {
			return ft, tt, usageError("--from: %v", err)
		}
	}
	if to != "" {
		if tt, err = replay.ParseTime(to); err != nil {
			return ft, tt, usageError("--to: %v", err)
		}
	}
	if !ft.IsZero() && !tt.IsZero() && !ft.Before(tt) {
		return ft, tt, usageError("--from must be before --to")
	}
	return ft, tt, nil
}

// newReplayProgress draws a bar when w is a terminal, else logs progress every interval.
func newReplayProgress(w io.Writer, log *zap.Logger, unit string, every time.Duration) *replay.Progress {
	if f, ok := w.(*os.File); ok && term.IsTerminal(int(f.Fd())) {
		return replay.NewBar(w, unit)
	}
	return replay.NewLogProgress(log, unit, every)
}

func printSummary(w io.Writer, sum *replay.Summary, asJSON bool) error {
	if !asJSON {
		return sum.WriteTable(w)
	}
	enc := json.NewEncoder(w)
	enc.SetIndent("", "  ")
	enc.SetEscapeHTML(false)
	return enc.Encode(sum)
}
