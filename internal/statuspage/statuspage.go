// Package statuspage renders the admin server's status page: plain server-rendered HTML, no
// build step and no script. It shows each destination (healthy or paused, and why), the last
// 24 hours per destination as a small hourly chart of accepted / rejected / expired, the most
// frequent rejection reasons with an example conversion key, the active mapping version, and
// per CRM connection the rows waiting for enrichment (count, oldest) and any pause.
//
// Every number on the page carries a data-* attribute so a browser test can read it back
// and compare it with the report's JSON.
package statuspage

import (
	"context"
	"embed"
	"html/template"
	"net/http"
	"sort"
	"time"

	"go.uber.org/zap"

	"github.com/closedloop/closedloop/internal/enrich"
	"github.com/closedloop/closedloop/store"
)

// DestinationStatus is one destination's health as the uploader sees it.
type DestinationStatus struct {
	Name           string
	Platform       string
	Paused         bool
	Reason         string // why it is paused
	Since          time.Time
	APIVersion     string // "" when the API has none to choose
	VersionWarning string // the version sunsets soon
	// Held describes each conversion action whose rows are held (refused by the platform)
	// while the rest of the destination flows.
	Held []string
}

// Source is what the page reads. Destinations and MappingVersion come from the running
// worker; the counts come from the store.
type Source interface {
	Destinations() []DestinationStatus
	MappingVersion() string
	HourlyCounts(ctx context.Context, since, until time.Time) ([]store.HourCount, error)
	TopRejections(ctx context.Context, since, until time.Time, limit int) ([]store.Rejection, error)
	IdentifierCounts(ctx context.Context, since, until time.Time) ([]store.IdentifierCount, error)
}

// CRMSource is what the page reads of the CRM enrichment when the Source also implements
// it (the worker does when CRM connections are configured): per connection, the rows
// waiting for its API and its pause.
type CRMSource interface {
	CRMConnections(ctx context.Context) ([]enrich.ConnectionOverview, error)
}

//go:embed page.html.tmpl
var files embed.FS

var page = template.Must(template.New("page.html.tmpl").Funcs(template.FuncMap{
	"pct": func(a, b int) int {
		if b == 0 {
			return 0
		}
		return a * 100 / b
	},
}).ParseFS(files, "page.html.tmpl"))

// Handler serves the page. now is the clock (time.Now in production).
func Handler(src Source, now func() time.Time, log *zap.Logger) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		until := now().UTC().Truncate(time.Hour).Add(time.Hour)
		since := until.Add(-24 * time.Hour)
		data, err := build(r.Context(), src, since, until)
		if err != nil {
			log.Error("status page", zap.Error(err))
			http.Error(w, "status unavailable: "+err.Error(), http.StatusInternalServerError)
			return
		}
		w.Header().Set("Content-Type", "text/html; charset=utf-8")
		if err := page.Execute(w, data); err != nil {
			log.Error("status page render", zap.Error(err))
		}
	})
}

type bar struct {
	Hour                        time.Time
	Accepted, Rejected, Expired int
	X                           int
	HA, HR, HE                  int // bar heights in px
	YA, YR, YE                  int
}

type destView struct {
	DestinationStatus
	Accepted, Rejected, Expired int
	Bars                        []bar
	// Match quality of the conversions made in the window: how many, and how many carry
	// each identifier kind.
	Made, ClickID, Email, Phone, LeadID int
}

type view struct {
	Since, Until   time.Time
	MappingVersion string
	Destinations   []destView
	Rejections     []store.Rejection
	CRMs           []enrich.ConnectionOverview
}

const chartHeight = 60

func build(ctx context.Context, src Source, since, until time.Time) (view, error) {
	hours, err := src.HourlyCounts(ctx, since, until)
	if err != nil {
		return view{}, err
	}
	rej, err := src.TopRejections(ctx, since, until, 10)
	if err != nil {
		return view{}, err
	}
	ids, err := src.IdentifierCounts(ctx, since, until)
	if err != nil {
		return view{}, err
	}
	v := view{Since: since, Until: until, MappingVersion: src.MappingVersion(), Rejections: rej}
	if cs, ok := src.(CRMSource); ok {
		if v.CRMs, err = cs.CRMConnections(ctx); err != nil {
			return view{}, err
		}
	}
	byDest := map[string]*destView{}
	for _, d := range src.Destinations() {
		dv := &destView{DestinationStatus: d}
		for i := 0; i < 24; i++ {
			dv.Bars = append(dv.Bars, bar{Hour: since.Add(time.Duration(i) * time.Hour), X: i * 12})
		}
		byDest[d.Name] = dv
	}
	for _, h := range hours {
		dv := byDest[h.Destination]
		if dv == nil {
			continue
		}
		i := int(h.Hour.UTC().Sub(since) / time.Hour)
		if i < 0 || i >= 24 {
			continue
		}
		b := &dv.Bars[i]
		switch h.State {
		case store.StateAccepted:
			b.Accepted += h.Count
			dv.Accepted += h.Count
		case store.StateRejected:
			b.Rejected += h.Count
			dv.Rejected += h.Count
		case store.StateExpired:
			b.Expired += h.Count
			dv.Expired += h.Count
		}
	}
	for _, ic := range ids {
		if dv := byDest[ic.Destination]; dv != nil {
			dv.Made += ic.Count
			dv.ClickID += ic.WithClickID
			dv.Email += ic.WithEmail
			dv.Phone += ic.WithPhone
			dv.LeadID += ic.WithLeadID
		}
	}
	for _, dv := range byDest {
		peak := 1
		for _, b := range dv.Bars {
			if t := b.Accepted + b.Rejected + b.Expired; t > peak {
				peak = t
			}
		}
		for i := range dv.Bars {
			b := &dv.Bars[i]
			b.HA = b.Accepted * chartHeight / peak
			b.HR = b.Rejected * chartHeight / peak
			b.HE = b.Expired * chartHeight / peak
			b.YA = chartHeight - b.HA
			b.YR = b.YA - b.HR
			b.YE = b.YR - b.HE
		}
		v.Destinations = append(v.Destinations, *dv)
	}
	sort.Slice(v.Destinations, func(i, j int) bool { return v.Destinations[i].Name < v.Destinations[j].Name })
	return v, nil
}
