package bench

import (
	"bytes"
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
)

// Services are a Kafka broker and a PostgreSQL server of our own, started through
// scripts/kafka.sh and scripts/postgres.sh with state under Dir, so they can be restarted
// in place (same port, same data) without disturbing the services other tests share.
type Services struct {
	Root    string // module root (the scripts live in Root/scripts)
	Dir     string // state directory
	Brokers []string
	DSN     string // superuser DSN of the server's postgres database
}

// StartServices starts both services with state in dir.
func StartServices(ctx context.Context, root, dir string) (*Services, error) {
	s := &Services{Root: root, Dir: dir}
	line, err := s.script(ctx, "kafka.sh", "start")
	if err != nil {
		return nil, err
	}
	s.Brokers = strings.Split(line, ",")
	if s.DSN, err = s.script(ctx, "postgres.sh", "start"); err != nil {
		_ = s.Stop(context.WithoutCancel(ctx))
		return nil, err
	}
	return s, nil
}

// RestartKafka stops the broker (SIGTERM) and starts it again on the same port and data.
func (s *Services) RestartKafka(ctx context.Context) error {
	_, err := s.script(ctx, "kafka.sh", "restart")
	return err
}

// RestartPostgres stops PostgreSQL in mode (fast, or immediate: as if it crashed) and starts
// it again on the same port and data.
func (s *Services) RestartPostgres(ctx context.Context, mode string) error {
	_, err := s.script(ctx, "postgres.sh", "restart", mode)
	return err
}

// Stop stops both services and deletes their data.
func (s *Services) Stop(ctx context.Context) error {
	_, err1 := s.script(ctx, "kafka.sh", "stop")
	_, err2 := s.script(ctx, "postgres.sh", "stop")
	if err1 != nil {
		return err1
	}
	return err2
}

// script runs scripts/NAME ARGS with the private state dirs and returns the value of the
// NAME=value line it prints.
func (s *Services) script(ctx context.Context, name string, args ...string) (string, error) {
	cmd := exec.CommandContext(ctx, filepath.Join(s.Root, "scripts", name), args...)
	cmd.Env = append(os.Environ(),
		"CLOSEDLOOP_KAFKA_DIR="+filepath.Join(s.Dir, "kafka"),
		"CLOSEDLOOP_PG_DIR="+filepath.Join(s.Dir, "pg"),
	)
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	out, err := cmd.Output()
	if err != nil {
		return "", fmt.Errorf("scripts/%s %s: %w\n%s", name, strings.Join(args, " "), err, stderr.String())
	}
	line := strings.TrimSpace(string(out))
	if _, v, ok := strings.Cut(line, "="); ok {
		return v, nil
	}
	return line, nil
}
