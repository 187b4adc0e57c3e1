package snapshot

// Hostile streams, as a process on the dumped machine could shape them:
// many records of one kind. Reading them must cost time linear in the
// stream, and memory only for what Options keep.

import (
	"bytes"
	"fmt"
	"runtime"
	"syscall"
	"testing"
	"time"

	"github.com/pipesnap/pipesnap/format"
)

// hostile encodes a stream of about n records of one shape: "buffers", a
// pipe of n empty buffers; "holders", n fds of one open file of one pipe;
// "files", n fds of one pipe, each its own open file; "pipes", n pipes,
// one fd each; "tasks", n processes holding one pipe. The pipe all but
// "pipes" share is 4711, held by pid 100 (at fd 0, for reading).
func hostile(t testing.TB, shape string, n int) []byte {
	t.Helper()
	var buf bytes.Buffer
	e, err := format.NewEncoder(&buf, format.Header{Arch: format.ArchX86_64, Major: 6, Minor: 1, Release: "6.1", Machine: "x86_64"})
	if err != nil {
		t.Fatal(err)
	}
	must := func(err error) {
		if err != nil {
			t.Fatal(err)
		}
	}
	pipe := func(ref int32, ino uint64, nrbufs uint32) format.Pipe {
		return format.Pipe{Ref: ref, Ino: ino, Kind: format.KindPipe, RingSize: 16, MaxUsage: 16, Capacity: 65536, PageSize: 4096,
			Readers: 1, Writers: 1, NrBufs: nrbufs}
	}
	must(e.WriteTask(format.Task{PID: 100, TID: 100, Comm: "victim"}))
	must(e.WriteFDEnt(format.FDEnt{FD: 0, FileRef: 1}))
	must(e.WriteFile(format.File{Ref: 1, Type: format.FileTypePipe, Mode: format.ModeRead, Flags: 0x800, PipeRef: 2}))
	switch shape {
	case "buffers":
		must(e.WritePipe(pipe(2, 4711, uint32(n))))
		for i := range n {
			must(e.WriteBuffer(format.Buffer{Index: uint32(i)}))
		}
	case "holders", "files", "tasks":
		must(e.WritePipe(pipe(2, 4711, 0)))
		for i := 1; i < n; i++ {
			if shape == "tasks" {
				must(e.WriteTask(format.Task{PID: uint32(1000 + i), TID: uint32(1000 + i), Comm: "many"}))
			}
			ref := int32(1)
			if shape == "files" {
				ref = e.NextRef()
			}
			must(e.WriteFDEnt(format.FDEnt{FD: int32(i), FileRef: ref}))
			if shape == "files" {
				must(e.WriteFile(format.File{Ref: ref, Type: format.FileTypePipe, Mode: format.ModeWrite, PipeRef: 2}))
			}
		}
	case "pipes":
		must(e.WritePipe(pipe(2, 4711, 0)))
		for i := 1; i < n; i++ {
			ref := e.NextRef()
			must(e.WriteFDEnt(format.FDEnt{FD: int32(i), FileRef: ref}))
			must(e.WriteFile(format.File{Ref: ref, Type: format.FileTypePipe, Mode: format.ModeRead, PipeRef: ref + 1}))
			must(e.WritePipe(pipe(ref+1, uint64(10000+i), 0)))
		}
	default:
		t.Fatalf("no shape %q", shape)
	}
	must(e.Close())
	return buf.Bytes()
}

// cpuTime is the CPU time this process has used.
func cpuTime() time.Duration {
	var ru syscall.Rusage
	syscall.Getrusage(syscall.RUSAGE_SELF, &ru)
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}

// cost is the least CPU time f takes in three runs (with two, a pause of
// the machine's once put a linear reader at 12.1 times).
func cost(f func()) time.Duration {
	best := time.Duration(1<<63 - 1)
	for range 3 {
		runtime.GC()
		start := cpuTime()
		f()
		best = min(best, cpuTime()-start)
	}
	return max(best, time.Millisecond)
}

// readers are the ways pipesnap's commands read a snapshot.
var readers = map[string]Options{
	"inspect":       {Preview: 64},
	"diagnose":      {},
	"cat --ino":     {Data: true, Ino: 4711},
	"restore --ino": {Data: true, Ino: 4711, PipeOnly: true},
	"restore --pid": {Data: true, PID: 100},
}

// TestReadLinearHostile: four times the records cost about four times
// the time, whatever their shape and whatever the reader keeps (a walk
// over what came before, at each record, would make it sixteen; a
// bigger heap, its cache misses and its garbage collection make it up
// to seven).
func TestReadLinearHostile(t *testing.T) {
	const n = 50_000
	for _, shape := range []string{"buffers", "holders", "files", "pipes", "tasks"} {
		small, big := hostile(t, shape, n), hostile(t, shape, 4*n)
		for name, opt := range readers {
			read := func(b []byte) func() {
				return func() {
					if _, err := Read(bytes.NewReader(b), opt); err != nil {
						t.Fatal(err)
					}
				}
			}
			c1, c4 := cost(read(small)), cost(read(big))
			if r := float64(c4) / float64(c1); r > 12 {
				t.Errorf("%s of %d %s: %v, of %d: %v (%.1f times)", name, n, shape, c1, 4*n, c4, r)
			} else {
				t.Logf("%s of %d %s: %v, of %d: %v (%.1f times)", name, n, shape, c1, 4*n, c4, r)
			}
		}
	}
}

// liveAfter is the heap f leaves in use, the value it returns kept.
func liveAfter(f func() any) uint64 {
	var m0, m1 runtime.MemStats
	runtime.GC()
	runtime.ReadMemStats(&m0)
	v := f()
	runtime.GC()
	runtime.ReadMemStats(&m1)
	runtime.KeepAlive(v)
	return m1.HeapAlloc - min(m1.HeapAlloc, m0.HeapAlloc)
}

// TestReadMemory: what a reader keeps of a million fds, or a million
// buffers, is bounded per record, and nothing for a reader that keeps
// none of them.
func TestReadMemory(t *testing.T) {
	const n = 1 << 18
	for _, c := range []struct {
		shape string
		opt   Options
		most  uint64 // bytes per record
	}{
		{"holders", Options{Preview: 64}, 160},             // an FD and a Holder
		{"holders", Options{Data: true, PID: 100}, 80},     // an FD
		{"holders", Options{Data: true, PID: 7}, 1},        // none
		{"holders", Options{Ino: 4711, PipeOnly: true}, 1}, // none
		{"files", Options{Preview: 64}, 200},               // and an open file
		{"files", Options{Ino: 4711, PipeOnly: true}, 24},  // the open file
		{"buffers", Options{Preview: 64}, 48},              // a format.Buffer
		{"buffers", Options{Ino: 1, PipeOnly: true}, 1},    // none
		{"pipes", Options{Preview: 64}, 400},               // a Pipe, an FD, a Holder, an open file
	} {
		b := hostile(t, c.shape, n)
		live := liveAfter(func() any {
			s, err := Read(bytes.NewReader(b), c.opt)
			if err != nil {
				t.Fatal(err)
			}
			return s
		})
		runtime.KeepAlive(b) // in use before and after: not counted
		if per := live / n; per > c.most {
			t.Errorf("%s, %+v: %d bytes each, want at most %d", c.shape, c.opt, per, c.most)
		} else {
			t.Logf("%s, %+v: %d bytes each", c.shape, c.opt, per)
		}
	}
}

// TestReadOptions: PipeOnly keeps no fds and only the pipe's buffers,
// and still says how its first reader had it open; PID keeps that
// process's tasks and fds only, without holder lists.
func TestReadOptions(t *testing.T) {
	b := hostile(t, "tasks", 10)
	s, err := Read(bytes.NewReader(b), Options{Data: true, Ino: 4711, PipeOnly: true})
	if err != nil {
		t.Fatal(err)
	}
	p, err := s.Find(4711)
	if err != nil {
		t.Fatal(err)
	}
	if len(s.Tasks) != 10 || len(s.Tasks[0].FDs) != 0 || len(p.Holders) != 0 || !p.HasReadEnd || p.ReadFlags != 0x800 {
		t.Errorf("%d tasks, fds %v, holders %v, read end %v flags %#x", len(s.Tasks), s.Tasks[0].FDs, p.Holders, p.HasReadEnd, p.ReadFlags)
	}
	s, err = Read(bytes.NewReader(b), Options{Data: true, PID: 1003})
	if err != nil {
		t.Fatal(err)
	}
	if len(s.Tasks) != 1 || s.Tasks[0].PID != 1003 || len(s.Tasks[0].FDs) != 1 || s.Tasks[0].FDs[0].FD != 3 || len(s.Pipes[0].Holders) != 0 {
		t.Errorf("tasks %+v", s.Tasks)
	}

	b = hostile(t, "pipes", 3)
	s, err = Read(bytes.NewReader(b), Options{Ino: 10002, PipeOnly: true})
	if err != nil {
		t.Fatal(err)
	}
	for _, p := range s.Pipes {
		if p.HasReadEnd != true || len(p.Holders) != 0 {
			t.Errorf("pipe %d: read end %v, holders %v", p.Ino, p.HasReadEnd, p.Holders)
		}
	}

	// Without options every fd is kept, and a pipe only written to has
	// no read end.
	b = hostile(t, "files", 3)
	s, err = Read(bytes.NewReader(b), Options{})
	if err != nil {
		t.Fatal(err)
	}
	if got := fmt.Sprint(len(s.Tasks[0].FDs), len(s.Pipes[0].Holders), s.Pipes[0].HasReadEnd); got != "3 3 true" {
		t.Errorf("fds, holders, read end: %s", got)
	}
}
