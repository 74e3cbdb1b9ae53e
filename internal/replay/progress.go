package replay

import (
	"fmt"
	"io"
	"sync"
	"time"

	"github.com/schollz/progressbar/v3"
	"go.uber.org/zap"
)

// Progress shows how far a replay is: a bar (done / total, rate, ETA) on a terminal, or a
// log line at most every interval otherwise. Update matches Options.Progress. Safe for
// concurrent use.
type Progress struct {
	mu    sync.Mutex
	bar   *progressbar.ProgressBar
	log   *zap.Logger
	every time.Duration
	unit  string
	start time.Time
	last  time.Time
	done  int64
	total int64
	// logged is the done count of the last log line (-1: none yet).
	logged int64
	now    func() time.Time
}

// NewBar returns a Progress drawing a bar on w (a terminal) counting unit ("messages").
func NewBar(w io.Writer, unit string) *Progress {
	bar := progressbar.NewOptions64(-1,
		progressbar.OptionSetWriter(w),
		progressbar.OptionSetDescription("replay"),
		progressbar.OptionShowCount(),
		progressbar.OptionShowIts(),
		progressbar.OptionSetItsString(unit),
		progressbar.OptionSetPredictTime(true),
		progressbar.OptionSetElapsedTime(true),
		progressbar.OptionThrottle(100*time.Millisecond),
		progressbar.OptionFullWidth(),
		progressbar.OptionOnCompletion(func() { fmt.Fprintln(w) }),
	)
	return &Progress{bar: bar, unit: unit, start: time.Now(), now: time.Now}
}

// NewLogProgress returns a Progress logging one line at most every interval (and the
// first and last).
func NewLogProgress(log *zap.Logger, unit string, every time.Duration) *Progress {
	return &Progress{log: log, every: every, unit: unit, start: time.Now(), now: time.Now, logged: -1}
}

// Update records done of total.
func (p *Progress) Update(done, total int64) {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.done, p.total = done, total
	if p.bar != nil {
		if p.bar.GetMax64() != total {
			p.bar.ChangeMax64(total)
		}
		_ = p.bar.Set64(done)
		return
	}
	now := p.now()
	if !p.last.IsZero() && now.Sub(p.last) < p.every && done < total {
		return
	}
	p.last = now
	p.logLine("replay progress", now)
}

// Finish ends the bar, or logs the final count unless the last line already showed it.
func (p *Progress) Finish() {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.bar != nil {
		_ = p.bar.Exit()
		return
	}
	if p.logged != p.done {
		p.logLine("replay progress", p.now())
	}
}

func (p *Progress) logLine(msg string, now time.Time) {
	p.logged = p.done
	elapsed := now.Sub(p.start)
	fields := []zap.Field{zap.Int64(p.unit, p.done), zap.Int64("total", p.total), zap.Duration("elapsed", elapsed.Round(time.Millisecond))}
	if s := elapsed.Seconds(); s > 0 {
		rate := float64(p.done) / s
		fields = append(fields, zap.Float64("per_second", float64(int64(rate*10))/10))
		if rate > 0 && p.total > p.done {
			fields = append(fields, zap.Duration("eta", time.Duration(float64(p.total-p.done)/rate*float64(time.Second)).Round(time.Second)))
		}
	}
	if p.total > 0 {
		fields = append(fields, zap.Float64("percent", float64(p.done*1000/p.total)/10))
	}
	p.log.Info(msg, fields...)
}
