package uploader

import (
	"context"

	"golang.org/x/sync/errgroup"
)

// RunAll runs every dispatcher until ctx is done and returns when all have stopped. Each
// dispatcher abandons its in-flight request on cancellation and hands its rows back on a
// short detached deadline (Options.ShutdownTimeout), so shutdown is bounded; leases it could
// not release expire and their rows return to ready. The first Run error cancels the rest.
func RunAll(ctx context.Context, ds []*Dispatcher) error {
	g, ctx := errgroup.WithContext(ctx)
	for _, d := range ds {
		g.Go(func() error { return d.Run(ctx) })
	}
	return g.Wait()
}
