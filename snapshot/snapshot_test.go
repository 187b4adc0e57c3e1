package snapshot

import (
	"bytes"
	"testing"

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
