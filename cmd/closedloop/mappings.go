package main

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/url"
	"os"
	"slices"
	"strings"
	"time"

	"github.com/spf13/cobra"
	"go.uber.org/zap"

	"github.com/closedloop/closedloop/consumer"
	"github.com/closedloop/closedloop/crm"
	"github.com/closedloop/closedloop/internal/config"
	"github.com/closedloop/closedloop/internal/identity"
	"github.com/closedloop/closedloop/internal/join"
	"github.com/closedloop/closedloop/internal/pii"
	"github.com/closedloop/closedloop/store"
	"github.com/closedloop/closedloop/uploader"
	"github.com/closedloop/closedloop/uploader/platforms"
)

func newMappingsCmd() *cobra.Command {
	cmd := &cobra.Command{
		Use:   "mappings",
		Short: "Check stage mappings and explain what a CRM payload would upload",
	}
	cmd.AddCommand(newMappingsCheckCmd(), newMappingsExplainCmd())
	return cmd
}

func newMappingsCheckCmd() *cobra.Command {
	var path string
	cmd := &cobra.Command{
		Use:   "check --config FILE",
		Short: "Validate the mappings: exit 0 and a summary per rule, or exit 1 and every error",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			cfg, err := loadConfig(path)
			if err != nil {
				return err
			}
			m, err := cfg.CompileMappingsResolving(cmd.Context(), zap.NewNop()) // names are looked up
			if err != nil {
				return err
			}
			_, err = io.WriteString(cmd.OutOrStdout(), m.Summary())
			return err
		},
	}
	cmd.Flags().StringVar(&path, "config", "", "config file (YAML)")
	_ = cmd.MarkFlagRequired("config")
	return cmd
}

func newMappingsExplainCmd() *cobra.Command {
	var (
		path, format, identitiesPath, nowFlag string
		payloadPaths                          []string
		withEnrich                            bool
	)
	cmd := &cobra.Command{
		Use:   "explain --config FILE --payload FILE [--payload FILE ...]",
		Short: "Show, as JSON, exactly what a CRM payload would upload; nothing is written or sent",
		Long: `explain decodes a CRM payload, plans the conversions the mappings ask for, joins them to the
identities in --identities (JSON lines of identity captures, optional), checks each against its
platform's rules at --now, and prints the request body the uploader would send. Nothing is
written anywhere and nothing is sent; credentials in the config are never used or printed.

A conversion the worker would leave awaiting_enrichment (a CRM connection under crms: enriches
its source, and the payload lacks the value field or any identifier) says so, with the fields
the CRM's API would supply. With --enrich, explain reads the deal and its contacts from that
connection (its base_url: the CRM, or the CRM emulator of 'closedloop demo'), with its token,
reads only, and shows what was fetched (contacts hashed) and the resulting request bodies.

Several --payload files are explained in order, as one record's history: a later change of a
conversion already made (a new amount under restate_on, a stage under retract_on) shows the
adjustment the worker would send, its body built from the earlier conversion as if accepted.`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			if !slices.Contains(crm.Formats, format) {
				return usageError("--format: must be one of %s, got %q", strings.Join(crm.Formats, ", "), format)
			}
			now := time.Now().UTC()
			if nowFlag != "" {
				t, err := time.Parse(time.RFC3339, nowFlag)
				if err != nil {
					return usageError("--now: must be RFC 3339 (2026-10-14T13:02:11Z), got %q", nowFlag)
				}
				now = t
			}
			cfg, err := loadConfig(path)
			if err != nil {
				return err
			}
			var payloads [][]byte
			for _, pp := range payloadPaths {
				payload, err := os.ReadFile(pp)
				if err != nil {
					return fmt.Errorf("--payload: %w", err)
				}
				payloads = append(payloads, payload)
			}
			n := pii.Normalizer{DefaultRegion: cfg.PII.DefaultRegion}
			var captures []store.IdentityCapture
			if identitiesPath != "" {
				captures, err = readCaptures(identitiesPath, n)
				if err != nil {
					return err
				}
			}
			out, err := explain(cmd.Context(), explainInput{
				cfg: cfg, format: format, payloads: payloads, captures: captures, now: now,
				normalizer: n, newPlatform: platforms.New, warn: cmd.ErrOrStderr(), enrich: withEnrich,
			})
			if err != nil {
				return err
			}
			enc := json.NewEncoder(cmd.OutOrStdout())
			enc.SetIndent("", "  ")
			enc.SetEscapeHTML(false)
			return enc.Encode(out)
		},
	}
	cmd.Flags().StringVar(&path, "config", "", "config file (YAML)")
	cmd.Flags().StringArrayVar(&payloadPaths, "payload", nil, "a CRM payload to explain (one message); repeat for a record's history, in order")
	cmd.Flags().StringVar(&format, "format", crm.FormatCanonical, "payload format: "+strings.Join(crm.Formats, "|"))
	cmd.Flags().StringVar(&identitiesPath, "identities", "", "identity captures to join, one JSON object per line")
	cmd.Flags().StringVar(&nowFlag, "now", "", "the clock for age windows, RFC 3339 (default: now)")
	cmd.Flags().BoolVar(&withEnrich, "enrich", false, "fetch what a thin stage change lacks from its CRM connection (reads only)")
	_ = cmd.MarkFlagRequired("config")
	_ = cmd.MarkFlagRequired("payload")
	return cmd
}

// readCaptures decodes a JSON-lines file of identity captures. Errors name the line and the
// field, never a submitted value.
func readCaptures(path string, n pii.Normalizer) ([]store.IdentityCapture, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, fmt.Errorf("--identities: %w", err)
	}
	defer f.Close()
	var (
		out  []store.IdentityCapture
		errs []error
	)
	sc := bufio.NewScanner(f)
	sc.Buffer(make([]byte, 0, 64*1024), 4<<20)
	for line := 1; sc.Scan(); line++ {
		raw := bytes.TrimSpace(sc.Bytes())
		if len(raw) == 0 {
			continue
		}
		c, err := identity.Decode(raw, n)
		if err != nil {
			errs = append(errs, fmt.Errorf("%s line %d: %w", path, line, err))
			continue
		}
		out = append(out, c)
	}
	if err := sc.Err(); err != nil {
		errs = append(errs, fmt.Errorf("%s: %w", path, err))
	}
	return out, errors.Join(errs...)
}

// explainOutput is the JSON `mappings explain` prints (DESIGN.md "`mappings explain` output").
type explainOutput struct {
	StageChanges []crm.StageChange `json:"stage_changes"`
	// ThinChanges are events that name a record but not its stage (Attio): the worker
	// fetches them before the mapping can plan; with --enrich, explain does too and plans
	// the stage change the fetch describes (listed in stage_changes).
	ThinChanges []explainThin       `json:"thin_changes,omitempty"`
	Conversions []explainConversion `json:"conversions"`
}

type explainThin struct {
	crm.ThinChange
	Enrichment *explainEnrichment `json:"enrichment"`
}

type explainConversion struct {
	Rule        string `json:"rule"`
	Destination string `json:"destination"`
	Platform    string `json:"platform"`
	Key         string `json:"key"`
	// Kind is set on adjustments only: "retraction" or "restatement".
	Kind string `json:"kind,omitempty"`
	// RetractsKey is set on adjustments only: the key of the conversion taken back or
	// restated.
	RetractsKey string          `json:"retracts_key,omitempty"`
	State       store.State     `json:"state"`
	Reason      string          `json:"reason"`
	Value       json.RawMessage `json:"value"` // a number, or null
	Currency    string          `json:"currency"`
	OccurredAt  time.Time       `json:"occurred_at"`
	Request     *explainRequest `json:"request,omitempty"`
	// Enrichment is set when the worker would fetch from a CRM connection first.
	Enrichment *explainEnrichment `json:"enrichment,omitempty"`
}

type explainRequest struct {
	Method string          `json:"method"`
	URL    string          `json:"url"`
	Body   json.RawMessage `json:"body"`
}

// Reasons explain gives of its own (the platforms give theirs through Check).
const (
	reasonNoIdentifier = "no_identifier" // nothing the platform can match on yet: the row waits
	// An adjustment whose body needs the conversion it adjusts, which is not in the payloads.
	reasonOriginalNotInPayload = "original_not_in_payload"
)

type platformFactory func(name string, cfg uploader.DestinationConfig, log *zap.Logger) (uploader.Platform, error)

type explainInput struct {
	cfg         *config.Config
	format      string
	payloads    [][]byte // explained in order, as one history
	captures    []store.IdentityCapture
	now         time.Time
	normalizer  pii.Normalizer
	newPlatform platformFactory
	warn        io.Writer // decode problems of single events go here
	enrich      bool      // fetch from the CRM connections what thin stage changes lack
}

// explain runs the pipeline on one payload without a store or network: decode, plan, join,
// check, build. It never uses the config's credentials: OAuth destinations get placeholder
// credentials and a token endpoint on loopback served here, and every secret in a printed
// URL is redacted.
func explain(ctx context.Context, in explainInput) (*explainOutput, error) {
	mapping, err := in.cfg.CompileMappings()
	if err != nil {
		return nil, err
	}
	var decoded crm.Decoded
	for i, payload := range in.payloads {
		d, err := crm.Decode(in.format, payload, in.normalizer)
		if err != nil {
			if len(in.payloads) > 1 {
				return nil, fmt.Errorf("--payload #%d: %w", i+1, err)
			}
			return nil, fmt.Errorf("--payload: %w", err)
		}
		for _, bad := range d.Bad {
			fmt.Fprintf(in.warn, "skipped event: %v\n", bad)
		}
		for _, dropped := range d.Dropped {
			fmt.Fprintf(in.warn, "identifier dropped: %v\n", dropped)
		}
		decoded.Changes = append(decoded.Changes, d.Changes...)
		decoded.Thin = append(decoded.Thin, d.Thin...)
	}
	hist := newExplainHistory()

	tokens, err := startPlaceholderTokenServer()
	if err != nil {
		return nil, err
	}
	defer tokens.close()

	identities := join.Merge(in.captures)
	bySubject := make(map[string]store.Identity, len(identities))
	for _, id := range identities {
		bySubject[id.SubjectKey] = id
	}
	platformsByDest := map[string]uploader.Platform{}
	log := zap.NewNop()

	out := &explainOutput{StageChanges: decoded.Changes, Conversions: []explainConversion{}}
	if out.StageChanges == nil {
		out.StageChanges = []crm.StageChange{}
	}
	changes := decoded.Changes
	fetchedFirst := map[int]bool{} // indexes in changes planned from a fetched thin event
	for _, tc := range decoded.Thin {
		name, conn, ok := in.cfg.CRMs.ConnectionFor(tc.Source)
		enr := &explainEnrichment{Connection: name, Kind: conn.Kind,
			Supplies: []string{"stage", "occurred_at", "amount", "currency", "contacts", "email", "phone"}}
		if !ok {
			fmt.Fprintf(in.warn, "thin %s event: no CRM connection (crms:) enriches source %s; the worker dead-letters it\n", tc.Source, tc.Source)
			enr.Supplies = []string{}
		}
		out.ThinChanges = append(out.ThinChanges, explainThin{ThinChange: tc, Enrichment: enr})
		if !ok || !in.enrich {
			continue
		}
		fetched, sc, captures, planned, err := enrichedThin(ctx, in.cfg.CRMs, tc, in.normalizer, in.now)
		if err != nil {
			return nil, err
		}
		enr.Fetched = fetched
		if planned {
			for _, c := range captures {
				in.captures = append(in.captures, c)
			}
			out.StageChanges = append(out.StageChanges, sc)
			fetchedFirst[len(changes)] = true
			changes = append(changes, sc)
		}
	}
	if len(decoded.Thin) > 0 && in.enrich {
		identities := join.Merge(in.captures)
		for _, id := range identities {
			bySubject[id.SubjectKey] = id
		}
	}
	for ci, sc := range changes {
		planned, _ := mapping.Plan(sc)
		if len(planned) == 0 {
			continue
		}
		var fetched *explainFetched // sc's enrichment, fetched once for all its rows
		var enrichedSC crm.StageChange
		var enrichedIDs map[string]store.Identity
		for _, p := range planned {
			p := p
			dest, ok := in.cfg.Destinations[p.Destination]
			if !ok { // CompileMappings guarantees it; keep the invariant visible
				return nil, fmt.Errorf("mappings: rule %s: unknown destination %q", p.Rule, p.Destination)
			}
			platform, ok := platformsByDest[p.Destination]
			if !ok {
				platform, err = in.newPlatform(p.Destination, tokens.placeholders(dest), log)
				if err != nil {
					return nil, fmt.Errorf("destinations.%s: %w", p.Destination, err)
				}
				platformsByDest[p.Destination] = platform
			}
			row := consumer.RowRouted(sc, p, bySubject, false, in.cfg.CRMs.Enriches)
			if fetchedFirst[ci] {
				row = consumer.Row(sc, p, bySubject, false) // fetched already: nothing more to fetch
			}
			var enr *explainEnrichment
			if row.State == store.StateAwaitingEnrichment {
				enr = enrichmentFor(in.cfg.CRMs, sc, p, row)
				if in.enrich {
					if fetched == nil {
						var captures []store.IdentityCapture
						fetched, enrichedSC, captures, err = enrichedChange(ctx, in.cfg.CRMs, sc, in.normalizer, in.now)
						if err != nil {
							return nil, err
						}
						enrichedIDs = bySubjectKey(append(append([]store.IdentityCapture{}, in.captures...), captures...))
					}
					enr.Fetched = fetched
					if fetched.Found {
						p = replanned(mapping, enrichedSC, p)
						row = consumer.Row(enrichedSC, p, enrichedIDs, false)
					}
				}
			}
			switch r, adjusts := hist.adjust(sc, p, &row); {
			case adjusts && r == nil: // an unchanged value, or an older change: the store makes nothing
				continue
			case adjusts:
				row = *r
				p.Key, p.RetractsKey = r.Key, r.RetractsKey
			}
			kind := ""
			if store.Adjustment(row.Kind) {
				kind = row.Kind
			}
			ec := explainConversion{
				Rule: p.Rule, Destination: p.Destination, Platform: p.Platform, Key: p.Key, Kind: kind,
				RetractsKey: p.RetractsKey, Currency: p.Currency, OccurredAt: p.OccurredAt.UTC(),
				Value: json.RawMessage("null"),
			}
			if p.Value != nil {
				ec.Value = json.RawMessage(p.Value.String())
			}
			ec.Enrichment = enr
			switch {
			case enr != nil && enr.Fetched != nil && !enr.Fetched.Found:
				ec.State, ec.Reason = store.StateUnmatched, store.ReasonCRMRecordNotFound
			case row.State == store.StateAwaitingEnrichment:
				ec.State, ec.Reason = store.StateAwaitingEnrichment, reasonEnrichmentPending
			default:
				ec.State, ec.Reason, ec.Request, err = explainRow(ctx, platform, &row, p, in.now)
			}
			if err != nil {
				return nil, fmt.Errorf("destinations.%s: rule %s: %w", p.Destination, p.Rule, err)
			}
			out.Conversions = append(out.Conversions, ec)
		}
	}
	return out, nil
}

// explainRow decides what the uploader would do with one row and, when it would send it,
// builds the request.
func explainRow(ctx context.Context, platform uploader.Platform, row *store.Conversion, p crm.Planned, now time.Time) (store.State, string, *explainRequest, error) {
	if row.State == store.StateRejected {
		return store.StateRejected, row.Reason, nil, nil
	}
	if row.State == store.StateAwaitingIdentity {
		return store.StateAwaitingIdentity, reasonNoIdentifier, nil, nil
	}
	if rowErr := platform.Check(row, now); rowErr != nil {
		return stateFor(rowErr.Class), rowErr.Reason, nil, nil
	}
	req, err := platform.BuildRequest(ctx, []store.Conversion{*row}, now)
	if err != nil {
		var setup *uploader.Error
		if errors.As(err, &setup) {
			return store.StateReady, setup.Reason, nil, nil
		}
		if store.Adjustment(row.Kind) && row.Adjusted == nil {
			// The platform builds the adjustment from the conversion it adjusts, which the
			// worker reads from the store once accepted: give its change as an earlier --payload.
			return store.StateReady, reasonOriginalNotInPayload, nil, nil
		}
		return "", "", nil, err
	}
	er, err := describeRequest(req)
	if err != nil {
		return "", "", nil, err
	}
	return store.StateReady, p.ValueReason, er, nil
}

// stateFor maps a Check rejection to the state the row would be in.
func stateFor(c uploader.Class) store.State {
	switch c {
	case uploader.ClassExpired:
		return store.StateExpired
	case uploader.ClassSkipped:
		return store.StateSkipped
	case uploader.ClassTransient: // not yet (e.g. a click under 6 h old): sent on a later attempt
		return store.StateReady
	default:
		return store.StateRejected
	}
}

// secretParams are URL query parameters that carry credentials.
var secretParams = []string{"access_token", "key", "api_key", "token"}

func describeRequest(req *http.Request) (*explainRequest, error) {
	u := *req.URL
	q := u.Query()
	redacted := false
	for _, p := range secretParams {
		if q.Has(p) {
			q.Set(p, "REDACTED")
			redacted = true
		}
	}
	if redacted {
		u.RawQuery = q.Encode()
	}
	u.User = nil
	er := &explainRequest{Method: req.Method, URL: u.String(), Body: json.RawMessage("null")}
	if req.Body == nil {
		return er, nil
	}
	defer req.Body.Close()
	body, err := io.ReadAll(req.Body)
	if err != nil {
		return nil, fmt.Errorf("reading the built request body: %w", err)
	}
	if len(body) == 0 {
		return er, nil
	}
	if !json.Valid(body) {
		quoted, err := json.Marshal(string(body))
		if err != nil {
			return nil, err
		}
		body = quoted
	}
	er.Body = body
	return er, nil
}

// placeholderTokens serves an OAuth token endpoint on loopback that hands out a placeholder
// access token, so building a Google request never reaches Google or uses real credentials.
type placeholderTokens struct {
	srv *http.Server
	url string
}

const placeholderSecret = "REDACTED"

func startPlaceholderTokenServer() (*placeholderTokens, error) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return nil, fmt.Errorf("explain: placeholder token endpoint: %w", err)
	}
	srv := &http.Server{
		Handler: http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) {
			w.Header().Set("Content-Type", "application/json")
			_, _ = io.WriteString(w, `{"access_token":"`+placeholderSecret+`","token_type":"Bearer","expires_in":3600}`)
		}),
		ReadHeaderTimeout: 5 * time.Second,
	}
	go func() { _ = srv.Serve(ln) }()
	return &placeholderTokens{srv: srv, url: (&url.URL{Scheme: "http", Host: ln.Addr().String(), Path: "/token"}).String()}, nil
}

func (p *placeholderTokens) close() { _ = p.srv.Close() }

// placeholders returns d with every credential replaced by a placeholder and OAuth pointed
// at the loopback endpoint.
func (p *placeholderTokens) placeholders(d uploader.DestinationConfig) uploader.DestinationConfig {
	if s, ok := d.Settings.(uploader.Placeholding); ok {
		d.Settings = s.WithPlaceholders(placeholderSecret, p.url)
	}
	return d
}
