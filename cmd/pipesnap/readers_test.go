package main

// Hostile snapshots through the readers: the shapes a process on the
// dumped machine could give a stream (many buffers, fds, open files,
// pipes or tasks), written with format.Encoder; every reader must take
// time linear in the stream, and memory for what its output needs.

import (
	"bytes"
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/pipesnap/pipesnap/format"
	"github.com/pipesnap/pipesnap/pipemodel"
	"github.com/pipesnap/pipesnap/snapshot"
)

// hostileShape encodes a stream of about n records of one shape:
// "buffers", a pipe of n empty buffers; "holders", n fds of one open file
// of one pipe; "files", n fds of one pipe, each its own open file;
// "pipes", n pipes, one fd each; "tasks", n processes holding one pipe.
// Pid 100 holds pipe 4711 at fd 0 (for reading) in every shape.
func hostileShape(t testing.TB, shape string, n int) []byte {
	t.Helper()
	return encodeStream(t, func(e *format.Encoder, must func(error)) {
		pipe := func(ref int32, ino uint64, nrbufs uint32) format.Pipe {
			return format.Pipe{Ref: ref, Ino: ino, Kind: format.KindPipe, RingSize: 16, MaxUsage: 16, Capacity: 65536, PageSize: 4096,
				Readers: 1, Writers: 1, NrBufs: nrbufs}
		}
		must(e.WriteTask(format.Task{PID: 100, TID: 100, Comm: "victim"}))
		must(e.WriteFDEnt(format.FDEnt{FD: 0, FileRef: 1}))
		must(e.WriteFile(format.File{Ref: 1, Type: format.FileTypePipe, Mode: format.ModeRead, PipeRef: 2}))
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
	})
}

// encodeStream writes a stream with what body writes after the header.
func encodeStream(t testing.TB, body func(e *format.Encoder, must func(error))) []byte {
	t.Helper()
	var buf bytes.Buffer
	e, err := format.NewEncoder(&buf, format.Header{Arch: format.ArchX86_64, Major: 6, Minor: 1, Release: "6.1", Machine: "x86_64"})
	if err != nil {
		t.Fatal(err)
	}
	must := func(err error) {
		t.Helper()
		if err != nil {
			t.Fatal(err)
		}
	}
	body(e, must)
	must(e.Close())
	return buf.Bytes()
}

func writeSnap(t testing.TB, dir, name string, b []byte) string {
	t.Helper()
	path := filepath.Join(dir, name)
	if err := os.WriteFile(path, b, 0o644); err != nil {
		t.Fatal(err)
	}
	return path
}

// cpu runs pipesnap with args and returns the CPU time it took.
func cpu(t *testing.T, args ...string) time.Duration {
	t.Helper()
	cmd := exec.Command(pipesnapBin, args...)
	err := cmd.Run()
	if _, ok := err.(*exec.ExitError); err != nil && !ok {
		t.Fatal(err)
	}
	return cmd.ProcessState.UserTime() + cmd.ProcessState.SystemTime()
}

// peakRSS runs pipesnap with args under GNU time and returns its peak
// RSS in KiB. (The rusage of a child of this process would not do: it
// is forked with CLONE_VM, and its exec records this process's own
// peak as the child's.)
func peakRSS(t *testing.T, args ...string) int64 {
	t.Helper()
	out := filepath.Join(t.TempDir(), "time")
	cmd := exec.Command("/usr/bin/time", append([]string{"-f", "%M", "-o", out, pipesnapBin}, args...)...)
	err := cmd.Run()
	if _, ok := err.(*exec.ExitError); err != nil && !ok {
		t.Fatal(err)
	}
	b, err := os.ReadFile(out)
	if err != nil {
		t.Fatal(err)
	}
	lines := strings.Split(strings.TrimSpace(string(b)), "\n")
	kb, err := strconv.ParseInt(lines[len(lines)-1], 10, 64)
	if err != nil {
		t.Fatalf("GNU time: %q", b)
	}
	return kb
}

// readerCommands are every reader of a snapshot, as pipesnap runs them.
var readerCommands = []struct {
	name string
	args func(file string) []string
	// quadratic names the shapes it is not linear in yet, and where.
	quadratic map[string]string
}{
	{"inspect", func(f string) []string { return []string{"inspect", f} }, sampleQuadratic},
	{"inspect --json", func(f string) []string { return []string{"inspect", "--json", f} }, nil},
	{"cat --ino", func(f string) []string { return []string{"cat", "--ino", "4711", f} }, nil},
	{"restore --ino", func(f string) []string { return []string{"restore", "--ino", "4711", f, "--", "true"} }, nil},
	{"restore --pid", func(f string) []string { return []string{"restore", "--pid", "100", f, "--", "true"} }, nil},
	{"diagnose FILE", func(f string) []string { return []string{"diagnose", f} }, diagnoseQuadratic},
}

// sampleQuadratic and diagnoseQuadratic name the shapes a reader is
// known to be quadratic on: none now (snapshot.Sample groups holders by
// pipe in one pass, CountUnseen and the chain links use sets).
var sampleQuadratic = map[string]string{}

var diagnoseQuadratic = map[string]string{}

// TestReadersLinear: for every reader and every shape, four times the
// records take about four times the CPU time (a reader walking what
// came before at each record takes thirteen here, and sixteen as the
// walk comes to dominate; linear ones take two to four).
func TestReadersLinear(t *testing.T) {
	const n = 20_000
	dir := t.TempDir()
	for _, shape := range []string{"buffers", "holders", "files", "pipes", "tasks"} {
		small := writeSnap(t, dir, shape+"-1.snap", hostileShape(t, shape, n))
		big := writeSnap(t, dir, shape+"-4.snap", hostileShape(t, shape, 4*n))
		for _, r := range readerCommands {
			t.Run(r.name+"/"+shape, func(t *testing.T) {
				if why := r.quadratic[shape]; why != "" {
					t.Skipf("not linear yet: %s", why)
				}
				cost := func(file string) time.Duration {
					best := time.Hour
					for range 2 {
						d := cpu(t, r.args(file)...)
						best = min(best, d)
					}
					return max(best, 10*time.Millisecond)
				}
				c1, c4 := cost(small), cost(big)
				if ratio := float64(c4) / float64(c1); ratio > 10 {
					t.Errorf("%d records: %v, %d: %v (%.1f times)", n, c1, 4*n, c4, ratio)
				} else {
					t.Logf("%d records: %v, %d: %v (%.1f times)", n, c1, 4*n, c4, ratio)
				}
			})
		}
	}
}

// TestReadersMemory: 250,000 fds of one pipe (6 MB): each reader's peak
// RSS is bounded by what its output needs. (Before: inspect --json 303
// MiB, restore --ino 83 MiB, restore --pid 164 MiB; after, unloaded:
// 102, 19 and 65.)
func TestReadersMemory(t *testing.T) {
	if _, err := os.Stat("/usr/bin/time"); err != nil {
		t.Skip("no GNU time to measure with")
	}
	file := writeSnap(t, t.TempDir(), "holders.snap", hostileShape(t, "holders", 250_000))

	for _, c := range []struct {
		args []string
		mb   int64
	}{
		{[]string{"inspect", "--json", file}, 180},
		{[]string{"restore", "--ino", "4711", file, "--", "true"}, 40},
		{[]string{"restore", "--pid", "100", file, "--", "true"}, 120},
	} {
		rss := peakRSS(t, c.args...)
		if rss>>10 > c.mb {
			t.Errorf("pipesnap %s: %d MiB, want at most %d", strings.Join(c.args[:2], " "), rss>>10, c.mb)
		} else {
			t.Logf("pipesnap %s: %d MiB", strings.Join(c.args[:2], " "), rss>>10)
		}
	}
}

// referenceJSON is what inspect --json wrote before it streamed: one
// jsonSnapshot, made from the whole sample, encoded in one piece.
func referenceJSON(t *testing.T, s *snapshot.Snapshot) []byte {
	out := jsonSnapshot{
		Header: jsonHeader{
			Revision: s.Header.Revision, Time: s.Header.Time, Release: s.Header.Release,
			Version: s.Header.Version, Machine: s.Header.Machine, Frozen: s.Header.Flags&format.HeaderFrozen != 0,
		},
		Tasks: []jsonTask{}, Pipes: []jsonPipe{}, Notes: []jsonNote{}, Procs: []pipemodel.Proc{}, OpenWaits: []pipemodel.OpenWait{},
	}
	smp := s.Sample()
	for _, pid := range procOrder(smp) {
		if pr := smp.Procs[pid]; len(pr.Tasks) > 0 || pr.Container != nil || pr.NSPID != 0 || pr.Cgroup != "" {
			out.Procs = append(out.Procs, *pr)
		}
	}
	out.OpenWaits = append(out.OpenWaits, smp.OpenWaits...)
	for _, t := range s.Tasks {
		jt := jsonTask{jsonTaskHead: jsonTaskHead{PID: t.PID, TID: t.TID, Comm: t.Comm, UID: t.UID}, FDs: []jsonFD{}}
		if pr := smp.Procs[t.PID]; pr != nil {
			jt.NSPID, jt.Container = pr.NSPID, pr.Container
		}
		for _, fd := range t.FDs {
			jt.FDs = append(jt.FDs, jsonFD{FD: fd.FD, Ino: fd.Ino, End: fd.End, Cloexec: fd.Cloexec, Flags: fd.Flags})
		}
		out.Tasks = append(out.Tasks, jt)
	}
	for _, p := range s.Pipes {
		jp := jsonPipe{
			jsonPipeHead: jsonPipeHead{
				Ino: p.Ino, Objref: p.Ref, Kind: p.Kind.String(), Path: p.Path, Capacity: p.Capacity, Bytes: p.Bytes,
				Packet: p.Status&format.StatusPacket != 0, Torn: p.Status&format.StatusTorn != 0, Complete: p.Complete(),
				Readers: p.Readers, Writers: p.Writers,
			},
			Buffers: []jsonBuffer{}, Holders: []jsonHolder{}, Waiters: []pipemodel.Waiter{},
		}
		if mp := smp.Find(p.Ino); mp != nil {
			jp.Waiters = append(jp.Waiters, mp.Waiters...)
		}
		if p.Reason != format.ReasonNone {
			jp.Reason = p.Reason.String()
		}
		for _, b := range p.Buffers {
			jp.Buffers = append(jp.Buffers, jsonBuffer{Offset: b.Offset, Len: b.Len, Flags: b.Flags})
		}
		for _, h := range p.Holders {
			jp.Holders = append(jp.Holders, jsonHolder{PID: h.PID, Comm: h.Comm, FD: h.FD, End: h.End})
		}
		out.Pipes = append(out.Pipes, jp)
	}
	for _, n := range s.Notes {
		out.Notes = append(out.Notes, jsonNote{PID: n.PID, Code: n.Code, Msg: n.Msg})
	}
	var buf bytes.Buffer
	enc := json.NewEncoder(&buf)
	enc.SetIndent("", "  ")
	if err := enc.Encode(out); err != nil {
		t.Fatal(err)
	}
	return buf.Bytes()
}

// TestInspectJSONStreamed: inspect --json, written element by element,
// writes byte for byte what encoding the whole value wrote, on every
// kind of snapshot: the golden streams, a hand-built one with FIFOs,
// packets and a torn pipe, one with waits, and hostile shapes.
func TestInspectJSONStreamed(t *testing.T) {
	streams := map[string][]byte{}
	for _, name := range []string{"golden-v1.bin", "golden-v2.bin"} {
		b, err := os.ReadFile(filepath.Join("..", "..", "format", "testdata", name))
		if err != nil {
			t.Fatal(err)
		}
		streams[name] = b
	}
	b, err := os.ReadFile(handBuilt(t, t.TempDir()))
	if err != nil {
		t.Fatal(err)
	}
	streams["hand-built"] = b
	for _, shape := range []string{"buffers", "holders", "files", "pipes", "tasks"} {
		streams[shape] = hostileShape(t, shape, 50)
	}
	streams["waits"] = encodeStream(t, func(e *format.Encoder, must func(error)) {
		must(e.WriteNote(format.Note{PID: 3, Code: 1, Msg: "<html> & \"quotes\" \xff"}))
		must(e.WriteTask(format.Task{PID: 10, TID: 10, Comm: "cat"}))
		must(e.WriteFDEnt(format.FDEnt{FD: 0, FileRef: 1}))
		must(e.WriteFile(format.File{Ref: 1, Type: format.FileTypePipe, Mode: format.ModeRead, Flags: 0x800, PipeRef: 2}))
		must(e.WritePipe(format.Pipe{Ref: 2, Ino: 100, Kind: format.KindPipe, Status: format.StatusTorn | format.StatusPacket, Reason: format.ReasonMoved, NrBufs: 1, Bytes: 3}))
		must(e.WriteBuffer(format.Buffer{Len: 3, Flags: format.BufPacket, Data: []byte("abc")}))
		must(e.WriteTask(format.Task{PID: 11, TID: 12, Comm: "thread"}))
		must(e.WriteFDEnt(format.FDEnt{FD: 1, FileRef: 3, Cloexec: true}))
		must(e.WriteFile(format.File{Ref: 3, Type: format.FileTypePipe, Mode: format.ModeWrite, PipeRef: 4}))
		must(e.WritePipe(format.Pipe{Ref: 4, Ino: 200, Kind: format.KindFIFO, Path: "/run/f"}))
		must(e.WriteTaskState(format.TaskState{PID: 10, TID: 10, State: 'S', Wait: time.Second, WaitKnown: true, Wchan: "pipe_read"}))
		must(e.WriteTaskState(format.TaskState{PID: 10, TID: 13, State: 'R', WaitKnown: true}))
		must(e.WriteTaskState(format.TaskState{PID: 77, TID: 77, State: 'D'}))
		must(e.WriteWaiter(format.Waiter{PipeRef: 2, PID: 10, TID: 10, State: 'S', EpollFD: -1, Comm: "cat"}))
		must(e.WriteWaiter(format.Waiter{PipeRef: 4, PID: 9, TID: 9, Queue: format.QueueWrite, Via: format.ViaEpoll, EpollFD: 5, Events: 4, Outside: true, Comm: "x"}))
		must(e.WriteOpenWait(format.OpenWait{PID: 14, TID: 14, End: format.OpenWrite, State: 'S', Ino: 300, Comm: "producer", Path: "/run/g"}))
	})
	for name, b := range streams {
		s, err := snapshot.Read(bytes.NewReader(b), snapshot.Options{Preview: previewBytes})
		if err != nil {
			t.Fatalf("%s: %v", name, err)
		}
		var got bytes.Buffer
		if err := writeJSON(&got, s); err != nil {
			t.Fatalf("%s: %v", name, err)
		}
		if want := referenceJSON(t, s); !bytes.Equal(got.Bytes(), want) {
			t.Errorf("%s: streamed JSON differs:\n%s\nwant\n%s", name, got.Bytes(), want)
		}
	}
}

// TestInspectJSONWriteError: a failed write is reported.
func TestInspectJSONWriteError(t *testing.T) {
	s, err := snapshot.Read(bytes.NewReader(hostileShape(t, "holders", 5000)), snapshot.Options{})
	if err != nil {
		t.Fatal(err)
	}
	if err := writeJSON(&failAfter{n: 100}, s); err == nil {
		t.Error("no error")
	}
}

// failAfter takes n bytes, then fails.
type failAfter struct{ n int }

func (f *failAfter) Write(p []byte) (int, error) {
	if len(p) > f.n {
		n := f.n
		f.n = 0
		return n, fmt.Errorf("disk full")
	}
	f.n -= len(p)
	return len(p), nil
}
