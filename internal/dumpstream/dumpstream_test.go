package dumpstream

import (
	"bytes"
	"errors"
	"io"
	"os"
	"slices"
	"testing"

	"github.com/pipesnap/pipesnap/format"
)

// TestNotes: notes reach the report at once and the stream where the
// grammar allows; a requested pid never met gets its note at the end,
// unless it was left out with one already.
func TestNotes(t *testing.T) {
	var buf bytes.Buffer
	s, err := New(&buf, true, "test")
	if err != nil {
		t.Fatal(err)
	}
	self := uint32(os.Getpid())
	const gone = 1<<22 + 1 // above pid_max's ceiling: never a process
	if err := s.Reused(7, "other"); err != nil {
		t.Fatal(err)
	}
	if err := s.Task(format.Task{PID: 9, TID: 9, Comm: "cat"}); err != nil {
		t.Fatal(err)
	}
	if err := s.FD(format.FDEnt{FD: 3, FileRef: s.NewRef()}); err != nil {
		t.Fatal(err)
	}
	ref, newPipe, err := s.File(format.File{Ref: 1, Mode: format.ModeRead}, 42)
	if err != nil || !newPipe || ref != 2 || !s.HasPipe(42) {
		t.Fatalf("pipe objref %d, new %v, err %v", ref, newPipe, err)
	}
	p := format.Pipe{Ref: ref, Ino: 42, Kind: format.KindPipe, PageSize: 4096}
	s.Exclude(&p, 9)
	if err := s.Pipe(p); err != nil {
		t.Fatal(err)
	}
	if err := s.EndPipe(&p, 9, "cat", 3); err != nil {
		t.Fatal(err)
	}
	report, err := s.Finish([]uint32{7, 9, self, gone})
	if err != nil {
		t.Fatal(err)
	}
	if report.Tasks != 1 || report.FDs != 1 || report.Pipes != 1 || report.Translation != "test" || len(report.Notes) != 4 {
		t.Errorf("report %+v", report)
	}
	if len(report.Problems) != 1 || report.Problems[0].String() != "pipe 42, held by pid 9 (cat) fd 3: incomplete (excluded, 0 attempts)" {
		t.Errorf("problems %v", report.Problems)
	}

	dec, err := format.NewDecoder(&buf)
	if err != nil {
		t.Fatal(err)
	}
	if dec.Header().Flags&format.HeaderFrozen == 0 {
		t.Errorf("header not flagged frozen")
	}
	var codes []uint32
	for {
		rec, err := dec.Next()
		if errors.Is(err, io.EOF) {
			break
		}
		if err != nil {
			t.Fatal(err)
		}
		if n, ok := rec.(*format.Note); ok {
			codes = append(codes, n.Code)
		}
	}
	if want := []uint32{NoteReused, NoteExcluded, NoteNoPipes, NoteExited}; !slices.Equal(codes, want) {
		t.Errorf("note codes %v, want %v", codes, want)
	}
}
