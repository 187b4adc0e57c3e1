package main

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"os"
	"sync"
	"time"

	"github.com/pipesnap/pipesnap/diagnose"
	"github.com/pipesnap/pipesnap/pipemodel"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/promhttp"
	"github.com/urfave/cli/v2"

	"github.com/pipesnap/pipesnap/metrics"
)

func serveCommand() *cli.Command {
	return &cli.Command{
		Name:      "serve",
		Usage:     "serve Prometheus metrics of the pipes at /metrics",
		ArgsUsage: " ",
		Description: `Serves http://ADDR/metrics, where every scrape walks the pipes once.
Per pipe, labelled ino, kind, readers and writers (the commands holding
each end, sorted, at most 3 names and +N) and namespace, pod and
container (of its holders: under Kubernetes the pod's namespace, the pod
and the container's name in it; in a plain container its name; empty in
none): pipesnap_pipe_queued_bytes,
_capacity_bytes, _readers and _writers (open ends, the kernel's count),
_blocked_readers and _blocked_writers (tasks sleeping on the pipe),
_read_bytes_total and _written_bytes_total (bytes through the pipe since
pipesnap first saw it, from head and tail advances; see watch for how
they are estimated) and _written_buffers_total (head advances). Totals,
never capped: pipesnap_pipes, pipesnap_pipes_exported, pipesnap_full_pipes, pipesnap_unreadable_pipes,
pipesnap_blocked_tasks{end}, pipesnap_up, pipesnap_walk_duration_seconds,
pipesnap_scrape_duration_seconds and pipesnap_walk_errors_total.

Every scrape also diagnoses what did not move since the previous walk, as
diagnose does (a wait is a stall once it has lasted --min-wait, default
3s; pipesnap's own stdio pipes are left out). With no previous walk, or
one older than 5 minutes, it walks twice, 200ms apart, so the first
scrape already answers; walks are at least 200ms apart. Wait stacks are
not read. Something to alert on:
  - pipesnap_stuck_pipelines: pipelines (chains) with a stall, never
    capped;
  - pipesnap_stuck_pipeline_seconds{culprit_comm, culprit_pid, first_comm,
    kind, namespace, pod, container}: one series per stuck pipeline, how
    long it has been stuck (its longest stall), naming the culprit where
    it stopped (empty when none is seen: a FIFO nobody opens), its
    container, and the first command of the pipeline;
    at most --max-stuck series (default 10; 0: no bound), the longest
    stuck first;
  - pipesnap_stalls{kind}: stalls by kind (full-reader-idle, unread,
    writer-stopped, writer-gone, data-no-reader, open-no-reader,
    open-no-writer), 0 when none;
  - pipesnap_longest_wait_seconds{end}: the longest wait of a task on a
    read end (waiting for data), a write end (waiting for room) or in
    open of a FIFO (end="open"), 0 when none waits;
  - pipesnap_waits_considered and pipesnap_waits_left_out{reason}: the
    waits looked at, and those that were no stall (idle, moving, young,
    new).
Command names that are not valid UTF-8 have their invalid bytes written
\xNN. deploy/prometheus/pipesnap-alerts.yml has alerting rules over these
(PipelineStuck: stuck for 5 minutes).

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
			&cli.DurationFlag{Name: "min-wait", Value: diagnose.DefaultMinWait, Usage: "a wait is a stall once it has lasted `DURATION`"},
			&cli.IntFlag{Name: "max-stuck", Value: 10, Usage: "export pipesnap_stuck_pipeline_seconds for at most `N` stuck pipelines (0: all)"},
			&cli.StringFlag{Name: "log-format", Value: "text", Usage: "log as `FORMAT`: text (key=value lines) or json (one object a line), on stderr"},
		),
		OnUsageError: onUsageError,
		Action: func(c *cli.Context) error {
			if c.Int("max-pipes") < 0 {
				return usagef("--max-pipes must not be negative")
			}
			if c.Int("max-stuck") < 0 {
				return usagef("--max-stuck must not be negative")
			}
			if c.Duration("min-wait") < 0 {
				return usagef("--min-wait must not be negative")
			}
			log, err := newLogger(c.String("log-format"))
			if err != nil {
				return err
			}
			if _, _, err := net.SplitHostPort(c.String("listen")); err != nil {
				return usagef("--listen %q: %v", c.String("listen"), err)
			}
			s, err := openSampler(c, "serve", true)
			if err != nil {
				return err
			}
			defer s.Close()
			b := readBuildInfo()
			return runServe(s, c.String("listen"), c.Duration("min-wait"), log,
				metrics.Options{MaxPipes: c.Int("max-pipes"), MaxStuck: c.Int("max-stuck"), Log: log,
					Build: &metrics.BuildInfo{Version: b.Version, Revision: b.Revision, GoVersion: b.GoVersion}})
		},
	}
}

// newLogger makes serve's logger: text or JSON lines on stderr.
func newLogger(format string) (*slog.Logger, error) {
	switch format {
	case "text":
		return slog.New(slog.NewTextHandler(os.Stderr, nil)), nil
	case "json":
		return slog.New(slog.NewJSONHandler(os.Stderr, nil)), nil
	}
	return nil, usagef("--log-format %q: want text or json", format)
}

func runServe(s *sampler, addr string, minWait time.Duration, log *slog.Logger, opts metrics.Options) error {
	ctx, stop := signalContext()
	defer stop()
	// Collect is serialized by the collector; the sampler is used by
	// nothing else.
	var mu sync.Mutex
	sample := func(ctx context.Context) (*pipemodel.Sample, error) {
		mu.Lock()
		defer mu.Unlock()
		return s.Sample(ctx)
	}
	// Each scrape is diagnosed against the previous walk; the metrics
	// need no wchan or stack, so none is read.
	d := &metrics.Diagnoser{Sample: sample, Options: diagnose.Options{
		Ignore: ownPipes(), MinWait: minWait, Kernel: metrics.NoKernel{},
	}}
	reg := prometheus.NewRegistry()
	if err := reg.Register(metrics.New(d.Look, opts)); err != nil {
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
	log.Info("serving metrics", "url", fmt.Sprintf("http://%s/metrics", ln.Addr()), "version", opts.Build.Version)
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
	log.Info("stopped")
	return nil
}
