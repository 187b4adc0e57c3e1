package pipestate_test

import (
	"context"
	"fmt"
	"os"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/pipesnap/pipesnap/internal/pipetest"
	"github.com/pipesnap/pipesnap/pipemodel"
	"github.com/pipesnap/pipesnap/pipestate"
)

func TestMain(m *testing.M) { pipetest.Main(m) }

// sample walks the given processes once.
func sample(t *testing.T, opts pipestate.Options) *pipemodel.Sample {
	t.Helper()
	s, err := pipestate.Open(opts)
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	smp, err := s.Sample(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	return smp
}

func find(t *testing.T, s *pipemodel.Sample, ino uint64) *pipemodel.Pipe {
	t.Helper()
	p := s.Find(ino)
	if p == nil {
		t.Fatalf("pipe %d not in the sample (%d pipes)", ino, len(s.Pipes))
	}
	return p
}

// holder is what a test expects of one holder of a pipe.
type holder struct {
	pid     int
	fd      int32
	end     string
	blocked string
}

func checkHolders(t *testing.T, p *pipemodel.Pipe, want ...holder) {
	t.Helper()
	var got []holder
	for _, h := range p.Holders {
		got = append(got, holder{int(h.PID), h.FD, string(h.End), h.Blocked})
	}
	slices.SortFunc(want, func(a, b holder) int {
		if a.pid != b.pid {
			return a.pid - b.pid
		}
		return int(a.fd - b.fd)
	})
	if !slices.Equal(got, want) {
		t.Errorf("pipe %d holders:\n got %+v\nwant %+v", p.Ino, got, want)
	}
}

func blockedPIDs(p *pipemodel.Pipe, queue pipemodel.Queue) []int {
	var out []int
	for _, w := range p.Blocked(queue) {
		out = append(out, int(w.PID))
	}
	return out
}

// TestStuckPipelines: every kind of stuck pipeline, as the kernel has it.
func TestStuckPipelines(t *testing.T) {
	pipetest.RequireBPF(t)
	t.Run("full", func(t *testing.T) {
		pl := pipetest.StartStuck(t, "full")
		p := find(t, sample(t, pipestate.Options{PIDs: pl.PIDs()}), pl.Ino())
		if !p.Full() || p.Bytes != p.Capacity || p.Capacity != 65536 || p.Readers != 1 || p.Writers != 1 {
			t.Errorf("pipe %+v: want full, 65536 bytes, 1 reader, 1 writer", p)
		}
		checkHolders(t, p,
			holder{pl.PID("writer"), 1, "write", "writing"},
			holder{pl.PID("reader"), 0, "read", ""})
		if got := blockedPIDs(p, "write"); !slices.Equal(got, []int{pl.PID("writer")}) {
			t.Errorf("blocked writers %v, want the writer %d", got, pl.PID("writer"))
		}
		if got := blockedPIDs(p, "read"); len(got) != 0 {
			t.Errorf("blocked readers %v, want none", got)
		}
		if w := p.Blocked("write"); len(w) == 1 && (w[0].State != "S" || w[0].TID != uint32(pl.PID("writer")) || w[0].Outside) {
			t.Errorf("blocked writer %+v: want state S, its main thread, walked", w[0])
		}
	})
	t.Run("empty", func(t *testing.T) {
		pl := pipetest.StartStuck(t, "empty")
		p := find(t, sample(t, pipestate.Options{PIDs: pl.PIDs()}), pl.Ino())
		if p.Bytes != 0 || p.Bufs != 0 {
			t.Errorf("pipe holds %d bytes in %d buffers, want empty", p.Bytes, p.Bufs)
		}
		checkHolders(t, p,
			holder{pl.PID("writer"), 1, "write", ""},
			holder{pl.PID("reader"), 0, "read", "reading"})
		if got := blockedPIDs(p, "read"); !slices.Equal(got, []int{pl.PID("reader")}) {
			t.Errorf("blocked readers %v, want the reader %d", got, pl.PID("reader"))
		}
	})
	t.Run("no-readers", func(t *testing.T) {
		pl := pipetest.StartStuck(t, "no-readers")
		p := find(t, sample(t, pipestate.Options{PIDs: pl.PIDs()}), pl.Ino())
		if p.Readers != 0 || p.Writers != 1 || p.Bytes != 5 {
			t.Errorf("pipe: %d readers, %d writers, %d bytes; want 0, 1, 5", p.Readers, p.Writers, p.Bytes)
		}
		checkHolders(t, p, holder{pl.PID("writer"), 1, "write", ""})
	})
	t.Run("unread", func(t *testing.T) {
		pl := pipetest.StartStuck(t, "unread")
		p := find(t, sample(t, pipestate.Options{PIDs: pl.PIDs()}), pl.Ino())
		if p.Readers != 1 || p.Writers != 0 || p.Bytes != 12 || len(p.Slots) != 1 || p.Slots[0].Len != 12 {
			t.Errorf("pipe: %d readers, %d writers, %d bytes, slots %v; want 1, 0, 12, one of 12", p.Readers, p.Writers, p.Bytes, p.Slots)
		}
		checkHolders(t, p, holder{pl.PID("reader"), 0, "read", ""})
	})
	t.Run("own-writer", func(t *testing.T) {
		pl := pipetest.StartStuck(t, "own-writer")
		p := find(t, sample(t, pipestate.Options{PIDs: pl.PIDs()}), pl.Ino())
		checkHolders(t, p,
			holder{pl.PID("reader"), 0, "read", "reading"},
			holder{pl.PID("reader"), 3, "write", ""})
	})
	t.Run("chain", func(t *testing.T) {
		pl := pipetest.StartStuck(t, "chain")
		s := sample(t, pipestate.Options{PIDs: pl.PIDs()})
		in, out := find(t, s, pl.Inos["in"]), find(t, s, pl.Inos["out"])
		checkHolders(t, in,
			holder{pl.PID("writer"), 1, "write", "writing"},
			holder{pl.PID("middle"), 0, "read", ""})
		checkHolders(t, out,
			holder{pl.PID("middle"), 1, "write", ""},
			holder{pl.PID("reader"), 0, "read", "reading"})
		if !in.Full() || out.Bytes != 0 {
			t.Errorf("in holds %d/%d, out %d: want full and empty", in.Bytes, in.Capacity, out.Bytes)
		}
		if st := s.Procs[uint32(pl.PID("middle"))]; st == nil || st.State != "S" || st.Comm != "sleep" {
			t.Errorf("middle: %+v, want sleep in state S", st)
		}
	})
	t.Run("thread-reader", func(t *testing.T) {
		pl := pipetest.StartStuck(t, "thread-reader")
		reader := pl.Stages["reader"]
		if reader.TID == reader.PID {
			t.Fatal("the helper blocked on its main thread")
		}
		p := find(t, sample(t, pipestate.Options{PIDs: pl.PIDs()}), pl.Ino())
		checkHolders(t, p,
			holder{pl.PID("writer"), 1, "write", ""},
			holder{reader.PID, 0, "read", "reading"})
		w := p.Blocked("read")
		if len(w) != 1 || w[0].TID != uint32(reader.TID) || w[0].PID != uint32(reader.PID) {
			t.Errorf("blocked readers %+v, want thread %d of %d", w, reader.TID, reader.PID)
		}
		for _, h := range p.Holders {
			if h.PID == uint32(reader.PID) && !slices.Equal(h.BlockedTIDs, []uint32{uint32(reader.TID)}) {
				t.Errorf("holder %+v: want blocked thread %d", h, reader.TID)
			}
		}
	})
	t.Run("poller", func(t *testing.T) {
		pl := pipetest.StartStuck(t, "poller")
		reader := pl.Stages["reader"]
		p := find(t, sample(t, pipestate.Options{PIDs: pl.PIDs()}), pl.Ino())
		checkHolders(t, p,
			holder{pl.PID("writer"), 1, "write", ""},
			holder{reader.PID, 0, "read", ""})
		kinds := map[string]int{}
		for _, w := range p.Waiters {
			kinds[string(w.Queue)+"/"+string(w.Kind)]++
			if w.Kind == "poll" && (w.PID != uint32(reader.PID) || w.TID != uint32(reader.TID)) {
				t.Errorf("poll waiter %+v, want thread %d of %d", w, reader.TID, reader.PID)
			}
		}
		if kinds["read/poll"] != 1 || kinds["read/epoll"] != 1 || len(p.Blocked("read")) != 0 {
			t.Errorf("waiters %+v: want one poll and one epoll on the read queue, nobody blocked", p.Waiters)
		}
		for _, h := range p.Holders {
			if h.PID == uint32(reader.PID) && !h.Polling {
				t.Errorf("holder %+v: want polling", h)
			}
		}
	})
}

// TestBlockedOutsideWalk: a task blocked on a pipe is named even when its
// process is not among the walked ones (the wait queue entry says it).
func TestBlockedOutsideWalk(t *testing.T) {
	pipetest.RequireBPF(t)
	pl := pipetest.StartStuck(t, "empty")
	p := find(t, sample(t, pipestate.Options{PIDs: []int{pl.PID("writer")}}), pl.Ino())
	w := p.Blocked("read")
	if len(w) != 1 || w[0].PID != uint32(pl.PID("reader")) || !w[0].Outside || w[0].Comm != "cat" {
		t.Errorf("blocked readers %+v, want cat %d, outside the walk", w, pl.PID("reader"))
	}
	if p.UnseenReaders != 1 || p.UnseenWriters != 0 {
		t.Errorf("unseen readers %d, writers %d; want 1, 0", p.UnseenReaders, p.UnseenWriters)
	}
}

// TestAll: a walk of every process sees the test's pipelines, and not
// pipesnap's own pipes.
func TestAll(t *testing.T) {
	pipetest.RequireBPF(t)
	pl := pipetest.StartStuck(t, "full")
	s := sample(t, pipestate.Options{All: true})
	p := find(t, s, pl.Ino())
	if len(p.Blocked("write")) != 1 {
		t.Errorf("blocked writers %+v, want one", p.Waiters)
	}
	if _, ok := s.Procs[uint32(os.Getpid())]; ok {
		t.Errorf("the sampling process itself is in the sample")
	}
}

// TestFlow: a moving pipe shows bytes going through, a stuck one none.
func TestFlow(t *testing.T) {
	pipetest.RequireBPF(t)
	flowing := pipetest.StartStuck(t, "flowing")
	stuck := pipetest.StartStuck(t, "full")
	s, err := pipestate.Open(pipestate.Options{PIDs: append(flowing.PIDs(), stuck.PIDs()...)})
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	a, err := s.Sample(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	time.Sleep(100 * time.Millisecond)
	b, err := s.Sample(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	f := pipemodel.FlowBetween(find(t, a, flowing.Ino()), find(t, b, flowing.Ino()), a.PageSize)
	if f.Read < 1<<20 || f.BufsRead == 0 || f.Written < f.Read-65536 {
		t.Errorf("flowing pipe: %+v, want more than 1 MiB read in 100ms", f)
	}
	f = pipemodel.FlowBetween(find(t, a, stuck.Ino()), find(t, b, stuck.Ino()), a.PageSize)
	if f != (pipemodel.Flow{Exact: true}) {
		t.Errorf("stuck pipe: %+v, want nothing moved", f)
	}
}

// TestGone: a walked process that exits is reported gone, and the
// sampler goes on with the others.
func TestGone(t *testing.T) {
	pipetest.RequireBPF(t)
	a, b := pipetest.StartStuck(t, "unread"), pipetest.StartStuck(t, "unread")
	s, err := pipestate.Open(pipestate.Options{PIDs: []int{a.PID("reader"), b.PID("reader")}})
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	a.Kill("reader")
	smp, err := s.Sample(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	if !slices.Equal(smp.Gone, []uint32{uint32(a.PID("reader"))}) || smp.Find(b.Ino()) == nil || smp.Find(a.Ino()) != nil {
		t.Errorf("gone %v, pipes %d: want %d gone and %d's pipe", smp.Gone, len(smp.Pipes), a.PID("reader"), b.PID("reader"))
	}
}

// TestNothingLeaks: opening and closing a sampler many times leaves no
// fd and no program behind.
func TestNothingLeaks(t *testing.T) {
	pipetest.RequireBPF(t)
	pl := pipetest.StartStuck(t, "full")
	count := func() int {
		ents, err := os.ReadDir("/proc/self/fd")
		if err != nil {
			t.Fatal(err)
		}
		return len(ents)
	}
	before := count()
	for range 5 {
		s, err := pipestate.Open(pipestate.Options{PIDs: pl.PIDs()})
		if err != nil {
			t.Fatal(err)
		}
		for range 3 {
			if _, err := s.Sample(context.Background()); err != nil {
				t.Fatal(err)
			}
		}
		if err := s.Close(); err != nil {
			t.Fatal(err)
		}
	}
	if after := count(); after != before {
		t.Errorf("%d fds open after 5 samplers, %d before", after, before)
	}
}

// BenchmarkSampleAll measures one walk of every process's pipes with the
// program loaded: the price of one `pipesnap ls --all` frame.
func BenchmarkSampleAll(b *testing.B) {
	pipetest.RequireBPF(b)
	s, err := pipestate.Open(pipestate.Options{All: true})
	if err != nil {
		b.Fatal(err)
	}
	defer s.Close()
	var pipes int
	for b.Loop() {
		smp, err := s.Sample(context.Background())
		if err != nil {
			b.Fatal(err)
		}
		pipes = len(smp.Pipes)
	}
	b.ReportMetric(float64(pipes), "pipes")
}

// BenchmarkOpen measures loading and attaching the program.
func BenchmarkOpen(b *testing.B) {
	pipetest.RequireBPF(b)
	for b.Loop() {
		s, err := pipestate.Open(pipestate.Options{All: true})
		if err != nil {
			b.Fatal(err)
		}
		s.Close()
	}
}

// BenchmarkSample1000 measures a pid-scoped walk of one process holding
// 1,000 pipes (2,000 fds): the cost per fd, whatever else runs.
func BenchmarkSample1000(b *testing.B) {
	pipetest.RequireBPF(b)
	h := pipetest.StartHolder(b, "many", "PIPESNAP_TEST_PIPES=1000")
	s, err := pipestate.Open(pipestate.Options{PIDs: h.Rep.PIDs})
	if err != nil {
		b.Fatal(err)
	}
	defer s.Close()
	for b.Loop() {
		smp, err := s.Sample(context.Background())
		if err != nil {
			b.Fatal(err)
		}
		if len(smp.Pipes) < 1000 {
			b.Fatalf("%d pipes, want 1000 or more", len(smp.Pipes))
		}
	}
}

// TestEpollWaiter: a Go program reading a child's stdout through os/exec
// waits in epoll_wait; the walk follows the pipe's ep_poll_callback entry
// to the eventpoll and to the thread asleep on it, and names the epoll fd.
func TestEpollWaiter(t *testing.T) {
	pipetest.RequireBPF(t)
	sc := pipetest.StartScenario(t, "go-exec")
	reader := sc.PID("reader")
	p := find(t, sample(t, pipestate.Options{PIDs: sc.PIDs()}), sc.Ino())
	ws := p.Waiting(pipemodel.QueueRead)
	if len(ws) != 1 || ws[0].Kind != pipemodel.WaiterEpoll || ws[0].PID != uint32(reader) || ws[0].EpollFD <= 0 || !ws[0].Sleeping {
		t.Fatalf("waiters %+v: want the Go reader %d asleep in epoll_wait, with its epoll fd", p.Waiters, reader)
	}
	var marked bool
	for _, h := range p.Holders {
		if h.PID == uint32(reader) {
			marked = h.Waiting == "reading" && h.Via == "epoll" && h.EpollFD == ws[0].EpollFD
		}
	}
	if !marked {
		t.Errorf("holders %+v: want the reader marked waiting through epoll fd %d", p.Holders, ws[0].EpollFD)
	}
	// The epoll fd is the reader's own: its fdinfo names the pipe.
	info, err := os.ReadFile(fmt.Sprintf("/proc/%d/fdinfo/%d", reader, ws[0].EpollFD))
	if err != nil || !strings.Contains(string(info), fmt.Sprintf("ino:%x", sc.Ino())) {
		t.Errorf("fdinfo of epoll fd %d: %q, %v: want it to watch pipe %d", ws[0].EpollFD, info, err, sc.Ino())
	}
}

// TestOpenWaits: tasks asleep in open(2) of a FIFO hold no fd of it yet;
// the task walk finds them, with the FIFO's path and the end they open,
// with --pid and without.
func TestOpenWaits(t *testing.T) {
	pipetest.RequireBPF(t)
	for _, tc := range []struct {
		kind, role string
		end        pipemodel.End
	}{
		{"fifo-writer-open", "writer", pipemodel.EndWrite},
		{"fifo-reader-open", "reader", pipemodel.EndRead},
	} {
		t.Run(tc.kind, func(t *testing.T) {
			sc := pipetest.StartScenario(t, tc.kind)
			pid := sc.PID(tc.role)
			for _, opts := range []pipestate.Options{{PIDs: []int{pid}}, {All: true}} {
				smp := sample(t, opts)
				i := slices.IndexFunc(smp.OpenWaits, func(o pipemodel.OpenWait) bool { return o.PID == uint32(pid) })
				if i < 0 {
					t.Fatalf("all %v: open waits %+v, want pid %d", opts.All, smp.OpenWaits, pid)
				}
				o := smp.OpenWaits[i]
				if o.End != tc.end || o.Path != sc.FIFOs["fifo"] || o.Ino != sc.Inos["fifo"] || o.State != "S" {
					t.Errorf("open wait %+v: want %s end of %s (inode %d), state S", o, tc.end, sc.FIFOs["fifo"], sc.Inos["fifo"])
				}
			}
		})
	}
}

// TestWaitDurations: how long a task has waited comes from its
// scheduling timestamps: a writer blocked on a full pipe for a second
// reads about a second, and grows as it keeps waiting.
func TestWaitDurations(t *testing.T) {
	pipetest.RequireBPF(t)
	pl := pipetest.StartStuck(t, "full")
	time.Sleep(time.Second)
	s, err := pipestate.Open(pipestate.Options{PIDs: pl.PIDs()})
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	wait := func() (time.Duration, *pipemodel.Sample) {
		t.Helper()
		smp, err := s.Sample(context.Background())
		if err != nil {
			t.Fatal(err)
		}
		w := find(t, smp, pl.Ino()).Blocked(pipemodel.QueueWrite)
		if len(w) != 1 {
			t.Fatalf("blocked writers %+v, want one", w)
		}
		return w[0].Wait, smp
	}
	first, smp := wait()
	if first < 900*time.Millisecond || first > 30*time.Second {
		t.Errorf("writer blocked about a second: wait %v", first)
	}
	reader := smp.Procs[uint32(pl.PID("reader"))]
	if reader == nil || !reader.IdleKnown || reader.Idle < 900*time.Millisecond || len(reader.Tasks) != 1 || reader.Tasks[0].State != "S" {
		t.Errorf("reader %+v: want idle about a second, one sleeping thread", reader)
	}
	time.Sleep(500 * time.Millisecond)
	if second, _ := wait(); second-first < 400*time.Millisecond || second-first > 2*time.Second {
		t.Errorf("wait went from %v to %v in 0.5s", first, second)
	}
}
