package diagnose

import (
	"slices"
	"strings"
	"testing"

	"github.com/pipesnap/pipesnap/pipestate"
)

// fakeKernel says every task sleeps where the test wants.
type fakeKernel map[uint32]string

func (k fakeKernel) Wchan(pid, tid uint32) string   { return k[tid] }
func (k fakeKernel) Stack(pid, tid uint32) []string { return []string{k[tid] + "+0x1/0x2"} }
func (k fakeKernel) Threads(pid uint32) []uint32    { return []uint32{pid} }

// build makes a sample from pipes (sorted) and the processes they name.
func build(pipes ...*pipestate.Pipe) *pipestate.Sample {
	s := &pipestate.Sample{PageSize: 4096, Procs: map[uint32]*pipestate.Proc{}}
	for _, p := range pipes {
		for _, h := range p.Holders {
			s.Procs[h.PID] = &pipestate.Proc{PID: h.PID, Comm: h.Comm, State: "S", Threads: 1}
		}
	}
	s.Pipes = pipes
	slices.SortFunc(s.Pipes, func(a, b *pipestate.Pipe) int { return int(a.Ino) - int(b.Ino) })
	return s
}

func pipe(ino uint64, bytes uint64, readers, writers uint32, holders ...pipestate.Holder) *pipestate.Pipe {
	p := &pipestate.Pipe{Ino: ino, Kind: "pipe", Bytes: bytes, Capacity: 65536, MaxUsage: 16, RingSize: 16,
		Readers: readers, Writers: writers, Holders: holders}
	p.Bufs = uint32((bytes + 4095) / 4096)
	p.Head = 100 + p.Bufs
	p.Tail = 100
	for _, h := range holders {
		if h.Blocked != "" {
			q := map[string]string{"reading": "read", "writing": "write"}[h.Blocked]
			p.Waiters = append(p.Waiters, pipestate.Waiter{Queue: q, Kind: "blocked", PID: h.PID, TID: h.PID, Comm: h.Comm, State: "S"})
		}
	}
	return p
}

func rd(pid uint32, comm string, fd int32, blocked string) pipestate.Holder {
	return pipestate.Holder{PID: pid, Comm: comm, FD: fd, End: "read", Blocked: blocked}
}

func wr(pid uint32, comm string, fd int32, blocked string) pipestate.Holder {
	return pipestate.Holder{PID: pid, Comm: comm, FD: fd, End: "write", Blocked: blocked}
}

var kernel = fakeKernel{10: "anon_pipe_write", 11: "hrtimer_nanosleep", 12: "anon_pipe_read", 20: "do_wait"}

func pids(ts []Task) []uint32 {
	var out []uint32
	for _, t := range ts {
		out = append(out, t.PID)
	}
	return out
}

func TestFindings(t *testing.T) {
	for _, tc := range []struct {
		name          string
		pipe          *pipestate.Pipe
		kind          string
		blocked, idle []uint32
		msg           []string
	}{
		{"full, reader sleeps",
			pipe(7, 65536, 1, 1, wr(10, "yes", 1, "writing"), rd(11, "sleep", 0, "")),
			FullReaderIdle, []uint32{10}, []uint32{11},
			[]string{"yes (pid 10) is blocked writing to pipe 7, which is full (65536/65536)", "its reader sleep (pid 11) is not reading it: state S, waiting in hrtimer_nanosleep"}},
		{"empty, writer sleeps",
			pipe(7, 0, 1, 1, wr(11, "sleep", 1, ""), rd(12, "cat", 0, "reading")),
			EmptyWriterIdle, []uint32{12}, []uint32{11},
			[]string{"cat (pid 12) is blocked reading pipe 7, which is empty", "its writer sleep (pid 11) is not writing: state S, waiting in hrtimer_nanosleep"}},
		{"reader holds the only write end",
			pipe(7, 0, 1, 1, rd(12, "cat", 0, "reading"), wr(12, "cat", 3, "")),
			WriterGone, []uint32{12}, []uint32{12},
			[]string{"cat (pid 12) is blocked reading pipe 7, which is empty, and will wait forever", "fd 3 of cat (pid 12)"}},
		{"no readers",
			pipe(7, 5, 0, 1, wr(11, "sleep", 1, "")),
			NoReaders, nil, []uint32{11},
			[]string{"pipe 7 has no reader left: its writer sleep (pid 11) will get SIGPIPE", "the 5 bytes in it will never be read"}},
		{"data left, no writers",
			pipe(7, 12, 1, 0, rd(11, "sleep", 0, "")),
			UnreadNoWriters, nil, []uint32{11},
			[]string{"pipe 7 holds 12 bytes and has no writer left; its reader sleep (pid 11) is not reading them"}},
		{"full, reader outside the walk",
			pipe(7, 65536, 1, 1, wr(10, "yes", 1, "writing")),
			FullReaderIdle, []uint32{10}, nil,
			[]string{"its reader is outside the walked processes (1 open end(s))"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			tc.pipe.UnseenReaders = tc.pipe.Readers - uint32(len(tc.pipe.Ends("read")))
			rep := Diagnose(nil, build(tc.pipe), Options{Kernel: kernel})
			if !rep.Stuck || len(rep.Findings) != 1 {
				t.Fatalf("report %+v: want one finding", rep)
			}
			f := rep.Findings[0]
			if f.Kind != tc.kind || !slices.Equal(pids(f.Blocked), tc.blocked) || !slices.Equal(pids(f.Idle), tc.idle) {
				t.Errorf("finding %s, blocked %v, idle %v; want %s, %v, %v", f.Kind, pids(f.Blocked), pids(f.Idle), tc.kind, tc.blocked, tc.idle)
			}
			for _, m := range tc.msg {
				if !strings.Contains(f.Message, m) {
					t.Errorf("message %q\nlacks %q", f.Message, m)
				}
			}
		})
	}
}

func TestHealthy(t *testing.T) {
	for _, p := range []*pipestate.Pipe{
		pipe(7, 100, 1, 1, wr(10, "a", 1, ""), rd(11, "b", 0, "")),          // some data, nobody blocked
		pipe(8, 0, 1, 0, rd(11, "b", 3, "")),                                // writer gone, empty: EOF
		pipe(9, 0, 1, 1, wr(10, "a", 4, ""), rd(11, "b", 5, "")),            // idle, nobody waits
		pipe(10, 4096, 1, 1, wr(10, "a", 6, ""), rd(11, "b", 7, "reading")), // woken, not yet running
	} {
		if rep := Diagnose(nil, build(p), Options{Kernel: kernel}); rep.Stuck {
			t.Errorf("pipe %d: %+v, want nothing stuck", p.Ino, rep.Findings)
		}
	}
}

// TestMoving: a pipe whose ring moved between the samples is not stuck,
// however blocked its writer looked.
func TestMoving(t *testing.T) {
	before := pipe(7, 65536, 1, 1, wr(10, "yes", 1, "writing"), rd(11, "slow", 0, ""))
	after := pipe(7, 65536, 1, 1, wr(10, "yes", 1, "writing"), rd(11, "slow", 0, ""))
	after.Head, after.Tail = after.Head+3, after.Tail+3
	rep := Diagnose(build(before), build(after), Options{Kernel: kernel})
	if rep.Stuck || !slices.Equal(rep.Moving, []uint64{7}) {
		t.Errorf("report %+v: want pipe 7 moving, nothing stuck", rep)
	}
	// The same pipe standing still is stuck.
	rep = Diagnose(build(before), build(before), Options{Kernel: kernel})
	if !rep.Stuck {
		t.Errorf("still pipe: %+v, want stuck", rep)
	}
	// A pipe too new to compare is left alone.
	rep = Diagnose(build(), build(before), Options{Kernel: kernel})
	if rep.Stuck {
		t.Errorf("new pipe: %+v, want nothing said", rep)
	}
}

// TestChain: yes | sleep | cat with the middle stopped: both pipes point
// at it, and the chain is in pipeline order.
func TestChain(t *testing.T) {
	in := pipe(7, 65536, 1, 1, wr(10, "yes", 1, "writing"), rd(11, "sleep", 0, ""))
	out := pipe(8, 0, 1, 1, wr(11, "sleep", 1, ""), rd(12, "cat", 0, "reading"))
	other := pipe(9, 0, 1, 1, wr(20, "make", 4, ""), rd(21, "make", 3, ""))
	rep := Diagnose(nil, build(out, in, other), Options{Kernel: kernel})
	if len(rep.Findings) != 2 || len(rep.Chains) != 2 {
		t.Fatalf("report %+v: want 2 findings, 2 chains", rep)
	}
	c := rep.Chains[0]
	var order []uint32
	for _, p := range c.Procs {
		order = append(order, p.PID)
	}
	if !c.Stuck || !slices.Equal(order, []uint32{10, 11, 12}) || !slices.Equal(c.StuckAt, []uint32{11}) || !slices.Equal(c.Pipes, []uint64{7, 8}) {
		t.Errorf("chain %+v: want 10 | 11 | 12 stuck at 11", c)
	}
	if !strings.Contains(c.Summary, "yes (10) | sleep (11) | cat (12): stuck at sleep (pid 11), state S, waiting in hrtimer_nanosleep") {
		t.Errorf("summary %q", c.Summary)
	}
	if rep.Chains[1].Stuck {
		t.Errorf("chain %+v: want not stuck", rep.Chains[1])
	}

	// The tail stopped instead: the middle is blocked writing, so the
	// chain is stuck at the tail, not at the middle.
	in = pipe(7, 65536, 1, 1, wr(10, "yes", 1, "writing"), rd(11, "gzip", 0, ""))
	out = pipe(8, 65536, 1, 1, wr(11, "gzip", 1, "writing"), rd(12, "sleep", 0, ""))
	rep = Diagnose(nil, build(in, out), Options{Kernel: kernel})
	if len(rep.Chains) != 1 || !slices.Equal(rep.Chains[0].StuckAt, []uint32{12}) {
		t.Fatalf("chains %+v: want stuck at 12", rep.Chains)
	}
	if !strings.Contains(rep.Findings[0].Message, "gzip (pid 11) is itself blocked writing pipe 8") {
		t.Errorf("message %q", rep.Findings[0].Message)
	}
}

func TestIgnore(t *testing.T) {
	p := pipe(7, 0, 1, 1, wr(11, "sleep", 1, ""), rd(12, "cat", 0, "reading"))
	if rep := Diagnose(nil, build(p), Options{Kernel: kernel, Ignore: map[uint64]bool{7: true}}); rep.Stuck || len(rep.Chains) != 0 {
		t.Errorf("ignored pipe: %+v", rep)
	}
}

// TestPlumbing: a pipe every stage inherited (a shared stderr) does not
// merge two pipelines into one chain.
func TestPlumbing(t *testing.T) {
	a := pipe(7, 65536, 1, 1, wr(10, "yes", 1, "writing"), rd(11, "sleep", 0, ""))
	b := pipe(8, 0, 1, 1, wr(30, "sleep", 1, ""), rd(31, "cat", 0, "reading"))
	shared := pipe(9, 0, 1, 1, wr(10, "yes", 2, ""), wr(11, "sleep", 2, ""), wr(30, "sleep", 2, ""), wr(31, "cat", 2, ""), rd(40, "log", 0, ""))
	rep := Diagnose(nil, build(a, b, shared), Options{Kernel: kernel})
	if len(rep.Chains) != 2 || !slices.Equal(rep.Chains[0].StuckAt, []uint32{11}) || !slices.Equal(rep.Chains[1].StuckAt, []uint32{30}) {
		t.Errorf("chains %+v: want two, stuck at 11 and at 30", rep.Chains)
	}
}
