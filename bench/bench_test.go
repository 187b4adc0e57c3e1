package bench_test

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"os"
	"testing"

	"github.com/pipesnap/pipesnap/bench"
	"github.com/pipesnap/pipesnap/format"
	"github.com/pipesnap/pipesnap/internal/pipetest"
	"github.com/pipesnap/pipesnap/loader"
	"github.com/pipesnap/pipesnap/restore"
	"github.com/pipesnap/pipesnap/snapshot"
	"github.com/pipesnap/pipesnap/teecap"
)

func TestMain(m *testing.M) {
	bench.MaybeChild()
	os.Exit(m.Run())
}

func TestStats(t *testing.T) {
	var s bench.Stats
	for _, v := range []float64{5, 1, 3, 2} {
		s.Add(v)
	}
	if s.N != 4 || s.Min != 1 || s.Max != 5 || s.Median != 2.5 {
		t.Errorf("%+v", s)
	}
	s.Add(4)
	if s.Median != 3 {
		t.Errorf("median of 1..5 = %v", s.Median)
	}
}

// TestWorkload: the workload holds exactly its pipes, filled, and both
// the /proc walk and the tee path see all of them.
func TestWorkload(t *testing.T) {
	w, err := bench.StartWorkload(bench.Spec{Procs: 3, Pipes: 10, Fill: 5000})
	if err != nil {
		t.Fatal(err)
	}
	defer w.Stop()
	if len(w.PIDs) != 3 {
		t.Fatalf("pids %v", w.PIDs)
	}
	fds, pipeFDs, err := bench.ProcWalk(w.PIDs)
	if err != nil || pipeFDs != 20 || fds < 20+9 {
		t.Errorf("walk: %d fds, %d pipe fds, %v; want at least 29 (3 x stdio), 20", fds, pipeFDs, err)
	}
	var buf bytes.Buffer
	report, err := teecap.Dump(context.Background(), &buf, loader.Options{PIDs: w.PIDs})
	if err != nil {
		t.Fatal(err)
	}
	if report.Pipes != 10 || report.Bytes != 50000 || len(report.Problems) != 0 {
		t.Errorf("tee dump: %d pipes, %d bytes, problems %v", report.Pipes, report.Bytes, report.Problems)
	}
	s, err := snapshot.Read(&buf, snapshot.Options{Data: true})
	if err != nil {
		t.Fatal(err)
	}
	seen := map[string]bool{}
	for _, p := range s.Pipes {
		seen[string(p.Data())] = true
	}
	if len(seen) != 10 {
		t.Errorf("%d different contents in 10 pipes", len(seen))
	}
}

func TestMemcpy(t *testing.T) {
	if d := bench.Memcpy(1<<20, 4096, 2); len(d) != 2 {
		t.Errorf("%v", d)
	}
}

// refillStream: task 7 holds pipe a (both ends, fd 4 dup'ed to fd 9 as
// well as a section of its own for another thread) and the read end of
// pipe b (1 MiB), whose write end task 8 holds; task 8 also holds pipe c.
func refillStream(t *testing.T) *snapshot.Snapshot {
	t.Helper()
	a := &pipetest.SPipe{Ino: 100, Bufs: [][]byte{pipetest.Pattern(1, 4096), pipetest.Pattern(2, 100)}}
	b := &pipetest.SPipe{Ino: 101, Capacity: 1 << 20, Bufs: [][]byte{pipetest.Pattern(3, 4096), pipetest.Pattern(4, 4096)}}
	c := &pipetest.SPipe{Ino: 102, Bufs: [][]byte{pipetest.Pattern(5, 10)}}
	stream := pipetest.Stream(t,
		pipetest.STask{PID: 7, Comm: "a", FDs: []pipetest.SFD{
			{FD: 3, File: "ar", Pipe: a, Mode: format.ModeRead},
			{FD: 4, File: "aw", Pipe: a, Mode: format.ModeWrite},
			{FD: 5, File: "br", Pipe: b, Mode: format.ModeRead, Cloexec: true},
			{FD: 9, File: "aw", Pipe: a, Mode: format.ModeWrite},
		}},
		pipetest.STask{PID: 8, Comm: "b", FDs: []pipetest.SFD{
			{FD: 3, File: "bw", Pipe: b, Mode: format.ModeWrite},
			{FD: 4, File: "cr", Pipe: c, Mode: format.ModeRead},
		}},
		pipetest.STask{PID: 7, Comm: "a", FDs: []pipetest.SFD{
			{FD: 3, File: "ar", Pipe: a, Mode: format.ModeRead},
		}},
	)
	s, err := snapshot.Read(bytes.NewReader(stream), snapshot.Options{Data: true})
	if err != nil {
		t.Fatal(err)
	}
	return s
}

func TestTaskPipes(t *testing.T) {
	s := refillStream(t)
	pipes, fds, n := bench.TaskPipes(s, 7)
	if len(pipes) != 2 || pipes[0].Ino != 100 || pipes[1].Ino != 101 || fds != 4 || n != 4196+8192 {
		t.Errorf("pid 7: %d pipes, %d fds, %d bytes; want 100 and 101, 4 fds, %d bytes", len(pipes), fds, n, 4196+8192)
	}
	if pipes, fds, n := bench.TaskPipes(s, 99); len(pipes) != 0 || fds != 0 || n != 0 {
		t.Errorf("pid 99: %d pipes, %d fds, %d bytes", len(pipes), fds, n)
	}
	plain := bench.PlainPipes(pipes)
	if len(plain) != 2 || plain[0].Capacity != 65536 || plain[1].Capacity != 1<<20 ||
		!bytes.Equal(plain[0].Data, pipes[0].Data()) || len(plain[1].Data) != 8192 {
		t.Errorf("plain pipes: %+v", plain)
	}
}

// TestWritePipes: the plain way makes every pipe, refuses bytes that do
// not fit rather than block, and leaves no fd behind.
func TestWritePipes(t *testing.T) {
	before := pipetest.OpenFDs(t)
	big := bytes.Repeat([]byte{7}, 1<<20)
	if err := bench.WritePipes([]bench.PlainPipe{{Capacity: 65536, Data: big[:65536]}, {Capacity: 1 << 20, Data: big}, {}}); err != nil {
		t.Fatal(err)
	}
	if err := bench.WritePipes([]bench.PlainPipe{{Capacity: 65536, Data: big}}); err == nil {
		t.Error("1 MiB into a 64 KiB pipe: no error")
	}
	if after := pipetest.OpenFDs(t); after != before {
		t.Errorf("%d fds open before, %d after", before, after)
	}
}

// TestHeldPipes: what restore.Build makes for pid 7 is what HeldPipes
// counts (the restorer holds every end until Close).
func TestHeldPipes(t *testing.T) {
	p0, n0, err := bench.HeldPipes()
	if err != nil {
		t.Fatal(err)
	}
	s := refillStream(t)
	set, err := restore.Build(s, restore.Options{PID: 7, KeepCloexec: true})
	if err != nil {
		t.Fatal(err)
	}
	p1, n1, err := bench.HeldPipes()
	set.Close()
	if err != nil {
		t.Fatal(err)
	}
	if _, _, want := bench.TaskPipes(s, 7); p1-p0 != 2 || n1-n0 != want {
		t.Errorf("restored: %d pipes, %d bytes; want 2, %d", p1-p0, n1-n0, want)
	}
	if len(set.FDs()) != 4 {
		t.Errorf("restored %d fds, want 4", len(set.FDs()))
	}
}

func BenchmarkProcWalk(b *testing.B) {
	for _, n := range []int{1000, 10000} {
		b.Run(fmt.Sprint(n), func(b *testing.B) {
			w, err := bench.StartWorkload(bench.Spec{Procs: (n + 999) / 1000, Pipes: n})
			if err != nil {
				b.Fatal(err)
			}
			defer w.Stop()
			for b.Loop() {
				if _, _, err := bench.ProcWalk(w.PIDs); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}

var dumpCases = []bench.Spec{
	{Procs: 1, Pipes: 1000, Fill: 4096},
	{Procs: 1, Pipes: 1000, Fill: 65536},
	{Procs: 1, Pipes: 64, Fill: 1 << 20},
}

// BenchmarkDump: both capture paths in this process (no process start-up;
// the BPF one still loads and calibrates at every dump), to io.Discard.
func BenchmarkDump(b *testing.B) {
	for _, spec := range dumpCases {
		name := fmt.Sprintf("%dx%s", spec.Pipes, bench.Size(spec.Fill))
		w, err := bench.StartWorkload(spec)
		if err != nil {
			b.Fatal(err)
		}
		for _, m := range []struct {
			name string
			dump func(context.Context, io.Writer, loader.Options) (*loader.Report, error)
		}{{"bpf", loader.Dump}, {"tee", teecap.Dump}} {
			b.Run(m.name+"/"+name, func(b *testing.B) {
				if m.name == "bpf" {
					pipetest.RequireBPF(b)
				}
				b.SetBytes(int64(spec.Pipes * spec.Fill))
				for b.Loop() {
					if _, err := m.dump(context.Background(), io.Discard, loader.Options{PIDs: w.PIDs}); err != nil {
						b.Fatal(err)
					}
				}
			})
		}
		w.Stop()
	}
}

// BenchmarkMemcpy64MiB: the physical reference, as bench.Memcpy takes it.
func BenchmarkMemcpy64MiB(b *testing.B) {
	const total, chunk = 64 << 20, 65536
	src, dst := bytes.Repeat([]byte{1}, total), bytes.Repeat([]byte{2}, total)
	b.SetBytes(total)
	for b.Loop() {
		for off := 0; off < total; off += chunk {
			copy(dst[off:off+chunk], src[off:])
		}
	}
}

// BenchmarkMetadata: 10,000 empty pipes in 10 processes, both capture
// paths in this process, to io.Discard.
func BenchmarkMetadata(b *testing.B) {
	w, err := bench.StartWorkload(bench.Spec{Procs: 10, Pipes: 10000})
	if err != nil {
		b.Fatal(err)
	}
	defer w.Stop()
	for _, m := range []struct {
		name string
		dump func(context.Context, io.Writer, loader.Options) (*loader.Report, error)
	}{{"bpf", loader.Dump}, {"tee", teecap.Dump}} {
		b.Run(m.name, func(b *testing.B) {
			if m.name == "bpf" {
				pipetest.RequireBPF(b)
			}
			for b.Loop() {
				if _, err := m.dump(context.Background(), io.Discard, loader.Options{PIDs: w.PIDs}); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}
