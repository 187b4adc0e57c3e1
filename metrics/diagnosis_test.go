package metrics

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/pipesnap/pipesnap/diagnose"
	"github.com/pipesnap/pipesnap/pipemodel"
)

// series scrapes c once: metric name -> its series as `label=value,...`
// (sorted by label name) -> value.
func series(t *testing.T, c *Collector) map[string]map[string]float64 {
	t.Helper()
	out := map[string]map[string]float64{}
	for _, f := range scrapeText(t, c) {
		out[f.GetName()] = map[string]float64{}
		for _, m := range f.GetMetric() {
			var ls []string
			for _, l := range m.GetLabel() {
				if l.GetValue() == "" && slices.Contains([]string{"namespace", "pod", "container"}, l.GetName()) {
					continue // outside Kubernetes, and Prometheus keeps no empty label
				}
				ls = append(ls, l.GetName()+"="+l.GetValue())
			}
			out[f.GetName()][strings.Join(ls, ",")] = value(m)
		}
	}
	return out
}

// stuckPipe is a full pipe: writer (wpid, wcomm) blocked writing for
// wait, reader (rpid, rcomm) asleep, not run for wait either.
type stuckPipe struct {
	ino          uint64
	wpid, rpid   uint32
	wcomm, rcomm string
	wait         time.Duration
}

func (sp stuckPipe) add(s *pipemodel.Sample) {
	p := pipe(sp.ino, 65536, 16, 0,
		pipemodel.Holder{PID: sp.wpid, Comm: sp.wcomm, FD: 1, End: "write", Blocked: "writing", BlockedTIDs: []uint32{sp.wpid}, Wait: sp.wait},
		pipemodel.Holder{PID: sp.rpid, Comm: sp.rcomm, FD: 0, End: "read"})
	p.Waiters[0].TID, p.Waiters[0].Comm, p.Waiters[0].State, p.Waiters[0].Wait = sp.wpid, sp.wcomm, "S", sp.wait
	s.Pipes = append(s.Pipes, p)
	slices.SortFunc(s.Pipes, func(a, b *pipemodel.Pipe) int { return int(a.Ino) - int(b.Ino) })
	if s.Procs == nil {
		s.Procs = map[uint32]*pipemodel.Proc{}
	}
	s.Procs[sp.wpid] = &pipemodel.Proc{PID: sp.wpid, Comm: sp.wcomm, State: "S", Threads: 1, Idle: sp.wait, IdleKnown: true}
	s.Procs[sp.rpid] = &pipemodel.Proc{PID: sp.rpid, Comm: sp.rcomm, State: "S", Threads: 1, Idle: sp.wait, IdleKnown: true}
}

func sampleOf(pipes ...stuckPipe) *pipemodel.Sample {
	s := &pipemodel.Sample{PageSize: 4096}
	for _, p := range pipes {
		p.add(s)
	}
	return s
}

// fakeClock drives a Diagnoser: sleeping advances it.
type fakeClock struct {
	t      time.Time
	slept  []time.Duration
	walks  int
	sample func(n int) *pipemodel.Sample
}

func (f *fakeClock) diagnoser(opts diagnose.Options) *Diagnoser {
	d := &Diagnoser{
		Sample: func(context.Context) (*pipemodel.Sample, error) {
			f.walks++
			return f.sample(f.walks), nil
		},
		Options: opts,
	}
	d.now = func() time.Time { return f.t }
	d.sleep = func(_ context.Context, d time.Duration) error {
		f.slept = append(f.slept, d)
		f.t = f.t.Add(d)
		return nil
	}
	return d
}

func TestDiagnoserWalks(t *testing.T) {
	f := &fakeClock{t: time.Unix(1e9, 0), sample: func(int) *pipemodel.Sample {
		return sampleOf(stuckPipe{ino: 1, wpid: 10, rpid: 11, wcomm: "yes", rcomm: "sleep", wait: time.Minute})
	}}
	d := f.diagnoser(diagnose.Options{Kernel: NoKernel{}, MinWait: time.Second})
	look := func(wantWalks int, wantSlept []time.Duration) *Look {
		t.Helper()
		f.walks, f.slept = 0, nil
		l, err := d.Look(context.Background())
		if err != nil {
			t.Fatal(err)
		}
		if f.walks != wantWalks || !slices.Equal(f.slept, wantSlept) {
			t.Errorf("walked %d times, slept %v; want %d, %v", f.walks, f.slept, wantWalks, wantSlept)
		}
		if l.Report == nil || !l.Report.Stuck {
			t.Errorf("report %+v: want stuck", l.Report)
		}
		return l
	}
	look(2, []time.Duration{DefaultSettle}) // no previous walk: two, settle apart
	f.t = f.t.Add(15 * time.Second)
	look(1, nil) // against the previous scrape's walk
	f.t = f.t.Add(50 * time.Millisecond)
	look(1, []time.Duration{DefaultSettle - 50*time.Millisecond}) // walks at least settle apart
	f.t = f.t.Add(DefaultMaxAge + time.Second)
	look(2, []time.Duration{DefaultSettle}) // too old to compare with

	// A failed walk keeps the previous one.
	fail := true
	d.Sample = func(context.Context) (*pipemodel.Sample, error) {
		f.walks++
		if fail {
			return nil, errors.New("boom")
		}
		return f.sample(f.walks), nil
	}
	f.t = f.t.Add(time.Second)
	if _, err := d.Look(context.Background()); err == nil {
		t.Error("a failed walk: no error")
	}
	fail = false
	f.t = f.t.Add(time.Second)
	look(1, nil)
}

func TestDiagnoserMoving(t *testing.T) {
	// The same full pipe, but its tail moved between the walks: moving,
	// not stuck, whatever the wait says.
	f := &fakeClock{t: time.Unix(1e9, 0)}
	f.sample = func(n int) *pipemodel.Sample {
		s := sampleOf(stuckPipe{ino: 1, wpid: 10, rpid: 11, wcomm: "yes", rcomm: "cat", wait: time.Minute})
		s.Pipes[0].Head += uint32(n)
		s.Pipes[0].Tail += uint32(n)
		return s
	}
	c := New(f.diagnoser(diagnose.Options{Kernel: NoKernel{}, MinWait: time.Second}).Look, Options{})
	got := series(t, c)
	if v := got["pipesnap_stuck_pipelines"][""]; v != 0 {
		t.Errorf("stuck pipelines %v, want 0", v)
	}
	if len(got["pipesnap_stuck_pipeline_seconds"]) != 0 {
		t.Errorf("stuck series %v, want none", got["pipesnap_stuck_pipeline_seconds"])
	}
	if v := got["pipesnap_waits_left_out"]["reason=moving"]; v != 1 || got["pipesnap_waits_considered"][""] != 1 {
		t.Errorf("left out %v, considered %v: want the writer's wait, moving", got["pipesnap_waits_left_out"], got["pipesnap_waits_considered"])
	}
	// The writer does wait, moving or not.
	if v := got["pipesnap_longest_wait_seconds"]["end=write"]; v != 60 {
		t.Errorf("longest write wait %v, want 60", v)
	}
}

func TestStallMetrics(t *testing.T) {
	pipes := []stuckPipe{
		{ino: 1, wpid: 10, rpid: 11, wcomm: "yes", rcomm: "sleep", wait: 10 * time.Second},
		{ino: 2, wpid: 20, rpid: 21, wcomm: "gen", rcomm: "\xff", wait: 20 * time.Second},     // not UTF-8
		{ino: 3, wpid: 30, rpid: 31, wcomm: "a\xffb", rcomm: "a,b", wait: 30 * time.Second},   // a comma; first_comm not UTF-8
		{ino: 4, wpid: 40, rpid: 41, wcomm: "young", rcomm: "reader", wait: time.Millisecond}, // younger than MinWait
	}
	sample := sampleOf(pipes...)
	sample.OpenWaits = []pipemodel.OpenWait{{PID: 50, TID: 50, Comm: "opener", State: "S", End: "write", Ino: 9, Path: "/tmp/fifo", Wait: 7 * time.Second, Writers: 1}}
	// A reader of pipesnap's own stdout waits for ever: left out.
	own := &pipemodel.Pipe{Ino: 8, Kind: "pipe", Capacity: 65536, MaxUsage: 16, RingSize: 16, Readers: 1, Writers: 1,
		Waiters: []pipemodel.Waiter{{Queue: "read", Kind: "blocked", PID: 60, TID: 60, Comm: "less", Wait: time.Hour}}}
	sample.Pipes = append(sample.Pipes, own)
	slices.SortFunc(sample.Pipes, func(a, b *pipemodel.Pipe) int { return int(a.Ino) - int(b.Ino) })

	run := func(maxStuck int) map[string]map[string]float64 {
		f := &fakeClock{t: time.Unix(1e9, 0), sample: func(int) *pipemodel.Sample { return sample }}
		d := f.diagnoser(diagnose.Options{Kernel: NoKernel{}, MinWait: time.Second, Ignore: map[uint64]bool{8: true}})
		return series(t, New(d.Look, Options{MaxStuck: maxStuck}))
	}
	got := run(0)
	// Three pipelines and the FIFO opener, which is a chain of its own.
	if v := got["pipesnap_stuck_pipelines"][""]; v != 4 {
		t.Errorf("stuck pipelines %v, want 4", v)
	}
	want := map[string]float64{
		"culprit_comm=a,b,culprit_pid=31,first_comm=a\\xffb,kind=full-reader-idle": 30,
		"culprit_comm=\\xff,culprit_pid=21,first_comm=gen,kind=full-reader-idle":   20,
		"culprit_comm=sleep,culprit_pid=11,first_comm=yes,kind=full-reader-idle":   10,
		"culprit_comm=,culprit_pid=,first_comm=opener,kind=open-no-reader":         7,
	}
	if g := got["pipesnap_stuck_pipeline_seconds"]; fmt.Sprint(g) != fmt.Sprint(want) {
		t.Errorf("stuck pipeline series\n got %v\nwant %v", g, want)
	}
	if g := got["pipesnap_stalls"]; len(g) != len(StallKinds) || g["kind=full-reader-idle"] != 3 || g["kind=open-no-reader"] != 1 || g["kind=writer-stopped"] != 0 {
		t.Errorf("stalls %v", g)
	}
	if g := got["pipesnap_longest_wait_seconds"]; g["end=write"] != 30 || g["end=read"] != 0 || g["end=open"] != 7 {
		t.Errorf("longest waits %v: want write 30 (pipe 3), read 0 (pipesnap's own pipe left out), open 7", g)
	}
	if g := got["pipesnap_waits_left_out"]; g["reason=young"] != 1 || g["reason=moving"] != 0 || len(g) != len(LeftOutReasons) {
		t.Errorf("left out %v: want pipe 4 too young", g)
	}
	if v := got["pipesnap_waits_considered"][""]; v != 5 {
		t.Errorf("considered %v, want 5 (4 writers, 1 opener)", v)
	}
	// No per-pipe series is lost to the bad bytes either.
	if g := got["pipesnap_pipe_queued_bytes"]; len(g) != 5 ||
		g["ino=2,kind=pipe,readers=\\xff,writers=gen"] != 65536 || g["ino=3,kind=pipe,readers=a\\x2cb,writers=a\\xffb"] != 65536 { // the comma cannot forge a second reader
		t.Errorf("queued bytes %v", g)
	}

	// Bounded: the longest first; the gauge still counts all.
	got = run(2)
	if g := got["pipesnap_stuck_pipeline_seconds"]; len(g) != 2 || g["culprit_comm=a,b,culprit_pid=31,first_comm=a\\xffb,kind=full-reader-idle"] != 30 ||
		g["culprit_comm=\\xff,culprit_pid=21,first_comm=gen,kind=full-reader-idle"] != 20 {
		t.Errorf("--max-stuck 2: %v", g)
	}
	if v := got["pipesnap_stuck_pipelines"][""]; v != 4 {
		t.Errorf("--max-stuck 2: stuck pipelines %v, want 4", v)
	}
}

// TestContainerLabels: the stuck pipeline's series and each pipe's carry
// the namespace, pod and container of the culprit (the pipe's holders),
// under Kubernetes; a plain container's name otherwise; a runtime's
// monitor gives its container to a log pipe.
func TestContainerLabels(t *testing.T) {
	sample := sampleOf(
		stuckPipe{ino: 1, wpid: 10, rpid: 11, wcomm: "api", rcomm: "sink", wait: 10 * time.Second},
		stuckPipe{ino: 2, wpid: 20, rpid: 21, wcomm: "yes", rcomm: "sleep", wait: 20 * time.Second},
		stuckPipe{ino: 3, wpid: 30, rpid: 31, wcomm: "web", rcomm: "conmon", wait: 30 * time.Second},
	)
	pod := &pipemodel.Container{Runtime: "containerd", ID: strings.Repeat("a", 64), Name: "k8s_sink", Pod: "api-7d9f", Namespace: "prod", KubeName: "sink"}
	api := &pipemodel.Container{Runtime: "containerd", ID: strings.Repeat("b", 64), Pod: "api-7d9f", Namespace: "prod", KubeName: "api"}
	plain := &pipemodel.Container{Runtime: "podman", ID: strings.Repeat("c", 64)}
	web := &pipemodel.Container{Runtime: "podman", ID: strings.Repeat("d", 64), Name: "web"}
	sample.Procs[10].Container, sample.Procs[11].Container = api, pod
	sample.Procs[21].Container = plain
	sample.Procs[30].Container, sample.Procs[31].Container = web, &pipemodel.Container{Runtime: "podman", ID: web.ID, Name: "web", Monitor: true}
	f := &fakeClock{t: time.Unix(1e9, 0), sample: func(int) *pipemodel.Sample { return sample }}
	got := series(t, New(f.diagnoser(diagnose.Options{Kernel: NoKernel{}, MinWait: time.Second}).Look, Options{}))
	want := map[string]float64{
		// (Gather sorts labels by name.)
		"container=sink,culprit_comm=sink,culprit_pid=11,first_comm=api,kind=full-reader-idle,namespace=prod,pod=api-7d9f": 10,
		"container=cccccccccccc,culprit_comm=sleep,culprit_pid=21,first_comm=yes,kind=full-reader-idle":                    20,
		"container=web,culprit_comm=conmon,culprit_pid=31,first_comm=web,kind=full-reader-idle":                            30,
	}
	if g := got["pipesnap_stuck_pipeline_seconds"]; fmt.Sprint(g) != fmt.Sprint(want) {
		t.Errorf("stuck pipeline series\n got %v\nwant %v", g, want)
	}
	wantPipes := map[string]float64{
		"container=api,ino=1,kind=pipe,namespace=prod,pod=api-7d9f,readers=sink,writers=api": 65536,
		"container=cccccccccccc,ino=2,kind=pipe,readers=sleep,writers=yes":                   65536,
		"container=web,ino=3,kind=pipe,readers=conmon,writers=web":                           65536,
	}
	if g := got["pipesnap_pipe_queued_bytes"]; fmt.Sprint(g) != fmt.Sprint(wantPipes) {
		t.Errorf("queued bytes\n got %v\nwant %v", g, wantPipes)
	}
}

func TestStuckPipelinesChain(t *testing.T) {
	// yes | cat | cat, the middle stopped: two stalls (the full "in", the
	// empty "out" whose only writer is stopped), one pipeline, one culprit.
	in := pipe(1, 65536, 16, 0,
		pipemodel.Holder{PID: 10, Comm: "yes", FD: 1, End: "write", Blocked: "writing"},
		pipemodel.Holder{PID: 11, Comm: "cat", FD: 0, End: "read"})
	in.Waiters[0].TID, in.Waiters[0].Wait = 10, 40*time.Second
	out := &pipemodel.Pipe{Ino: 2, Kind: "pipe", Capacity: 65536, MaxUsage: 16, RingSize: 16, Readers: 1, Writers: 1,
		Holders: []pipemodel.Holder{{PID: 11, Comm: "cat", FD: 1, End: "write"}, {PID: 12, Comm: "cat", FD: 0, End: "read", Blocked: "reading"}},
		Waiters: []pipemodel.Waiter{{Queue: "read", Kind: "blocked", PID: 12, TID: 12, Comm: "cat", Wait: 50 * time.Second}}}
	s := &pipemodel.Sample{PageSize: 4096, Pipes: []*pipemodel.Pipe{in, out}, Procs: map[uint32]*pipemodel.Proc{
		10: {PID: 10, Comm: "yes", State: "S", Idle: 40 * time.Second, IdleKnown: true},
		11: {PID: 11, Comm: "cat", State: "T", Idle: 45 * time.Second, IdleKnown: true},
		12: {PID: 12, Comm: "cat", State: "S", Idle: 50 * time.Second, IdleKnown: true},
	}}
	rep := diagnose.Diagnose(s, s, diagnose.Options{Kernel: NoKernel{}, MinWait: time.Second})
	got := StuckPipelines(rep, s)
	want := []Stuck{{CulpritComm: "cat", CulpritPID: 11, FirstComm: "yes", Kind: diagnose.FullReaderIdle, For: 50 * time.Second}}
	if !slices.Equal(got, want) {
		t.Errorf("stuck pipelines %+v, want %+v (report %+v)", got, want, rep.Chains)
	}
}

func TestSampledNoDiagnosis(t *testing.T) {
	s := sampleOf(stuckPipe{ino: 1, wpid: 10, rpid: 11, wcomm: "yes", rcomm: "sleep", wait: 5 * time.Second})
	got := series(t, New(Sampled(func(context.Context) (*pipemodel.Sample, error) { return s, nil }), Options{}))
	if _, ok := got["pipesnap_stuck_pipelines"]; ok {
		t.Errorf("stall metrics without a diagnosis: %v", got["pipesnap_stuck_pipelines"])
	}
	if v := got["pipesnap_longest_wait_seconds"]["end=write"]; v != 5 {
		t.Errorf("longest write wait %v, want 5", v)
	}
}

func TestLabelValue(t *testing.T) {
	for in, want := range map[string]string{
		"cat":       "cat",
		"a,b":       "a,b",
		"\xff":      `\xff`,
		"x\xc3":     `x\xc3`,
		"é\xffz":    `é\xffz`,
		"\uFFFD":    "\uFFFD",
		"kworker/0": "kworker/0",
	} {
		if got := LabelValue(in); got != want {
			t.Errorf("LabelValue(%q) = %q, want %q", in, got, want)
		}
	}
}
