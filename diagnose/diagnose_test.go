package diagnose

import (
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/pipesnap/pipesnap/pipemodel"
)

// fakeKernel says every task sleeps where the test wants.
type fakeKernel map[uint32]string

func (k fakeKernel) Wchan(pid, tid uint32) string   { return k[tid] }
func (k fakeKernel) Stack(pid, tid uint32) []string { return []string{k[tid] + "+0x1/0x2"} }
func (k fakeKernel) Threads(pid uint32) []uint32    { return []uint32{pid} }

const long = time.Hour

// build makes a sample from pipes (sorted) and the processes they name,
// all asleep for an hour unless states says otherwise (pid -> state).
func build(pipes ...*pipemodel.Pipe) *pipemodel.Sample {
	s := &pipemodel.Sample{PageSize: 4096, Procs: map[uint32]*pipemodel.Proc{}}
	for _, p := range pipes {
		for _, h := range p.Holders {
			s.Procs[h.PID] = &pipemodel.Proc{PID: h.PID, Comm: h.Comm, State: "S", Threads: 1, Idle: long, IdleKnown: true, Outside: h.Outside}
		}
	}
	s.Pipes = pipes
	slices.SortFunc(s.Pipes, func(a, b *pipemodel.Pipe) int { return int(a.Ino) - int(b.Ino) })
	return s
}

func pipe(ino uint64, bytes uint64, readers, writers uint32, holders ...pipemodel.Holder) *pipemodel.Pipe {
	p := &pipemodel.Pipe{Ino: ino, Kind: "pipe", Bytes: bytes, Capacity: 65536, MaxUsage: 16, RingSize: 16,
		Readers: readers, Writers: writers, Holders: holders}
	p.Bufs = uint32((bytes + 4095) / 4096)
	p.Head = 100 + p.Bufs
	p.Tail = 100
	for _, h := range holders {
		if h.Blocked != "" {
			q := map[string]pipemodel.Queue{"reading": pipemodel.QueueRead, "writing": pipemodel.QueueWrite}[h.Blocked]
			p.Waiters = append(p.Waiters, pipemodel.Waiter{Queue: q, Kind: pipemodel.WaiterBlocked, PID: h.PID, TID: h.PID,
				Comm: h.Comm, State: "S", Wait: h.Wait, Outside: h.Outside})
		}
	}
	var rd, wr uint32
	for _, h := range holders {
		if h.Outside {
			continue
		}
		if h.End.Reads() {
			rd++
		}
		if h.End.Writes() {
			wr++
		}
	}
	p.UnseenReaders, p.UnseenWriters = readers-min(rd, readers), writers-min(wr, writers)
	return p
}

func rd(pid uint32, comm string, fd int32, blocked string) pipemodel.Holder {
	return pipemodel.Holder{PID: pid, Comm: comm, FD: fd, End: pipemodel.EndRead, Blocked: blocked, Wait: long}
}

func wr(pid uint32, comm string, fd int32, blocked string) pipemodel.Holder {
	return pipemodel.Holder{PID: pid, Comm: comm, FD: fd, End: pipemodel.EndWrite, Blocked: blocked, Wait: long}
}

func outside(h pipemodel.Holder) pipemodel.Holder { h.Outside = true; return h }

var kernel = fakeKernel{10: "anon_pipe_write", 11: "hrtimer_nanosleep", 12: "anon_pipe_read", 20: "do_wait"}

func pids(ts []Task) []uint32 {
	var out []uint32
	for _, t := range ts {
		out = append(out, t.PID)
	}
	return out
}

func opts() Options { return Options{Kernel: kernel, MinWait: DefaultMinWait} }

func TestFindings(t *testing.T) {
	for _, tc := range []struct {
		name              string
		sample            *pipemodel.Sample
		kind              Kind
		waiting, culprits []uint32
		msg               []string
	}{
		{"full, reader sleeps",
			build(pipe(7, 65536, 1, 1, wr(10, "yes", 1, "writing"), rd(11, "sleep", 0, ""))),
			FullReaderIdle, []uint32{10}, []uint32{11},
			[]string{"yes (pid 10) has been waiting 1h00m to write to pipe 7, which is full (65536/65536 bytes)",
				"its reader sleep (pid 11) is not reading it: state S, idle 1h00m, waiting in hrtimer_nanosleep"}},
		{"reader holds the only write end",
			build(pipe(7, 0, 1, 1, rd(12, "cat", 0, "reading"), wr(12, "cat", 3, ""))),
			WriterGone, []uint32{12}, []uint32{12},
			[]string{"cat (pid 12) has been waiting 1h00m to read pipe 7, which is empty, and will wait forever",
				"the only write end left is its own (fd 3 of cat (pid 12))"}},
		{"data, no reader",
			build(pipe(7, 5, 0, 1, wr(11, "sleep", 1, ""))),
			DataNoReader, nil, nil,
			[]string{"pipe 7 holds 5 bytes and has no reader left: they can never be read", "its writer sleep (pid 11) will get SIGPIPE"}},
		{"data left, no writers, reader asleep",
			build(pipe(7, 12, 1, 0, rd(11, "sleep", 0, ""))),
			Unread, nil, []uint32{11},
			[]string{"pipe 7 holds 12 bytes that nobody reads, and no writer is left", "its reader sleep (pid 11) is not reading it"}},
		{"full, reader not walked",
			build(pipe(7, 65536, 1, 1, wr(10, "yes", 1, "writing"))),
			FullReaderIdle, []uint32{10}, nil,
			[]string{"its reader (1 open end) no process showed"}},
		{"full, reader outside the pids asked for",
			build(pipe(7, 65536, 1, 1, wr(10, "yes", 1, "writing"), outside(rd(11, "sleep", 0, "")))),
			FullReaderIdle, []uint32{10}, []uint32{11},
			[]string{"its reader sleep (pid 11) [not among the processes asked for] is not reading it"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			rep := Diagnose(nil, tc.sample, opts())
			if !rep.Stuck || len(rep.Findings) != 1 {
				t.Fatalf("report %+v: want one stall", rep)
			}
			f := rep.Findings[0]
			if f.Kind != tc.kind || f.Category != Stall || !slices.Equal(pids(f.Waiting), tc.waiting) || !slices.Equal(pids(f.Culprits), tc.culprits) {
				t.Errorf("finding %s (%s), waiting %v, culprits %v; want %s, %v, %v",
					f.Kind, f.Category, pids(f.Waiting), pids(f.Culprits), tc.kind, tc.waiting, tc.culprits)
			}
			for _, m := range tc.msg {
				if !strings.Contains(f.Message, m) {
					t.Errorf("message %q\nlacks %q", f.Message, m)
				}
			}
		})
	}
}

// TestStoppedWriter: a reader waiting on an empty pipe is stuck when its
// writer is stopped, idle when it is alive and waiting itself.
func TestStoppedWriter(t *testing.T) {
	s := build(pipe(7, 0, 1, 1, wr(11, "cat", 1, ""), rd(12, "cat", 0, "reading")))
	rep := Diagnose(nil, s, opts())
	if rep.Stuck || len(rep.Findings) != 1 || rep.Findings[0].Kind != EmptyWriterIdle || rep.LeftOut[LeftIdle] != 1 {
		t.Fatalf("writer asleep: %+v, want one idle wait left out", rep)
	}
	if m := rep.Findings[0].Message; !strings.Contains(m, "its writer cat (pid 11) is alive and waiting itself: state S, idle 1h00m, waiting in hrtimer_nanosleep") {
		t.Errorf("message %q", m)
	}
	s.Procs[11].State = "T"
	rep = Diagnose(nil, s, opts())
	if !rep.Stuck || rep.Findings[0].Kind != WriterStopped || !slices.Equal(pids(rep.Findings[0].Culprits), []uint32{11}) {
		t.Fatalf("writer stopped: %+v", rep.Findings)
	}
	if m := rep.Findings[0].Message; !strings.Contains(m, "its writer cat (pid 11) is stopped (state T), idle 1h00m: it will not write until it is continued (kill -CONT 11)") {
		t.Errorf("message %q", m)
	}
	// One writer of two stopped: the other may still write.
	s = build(pipe(7, 0, 1, 2, wr(11, "cat", 1, ""), wr(13, "tee", 1, ""), rd(12, "cat", 0, "reading")))
	s.Procs[11].State = "T"
	if rep := Diagnose(nil, s, opts()); rep.Stuck {
		t.Errorf("one writer of two stopped: %+v, want idle", rep.Findings)
	}
}

// TestMinWait: a stall-shaped wait shorter than the minimum is left out
// and marks the report pending; once old enough it is a stall.
func TestMinWait(t *testing.T) {
	w := wr(10, "yes", 1, "writing")
	w.Wait = time.Second
	p := pipe(7, 65536, 1, 1, w, rd(11, "sleep", 0, ""))
	rep := Diagnose(nil, build(p), opts())
	if rep.Stuck || !rep.Pending() || rep.LeftOut[LeftYoung] != 1 || rep.Considered != 1 {
		t.Errorf("young wait: %+v, want it left out, pending", rep)
	}
	p.Waiters[0].Wait = 5 * time.Second
	rep = Diagnose(nil, build(p), opts())
	if !rep.Stuck || rep.Pending() || rep.Findings[0].ForText != "5.0s" {
		t.Errorf("old wait: %+v, want a stall of 5.0s", rep)
	}
	// A reader that runs may yet drain the data: not a stall.
	s := build(pipe(8, 100, 1, 1, wr(10, "a", 1, ""), rd(11, "b", 0, "")))
	s.Procs[11].Idle = 200 * time.Millisecond
	if rep := Diagnose(nil, s, opts()); rep.Stuck {
		t.Errorf("data, reader active: %+v, want not stuck", rep.Findings)
	}
}

func TestHealthy(t *testing.T) {
	for _, p := range []*pipemodel.Pipe{
		pipe(8, 0, 1, 0, rd(11, "b", 3, "")),                     // writer gone, empty: EOF
		pipe(9, 0, 1, 1, wr(10, "a", 4, ""), rd(11, "b", 5, "")), // idle, nobody waits
	} {
		if rep := Diagnose(nil, build(p), opts()); rep.Stuck || len(rep.Findings) != 0 {
			t.Errorf("pipe %d: %+v, want nothing found", p.Ino, rep.Findings)
		}
	}
}

// TestLeakedPipe: an empty pipe with no reader that many processes
// inherited is one warning, next to the real stall, in no chain.
func TestLeakedPipe(t *testing.T) {
	var hs []pipemodel.Holder
	for pid := uint32(50); pid < 58; pid++ {
		hs = append(hs, wr(pid, "sleep", 2, ""))
	}
	leak := pipe(9, 0, 0, 8, hs...)
	stall := pipe(7, 65536, 1, 1, wr(10, "yes", 1, "writing"), rd(11, "sleep", 0, ""))
	rep := Diagnose(nil, build(leak, stall), opts())
	if len(rep.Stalls()) != 1 || rep.Findings[0].Ino != 7 {
		t.Fatalf("findings %+v: want the stall of pipe 7 first and only", rep.Findings)
	}
	if len(rep.Findings) != 2 || rep.Findings[1].Kind != NoReaders || rep.Findings[1].Category != Warning {
		t.Fatalf("findings %+v: want one no-readers warning", rep.Findings)
	}
	if m := rep.Findings[1].Message; !strings.Contains(m, "held by 8 processes: sleep (pid 50), sleep (pid 51), sleep (pid 52) and 5 more") {
		t.Errorf("warning %q", m)
	}
	for _, c := range rep.Chains {
		if slices.Contains(c.Pipes, 9) {
			t.Errorf("chain %+v holds the leaked pipe", c)
		}
	}
}

// TestMoving: a pipe whose ring moved between the samples is not stuck,
// however blocked its writer looked.
func TestMoving(t *testing.T) {
	before := pipe(7, 65536, 1, 1, wr(10, "yes", 1, "writing"), rd(11, "slow", 0, ""))
	after := pipe(7, 65536, 1, 1, wr(10, "yes", 1, "writing"), rd(11, "slow", 0, ""))
	after.Head, after.Tail = after.Head+3, after.Tail+3
	rep := Diagnose(build(before), build(after), opts())
	if rep.Stuck || !slices.Equal(rep.Moving, []uint64{7}) || rep.LeftOut[LeftMoving] != 1 {
		t.Errorf("report %+v: want pipe 7 moving, nothing stuck", rep)
	}
	rep = Diagnose(build(before), build(before), opts())
	if !rep.Stuck {
		t.Errorf("still pipe: %+v, want stuck", rep)
	}
	rep = Diagnose(build(), build(before), opts())
	if rep.Stuck || rep.LeftOut[LeftNew] != 1 {
		t.Errorf("new pipe: %+v, want nothing said", rep)
	}
}

// TestChain: yes | sleep | cat with the middle asleep: the stall points
// at it, and the chain is in pipeline order.
func TestChain(t *testing.T) {
	in := pipe(7, 65536, 1, 1, wr(10, "yes", 1, "writing"), rd(11, "sleep", 0, ""))
	out := pipe(8, 0, 1, 1, wr(11, "sleep", 1, ""), rd(12, "cat", 0, "reading"))
	other := pipe(9, 0, 1, 1, wr(20, "make", 4, ""), rd(21, "make", 3, ""))
	rep := Diagnose(nil, build(out, in, other), opts())
	if len(rep.Stalls()) != 1 || len(rep.Chains) != 2 {
		t.Fatalf("report %+v: want 1 stall, 2 chains", rep)
	}
	c := rep.Chains[0]
	if !c.Stuck || !slices.Equal(pidsOf(c.Procs), []uint32{10, 11, 12}) || !slices.Equal(c.StuckAt, []uint32{11}) || !slices.Equal(c.Pipes, []uint64{7, 8}) {
		t.Errorf("chain %+v: want 10 | 11 | 12 stuck at 11", c)
	}
	if !strings.Contains(c.Summary, "yes (10) | sleep (11) | cat (12): stuck at sleep (pid 11), state S, idle 1h00m, waiting in hrtimer_nanosleep") {
		t.Errorf("summary %q", c.Summary)
	}
	if rep.Chains[1].Stuck {
		t.Errorf("chain %+v: want not stuck", rep.Chains[1])
	}

	// The tail sleeps instead: the middle is blocked writing, so the
	// chain is stuck at the tail, not at the middle.
	in = pipe(7, 65536, 1, 1, wr(10, "yes", 1, "writing"), rd(11, "gzip", 0, ""))
	out = pipe(8, 65536, 1, 1, wr(11, "gzip", 1, "writing"), rd(12, "sleep", 0, ""))
	rep = Diagnose(nil, build(in, out), opts())
	if len(rep.Chains) != 1 || !slices.Equal(rep.Chains[0].StuckAt, []uint32{12}) {
		t.Fatalf("chains %+v: want stuck at 12", rep.Chains)
	}
	if !strings.Contains(rep.Findings[0].Message, "gzip (pid 11) is itself waiting for room in pipe 8") {
		t.Errorf("message %q", rep.Findings[0].Message)
	}
}

func pidsOf(ps []ChainProc) []uint32 {
	var out []uint32
	for _, p := range ps {
		out = append(out, p.PID)
	}
	return out
}

// TestStages: `(sleep 600; echo) | cat`: the subshell and sleep write
// into the same pipe side by side, one stage before cat.
func TestStages(t *testing.T) {
	p := pipe(7, 0, 1, 2, wr(30, "bash", 1, ""), wr(31, "sleep", 1, ""), rd(32, "cat", 0, "reading"))
	rep := Diagnose(nil, build(p), Options{Kernel: kernel, MinWait: DefaultMinWait})
	if len(rep.Chains) != 1 {
		t.Fatalf("chains %+v", rep.Chains)
	}
	c := rep.Chains[0]
	if len(c.Stages) != 2 || !slices.Equal(pidsOf(c.Stages[0]), []uint32{30, 31}) || !slices.Equal(pidsOf(c.Stages[1]), []uint32{32}) {
		t.Errorf("stages %+v, want [30 31] [32]", c.Stages)
	}
	if !strings.HasPrefix(c.Summary, "bash (30) + sleep (31) | cat (32): idle") {
		t.Errorf("summary %q", c.Summary)
	}
	if !strings.Contains(rep.Findings[0].Message, "its writers bash (pid 30) is alive") {
		t.Errorf("message %q", rep.Findings[0].Message)
	}
}

// TestOpenWait: a task asleep opening a FIFO with no reader is a stall
// of its own, with the path and the end.
func TestOpenWait(t *testing.T) {
	s := build()
	s.OpenWaits = []pipemodel.OpenWait{{PID: 40, TID: 40, Comm: "echo", State: "S", End: pipemodel.EndWrite, Ino: 99, Path: "/tmp/f", Wait: 4 * time.Minute, Readers: 0, Writers: 1}}
	rep := Diagnose(nil, s, opts())
	if !rep.Stuck || len(rep.Findings) != 1 || rep.Findings[0].Kind != OpenNoReader {
		t.Fatalf("report %+v", rep)
	}
	if m := rep.Findings[0].Message; m != "echo (pid 40) has been blocked 4m00s opening FIFO /tmp/f for writing: no reader has opened it" {
		t.Errorf("message %q", m)
	}
	if c := rep.Chains; len(c) != 1 || !strings.Contains(c[0].Summary, "echo (40): stuck opening FIFO /tmp/f: no reader has opened it") {
		t.Errorf("chains %+v", c)
	}
}

// TestEpollWaiter: a thread asleep in epoll_wait for a pipe counts as
// waiting only for the event the pipe lacks.
func TestEpollWaiter(t *testing.T) {
	ep := func(q pipemodel.Queue, events uint32) pipemodel.Waiter {
		return pipemodel.Waiter{Queue: q, Kind: pipemodel.WaiterEpoll, PID: 12, TID: 14, Comm: "node", State: "S",
			Sleeping: true, Events: events, EpollFD: 5, Wait: long}
	}
	empty := pipe(7, 0, 1, 1, wr(11, "sleep", 1, ""), rd(12, "node", 0, ""))
	empty.Waiters = []pipemodel.Waiter{ep(pipemodel.QueueRead, pipemodel.EventIn)}
	rep := Diagnose(nil, build(empty), opts())
	if len(rep.Findings) != 1 || rep.Findings[0].Kind != EmptyWriterIdle || rep.Findings[0].Waiting[0].Via != "epoll" {
		t.Fatalf("empty pipe, reader in epoll_wait: %+v, want an idle wait through epoll", rep.Findings)
	}
	if m := rep.Findings[0].Message; !strings.Contains(m, "(in epoll_wait on epoll fd 5)") {
		t.Errorf("message %q", m)
	}
	// Registered for writing too (edge-triggered epoll asks for all), on
	// an empty pipe: it does not wait for room.
	empty.Waiters = []pipemodel.Waiter{ep(pipemodel.QueueWrite, pipemodel.EventIn|pipemodel.EventOut)}
	if rep := Diagnose(nil, build(empty), opts()); len(rep.Findings) != 0 {
		t.Errorf("epoll on a writable pipe: %+v, want nothing", rep.Findings)
	}
	// Not asleep in epoll_wait: busy elsewhere, not waiting.
	w := ep(pipemodel.QueueRead, pipemodel.EventIn)
	w.Sleeping = false
	empty.Waiters = []pipemodel.Waiter{w}
	if rep := Diagnose(nil, build(empty), opts()); len(rep.Findings) != 0 {
		t.Errorf("registered, not sleeping: %+v, want nothing", rep.Findings)
	}
}

// TestSelfPipe: an event loop's own wakeup pipe (both ends its own), in
// epoll or holding a byte, is no stall; a lone thread blocked in read on
// a pipe whose only write end it holds itself waits for ever.
func TestSelfPipe(t *testing.T) {
	ep := pipemodel.Waiter{Queue: pipemodel.QueueRead, Kind: pipemodel.WaiterEpoll, PID: 12, TID: 12, Comm: "node",
		State: "S", Sleeping: true, Events: pipemodel.EventIn, Wait: long}
	empty := pipe(7, 0, 1, 1, rd(12, "node", 11, ""), wr(12, "node", 12, ""))
	empty.Waiters = []pipemodel.Waiter{ep}
	byte1 := pipe(8, 1, 1, 1, rd(12, "node", 4, ""), wr(12, "node", 5, ""))
	s := build(empty, byte1)
	s.Procs[12].Threads = 7
	rep := Diagnose(nil, s, opts())
	if rep.Stuck || len(rep.Findings) != 0 || rep.LeftOut[LeftSelf] != 2 {
		t.Errorf("self-pipes: %+v, want both left out as self-pipes", rep)
	}
	// Blocked in read(2), one thread, its own write end: no one can write.
	s = build(pipe(7, 0, 1, 1, rd(12, "cat", 0, "reading"), wr(12, "cat", 3, "")))
	if rep := Diagnose(nil, s, opts()); !rep.Stuck || rep.Findings[0].Kind != WriterGone {
		t.Errorf("lone reader of its own pipe: %+v, want writer-gone", rep.Findings)
	}
}

// TestBadRing: a ring pipesnap could not read is said so, never taken
// for an empty pipe.
func TestBadRing(t *testing.T) {
	p := pipe(7, 0, 1, 1, wr(10, "yes", 1, ""), rd(11, "cat", 0, "reading"))
	p.BadRing = true
	rep := Diagnose(nil, build(p), opts())
	if rep.Stuck || len(rep.Findings) != 1 || rep.Findings[0].Kind != BadRing || !strings.Contains(rep.Findings[0].Message, "its ring could not be read") {
		t.Errorf("bad ring: %+v", rep.Findings)
	}
}

func TestIgnore(t *testing.T) {
	p := pipe(7, 65536, 1, 1, wr(10, "yes", 1, "writing"), rd(11, "sleep", 0, ""))
	if rep := Diagnose(nil, build(p), Options{Kernel: kernel, Ignore: map[uint64]bool{7: true}}); rep.Stuck || len(rep.Chains) != 0 {
		t.Errorf("ignored pipe: %+v", rep)
	}
}

// TestPlumbing: a pipe every stage inherited (a shared stderr) does not
// merge two pipelines into one chain.
func TestPlumbing(t *testing.T) {
	a := pipe(7, 65536, 1, 1, wr(10, "yes", 1, "writing"), rd(11, "sleep", 0, ""))
	b := pipe(8, 65536, 1, 1, wr(30, "yes", 1, "writing"), rd(31, "cat", 0, ""))
	shared := pipe(9, 0, 1, 4, wr(10, "yes", 2, ""), wr(11, "sleep", 2, ""), wr(30, "yes", 2, ""), wr(31, "cat", 2, ""), rd(40, "log", 0, ""))
	rep := Diagnose(nil, build(a, b, shared), opts())
	if len(rep.Stalls()) != 2 {
		t.Fatalf("findings %+v", rep.Findings)
	}
	var stuck [][]uint32
	for _, c := range rep.Chains {
		if c.Stuck {
			stuck = append(stuck, c.StuckAt)
		}
	}
	if len(stuck) != 2 || !slices.Equal(stuck[0], []uint32{11}) || !slices.Equal(stuck[1], []uint32{31}) {
		t.Errorf("chains %+v: want two stuck, at 11 and at 31", rep.Chains)
	}
}

func TestDuration(t *testing.T) {
	for d, want := range map[time.Duration]string{
		400 * time.Millisecond:        "0.4s",
		12 * time.Second:              "12s",
		4*time.Minute + 5*time.Second: "4m05s",
		3*time.Hour + 12*time.Minute:  "3h12m",
		50*time.Hour + 59*time.Minute: "2d02h",
	} {
		if got := duration(d); got != want {
			t.Errorf("duration(%v) = %q, want %q", d, got, want)
		}
	}
}
