package main

import (
	"context"
	"errors"
	"os"
	"slices"
	"time"

	"github.com/urfave/cli/v2"

	"github.com/pipesnap/pipesnap/container"
	"github.com/pipesnap/pipesnap/internal/host"
	"github.com/pipesnap/pipesnap/pipemodel"
	"github.com/pipesnap/pipesnap/pipestate"
	"github.com/pipesnap/pipesnap/resident"
)

// scopeFlags choose the processes of ls, diagnose, watch and serve.
func scopeFlags() []cli.Flag {
	return append([]cli.Flag{
		pidFlag("look at the pipes of process `PID` (repeat, or list them: 1,2 or \"1 2\")"),
		&cli.BoolFlag{Name: "all", Aliases: []string{"a"}, Usage: "look at every process's pipes (the default without --pid)"},
	}, containerFlags()...)
}

// containerFlags select processes by container, for every command that
// walks.
func containerFlags() []cli.Flag {
	return []cli.Flag{
		&cli.StringFlag{Name: "container", Usage: "the processes of container `NAME` (or id, 4 hex digits or more)"},
		&cli.StringFlag{Name: "pod", Usage: "the processes of Kubernetes pod `NAME`"},
		&cli.StringFlag{Name: "namespace", Usage: "the processes of the pods of Kubernetes namespace `NS`"},
		&cli.StringFlag{Name: "cgroup", Usage: "the processes whose cgroup path starts with `PATH`"},
		&cli.StringFlag{Name: "host-proc", EnvVars: []string{"PIPESNAP_HOST_PROC"}, Usage: "the host's /proc at `DIR`, for container identities and pids (in a container: /host/proc)"},
	}
}

const scopeHelp = `Without --pid, every process in pipesnap's pid namespace is walked
(pipesnap itself excepted). --container NAME|ID, --pod NAME, --namespace NS
and --cgroup PATH select the processes of a container (from their cgroup,
named by the runtime where its socket answers), combinable with --pid;
watch and serve look for the containers' processes again every 2s, so
a pipeline started in a container later (or a restarted container) is
walked too.
Each process is shown with its container and, when its own pid namespace
calls it otherwise, its pid there (24524/1). Needs root, or CAP_BPF and
CAP_PERFMON, and a kernel with BTF. Nothing is read out of the pipes and
no page is copied: only the kernel's bookkeeping (ring indices, buffer
lengths, wait queues), so a walk is cheap enough to repeat every second.`

// selection is what the scope flags ask for.
type selection struct {
	pids     []int // --pid's, then also the selected containers'
	explicit []int // --pid's alone
	all      bool
	sel      container.Selector
	procRoot string
}

func selectionOf(c *cli.Context, what string) (selection, error) {
	s := selection{pids: pidsOf(c), explicit: pidsOf(c), all: c.Bool("all"), procRoot: c.String("host-proc"),
		sel: container.Selector{Container: c.String("container"), Pod: c.String("pod"), Namespace: c.String("namespace"), Cgroup: c.String("cgroup")}}
	if s.all && (len(s.pids) > 0 || !s.sel.Empty()) {
		return s, usagef("%s: --pid and --all exclude each other (and --all the container selectors): give one", what)
	}
	if s.procRoot != "" && !host.IsProcfs(s.procRoot) {
		return s, usagef("--host-proc %s is not a proc filesystem: give the host's /proc as mounted here (e.g. /host/proc)", s.procRoot)
	}
	return s, nil
}

// resolve turns the container selectors into pids, added to --pid's.
func (s *selection) resolve(ctx context.Context, r *container.Resolver) error {
	pids, err := s.selected(ctx, r)
	if err != nil {
		return err
	}
	s.pids = pids
	return nil
}

// selected are --pid's pids and those of the processes the container
// selectors pick now, sorted, each once.
func (s *selection) selected(ctx context.Context, r *container.Resolver) ([]int, error) {
	if s.sel.Empty() {
		return s.pids, nil
	}
	pids, err := container.Select(ctx, s.procRoot, r, s.sel)
	if err != nil {
		return nil, err
	}
	pids = append(pids, s.explicit...)
	slices.Sort(pids)
	return slices.Compact(pids), nil
}

// followEvery is how often watch and serve look again for the processes
// of the containers they were asked for.
const followEvery = 2 * time.Second

// sampler walks the selected processes and names their containers.
type sampler struct {
	walker
	resolver *container.Resolver
	procRoot string
	// With container selectors, a long-running command (watch, serve)
	// follows the containers: processes started in them later (a
	// restarted container) are walked too, once they are found.
	follow   *selection
	pids     []int
	selected time.Time
}

// walker is what walks: a pipe-state program of this process's own
// (*pipestate.Sampler) or a resident serve's (remoteWalker).
type walker interface {
	Sample(ctx context.Context) (*pipemodel.Sample, error)
	Close() error
}

// Sample walks once and annotates the processes with their containers
// and pids in their own pid namespaces.
func (s *sampler) Sample(ctx context.Context) (*pipemodel.Sample, error) {
	if err := s.refollow(ctx); err != nil {
		return nil, err
	}
	smp, err := s.walker.Sample(ctx)
	if err != nil {
		return nil, err
	}
	container.Annotate(ctx, smp, s.resolver, s.procRoot)
	return smp, nil
}

// SampleEach walks once as Sample does and gives the sample as it comes:
// head gets it without its pipes, then pipe each pipe in order. A
// resident serve's pipes are never held here all at once.
func (s *sampler) SampleEach(ctx context.Context, head func(*pipemodel.Sample) error, pipe func(*pipemodel.Pipe) error) error {
	if r, ok := s.walker.(*remoteWalker); ok && s.follow == nil {
		return r.c.SampleEach(ctx, r.req, func(h *pipemodel.Sample) error {
			container.Annotate(ctx, h, s.resolver, s.procRoot)
			return head(h)
		}, pipe)
	}
	smp, err := s.Sample(ctx)
	if err != nil {
		return err
	}
	h := *smp
	h.Pipes = nil
	if err := head(&h); err != nil {
		return err
	}
	for _, p := range smp.Pipes {
		if err := pipe(p); err != nil {
			return err
		}
	}
	return nil
}

// refollow selects the containers' processes again, at most every
// followEvery, and walks the new set from now on when it changed. A
// container with no process left keeps the old set, whose processes
// the walk reports gone.
func (s *sampler) refollow(ctx context.Context) error {
	if s.follow == nil || time.Since(s.selected) < followEvery {
		return nil
	}
	s.selected = time.Now()
	pids, err := s.follow.selected(ctx, s.resolver)
	if err != nil || slices.Equal(pids, s.pids) {
		return nil // ErrNoMatch, or /proc unreadable for a moment: keep walking what was found
	}
	next, err := pipestate.Open(pipestate.Options{PIDs: pids})
	if err != nil {
		return err
	}
	s.walker.Close()
	s.walker, s.pids = next, pids
	return nil
}

func (s *sampler) Close() error {
	return errors.Join(s.walker.Close(), s.resolver.Close())
}

// remoteWalker walks with a resident serve's loaded program.
type remoteWalker struct {
	c   *resident.Client
	req resident.Request
}

func (r *remoteWalker) Sample(ctx context.Context) (*pipemodel.Sample, error) {
	return r.c.Sample(ctx, r.req)
}

func (r *remoteWalker) Close() error { return r.c.Close() }

// directFlag makes ls, diagnose and dump take the direct path.
func directFlag() cli.Flag {
	return &cli.BoolFlag{Name: "direct", Usage: "load the BPF programs in this process even when a resident pipesnap serve could answer (as " + resident.EnvSocket + "=" + resident.Off + " does)"}
}

// residentHelp says when ls, diagnose and dump use a resident serve.
const residentHelp = `When a pipesnap serve runs on this machine it answers on a unix socket
(` + resident.DefaultSocket + `, or $` + resident.EnvSocket + `), and this command asks
it first: it has the BPF programs loaded, so the call skips the load,
most of its time. The answer is the same; the serve answers only a
caller that could take the direct path itself (in its user, pid and
mount namespaces, with CAP_SYS_ADMIN, or CAP_BPF and CAP_PERFMON) on
Linux 6.5 or later. No socket, a stale one, a serve that declines, or
--direct (or ` + resident.EnvSocket + `=` + resident.Off + `): the command loads the programs
itself.`

// dialResident connects to a resident serve; nil: there is none to use,
// take the direct path.
func dialResident() *resident.Client {
	path := resident.SocketPath()
	if path == "" {
		return nil
	}
	c, err := resident.Dial(path)
	if err != nil {
		return nil
	}
	return c
}

func newResolver(procRoot string) *container.Resolver {
	return container.NewResolver(container.Options{Root: hostRoot(procRoot)})
}

// hostRoot: with --host-proc /host/proc, the host's root is /host.
func hostRoot(procRoot string) string {
	if procRoot == "" || procRoot == "/proc" {
		return os.Getenv(container.EnvHostRoot)
	}
	if len(procRoot) > 5 && procRoot[len(procRoot)-5:] == "/proc" {
		return procRoot[:len(procRoot)-5]
	}
	return os.Getenv(container.EnvHostRoot)
}

// openSampler loads the pipe-state program for the processes the flags
// name, or, with useResident and unless --direct, has a resident serve
// walk them; with follow, it follows the processes of the containers
// they select (see sampler.refollow). The caller closes it.
func openSampler(c *cli.Context, what string, follow, useResident bool) (*sampler, error) {
	sel, err := selectionOf(c, what)
	if err != nil {
		return nil, err
	}
	if c.NArg() > 0 {
		return nil, usagef("%s takes no arguments (got %q): use --pid PID", what, c.Args().First())
	}
	r := newResolver(sel.procRoot)
	if err := sel.resolve(c.Context, r); err != nil {
		r.Close()
		return nil, err
	}
	opts := pipestate.Options{PIDs: sel.pids, All: len(sel.pids) == 0}
	if useResident && !c.Bool("direct") {
		// What the direct path would refuse is refused here first.
		if _, err := pipestate.Preflight(opts); err != nil {
			r.Close()
			return nil, stateError(what, err)
		}
		if rc := dialResident(); rc != nil {
			w := &remoteWalker{c: rc, req: resident.Request{PIDs: opts.PIDs, All: opts.All}}
			return &sampler{walker: w, resolver: r, procRoot: sel.procRoot}, nil
		}
	}
	s, err := pipestate.Open(opts)
	if err != nil {
		r.Close()
		return nil, stateError(what, err)
	}
	out := &sampler{walker: s, resolver: r, procRoot: sel.procRoot, pids: sel.pids, selected: time.Now()}
	if follow && !sel.sel.Empty() {
		out.follow = &sel
	}
	return out, nil
}
