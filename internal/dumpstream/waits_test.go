package dumpstream

import (
	"bytes"
	"errors"
	"io"
	"reflect"
	"testing"
	"time"

	"github.com/pipesnap/pipesnap/format"
	"github.com/pipesnap/pipesnap/pipemodel"
)

// waitSample is a sample of two pipes of pid 9's with waiters of every
// kind, one pipe with none, and one the stream does not hold.
func waitSample() *pipemodel.Sample {
	blocked := pipemodel.Waiter{Queue: pipemodel.QueueWrite, Kind: pipemodel.WaiterBlocked, PID: 9, TID: 10, Comm: "cat", State: "S", Wait: time.Second}
	polling := pipemodel.Waiter{Queue: pipemodel.QueueRead, Kind: pipemodel.WaiterPoll, PID: 11, TID: 11, Comm: "a-long-command-name", State: "S", Sleeping: true, Events: pipemodel.EventIn, Outside: true}
	registered := pipemodel.Waiter{Queue: pipemodel.QueueRead, Kind: pipemodel.WaiterEpoll, PID: 9, TID: 9, Events: pipemodel.EventIn} // not asleep in the call
	noTask := pipemodel.Waiter{Queue: pipemodel.QueueRead, Kind: pipemodel.WaiterBlocked}
	holders := []pipemodel.Holder{{PID: 9, FD: 3}, {PID: 11, FD: 4}}
	return &pipemodel.Sample{
		Pipes: []*pipemodel.Pipe{
			{Ino: 40, Holders: holders, Slots: []pipemodel.Slot{{}}},
			{Ino: 42, Holders: holders, Waiters: []pipemodel.Waiter{blocked, registered, polling}},
			{Ino: 43, Holders: holders, Waiters: []pipemodel.Waiter{noTask, registered}},
			{Ino: 50, Holders: holders, Waiters: []pipemodel.Waiter{blocked}}, // not in the stream
		},
		Procs: map[uint32]*pipemodel.Proc{
			9:  {PID: 9, Comm: "cat", State: "S", Tasks: []pipemodel.Thread{{TID: 9, State: "S"}, {TID: 10, State: "S"}}},
			11: {PID: 11, Comm: "a-long-command-name", State: "S", Outside: true, Container: &pipemodel.Container{ID: "abc", Runtime: "docker"}},
			12: {PID: 12, Comm: "other", State: "R"}, // not dumped
		},
		OpenWaits: []pipemodel.OpenWait{{PID: 9, TID: 10, End: pipemodel.EndWrite, State: "S", Ino: 77, Comm: "cat", Path: "/tmp/f"}},
	}
}

// waitRecords dumps pid 9 holding pipes 40, 42 and 43 with waits w and
// returns the records after the last pipe.
func waitRecords(t *testing.T, w *Waits) []any {
	t.Helper()
	var buf bytes.Buffer
	s, err := New(&buf, false, "test")
	if err != nil {
		t.Fatal(err)
	}
	s.SetWaits(w)
	if err := s.Task(format.Task{PID: 9, TID: 9, Comm: "cat"}); err != nil {
		t.Fatal(err)
	}
	for i, ino := range []uint64{40, 42, 43} {
		fileRef := s.NewRef()
		if err := s.FD(format.FDEnt{FD: int32(3 + i), FileRef: fileRef}); err != nil {
			t.Fatal(err)
		}
		ref, _, err := s.File(format.File{Ref: fileRef, Mode: format.ModeRead}, ino)
		if err != nil {
			t.Fatal(err)
		}
		p := format.Pipe{Ref: ref, Ino: ino, Kind: format.KindPipe, PageSize: 4096}
		if err := s.Pipe(p); err != nil {
			t.Fatal(err)
		}
		if err := s.EndPipe(&p, 9, "cat", int32(3+i)); err != nil {
			t.Fatal(err)
		}
	}
	if _, err := s.Finish([]uint32{9}); err != nil {
		t.Fatal(err)
	}
	dec, err := format.NewDecoder(&buf)
	if err != nil {
		t.Fatal(err)
	}
	var recs []any
	for {
		rec, err := dec.Next()
		if errors.Is(err, io.EOF) {
			return recs
		}
		if err != nil {
			t.Fatal(err)
		}
		switch rec.(type) {
		case *format.TaskState, *format.Waiter, *format.OpenWait, *format.Proc, *format.Container:
			recs = append(recs, rec)
		}
	}
}

// TestTrimKeepsWaitRecords: a trimmed sample (what a dump holds through
// its walk) gives the same wait records as the whole one, and keeps only
// the pipes with a waiter recorded, without holders or slots.
func TestTrimKeepsWaitRecords(t *testing.T) {
	want := waitRecords(t, &Waits{Sample: waitSample()})
	waiters := 0
	for _, r := range want {
		if _, ok := r.(*format.Waiter); ok {
			waiters++
		}
	}
	if waiters != 2 || len(want) < 6 {
		t.Fatalf("%d records, %d waiters: want the blocked and the polling one", len(want), waiters)
	}
	smp := waitSample()
	Trim(smp)
	if len(smp.Pipes) != 2 || smp.Pipes[0].Ino != 42 || smp.Pipes[1].Ino != 50 {
		t.Fatalf("trimmed to %d pipes: %+v", len(smp.Pipes), smp.Pipes)
	}
	for _, p := range smp.Pipes {
		if len(p.Holders) != 0 || len(p.Slots) != 0 {
			t.Errorf("pipe %d keeps holders or slots: %+v", p.Ino, p)
		}
	}
	if n := len(smp.Pipes[0].Waiters); n != 2 {
		t.Errorf("pipe 42 keeps %d waiters, want the 2 recorded", n)
	}
	if got := waitRecords(t, &Waits{Sample: smp}); !reflect.DeepEqual(got, want) {
		t.Errorf("trimmed sample's records differ:\n got %+v\nwant %+v", got, want)
	}
}
