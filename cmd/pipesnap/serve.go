package main

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/http"
	"os"
	"sync"
	"time"

	"github.com/pipesnap/pipesnap/pipemodel"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/promhttp"
	"github.com/urfave/cli/v2"

	"github.com/pipesnap/pipesnap/metrics"
	"github.com/pipesnap/pipesnap/pipestate"
)

func serveCommand() *cli.Command {
	return &cli.Command{
		Name:      "serve",
		Usage:     "serve Prometheus metrics of the pipes at /metrics",
		ArgsUsage: " ",
		Description: `Serves http://ADDR/metrics, where every scrape walks the pipes once.
Per pipe, labelled ino, kind, readers and writers (the commands holding
each end, sorted, at most 3 names and +N): pipesnap_pipe_queued_bytes,
_capacity_bytes, _readers and _writers (open ends, the kernel's count),
_blocked_readers and _blocked_writers (tasks sleeping on the pipe),
_read_bytes_total and _written_bytes_total (bytes through the pipe since
pipesnap first saw it, from head and tail advances; see watch for how
they are estimated) and _written_buffers_total (head advances). Totals,
never capped: pipesnap_pipes, pipesnap_pipes_exported, pipesnap_full_pipes,
pipesnap_blocked_tasks{end}, pipesnap_up, pipesnap_walk_duration_seconds,
pipesnap_scrape_duration_seconds and pipesnap_walk_errors_total.

--max-pipes bounds the per-pipe series of one scrape (default 100; 0: no
bound): pipes with blocked tasks first, then the fullest. Inodes are new
for every new pipe, so every short-lived pipe is a new series: keep the
bound, or scope with --pid.

The listening address is printed on stderr once the server is up
(--listen 127.0.0.1:0 picks a free port). It serves process names and
pipe topology: it listens on the loopback only unless told otherwise.
SIGINT or SIGTERM stops it.

` + scopeHelp,
		Flags: append(scopeFlags(),
			&cli.StringFlag{Name: "listen", Aliases: []string{"l"}, Value: "127.0.0.1:9464", Usage: "serve on `ADDR` (host:port)"},
			&cli.IntFlag{Name: "max-pipes", Value: 100, Usage: "export per-pipe series for at most `N` pipes per scrape (0: all)"},
		),
		OnUsageError: onUsageError,
		Action: func(c *cli.Context) error {
			if c.Int("max-pipes") < 0 {
				return usagef("--max-pipes must not be negative")
			}
			if _, _, err := net.SplitHostPort(c.String("listen")); err != nil {
				return usagef("--listen %q: %v", c.String("listen"), err)
			}
			s, err := openSampler(c, "serve")
			if err != nil {
				return err
			}
			defer s.Close()
			return runServe(s, c.String("listen"), c.Int("max-pipes"))
		},
	}
}

func runServe(s *pipestate.Sampler, addr string, maxPipes int) error {
	ctx, stop := signalContext()
	defer stop()
	// Collect is serialized by the collector; the sampler is used by
	// nothing else.
	var mu sync.Mutex
	source := func(ctx context.Context) (*pipemodel.Sample, error) {
		mu.Lock()
		defer mu.Unlock()
		return s.Sample(ctx)
	}
	reg := prometheus.NewRegistry()
	if err := reg.Register(metrics.New(source, maxPipes)); err != nil {
		return err
	}
	mux := http.NewServeMux()
	mux.Handle("/metrics", promhttp.HandlerFor(reg, promhttp.HandlerOpts{ErrorHandling: promhttp.ContinueOnError}))
	mux.HandleFunc("/", func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path != "/" {
			http.NotFound(w, r)
			return
		}
		fmt.Fprintln(w, "pipesnap: metrics at /metrics")
	})
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		return fmt.Errorf("serve: %w", err)
	}
	srv := &http.Server{Handler: mux, ReadHeaderTimeout: 10 * time.Second}
	fmt.Fprintf(os.Stderr, "pipesnap: serving metrics on http://%s/metrics\n", ln.Addr())
	done := make(chan error, 1)
	go func() { done <- srv.Serve(ln) }()
	select {
	case err := <-done:
		return fmt.Errorf("serve: %w", err)
	case <-ctx.Done():
	}
	shut, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	if err := srv.Shutdown(shut); err != nil {
		return fmt.Errorf("serve: stopping: %w", err)
	}
	if err := <-done; err != nil && !errors.Is(err, http.ErrServerClosed) {
		return fmt.Errorf("serve: %w", err)
	}
	fmt.Fprintln(os.Stderr, "pipesnap: stopped")
	return nil
}
