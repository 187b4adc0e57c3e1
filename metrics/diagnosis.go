package metrics

import (
	"cmp"
	"context"
	"slices"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/pipesnap/pipesnap/diagnose"
	"github.com/pipesnap/pipesnap/pipemodel"
)

// The diagnosis of one scrape: what did not move since the previous walk
// (package diagnose), as something to alert on.

// DefaultSettle is how long a Diagnoser waits between its two walks when
// it has no recent previous walk, and how far apart its walks are at
// least.
const DefaultSettle = 200 * time.Millisecond

// DefaultMaxAge is how old the previous walk may be for a Diagnoser to
// compare against it; older, it walks twice, Settle apart.
const DefaultMaxAge = 5 * time.Minute

// Diagnoser is a Source that diagnoses every look: it keeps the previous
// walk and compares the next one with it (diagnose.Diagnose), so a pipe
// that moved between two scrapes is not stuck. With no previous walk, or
// one older than MaxAge, it walks, waits Settle and walks again: the
// first scrape already answers. Walks are at least Settle apart.
type Diagnoser struct {
	Sample Sampler
	// Options of the diagnosis. Kernel is asked where the tasks of the
	// findings sleep (wchan, stack); the metrics use none of it, so
	// NoKernel spares /proc reads per scrape (nil: diagnose.Procfs).
	Options diagnose.Options
	Settle  time.Duration // 0: DefaultSettle
	MaxAge  time.Duration // 0: DefaultMaxAge

	mu     sync.Mutex
	prev   *pipemodel.Sample
	prevAt time.Time
	now    func() time.Time                           // tests
	sleep  func(context.Context, time.Duration) error // tests
}

// Look walks (twice when needed) and diagnoses against the previous walk.
func (d *Diagnoser) Look(ctx context.Context) (*Look, error) {
	d.mu.Lock()
	defer d.mu.Unlock()
	now, sleep := d.now, d.sleep
	if now == nil {
		now = time.Now
	}
	if sleep == nil {
		sleep = sleepCtx
	}
	settle, maxAge := cmp.Or(d.Settle, DefaultSettle), cmp.Or(d.MaxAge, DefaultMaxAge)
	if d.prev == nil || now().Sub(d.prevAt) > maxAge {
		first, err := d.Sample(ctx)
		if err != nil {
			return nil, err
		}
		d.prev, d.prevAt = first, now()
	}
	if wait := settle - now().Sub(d.prevAt); wait > 0 {
		if err := sleep(ctx, wait); err != nil {
			return nil, err
		}
	}
	cur, err := d.Sample(ctx)
	if err != nil {
		return nil, err
	}
	rep := diagnose.Diagnose(d.prev, cur, d.Options)
	d.prev, d.prevAt = cur, now()
	return &Look{Sample: cur, Report: rep, Ignore: d.Options.Ignore}, nil
}

func sleepCtx(ctx context.Context, d time.Duration) error {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-t.C:
		return nil
	case <-ctx.Done():
		return ctx.Err()
	}
}

// NoKernel is a diagnose.Kernel that knows nothing: no wchan, no stack,
// no thread list. The diagnosis does not depend on them (states and wait
// times come from the walk); only the words of its messages do.
type NoKernel struct{}

func (NoKernel) Wchan(pid, tid uint32) string   { return "" }
func (NoKernel) Stack(pid, tid uint32) []string { return nil }
func (NoKernel) Threads(pid uint32) []uint32    { return nil }

// StallKinds are the kinds pipesnap_stalls is exported for, 0 when none:
// every stall kind of package diagnose.
var StallKinds = []diagnose.Kind{
	diagnose.FullReaderIdle, diagnose.Unread, diagnose.WriterStopped, diagnose.WriterGone,
	diagnose.DataNoReader, diagnose.OpenNoReader, diagnose.OpenNoWriter,
}

// LeftOutReasons name the reasons of diagnose.Report.LeftOut in the
// reason label of pipesnap_waits_left_out; a reason diagnose adds later
// counts as "other".
var LeftOutReasons = map[string]string{
	diagnose.LeftIdle:   "idle",
	diagnose.LeftMoving: "moving",
	diagnose.LeftYoung:  "young",
	diagnose.LeftNew:    "new",
}

// StuckLabels are the labels of pipesnap_stuck_pipeline_seconds: the
// culprit where the chain stopped (its command and pid; empty when
// pipesnap sees none, as for a FIFO nobody opens), the command of the
// chain's first process in flow order, the kind of its stall, and the
// Kubernetes namespace, pod and container (ContainerLabels) of the
// culprit, or of the first process when there is none.
var StuckLabels = []string{"culprit_comm", "culprit_pid", "first_comm", "kind", "namespace", "pod", "container"}

type diagDescs struct {
	stuck, stalls, stuckSeconds, longest, considered, leftOut *Desc
}

func newDiagDescs() diagDescs {
	return diagDescs{
		stuck: gaugeDesc("pipesnap_stuck_pipelines",
			"Pipelines (chains of processes connected by pipes) with a stall: a pipe that did not move since the previous walk while a wait on it lasted --min-wait (see pipesnap diagnose). Never capped."),
		stalls: gaugeDesc("pipesnap_stalls",
			"Stalls found by the diagnosis, by kind (every stall kind is exported, 0 when none).", "kind"),
		stuckSeconds: gaugeDesc("pipesnap_stuck_pipeline_seconds",
			"How long each stuck pipeline has been stuck (its longest stall, from the kernel's timestamps), labelled with its culprit; at most --max-stuck series, the longest first.", StuckLabels...),
		longest: gaugeDesc("pipesnap_longest_wait_seconds",
			"Longest wait of a task waiting on a pipe end: read (waiting for data), write (waiting for room), open (blocked opening a FIFO); 0 when none waits.", "end"),
		considered: gaugeDesc("pipesnap_waits_considered",
			"Waits the diagnosis looked at: tasks waiting on a pipe or opening a FIFO, and pipes with data nobody waits for."),
		leftOut: gaugeDesc("pipesnap_waits_left_out",
			"Waits the diagnosis did not count as stalls, by reason: idle (waiting for input), moving (the pipe moved), young (shorter than --min-wait), new (the pipe is new since the previous walk).", "reason"),
	}
}

func (d diagDescs) descs() []*Desc {
	return []*Desc{d.stuck, d.stalls, d.stuckSeconds, d.longest, d.considered, d.leftOut}
}

type gaugeFunc func(d *Desc, v float64, labels ...string)

// collect sends the longest waits and, when the look has a report, the
// stall metrics.
func (d diagDescs) collect(gauge gaugeFunc, look *Look, maxStuck int) {
	w := LongestWaits(look.Sample, look.Ignore)
	gauge(d.longest, w.Read.Seconds(), "read")
	gauge(d.longest, w.Write.Seconds(), "write")
	gauge(d.longest, w.Open.Seconds(), "open")
	rep := look.Report
	if rep == nil {
		return
	}
	stuck := StuckPipelines(rep, look.Sample)
	gauge(d.stuck, float64(len(stuck)))
	if maxStuck > 0 && len(stuck) > maxStuck {
		stuck = stuck[:maxStuck]
	}
	for _, p := range stuck {
		gauge(d.stuckSeconds, p.For.Seconds(), p.Labels()...)
	}
	kinds := map[diagnose.Kind]int{}
	for _, k := range StallKinds {
		kinds[k] = 0
	}
	for _, f := range rep.Stalls() {
		kinds[f.Kind]++ // a stall kind diagnose adds later: one more value
	}
	for k, n := range kinds {
		gauge(d.stalls, float64(n), string(k))
	}
	gauge(d.considered, float64(rep.Considered))
	left := map[string]int{}
	for _, r := range LeftOutReasons {
		left[r] = 0
	}
	for reason, n := range rep.LeftOut {
		r, ok := LeftOutReasons[reason]
		if !ok {
			r = "other"
		}
		left[r] += n
	}
	for r, n := range left {
		gauge(d.leftOut, float64(n), r)
	}
}

// Waits are the longest waits of tasks on pipe ends.
type Waits struct {
	Read  time.Duration // waiting for data
	Write time.Duration // waiting for room
	Open  time.Duration // blocked opening a FIFO
}

// LongestWaits finds the longest wait of a task waiting on each pipe end
// in s (blocked in read or write, or asleep in poll/select/epoll for it)
// and of a task opening a FIFO, leaving out the pipes in ignore.
func LongestWaits(s *pipemodel.Sample, ignore map[uint64]bool) Waits {
	var out Waits
	for _, p := range s.Pipes {
		if ignore[p.Ino] {
			continue
		}
		for _, w := range p.Waiters {
			if w.PID == 0 || !w.WaitsFor(p) {
				continue
			}
			if w.Queue == pipemodel.QueueWrite {
				out.Write = max(out.Write, w.Wait)
			} else {
				out.Read = max(out.Read, w.Wait)
			}
		}
	}
	for _, ow := range s.OpenWaits {
		if !ignore[ow.Ino] {
			out.Open = max(out.Open, ow.Wait)
		}
	}
	return out
}

// Stuck is one stuck pipeline, as pipesnap_stuck_pipeline_seconds
// exports it.
type Stuck struct {
	CulpritComm string
	CulpritPID  uint32 // 0: none seen
	FirstComm   string
	Kind        diagnose.Kind
	For         time.Duration
	Container   *pipemodel.Container // the culprit's, else the first process's; nil for none
}

// Labels are its label values, in StuckLabels order, valid UTF-8.
func (s Stuck) Labels() []string {
	pid := ""
	if s.CulpritPID != 0 {
		pid = strconv.FormatUint(uint64(s.CulpritPID), 10)
	}
	return append([]string{LabelValue(s.CulpritComm), pid, LabelValue(s.FirstComm), string(s.Kind)}, ContainerLabels(s.Container)...)
}

// StuckPipelines are the stuck chains of rep, one each, the longest stuck
// first. A chain is stuck for as long as its longest stall has lasted;
// its culprit is the first of those where it stopped (Chain.StuckAt);
// its kind that of its first stall naming that culprit. Chains that come
// out with the same labels (two chains sharing a culprit) are one, the
// longest.
func StuckPipelines(rep *diagnose.Report, s *pipemodel.Sample) []Stuck {
	byLabels := map[string]int{}
	var out []Stuck
	for _, c := range rep.Chains {
		if !c.Stuck {
			continue
		}
		var st Stuck
		if len(c.Procs) > 0 {
			st.FirstComm = c.Procs[0].Comm
			if pr := s.Procs[c.Procs[0].PID]; pr != nil {
				st.Container = pr.Container
			}
		}
		var culprit *diagnose.Task
		if len(c.StuckAt) > 0 {
			st.CulpritPID = c.StuckAt[0]
		}
		for _, i := range c.Findings {
			f := rep.Findings[i]
			if f.Category != diagnose.Stall {
				continue
			}
			st.For = max(st.For, f.For)
			if st.Kind == "" {
				st.Kind = f.Kind
			}
			if culprit != nil || st.CulpritPID == 0 {
				continue
			}
			if j := slices.IndexFunc(f.Culprits, func(t diagnose.Task) bool { return t.PID == st.CulpritPID }); j >= 0 {
				culprit = &f.Culprits[j]
				st.Kind = f.Kind
			}
		}
		if st.CulpritPID != 0 {
			st.CulpritComm = culpritComm(st.CulpritPID, culprit, c, s)
			if pr := s.Procs[st.CulpritPID]; pr != nil && pr.Container != nil {
				st.Container = pr.Container
			}
		}
		key := strings.Join(st.Labels(), "\x00")
		if i, ok := byLabels[key]; ok {
			out[i].For = max(out[i].For, st.For)
			continue
		}
		byLabels[key] = len(out)
		out = append(out, st)
	}
	slices.SortStableFunc(out, func(a, b Stuck) int {
		if c := cmp.Compare(b.For, a.For); c != 0 {
			return c
		}
		return cmp.Compare(a.CulpritPID, b.CulpritPID)
	})
	return out
}

// culpritComm names the culprit: as its stall names it, else as its
// chain or the sample does.
func culpritComm(pid uint32, t *diagnose.Task, c diagnose.Chain, s *pipemodel.Sample) string {
	if t != nil && t.Comm != "" {
		return t.Comm
	}
	if i := slices.IndexFunc(c.Procs, func(p diagnose.ChainProc) bool { return p.PID == pid }); i >= 0 {
		return c.Procs[i].Comm
	}
	if pr := s.Procs[pid]; pr != nil {
		return pr.Comm
	}
	return "?"
}
