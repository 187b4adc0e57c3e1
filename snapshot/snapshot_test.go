package snapshot

import (
	"bytes"
	"testing"
	"time"

	"github.com/pipesnap/pipesnap/format"
	"github.com/pipesnap/pipesnap/internal/pipetest"
)

// TestRead: fds and holders find their pipes and open files through the
// objrefs, dup'ed fds share one, and only the bytes asked for are kept.
func TestRead(t *testing.T) {
	big := pipetest.Pattern(1, 64<<10)
	a := &pipetest.SPipe{Ino: 10, Bufs: [][]byte{big, []byte("tail")}}
	b := &pipetest.SPipe{Ino: 11, Bufs: [][]byte{[]byte("hello")}}
	task := pipetest.STask{PID: 7, Comm: "cat", FDs: []pipetest.SFD{
		{FD: 0, File: "a-r", Pipe: a, Mode: format.ModeRead},
		{FD: 1, File: "b-w", Pipe: b, Mode: format.ModeWrite, Cloexec: true},
		{FD: 3, File: "a-r", Pipe: a, Mode: format.ModeRead}, // a dup of fd 0
		{FD: 4, File: "b-r", Pipe: b, Mode: format.ModeRead},
	}}
	stream := pipetest.Stream(t, task)

	s, err := Read(bytes.NewReader(stream), Options{Data: true, Ino: 11, Preview: 16})
	if err != nil {
		t.Fatal(err)
	}
	if len(s.Tasks) != 1 || len(s.Tasks[0].FDs) != 4 || len(s.Pipes) != 2 {
		t.Fatalf("%d tasks, %d pipes", len(s.Tasks), len(s.Pipes))
	}
	fds := s.Tasks[0].FDs
	pa, pb := s.Pipes[0], s.Pipes[1]
	for i, want := range []struct {
		pipe    *Pipe
		end     string
		cloexec bool
	}{{pa, "read", false}, {pb, "write", true}, {pa, "read", false}, {pb, "read", false}} {
		if fds[i].Pipe != want.pipe || fds[i].Ino != want.pipe.Ino || fds[i].End != want.end || fds[i].Cloexec != want.cloexec {
			t.Errorf("fd %d: %+v", fds[i].FD, fds[i])
		}
	}
	if fds[0].FileRef != fds[2].FileRef || fds[0].FileRef == fds[3].FileRef {
		t.Errorf("file objrefs %d %d %d", fds[0].FileRef, fds[2].FileRef, fds[3].FileRef)
	}
	if len(pa.Holders) != 2 || len(pb.Holders) != 2 || pb.Holders[0].FD != 1 || pb.Holders[0].Comm != "cat" {
		t.Errorf("holders %+v %+v", pa.Holders, pb.Holders)
	}
	if !bytes.Equal(pb.Data(), []byte("hello")) {
		t.Errorf("pipe 11: %q", pb.Data())
	}
	// Pipe 10's bytes were not asked for: a preview only, of its own
	// memory, not a slice that keeps the decoder's whole chunk alive.
	if got := pa.Data(); !bytes.Equal(got, big[:16]) {
		t.Errorf("pipe 10 preview: %q", got)
	}
	if c := cap(pa.Buffers[0].Data); c > 1024 {
		t.Errorf("a 16-byte preview keeps %d bytes", c)
	}
	if pa.Buffers[1].Data != nil || pa.Buffers[1].Len != 4 {
		t.Errorf("past the preview: %+v", pa.Buffers[1])
	}
}

// waitStream writes a revision 2 stream: two tasks, two pipes (objrefs
// 2 and 4), then the wait records, waiters of both pipes interleaved.
func waitStream(t *testing.T) []byte {
	t.Helper()
	var buf bytes.Buffer
	e, err := format.NewEncoder(&buf, format.Header{Arch: format.ArchX86_64, Release: "6.18.0"})
	if err != nil {
		t.Fatal(err)
	}
	must := func(err error) {
		t.Helper()
		if err != nil {
			t.Fatal(err)
		}
	}
	must(e.WriteTask(format.Task{PID: 10, TID: 10, Comm: "writer"}))
	must(e.WriteFDEnt(format.FDEnt{FD: 1, FileRef: 1}))
	must(e.WriteFile(format.File{Ref: 1, Type: format.FileTypePipe, Mode: format.ModeWrite, PipeRef: 2}))
	must(e.WritePipe(format.Pipe{Ref: 2, Ino: 100, Kind: format.KindPipe, NrBufs: 1, Bytes: 3}))
	must(e.WriteBuffer(format.Buffer{Len: 3, Data: []byte("abc")}))
	must(e.WriteTask(format.Task{PID: 11, TID: 11, Comm: "reader"}))
	must(e.WriteFDEnt(format.FDEnt{FD: 0, FileRef: 3}))
	must(e.WriteFile(format.File{Ref: 3, Type: format.FileTypePipe, Mode: format.ModeRead, PipeRef: 4}))
	must(e.WritePipe(format.Pipe{Ref: 4, Ino: 200, Kind: format.KindFIFO, Path: "/run/f"}))
	must(e.WriteTaskState(format.TaskState{PID: 10, TID: 10, State: 'S', Wait: 3 * time.Second, WaitKnown: true, Wchan: "pipe_write"}))
	must(e.WriteWaiter(format.Waiter{PipeRef: 4, PID: 11, TID: 11, Queue: format.QueueRead, Via: format.ViaPoll, State: 'S', EpollFD: -1, Events: 1, Comm: "reader"}))
	must(e.WriteWaiter(format.Waiter{PipeRef: 2, PID: 10, TID: 10, Queue: format.QueueWrite, State: 'S', EpollFD: -1, Wait: 3 * time.Second, WaitKnown: true, Comm: "writer"}))
	must(e.WriteNote(format.Note{PID: 12, Code: 1, Msg: "no pipes"}))
	must(e.WriteWaiter(format.Waiter{PipeRef: 4, PID: 12, TID: 13, Queue: format.QueueRead, Via: format.ViaEpoll, EpollFD: 5, Events: 1, Outside: true, Comm: "nginx"}))
	must(e.WriteTaskState(format.TaskState{PID: 11, TID: 11, State: 'S', Wchan: "do_sys_poll"}))
	must(e.WriteOpenWait(format.OpenWait{PID: 14, TID: 14, End: format.OpenWrite, State: 'S', Ino: 300, Comm: "producer", Path: "/run/g"}))
	must(e.Close())
	return buf.Bytes()
}

// TestReadWaits: waiters go to their pipes by objref; task states and
// open waits are kept in stream order.
func TestReadWaits(t *testing.T) {
	s, err := Read(bytes.NewReader(waitStream(t)), Options{})
	if err != nil {
		t.Fatal(err)
	}
	if s.Header.Revision != format.Revision || len(s.Pipes) != 2 || len(s.Notes) != 1 {
		t.Fatalf("revision %d, %d pipes, %d notes", s.Header.Revision, len(s.Pipes), len(s.Notes))
	}
	p, f := s.Pipes[0], s.Pipes[1]
	if len(p.Waiters) != 1 || p.Waiters[0].TID != 10 || p.Waiters[0].Queue != format.QueueWrite || p.Waiters[0].Wait != 3*time.Second {
		t.Errorf("pipe 100 waiters %+v", p.Waiters)
	}
	if len(f.Waiters) != 2 || f.Waiters[0].TID != 11 || f.Waiters[0].Via != format.ViaPoll ||
		f.Waiters[1].TID != 13 || !f.Waiters[1].Outside || f.Waiters[1].EpollFD != 5 {
		t.Errorf("fifo 200 waiters %+v", f.Waiters)
	}
	if len(s.TaskStates) != 2 || s.TaskStates[0].TID != 10 || s.TaskStates[0].Wchan != "pipe_write" ||
		s.TaskStates[1].TID != 11 || s.TaskStates[1].WaitKnown {
		t.Errorf("task states %+v", s.TaskStates)
	}
	if len(s.OpenWaits) != 1 || s.OpenWaits[0].Path != "/run/g" || s.OpenWaits[0].End != format.OpenWrite || s.OpenWaits[0].Ino != 300 {
		t.Errorf("open waits %+v", s.OpenWaits)
	}

	// A stream without wait records has none.
	s, err = Read(bytes.NewReader(pipetest.Stream(t, pipetest.STask{PID: 1, Comm: "x"})), Options{})
	if err != nil {
		t.Fatal(err)
	}
	if s.TaskStates != nil || s.OpenWaits != nil {
		t.Errorf("task states %v, open waits %v", s.TaskStates, s.OpenWaits)
	}
}

// TestReadLinear: Read costs about the same per record however many came
// before: a pipe with many buffers and many waiters, previewed, reads in
// time proportional to its size (a walk over the earlier buffers at each
// buffer would take minutes here).
func TestReadLinear(t *testing.T) {
	const n = 1 << 18
	var buf bytes.Buffer
	e, err := format.NewEncoder(&buf, format.Header{})
	if err != nil {
		t.Fatal(err)
	}
	must := func(err error) {
		if err != nil {
			t.Fatal(err)
		}
	}
	must(e.WriteTask(format.Task{PID: 1, TID: 1}))
	must(e.WriteFDEnt(format.FDEnt{FileRef: 1}))
	must(e.WriteFile(format.File{Ref: 1, Type: format.FileTypePipe, Mode: format.ModeRead, PipeRef: 2}))
	must(e.WritePipe(format.Pipe{Ref: 2, Kind: format.KindPipe, NrBufs: n, Bytes: n}))
	for range n {
		must(e.WriteBuffer(format.Buffer{Len: 1, Data: []byte("x")}))
	}
	for i := range n {
		must(e.WriteWaiter(format.Waiter{PipeRef: 2, PID: uint32(i), TID: uint32(i), EpollFD: -1}))
	}
	must(e.Close())
	start := time.Now()
	s, err := Read(bytes.NewReader(buf.Bytes()), Options{Preview: n / 2})
	if err != nil {
		t.Fatal(err)
	}
	if d := time.Since(start); d > 20*time.Second {
		t.Errorf("reading %d buffers and %d waiters took %v", n, n, d)
	}
	p := s.Pipes[0]
	if len(p.Buffers) != n || len(p.Waiters) != n || len(p.Data()) != n/2 || p.Waiters[n-1].TID != n-1 {
		t.Errorf("%d buffers, %d waiters, %d bytes previewed", len(p.Buffers), len(p.Waiters), len(p.Data()))
	}
}
