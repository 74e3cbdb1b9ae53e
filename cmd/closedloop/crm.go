package main

import (
	"encoding/json"
	"fmt"
	"io"
	"os"
	"slices"
	"strings"

	"github.com/spf13/cobra"

	"github.com/closedloop/closedloop/crm"
	"github.com/closedloop/closedloop/internal/pii"
)

func newCRMCmd() *cobra.Command {
	cmd := &cobra.Command{
		Use:   "crm",
		Short: "Work with CRM stage-change payloads",
	}
	cmd.AddCommand(newCRMDecodeCmd())
	return cmd
}

func newCRMDecodeCmd() *cobra.Command {
	var format, region string
	cmd := &cobra.Command{
		Use:   "decode --format canonical|hubspot|salesforce|pipedrive|close [--region US] [FILE|-]",
		Short: "Decode one CRM webhook payload and print its canonical stage changes, one JSON per line",
		Long: `decode reads one message (a file, or standard input for "-" or no argument) in the given
format and prints each stage change it holds as one line of canonical JSON: times in RFC 3339
UTC, object_id a string, email and phone already hashed. Events that are not stage changes
are counted on standard error. A message that cannot be decoded exits 1 with the reason on
standard error; so does a batch in which some events could not be decoded, after printing
the others. No config file is needed.`,
		Args: cobra.MaximumNArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			if !slices.Contains(crm.Formats, format) {
				return usageError("--format: %s is not one of %s", crmQuote(format), strings.Join(crm.Formats, ", "))
			}
			if len(region) != 2 || !crmIsUpper(region) {
				return usageError("--region: must be a 2-letter upper-case ISO 3166-1 code such as US")
			}
			in := cmd.InOrStdin()
			name := "standard input"
			if len(args) == 1 && args[0] != "-" {
				f, err := os.Open(args[0])
				if err != nil {
					return fmt.Errorf("crm decode: %w", err)
				}
				defer f.Close()
				in, name = f, args[0]
			}
			// Read one byte past the limit so that Decode reports an oversized payload.
			payload, err := io.ReadAll(io.LimitReader(in, crm.MaxPayloadBytes+1))
			if err != nil {
				return fmt.Errorf("crm decode: read %s: %w", name, err)
			}
			dec, err := crm.Decode(format, payload, pii.Normalizer{DefaultRegion: region})
			if err != nil {
				return fmt.Errorf("crm decode: %s: %w", name, err)
			}
			return crmPrintDecoded(cmd, dec)
		},
	}
	cmd.Flags().StringVar(&format, "format", "", "payload format: "+strings.Join(crm.Formats, ", "))
	cmd.Flags().StringVar(&region, "region", "US", "region assumed for phone numbers written without a country code")
	_ = cmd.MarkFlagRequired("format")
	return cmd
}

// crmPrintDecoded writes one stage change per line to stdout and notes on stderr; it fails
// when some events of the batch could not be decoded.
func crmPrintDecoded(cmd *cobra.Command, dec crm.Decoded) error {
	out, errOut := cmd.OutOrStdout(), cmd.ErrOrStderr()
	enc := json.NewEncoder(out)
	enc.SetEscapeHTML(false)
	for _, sc := range dec.Changes {
		sc.OccurredAt = sc.OccurredAt.UTC()
		if err := enc.Encode(sc); err != nil {
			return fmt.Errorf("crm decode: write: %w", err)
		}
	}
	for _, tc := range dec.Thin {
		if err := enc.Encode(tc); err != nil {
			return fmt.Errorf("crm decode: write: %w", err)
		}
	}
	if len(dec.Thin) > 0 {
		fmt.Fprintf(errOut, "%d thin event(s) (lines with fetch_ref): they name a record but not its stage; the enricher fetches it before the mapping plans them (mappings explain --enrich shows the result)\n", len(dec.Thin))
	}
	if dec.Ignored > 0 {
		fmt.Fprintf(errOut, "ignored %d event(s) that are not stage changes\n", dec.Ignored)
	}
	for _, d := range dec.Dropped {
		fmt.Fprintf(errOut, "note: %v\n", d)
	}
	for _, b := range dec.Bad {
		fmt.Fprintf(errOut, "bad: %v\n", b)
	}
	if len(dec.Bad) > 0 {
		return fmt.Errorf("crm decode: %d event(s) could not be decoded (see above)", len(dec.Bad))
	}
	return nil
}

func crmIsUpper(s string) bool {
	for i := 0; i < len(s); i++ {
		if s[i] < 'A' || s[i] > 'Z' {
			return false
		}
	}
	return true
}

// crmQuote quotes a flag value for an error message, cut short.
func crmQuote(s string) string {
	if len(s) > 40 {
		s = s[:40] + "..."
	}
	return fmt.Sprintf("%q", s)
}
