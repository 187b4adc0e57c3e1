package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"os"
	"slices"
	"sync"
	"time"

	"github.com/pipesnap/pipesnap/diagnose"
	"github.com/pipesnap/pipesnap/internal/dumpstream"
	"github.com/pipesnap/pipesnap/internal/host"
	"github.com/pipesnap/pipesnap/loader"
	"github.com/pipesnap/pipesnap/pipemodel"
	"github.com/pipesnap/pipesnap/pipestate"
	"github.com/pipesnap/pipesnap/resident"

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

It also answers ls, diagnose and dump of the CLI on this machine on the
unix socket --socket (default ` + resident.DefaultSocket + `, or $` + resident.EnvSocket + `;
` + resident.Off + `: none), in a directory of its own user's, mode 0700, the
socket 0600: with its BPF programs loaded once, those calls skip the
load. A caller must be able to take the direct path itself: in serve's
user, pid and mount namespaces, with CAP_SYS_ADMIN, or CAP_BPF and
CAP_PERFMON, in its effective set (SO_PEERCRED and SO_PEERPIDFD, Linux
6.5); others are declined, logged, and load the programs themselves. A
stale socket is replaced; when another serve answers on it, or the
socket cannot be made, serve says so and serves the metrics alone.

` + scopeHelp,
		Flags: append(scopeFlags(),
			&cli.StringFlag{Name: "listen", Aliases: []string{"l"}, Value: "127.0.0.1:9464", Usage: "serve on `ADDR` (host:port)"},
			&cli.IntFlag{Name: "max-pipes", Value: 100, Usage: "export per-pipe series for at most `N` pipes per scrape (0: all)"},
			&cli.DurationFlag{Name: "min-wait", Value: diagnose.DefaultMinWait, Usage: "a wait is a stall once it has lasted `DURATION`"},
			&cli.IntFlag{Name: "max-stuck", Value: 10, Usage: "export pipesnap_stuck_pipeline_seconds for at most `N` stuck pipelines (0: all)"},
			&cli.StringFlag{Name: "log-format", Value: "text", Usage: "log as `FORMAT`: text (key=value lines) or json (one object a line), on stderr"},
			&cli.StringFlag{Name: "socket", Value: resident.DefaultSocket, EnvVars: []string{resident.EnvSocket}, Usage: "answer ls, diagnose and dump of the CLI on the unix socket `PATH` (" + resident.Off + ": none)"},
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
			s, err := openSampler(c, "serve", true, false)
			if err != nil {
				return err
			}
			defer s.Close()
			b := readBuildInfo()
			ctx, stop := signalContext()
			defer stop()
			if path := c.String("socket"); path != "" && path != resident.Off {
				done := startResident(ctx, path, log)
				defer func() { <-done }()
				defer stop()
			}
			return runServe(ctx, s, c.String("listen"), c.Duration("min-wait"), log,
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

func runServe(ctx context.Context, s *sampler, addr string, minWait time.Duration, log *slog.Logger, opts metrics.Options) error {
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
	mux := http.NewServeMux()
	mux.Handle("/metrics", metrics.New(d.Look, opts))
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

// startResident loads the programs the CLI's calls need and answers them
// on the socket at path until ctx ends; the channel closes when it has
// stopped. What fails is logged: the metrics are served regardless.
func startResident(ctx context.Context, path string, log *slog.Logger) <-chan struct{} {
	done := make(chan struct{})
	ln, err := resident.Listen(path)
	if err != nil {
		log.Warn("not answering the CLI on a socket", "socket", path, "err", err)
		close(done)
		return done
	}
	be, err := newResidentBackend()
	if err != nil {
		ln.Close()
		log.Warn("not answering the CLI on a socket", "socket", path, "err", err)
		close(done)
		return done
	}
	log.Info("answering the CLI", "socket", path)
	srv := &resident.Server{Backend: be, Log: log}
	go func() {
		defer close(done)
		defer be.Close()
		if err := srv.Serve(ctx, ln); err != nil {
			log.Warn("stopped answering the CLI", "socket", path, "err", err)
		}
	}()
	return done
}

// residentBackend is what serve answers the CLI with: the dump programs
// and a pipe-state program of its own (the metrics' sampler keeps its
// scope), each loaded once and used by one call at a time.
type residentBackend struct {
	dumps *loader.Resident
	mu    sync.Mutex // smp
	smp   *pipestate.Sampler
}

func newResidentBackend() (*residentBackend, error) {
	dumps, err := loader.OpenResident()
	if err != nil {
		return nil, err
	}
	smp, err := pipestate.Open(pipestate.Options{All: true})
	if err != nil {
		dumps.Close()
		return nil, err
	}
	return &residentBackend{dumps: dumps, smp: smp}, nil
}

func (b *residentBackend) Close() error {
	return errors.Join(b.dumps.Close(), b.smp.Close())
}

// sessionScope is the processes of a session's samples, resolved at its
// first (a diagnose walks twice: a pid given out again in between is
// told from the process it asked for, as in the direct path).
type sessionScope struct {
	pids  []int
	all   bool
	scope pipestate.Scope
}

func (b *residentBackend) scope(s *resident.Session, req resident.Request) (pipestate.Scope, error) {
	if sc, ok := s.Data.(*sessionScope); ok && sc.all == req.All && slices.Equal(sc.pids, req.PIDs) {
		return sc.scope, nil
	}
	scope, err := pipestate.NewScope(pipestate.Options{PIDs: req.PIDs, All: req.All, Skip: uint32(s.Peer.PID)})
	if err != nil {
		return scope, err
	}
	s.Data = &sessionScope{pids: slices.Clone(req.PIDs), all: req.All, scope: scope}
	return scope, nil
}

func (b *residentBackend) sample(ctx context.Context, scope pipestate.Scope) (*pipemodel.Sample, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	if err := b.smp.SetScope(scope); err != nil {
		return nil, err
	}
	return b.smp.Sample(ctx)
}

func (b *residentBackend) Sample(ctx context.Context, s *resident.Session, req resident.Request) (*pipemodel.Sample, error) {
	scope, err := b.scope(s, req)
	if err != nil {
		return nil, err
	}
	return b.sample(ctx, scope)
}

// Dump is runDump's dump: the waits first (a live sample), then the copy.
func (b *residentBackend) Dump(ctx context.Context, w io.Writer, s *resident.Session, req resident.Request) (*resident.DumpResult, error) {
	opts := loader.Options{PIDs: req.PIDs, All: req.All, Freeze: req.Freeze, ExcludeIno: req.ExcludeIno, Skip: uint32(s.Peer.PID)}
	if req.ProcRoot != "" && !host.IsProcfs(req.ProcRoot) {
		// The serve reads it as root: only a proc filesystem, never a
		// directory of the client's making.
		return nil, fmt.Errorf("%s is not a proc filesystem", req.ProcRoot)
	}
	res := &resident.DumpResult{}
	// The sample runs on another core during the walk (before it when
	// frozen), as a direct dump's does.
	type sampled struct {
		w   *dumpstream.Waits
		err error
	}
	done := make(chan sampled, 1)
	go func() {
		w, err := sampleWaits(ctx, req.ProcRoot, func() (*pipemodel.Sample, error) {
			scope, err := pipestate.NewScope(pipestate.Options{PIDs: req.PIDs, All: req.All, Skip: opts.Skip})
			if err != nil {
				return nil, err
			}
			return b.sample(ctx, scope)
		})
		done <- sampled{w, err}
	}()
	await := sync.OnceValue(func() *dumpstream.Waits {
		r := <-done
		if r.err != nil {
			res.Warnings = append(res.Warnings, r.err.Error())
		}
		return r.w
	})
	opts.AwaitWaits = await
	rep, err := b.dumps.Dump(ctx, w, opts)
	await() // a dump that failed early leaves no sample running
	if err != nil {
		return nil, err // the client words it, as runDump does
	}
	res.Report = rep
	return res, nil
}
