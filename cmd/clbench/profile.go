package main

import (
	"context"
	"os"
	"path/filepath"
	"runtime/pprof"
	"time"

	"go.uber.org/zap"

	"github.com/closedloop/closedloop/internal/bench"
	"github.com/closedloop/closedloop/internal/config"
	"github.com/closedloop/closedloop/internal/worker"
)

// profileEndToEnd runs the end-to-end phase again on a fresh topic of smallN deals with
// the worker in this process (worker.Run, the code `closedloop run` calls) under the CPU
// profiler, writing the profile to e.o.Pprof: where the time goes when the target is missed.
func (e *env) profileEndToEnd(ctx context.Context) error {
	if e.o.Pprof == "" {
		return nil
	}
	topic := "clbench-" + e.run + "-stages-profile"
	if err := bench.CreateTopics(ctx, e.o.Brokers[0], e.o.Partitions, topic); err != nil {
		return err
	}
	defer deleteTopics(context.WithoutCancel(ctx), e.o.Brokers[0], topic)
	ds := e.ds
	ds.DealTag = "p"
	if err := bench.Produce(ctx, e.o.Brokers, topic, 0, e.smallN, ds.StageChange); err != nil {
		return err
	}
	path, err := e.mainConfig("profile", topic)
	if err != nil {
		return err
	}
	cfg, err := config.Load(path, os.LookupEnv)
	if err != nil {
		return err
	}
	f, err := os.Create(e.o.Pprof)
	if err != nil {
		return err
	}
	defer f.Close()
	logFile, err := os.Create(filepath.Join(e.dir, "profile.log"))
	if err != nil {
		return err
	}
	defer logFile.Close()
	log := zap.New(zap.NewNop().Core())
	runCtx, stop := context.WithCancel(ctx)
	defer stop()
	done := make(chan error, 1)
	if err := pprof.StartCPUProfile(f); err != nil {
		return err
	}
	start := time.Now()
	go func() { done <- worker.Run(runCtx, cfg, log, worker.Options{}) }()
	err = bench.WaitCaughtUp(ctx, e.o.Brokers, "clbench-main", []string{topic}, 100*time.Millisecond)
	d := time.Since(start)
	pprof.StopCPUProfile()
	stop()
	if werr := <-done; werr != nil && err == nil {
		err = werr
	}
	if err != nil {
		return err
	}
	logf("profiled end to end %d in %.1fs (%.0f/s, in process): go tool pprof -top %s", e.smallN, d.Seconds(), float64(e.smallN)/d.Seconds(), e.o.Pprof)
	return nil
}
