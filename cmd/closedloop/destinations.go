package main

import (
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"slices"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/spf13/cobra"
	"go.uber.org/zap"

	"github.com/closedloop/closedloop/internal/config"
	"github.com/closedloop/closedloop/uploader"
	"github.com/closedloop/closedloop/uploader/platforms"
)

func newDestinationsCmd() *cobra.Command {
	cmd := &cobra.Command{
		Use:   "destinations",
		Short: "Check the configured destinations against their platforms",
	}
	cmd.AddCommand(newDestinationsTestCmd())
	return cmd
}

func newDestinationsTestCmd() *cobra.Command {
	var (
		path, only    string
		sendTestEvent bool
		asJSON        bool
	)
	cmd := &cobra.Command{
		Use:   "test --config FILE [--destination D] [--send-test-event] [--json]",
		Short: "Ask each destination's platform whether it will work: exit 1 if any check failed",
		Long: `test runs, per destination and in order: credentials (a token is obtained and accepted), the
account / dataset / event source with the configured ids, every conversion action or event the
mappings send to it (exists, enabled, of an importable type, owned by the configured account, where
the platform can tell), the API version against its sunset, and with --send-test-event one test
conversion through the platform's test mode (Google validateOnly, Meta and TikTok test_event_code;
where a platform has none the line says so). Each line is ok, failed, warning, skipped or n/a (the
platform has no way to check it), with the platform's own words. Secrets are never printed.`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			cfg, err := loadConfig(path)
			if err != nil {
				return err
			}
			names := cfg.DestinationNames()
			if only != "" {
				if !slices.Contains(names, only) {
					return usageError("--destination: %q is not configured (configured: %s)", only, strings.Join(names, ", "))
				}
				names = []string{only}
			}
			res := testDestinations(cmd, cfg, names, sendTestEvent, time.Now())
			if asJSON {
				enc := json.NewEncoder(cmd.OutOrStdout())
				enc.SetIndent("", "  ")
				enc.SetEscapeHTML(false)
				if err := enc.Encode(res); err != nil {
					return err
				}
			} else if err := writeDestinationTable(cmd.OutOrStdout(), res); err != nil {
				return err
			}
			if !res.OK {
				return &exitError{code: 1, err: errors.New("destinations test: a check failed")}
			}
			return nil
		},
	}
	cmd.Flags().StringVar(&path, "config", "", "config file (YAML)")
	cmd.Flags().StringVar(&only, "destination", "", "test only this destination")
	cmd.Flags().BoolVar(&sendTestEvent, "send-test-event", false, "send one test conversion through each platform's test mode")
	cmd.Flags().BoolVar(&asJSON, "json", false, "print JSON instead of a table")
	_ = cmd.MarkFlagRequired("config")
	return cmd
}

// destinationsResult is the --json output.
type destinationsResult struct {
	OK           bool                `json:"ok"`
	Destinations []destinationResult `json:"destinations"`
}

type destinationResult struct {
	Destination string                 `json:"destination"`
	Platform    string                 `json:"platform"`
	Checks      []uploader.CheckResult `json:"checks"`
}

func testDestinations(cmd *cobra.Command, cfg *config.Config, names []string, sendTestEvent bool, now time.Time) destinationsResult {
	res := destinationsResult{OK: true}
	for _, name := range names {
		d := cfg.Destinations[name]
		dr := destinationResult{Destination: name, Platform: d.Platform}
		p, err := platforms.New(name, d, zap.NewNop())
		switch {
		case err != nil:
			dr.Checks = []uploader.CheckResult{uploader.ResultOf(uploader.CheckCredentials, "", err)}
		default:
			t, ok := p.(uploader.Tester)
			if !ok {
				dr.Checks = []uploader.CheckResult{{Check: uploader.CheckAccount, Status: uploader.CheckNone,
					Detail: "platform " + d.Platform + " has no destinations test yet"}}
				break
			}
			ids, named := mappedConversions(cfg, name)
			var lines []uploader.CheckResult
			if r, ok := p.(uploader.NameResolver); ok {
				for _, n := range named {
					id, err := r.ResolveConversion(cmd.Context(), n)
					if err != nil {
						lines = append(lines, uploader.CheckResult{Check: uploader.CheckConversion + "_name", Target: n, Status: uploader.CheckFailed, Detail: err.Error()})
						continue
					}
					lines = append(lines, uploader.CheckResult{Check: uploader.CheckConversion + "_name", Target: n, Status: uploader.CheckOK, Detail: "resolves to " + id})
					if !slices.Contains(ids, id) {
						ids = append(ids, id)
					}
				}
			}
			dr.Checks = append(t.Test(cmd.Context(), uploader.TestRequest{
				Conversions: ids, SendTestEvent: sendTestEvent, Now: now,
			}), lines...)
		}
		for _, c := range dr.Checks {
			res.OK = res.OK && !c.Failed()
		}
		res.Destinations = append(res.Destinations, dr)
	}
	return res
}

// mappedConversions lists the conversion ids (or event names) and the conversion names
// (`conversion: {name}`) the mappings send to destination, once each, in mapping order.
func mappedConversions(cfg *config.Config, destination string) (ids, names []string) {
	for _, r := range cfg.Mappings {
		for _, d := range r.Destinations {
			switch {
			case d.Destination != destination:
			case d.ConversionName != "" && !slices.Contains(names, d.ConversionName):
				names = append(names, d.ConversionName)
			case d.ConversionName == "" && d.Conversion != "" && !slices.Contains(ids, d.Conversion):
				ids = append(ids, d.Conversion)
			}
		}
	}
	return ids, names
}

func writeDestinationTable(w io.Writer, res destinationsResult) error {
	tw := tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "DESTINATION\tCHECK\tTARGET\tSTATUS\tDETAIL")
	for _, d := range res.Destinations {
		for _, c := range d.Checks {
			detail := c.Detail
			if c.Reason != "" {
				detail = c.Reason + ": " + detail
			}
			fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\n", d.Destination+" ("+d.Platform+")", c.Check, dash(c.Target), c.Status, oneLine(detail))
		}
	}
	if err := tw.Flush(); err != nil {
		return err
	}
	if res.OK {
		_, err := fmt.Fprintln(w, "\nall checks passed (warnings, skipped and n/a lines are not failures)")
		return err
	}
	_, err := fmt.Fprintln(w, "\nsome checks failed")
	return err
}

func dash(s string) string {
	if s == "" {
		return "-"
	}
	return s
}

func oneLine(s string) string { return strings.Join(strings.Fields(s), " ") }
