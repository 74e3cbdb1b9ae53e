package main

import (
	"encoding/json"
	"fmt"
	"io"
	"os"
	"slices"
	"strings"
	"time"

	"github.com/schollz/progressbar/v3"
	"github.com/spf13/cobra"
	"golang.org/x/term"

	"github.com/closedloop/closedloop/internal/identity"
	"github.com/closedloop/closedloop/internal/logging"
	"github.com/closedloop/closedloop/internal/pii"
	"github.com/closedloop/closedloop/store"
	"github.com/closedloop/closedloop/uploader/platforms"
)

func newIdentitiesCmd() *cobra.Command {
	cmd := &cobra.Command{
		Use:   "identities",
		Short: "Hash identifiers the way each platform wants them; import identity capture files",
	}
	cmd.AddCommand(newIdentitiesHashCmd(), newIdentitiesImportCmd())
	return cmd
}

var hashFields = []pii.Field{pii.Email, pii.Phone, pii.FirstName, pii.LastName, pii.City, pii.State,
	pii.Zip, pii.Country, pii.DateOfBirth, pii.Gender, pii.ExternalID}

// hashResult is one field's line of `identities hash` output.
type hashResult struct {
	Normalized string `json:"normalized"`
	SHA256     string `json:"sha256"`
}

func newIdentitiesHashCmd() *cobra.Command {
	var platform, region string
	cmd := &cobra.Command{
		Use:   "hash --platform " + strings.Join(platforms.Names(), "|") + " [--region US] FIELD=VALUE ...",
		Short: "Print the normalized form and SHA-256 a platform gets for each FIELD=VALUE",
		Long: `Print, as one JSON object keyed by field, the normalized form and SHA-256 hex that the
platform is sent for each value: {"email":{"normalized":"...","sha256":"..."}}. An empty value
is absent ({"normalized":"","sha256":""}); a 64-hex value is taken as already hashed.
Fields: ` + fieldList() + `. A field the platform takes in clear (not hashed) shows the
form it is sent in as "normalized".

This is a debugging aid: it prints what you type, so run it on your own terminal only.`,
		Args: cobra.MinimumNArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			spec, ok := platforms.Lookup(platform)
			if !ok {
				return usageError("--platform: %q is not one of %s", platform, strings.Join(platforms.Names(), ", "))
			}
			n := pii.Normalizer{DefaultRegion: strings.ToUpper(region)}
			out := map[string]hashResult{}
			for i, arg := range args {
				name, value, ok := strings.Cut(arg, "=")
				if !ok {
					return usageError("argument %d: want FIELD=VALUE", i+1)
				}
				f := pii.Field(strings.ToLower(strings.TrimSpace(name)))
				if f == "postal_code" {
					f = pii.Zip
				}
				if !slices.Contains(hashFields, f) {
					return fmt.Errorf("unknown field %q (want one of %s)", name, fieldList())
				}
				if _, dup := out[string(f)]; dup {
					return fmt.Errorf("field %s given twice", f)
				}
				rule, ok := spec.Hashes[f]
				if !ok {
					rule, ok = spec.Clear[f]
				}
				if !ok {
					return &pii.Error{Field: f, Reason: spec.Name + " takes no such identifier"}
				}
				norm, err := n.Normalize(rule, value)
				if err != nil {
					return err
				}
				sum, err := n.Hash(rule, value)
				if err != nil {
					return err
				}
				out[string(f)] = hashResult{Normalized: norm, SHA256: sum}
			}
			enc := json.NewEncoder(cmd.OutOrStdout())
			enc.SetEscapeHTML(false)
			return enc.Encode(out)
		},
	}
	cmd.Flags().StringVar(&platform, "platform", "", "one of "+strings.Join(platforms.Names(), ", "))
	cmd.Flags().StringVar(&region, "region", "US", "ISO 3166-1 alpha-2 region for phone numbers without a country code")
	_ = cmd.MarkFlagRequired("platform")
	return cmd
}

func fieldList() string {
	names := make([]string, len(hashFields))
	for i, f := range hashFields {
		names[i] = string(f)
	}
	return strings.Join(names, ", ")
}

func newIdentitiesImportCmd() *cobra.Command {
	var path, format, output string
	var batch int
	cmd := &cobra.Command{
		Use:   "import --config FILE [--format csv|jsonl] [--batch-size 500] [--output text|json] CAPTURES.csv|CAPTURES.jsonl",
		Short: "Import identity captures from a CSV or JSON Lines file into the store",
		Long: `Decode, validate and hash every capture in the file and merge them into the store in
batches. Importing the same file again changes nothing. A capture that does not validate is
skipped and reported with its line and reason (never its values); the exit code is then 1.

CSV columns (header row required, any order; subject_type, subject_id, captured_at required):
  ` + strings.Join(identity.CSVColumns, ",") + `
JSON Lines: one canonical identity capture per line (see internal/identity).`,
		Args: cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			file := args[0]
			if output != "text" && output != "json" {
				return usageError("--output: %q is not text or json", output)
			}
			f := identity.Format(format)
			if format == "" {
				var err error
				if f, err = identity.FormatOf(file); err != nil {
					return usageError("%v; give --format", err)
				}
			} else if f != identity.FormatCSV && f != identity.FormatJSONL {
				return usageError("--format: %q is not csv or jsonl", format)
			}
			if batch < 1 {
				return usageError("--batch-size: must be at least 1")
			}
			cfg, err := loadConfig(path)
			if err != nil {
				return usageError("%v", err)
			}
			in, err := os.Open(file)
			if err != nil {
				return err
			}
			defer in.Close()
			log, err := logging.New(cfg.Log.Level, cfg.Log.Format, false)
			if err != nil {
				return err
			}
			defer func() { _ = log.Sync() }()
			st, err := store.Open(cmd.Context(), cfg.Store, log.Named("store"))
			if err != nil {
				return fmt.Errorf("open store: %w", err)
			}
			defer st.Close()

			var r io.Reader = in
			opts := identity.Options{Normalizer: pii.Normalizer{DefaultRegion: cfg.PII.DefaultRegion}, BatchSize: batch}
			stderr := cmd.ErrOrStderr()
			var bar *progressbar.ProgressBar
			if fd, ok := stderr.(interface{ Fd() uintptr }); ok && term.IsTerminal(int(fd.Fd())) {
				size := int64(-1)
				if fi, err := in.Stat(); err == nil && fi.Mode().IsRegular() {
					size = fi.Size()
				}
				bar = progressbar.NewOptions64(size,
					progressbar.OptionSetWriter(stderr),
					progressbar.OptionSetDescription("importing "+file),
					progressbar.OptionShowBytes(true),
					progressbar.OptionShowCount(),
					progressbar.OptionThrottle(100*time.Millisecond),
					progressbar.OptionClearOnFinish(),
				)
				r = io.TeeReader(in, bar)
			} else {
				var last time.Time
				opts.Progress = func(s identity.Summary) {
					if now := time.Now(); now.Sub(last) >= time.Second {
						last = now
						fmt.Fprintf(stderr, "import: %d read, %d imported, %d merged, %d unchanged, %d rejected\n",
							s.Read, s.Imported, s.Merged, s.Unchanged, s.Rejected)
					}
				}
			}
			sum, err := identity.Import(cmd.Context(), r, f, st, opts)
			if bar != nil {
				_ = bar.Finish()
			}
			if perr := printImportSummary(cmd.OutOrStdout(), sum, output); perr != nil && err == nil {
				err = perr
			}
			if err != nil {
				return err
			}
			if sum.Rejected > 0 {
				return fmt.Errorf("%d of %d captures rejected", sum.Rejected, sum.Read)
			}
			return nil
		},
	}
	cmd.Flags().StringVar(&path, "config", "", "config file (YAML)")
	cmd.Flags().StringVar(&format, "format", "", "csv or jsonl (default: from the file extension)")
	cmd.Flags().IntVar(&batch, "batch-size", 500, "captures per store transaction")
	cmd.Flags().StringVar(&output, "output", "text", "summary as text or json")
	_ = cmd.MarkFlagRequired("config")
	return cmd
}

func printImportSummary(w io.Writer, s identity.Summary, output string) error {
	if output == "json" {
		enc := json.NewEncoder(w)
		enc.SetEscapeHTML(false)
		return enc.Encode(s)
	}
	if _, err := fmt.Fprintf(w, "read %d, imported %d, merged %d, unchanged %d, rejected %d\n",
		s.Read, s.Imported, s.Merged, s.Unchanged, s.Rejected); err != nil {
		return err
	}
	for _, r := range s.Rejections {
		if _, err := fmt.Fprintf(w, "  line %d: %s\n", r.Line, r.Reason); err != nil {
			return err
		}
	}
	if more := s.Rejected - len(s.Rejections); more > 0 {
		_, err := fmt.Fprintf(w, "  ... and %d more rejected\n", more)
		return err
	}
	return nil
}
