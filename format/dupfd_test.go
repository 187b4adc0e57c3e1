package format

import (
	"testing"
)

// TestDuplicateFD: an fd number twice in one task section is malformed
// (an fd table holds each number once), in whatever order the numbers
// come; the same number in two sections (threads with fd tables of
// their own) is not.
func TestDuplicateFD(t *testing.T) {
	// fd 3 on a new pipe: file 1, pipe 2; later fds reuse file 1.
	task := func() *wire {
		return new(wire).stdHeader().task(1, 1, 0, 0, "sh").
			fdent(1, 3, 0).file(ModeRead, 0, 0, 0, 2).filePipe(0).psPipe(Pipe{Kind: KindPipe})
	}
	last := func(w *wire) int { return w.offs[len(w.offs)-1] }
	for _, c := range []struct {
		name string
		w    *wire
	}{
		{"same fd again", task().fdent(1, 3, 0)},
		{"same fd, another file", task().fdent(3, 3, 0)},
		{"after higher ones", task().fdent(1, 5, 0).fdent(1, 9, 0).fdent(1, 5, 1)},
		{"out of order, then again", task().fdent(1, 9, 0).fdent(1, 4, 0).fdent(1, 6, 0).fdent(1, 4, 0)},
		{"after a note", task().note(0, 0, "x").fdent(1, 3, 0)},
	} {
		t.Run(c.name, func(t *testing.T) {
			off := last(c.w)
			wantErr(t, c.w.end(), ErrMalformed, off, "FD_ENT", "fd_descriptor", "second time", "offset 90")
		})
	}

	ok := []*wire{
		task().fdent(1, 0, 0).fdent(1, 7, 0).fdent(1, 5, 0).fdent(1, 1, 0), // out of order, no repeat
		task().task(1, 2, 0, 0, "sh").fdent(1, 3, 0),                       // another section
		task().task(1, 1, 0, 0, "sh").fdent(1, 3, 0),                       // a section of its own, even the same tid
	}
	for i, w := range ok {
		if _, _, err := decodeAll(w.end()); err != nil {
			t.Errorf("stream %d: %v", i, err)
		}
	}
}

// TestFDNums: the set of a section's fd numbers, in and out of order.
func TestFDNums(t *testing.T) {
	var s fdNums
	for _, fd := range []int32{0, 1, 2, 10, 100} {
		if !s.add(fd) {
			t.Fatalf("fd %d refused", fd)
		}
	}
	for _, fd := range []int32{50, 3, 1 << 30} {
		if !s.add(fd) {
			t.Fatalf("fd %d refused", fd)
		}
	}
	if len(s.asc) != 6 || len(s.more) != 2 {
		t.Errorf("ascending %v, others %v", s.asc, s.more)
	}
	for _, fd := range []int32{0, 2, 10, 100, 50, 3, 1 << 30} {
		if s.add(fd) {
			t.Errorf("fd %d taken twice", fd)
		}
	}
	s.reset()
	if !s.add(100) || !s.add(3) || len(s.asc) != 1 {
		t.Errorf("after reset: %v %v", s.asc, s.more)
	}
}
