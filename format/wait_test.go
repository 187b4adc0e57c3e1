package format

import (
	"bytes"
	"fmt"
	"math"
	"strings"
	"testing"
	"time"
)

// The revision 2 wait records: PS_TASK_STATE, PS_WAITER, PS_OPEN_WAIT.

// v2OnePipe is a rev 2 stream with one task holding one pipe: file 1,
// pipe 2, with one buffer.
func v2OnePipe() *wire {
	return new(wire).stdHeaderV2().task(1, 1, 0, 0, "sh").fdent(1, 0, 0).file(ModeRead, 0, 0, 0, 2).
		filePipe(1).psPipe(Pipe{Kind: KindPipe, NrBufs: 1, Bytes: 1}).psBuf(0, 0, 1, 0).buffer("a")
}

// okWaiter is a valid waiter on pipe 2, for streams that break something else.
func okWaiter(w *wire) *wire { return w.waiter(2, 1, 1, 0, 0, 'S', -1, 0, 0, 0, "sh") }

func TestWaitMalformed(t *testing.T) {
	last := func(w *wire) int { return w.offs[len(w.offs)-1] }
	type tc struct {
		name  string
		w     *wire
		off   func(w *wire) int
		words []string
	}
	at := func(typ uint32, k int) func(w *wire) int { return func(w *wire) int { return w.at(typ, k) } }
	v1 := func() *wire {
		return new(wire).stdHeader().task(1, 1, 0, 0, "sh").fdent(1, 0, 0).file(ModeRead, 0, 0, 0, 2).filePipe(0).psPipe(Pipe{Kind: KindPipe})
	}
	ts := func(w *wire) *wire { return w.taskState(1, 1, 'S', 0, 0, "") }
	ow := func(w *wire) *wire { return w.openWait(1, 1, 1, 'S', 0, 0, 0, "", "/f") }
	// Raw records with one field changed from a valid one.
	rawTS := func(state byte, pad1 []byte, waitNS uint64, flags uint32, pad2 []byte) []byte {
		return bytes.Join([][]byte{u32(1), u32(1), {state}, pad1, u64(waitNS), u32(flags), pad2}, nil)
	}
	rawWaiter := func(ref int32, q, via, state, pad1 byte, epfd int32, events uint32, waitNS uint64, flags uint32, comm, pad2 []byte) []byte {
		return bytes.Join([][]byte{i32(ref), u32(1), u32(1), {q, via, state, pad1}, i32(epfd), u32(events), u64(waitNS), u32(flags), comm, pad2}, nil)
	}
	rawOpen := func(end, state byte, pad1 []byte, waitNS uint64, flags uint32, comm, pad2 []byte) []byte {
		return bytes.Join([][]byte{u32(1), u32(1), {end, state}, pad1, u64(4711), u64(waitNS), u32(flags), comm, pad2}, nil)
	}
	c := comm16("x")
	cases := []tc{
		// Revision 1 streams have none.
		{"task state in rev 1", ts(v1()), at(TypeTaskState, 0), []string{"PS_TASK_STATE record", "not in a revision 1 stream"}},
		{"waiter in rev 1", v1().waiter(2, 1, 1, 0, 0, 'S', -1, 0, 0, 0, ""), last, []string{"PS_WAITER record", "not in a revision 1 stream"}},
		{"open wait in rev 1", ow(v1()), at(TypeOpenWait, 0), []string{"PS_OPEN_WAIT record", "not in a revision 1 stream"}},

		// They come after every task section.
		{"task after task state", ts(v2OnePipe()).task(2, 2, 0, 0, ""), last, []string{"PS_TASK record", "after the wait records"}},
		{"task after waiter", okWaiter(v2OnePipe()).task(2, 2, 0, 0, ""), last, []string{"PS_TASK record", "after the wait records"}},
		{"task after open wait", ow(v2OnePipe()).note(0, 0, "").task(2, 2, 0, 0, ""), last, []string{"PS_TASK record", "after the wait records"}},
		{"fd after waiter", okWaiter(v2OnePipe()).fdent(1, 1, 0), last, []string{"FD_ENT record", "after the wait records"}},
		{"task state before FILE", new(wire).stdHeaderV2().task(1, 1, 0, 0, "").fdent(1, 0, 0).taskState(1, 1, 0, 0, 0, ""),
			at(TypeTaskState, 0), []string{"unexpected", "want FILE defining objref 1"}},
		{"waiter before FILE_PIPE", new(wire).stdHeaderV2().task(1, 1, 0, 0, "").fdent(1, 0, 0).file(ModeRead, 0, 0, 0, 2).
			waiter(2, 1, 1, 0, 0, 0, -1, 0, 0, 0, ""), last, []string{"unexpected", "want FILE_PIPE"}},
		{"open wait amid buffers", new(wire).stdHeaderV2().task(1, 1, 0, 0, "").fdent(1, 0, 0).file(ModeRead, 0, 0, 0, 2).
			filePipe(1).psPipe(Pipe{Kind: KindPipe, NrBufs: 1}).openWait(1, 1, 1, 0, 0, 0, 0, "", ""), at(TypeOpenWait, 0), []string{"unexpected", "1 more buffers"}},
		{"FILE in the wait section", okWaiter(v2OnePipe()).file(ModeRead, 0, 0, 0, 2), last,
			[]string{"FILE record", "unexpected", "want PS_TASK_STATE, PS_WAITER, PS_OPEN_WAIT, PS_NOTE or PS_TRAILER"}},
		{"STRING after a waiter", okWaiter(v2OnePipe()).str("x"), last, []string{"STRING record", "unexpected"}},

		// pipe_ref names a pipe defined earlier.
		{"waiter pipe_ref undefined", v2OnePipe().waiter(3, 1, 1, 0, 0, 0, -1, 0, 0, 0, ""), last, []string{"PS_WAITER", "pipe_ref: objref 3 is not defined"}},
		{"waiter pipe_ref 0", v2OnePipe().waiter(0, 1, 1, 0, 0, 0, -1, 0, 0, 0, ""), last, []string{"pipe_ref: objref 0 is not defined"}},
		{"waiter pipe_ref negative", v2OnePipe().waiter(-2, 1, 1, 0, 0, 0, -1, 0, 0, 0, ""), last, []string{"pipe_ref: objref -2 is not defined"}},
		{"waiter pipe_ref is a file", v2OnePipe().waiter(1, 1, 1, 0, 0, 0, -1, 0, 0, 0, ""), last, []string{"pipe_ref: objref 1 is a file, not a pipe"}},
		{"waiter without pipes", new(wire).stdHeaderV2().waiter(1, 1, 1, 0, 0, 0, -1, 0, 0, 0, ""), last, []string{"objref 1 is not defined"}},

		// Lengths.
		{"task state short", v2OnePipe().rec(TypeTaskState, pad(24)), last, []string{"len 32, want 40"}},
		{"task state long", v2OnePipe().rec(TypeTaskState, pad(40)), last, []string{"len 48, want 40"}},
		{"waiter short", v2OnePipe().rec(TypeWaiter, pad(48)), last, []string{"len 56, want 64"}},
		{"waiter long", v2OnePipe().rec(TypeWaiter, pad(64)), last, []string{"len 72, want 64"}},
		{"open wait short", v2OnePipe().rec(TypeOpenWait, pad(52)), last, []string{"len 60, want 64"}},
		{"open wait len 0", v2OnePipe().rec(TypeOpenWait), last, []string{"len 8, want 64"}},

		// Enumerations.
		{"task state letter", v2OnePipe().taskState(1, 1, 'Q', 0, 0, ""), at(TypeTaskState, 0), []string{"state 'Q'"}},
		{"task state lower s", v2OnePipe().taskState(1, 1, 's', 0, 0, ""), at(TypeTaskState, 0), []string{"state 's'"}},
		{"waiter state", v2OnePipe().waiter(2, 1, 1, 0, 0, 'x', -1, 0, 0, 0, ""), last, []string{"state 'x'"}},
		{"open wait state", v2OnePipe().openWait(1, 1, 1, 1, 0, 0, 0, "", ""), at(TypeOpenWait, 0), []string{"state '\\x01'"}},
		{"queue 2", v2OnePipe().waiter(2, 1, 1, 2, 0, 0, -1, 0, 0, 0, ""), last, []string{"queue 2"}},
		{"queue 255", v2OnePipe().waiter(2, 1, 1, 255, 0, 0, -1, 0, 0, 0, ""), last, []string{"queue 255"}},
		{"via 4", v2OnePipe().waiter(2, 1, 1, 0, 4, 0, -1, 0, 0, 0, ""), last, []string{"via 4"}},
		{"end 0", v2OnePipe().openWait(1, 1, 0, 0, 0, 0, 0, "", ""), at(TypeOpenWait, 0), []string{"end 0"}},
		{"end 3", v2OnePipe().openWait(1, 1, 3, 0, 0, 0, 0, "", ""), at(TypeOpenWait, 0), []string{"end 3"}},
		{"epoll fd -2", v2OnePipe().waiter(2, 1, 1, 0, 2, 0, -2, 0, 0, 0, ""), last, []string{"epoll_fd -2"}},
		{"epoll fd without epoll", v2OnePipe().waiter(2, 1, 1, 0, 1, 0, 3, 1, 0, 0, ""), last, []string{"epoll_fd 3 with via poll"}},
		{"epoll fd 0 direct", v2OnePipe().waiter(2, 1, 1, 0, 0, 0, 0, 0, 0, 0, ""), last, []string{"epoll_fd 0 with via direct"}},
		{"events direct", v2OnePipe().waiter(2, 1, 1, 0, 0, 0, -1, 1, 0, 0, ""), last, []string{"events 0x1 with via direct"}},

		// Flags and waits.
		{"task state flags", v2OnePipe().taskState(1, 1, 0, 0, 2, ""), at(TypeTaskState, 0), []string{"flags 0x2: unknown bits"}},
		{"waiter flags", v2OnePipe().waiter(2, 1, 1, 0, 0, 0, -1, 0, 0, 4, ""), last, []string{"flags 0x4: unknown bits"}},
		{"open wait flags", v2OnePipe().openWait(1, 1, 1, 0, 0, 0, 1<<31, "", ""), at(TypeOpenWait, 0), []string{"flags 0x80000000: unknown bits"}},
		{"open wait outside flag", v2OnePipe().openWait(1, 1, 1, 0, 0, 0, 2, "", ""), at(TypeOpenWait, 0), []string{"flags 0x2: unknown bits"}},
		{"task state wait unknown", v2OnePipe().taskState(1, 1, 'S', 5, 0, ""), at(TypeTaskState, 0), []string{"wait_ns 5", "bit 0"}},
		{"waiter wait unknown", v2OnePipe().waiter(2, 1, 1, 0, 0, 0, -1, 0, 5, 2, ""), last, []string{"wait_ns 5", "bit 0"}},
		{"open wait wait unknown", v2OnePipe().openWait(1, 1, 1, 0, 0, 5, 0, "", ""), at(TypeOpenWait, 0), []string{"wait_ns 5", "bit 0"}},
		{"task state wait overflow", v2OnePipe().taskState(1, 1, 'S', 1<<63, 1, ""), at(TypeTaskState, 0), []string{"does not fit"}},
		{"waiter wait overflow", v2OnePipe().waiter(2, 1, 1, 0, 0, 0, -1, 0, math.MaxUint64, 1, ""), last, []string{"does not fit"}},
		{"open wait overflow", v2OnePipe().openWait(1, 1, 1, 0, 0, 1<<63, 1, "", ""), at(TypeOpenWait, 0), []string{"does not fit"}},

		// Padding, each _pad field.
		{"task state pad 9", v2OnePipe().rec(TypeTaskState, rawTS('S', []byte{1, 0, 0, 0, 0, 0, 0}, 0, 0, pad(4))), last, []string{"padding not zero"}},
		{"task state pad 15", v2OnePipe().rec(TypeTaskState, rawTS('S', []byte{0, 0, 0, 0, 0, 0, 0x80}, 0, 0, pad(4))), last, []string{"padding not zero"}},
		{"task state pad 28", v2OnePipe().rec(TypeTaskState, rawTS('S', pad(7), 0, 0, []byte{0, 0, 0, 1})), last, []string{"padding not zero"}},
		{"waiter pad 15", v2OnePipe().rec(TypeWaiter, rawWaiter(2, 0, 0, 0, 1, -1, 0, 0, 0, c, pad(4))), last, []string{"padding not zero"}},
		{"waiter pad 52", v2OnePipe().rec(TypeWaiter, rawWaiter(2, 0, 0, 0, 0, -1, 0, 0, 0, c, []byte{0, 1, 0, 0})), last, []string{"padding not zero"}},
		{"open wait pad 10", v2OnePipe().rec(TypeOpenWait, rawOpen(1, 0, []byte{1, 0, 0, 0, 0, 0}, 0, 0, c, pad(4))), last, []string{"padding not zero"}},
		{"open wait pad 15", v2OnePipe().rec(TypeOpenWait, rawOpen(1, 0, []byte{0, 0, 0, 0, 0, 1}, 0, 0, c, pad(4))), last, []string{"padding not zero"}},
		{"open wait pad 55", v2OnePipe().rec(TypeOpenWait, rawOpen(1, 0, pad(6), 0, 0, c, []byte{0, 0, 0, 1})), last, []string{"padding not zero"}},

		// Comms.
		{"waiter comm without NUL", v2OnePipe().rec(TypeWaiter, rawWaiter(2, 0, 0, 0, 0, -1, 0, 0, 0, []byte("0123456789abcdef"), pad(4))), last, []string{"comm has no NUL"}},
		{"waiter comm junk", v2OnePipe().rec(TypeWaiter, rawWaiter(2, 0, 0, 0, 0, -1, 0, 0, 0, append([]byte("ab\x00c"), pad(12)...), pad(4))), last, []string{"comm padding"}},
		{"open wait comm without NUL", v2OnePipe().rec(TypeOpenWait, rawOpen(1, 0, pad(6), 0, 0, []byte("0123456789abcdef"), pad(4))), last, []string{"comm has no NUL"}},
		{"open wait comm junk", v2OnePipe().rec(TypeOpenWait, rawOpen(1, 0, pad(6), 0, 0, append([]byte("a\x00\x00\x00\x00x"), pad(10)...), pad(4))), last, []string{"comm padding"}},

		// The STRINGs that must follow.
		{"task state without wchan", v2OnePipe().rec(TypeTaskState, rawTS('S', pad(7), 0, 0, pad(4))).note(0, 0, ""), last2, []string{"PS_NOTE", "want STRING with the task's wchan"}},
		{"open wait without path", v2OnePipe().rec(TypeOpenWait, rawOpen(1, 0, pad(6), 0, 0, c, pad(4))).rec(TypeTrailer, pad(16)), last, []string{"PS_TRAILER", "want STRING with the FIFO's path"}},
		{"wchan without NUL", v2OnePipe().rec(TypeTaskState, rawTS('S', pad(7), 0, 0, pad(4))).rec(TypeString, []byte("x")), last, []string{"no NUL at the end"}},
		{"path with inner NUL", v2OnePipe().rec(TypeOpenWait, rawOpen(1, 0, pad(6), 0, 0, c, pad(4))).rec(TypeString, []byte("/a\x00b\x00")), last, []string{"NUL inside"}},
		{"wchan too long", v2OnePipe().taskState(1, 1, 0, 0, 0, strings.Repeat("w", MaxString)), last, []string{"len 4105"}},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			off := c.off(c.w)
			wantErr(t, c.w.end(), ErrMalformed, off, c.words...)
		})
	}
	// The golden v2 stream, but for its revision.
	wantErr(t, asRevision(goldenWireV2().b, 1), ErrMalformed, goldenV2Waits, "PS_TASK_STATE record", "not in a revision 1 stream (new in revision 2)")
}

// TestWaitSection: where the wait records may come, and what they decode to.
func TestWaitSection(t *testing.T) {
	// Right after the HEADER, without any task; notes among them; the
	// longest strings; the extreme values.
	path := "/" + strings.Repeat("p", MaxString-2)
	w := new(wire).stdHeaderV2().
		openWait(1, 2, 1, 'S', math.MaxUint64, 1<<63-1, 1, "123456789012345", path).
		note(1, 2, "between").
		taskState(math.MaxUint32, math.MaxUint32, 'I', 0, 1, strings.Repeat("w", MaxString-1)).
		taskState(3, 3, 0, 0, 0, "")
	h, items, err := decodeAll(w.end())
	if err != nil {
		t.Fatal(err)
	}
	checkHeader(t, h, Header{Arch: 1, Major: 6, Minor: 18, Revision: 2, Time: goldenHeader.Time, Flags: 1, Release: "6.18.0", Version: "#1 SMP", Machine: "x86_64"})
	checkItems(t, items, []any{
		&OpenWait{PID: 1, TID: 2, End: OpenRead, State: 'S', Ino: math.MaxUint64, Wait: math.MaxInt64, WaitKnown: true, Comm: "123456789012345", Path: path},
		&Note{PID: 1, Code: 2, Msg: "between"},
		&TaskState{PID: math.MaxUint32, TID: math.MaxUint32, State: 'I', WaitKnown: true, Wchan: strings.Repeat("w", MaxString-1)},
		&TaskState{PID: 3, TID: 3},
	})

	// Waiters on a pipe of an earlier task section, and right after a
	// FIFO's PS_PIPE without path (read ahead).
	w = new(wire).stdHeaderV2().task(1, 1, 0, 0, "a").fdent(1, 0, 0).file(ModeRead, 0, 0, 0, 2).filePipe(0).psPipe(Pipe{Kind: KindPipe}).
		task(2, 2, 0, 0, "b").fdent(3, 0, 0).file(ModeWrite, 0, 0, 0, 4).filePipe(0).psPipe(Pipe{Kind: KindFIFO}).
		waiter(2, 9, 10, 1, 2, 'S', math.MaxInt32, 0xffffffff, 42, 3, "w").
		waiter(4, 1, 1, 0, 3, 'D', -1, 1, 0, 0, "")
	_, items, err = decodeAll(w.end())
	if err != nil {
		t.Fatal(err)
	}
	checkItems(t, items[len(items)-2:], []any{
		&Waiter{PipeRef: 2, PID: 9, TID: 10, Queue: QueueWrite, Via: ViaEpoll, State: 'S', EpollFD: math.MaxInt32, Events: 0xffffffff,
			Wait: 42, WaitKnown: true, Outside: true, Comm: "w"},
		&Waiter{PipeRef: 4, PID: 1, TID: 1, Queue: QueueRead, Via: ViaOther, State: 'D', EpollFD: -1, Events: 1},
	})
}

// TestDecoderOffsetsV2: Offset() before each item of the golden v2 stream.
func TestDecoderOffsetsV2(t *testing.T) {
	w := goldenWireV2()
	d, err := NewDecoder(bytes.NewReader(w.b))
	if err != nil {
		t.Fatal(err)
	}
	for range goldenItems() {
		d.Next()
	}
	for _, want := range []int{w.at(TypeTaskState, 0), w.at(TypeTaskState, 1), w.at(TypeWaiter, 0), w.at(TypeWaiter, 1),
		w.at(TypeNote, 1), w.at(TypeOpenWait, 0)} {
		if got := d.Offset(); got != int64(want) {
			t.Fatalf("Offset() %d, want %d", got, want)
		}
		if _, err := d.Next(); err != nil {
			t.Fatal(err)
		}
	}
	if got, want := d.Offset(), w.at(TypeTrailer, 0); got != int64(want) {
		t.Fatalf("Offset() %d, want the trailer's %d", got, want)
	}
}

// TestEncoderWaitMisuse: as TestEncoderMisuse, for the wait records.
func TestEncoderWaitMisuse(t *testing.T) {
	var buf bytes.Buffer
	e, err := NewEncoder(&buf, goldenHeader)
	if err != nil {
		t.Fatal(err)
	}
	okW := Waiter{PipeRef: 2, PID: 1, TID: 1, EpollFD: -1, State: 'S', Comm: "sh"}
	waiter := func(f func(*Waiter)) func() error {
		return func() error {
			w := okW
			f(&w)
			return e.WriteWaiter(w)
		}
	}
	okO := OpenWait{PID: 3, TID: 3, End: OpenRead, State: 'S', Comm: "cat", Path: "/f"}
	open := func(f func(*OpenWait)) func() error {
		return func() error {
			o := okO
			f(&o)
			return e.WriteOpenWait(o)
		}
	}
	steps := []struct {
		name string
		ok   bool
		call func() error
	}{
		{"waiter before any pipe", false, func() error { return e.WriteWaiter(okW) }},
		{"task", true, func() error { return e.WriteTask(Task{PID: 1, TID: 1, Comm: "sh"}) }},
		{"fd", true, func() error { return e.WriteFDEnt(FDEnt{FD: 0, FileRef: 1}) }},
		{"task state before FILE", false, func() error { return e.WriteTaskState(TaskState{}) }},
		{"waiter on the file being defined", false, func() error { w := okW; w.PipeRef = 1; return e.WriteWaiter(w) }},
		{"file", true, func() error { return e.WriteFile(File{Ref: 1, Type: FileTypePipe, Mode: ModeRead, PipeRef: 2}) }},
		{"waiter on the pipe being defined", false, func() error { return e.WriteWaiter(okW) }},
		{"open wait before pipe", false, func() error { return e.WriteOpenWait(okO) }},
		{"pipe", true, func() error { return e.WritePipe(Pipe{Ref: 2, Kind: KindPipe, NrBufs: 1, Bytes: 1}) }},
		{"waiter amid buffers", false, func() error { return e.WriteWaiter(okW) }},
		{"buffer", true, func() error { return e.WriteBuffer(Buffer{Len: 1, Data: []byte("a")}) }},

		{"waiter ref undefined", false, waiter(func(w *Waiter) { w.PipeRef = 3 })},
		{"waiter ref 0", false, waiter(func(w *Waiter) { w.PipeRef = 0 })},
		{"waiter ref negative", false, waiter(func(w *Waiter) { w.PipeRef = -1 })},
		{"waiter ref is a file", false, waiter(func(w *Waiter) { w.PipeRef = 1 })},
		{"waiter queue 2", false, waiter(func(w *Waiter) { w.Queue = 2 })},
		{"waiter via 4", false, waiter(func(w *Waiter) { w.Via = 4 })},
		{"waiter epoll fd 0 direct", false, waiter(func(w *Waiter) { w.EpollFD = 0 })},
		{"waiter epoll fd poll", false, waiter(func(w *Waiter) { w.Via, w.EpollFD = ViaPoll, 5 })},
		{"waiter epoll fd -2", false, waiter(func(w *Waiter) { w.Via, w.EpollFD = ViaEpoll, -2 })},
		{"waiter events direct", false, waiter(func(w *Waiter) { w.Events = 1 })},
		{"waiter state", false, waiter(func(w *Waiter) { w.State = 'r' })},
		{"waiter negative wait", false, waiter(func(w *Waiter) { w.Wait, w.WaitKnown = -1, true })},
		{"waiter wait not known", false, waiter(func(w *Waiter) { w.Wait = time.Second })},
		{"waiter comm 16 bytes", false, waiter(func(w *Waiter) { w.Comm = "0123456789abcdef" })},
		{"waiter comm NUL", false, waiter(func(w *Waiter) { w.Comm = "a\x00" })},
		{"waiter", true, waiter(func(w *Waiter) { w.Comm = "0123456789abcde" })},
		{"waiter epoll", true, waiter(func(w *Waiter) { w.Via, w.EpollFD, w.Events, w.Outside = ViaEpoll, 4, 1, true })},

		{"task after waiter", false, func() error { return e.WriteTask(Task{}) }},
		{"fd after waiter", false, func() error { return e.WriteFDEnt(FDEnt{FD: 1, FileRef: 1}) }},
		{"new fd after waiter", false, func() error { return e.WriteFDEnt(FDEnt{FD: 1, FileRef: 3}) }},

		{"task state letter", false, func() error { return e.WriteTaskState(TaskState{State: 'A'}) }},
		{"task state wait not known", false, func() error { return e.WriteTaskState(TaskState{Wait: 1}) }},
		{"task state negative wait", false, func() error { return e.WriteTaskState(TaskState{Wait: -5, WaitKnown: true}) }},
		{"task state wchan NUL", false, func() error { return e.WriteTaskState(TaskState{Wchan: "a\x00b"}) }},
		{"task state wchan too long", false, func() error { return e.WriteTaskState(TaskState{Wchan: strings.Repeat("w", MaxString)}) }},
		{"task state", true, func() error {
			return e.WriteTaskState(TaskState{PID: 1, TID: 1, State: 'S', Wait: time.Hour, WaitKnown: true, Wchan: "pipe_read"})
		}},
		{"task state unknown", true, func() error { return e.WriteTaskState(TaskState{}) }},

		{"open end 0", false, open(func(o *OpenWait) { o.End = 0 })},
		{"open end 3", false, open(func(o *OpenWait) { o.End = 3 })},
		{"open state", false, open(func(o *OpenWait) { o.State = '?' })},
		{"open wait not known", false, open(func(o *OpenWait) { o.Wait = 1 })},
		{"open negative wait", false, open(func(o *OpenWait) { o.Wait, o.WaitKnown = math.MinInt64, true })},
		{"open comm too long", false, open(func(o *OpenWait) { o.Comm = strings.Repeat("c", 16) })},
		{"open path NUL", false, open(func(o *OpenWait) { o.Path = "/a\x00" })},
		{"open path too long", false, open(func(o *OpenWait) { o.Path = strings.Repeat("p", MaxString) })},
		{"open wait", true, open(func(o *OpenWait) { o.End, o.Wait, o.WaitKnown = OpenWrite, time.Minute, true })},
		{"open wait no path", true, open(func(o *OpenWait) { o.Path = "" })},
		{"note among waits", true, func() error { return e.WriteNote(Note{Msg: "x"}) }},
		{"task after note", false, func() error { return e.WriteTask(Task{}) }},
		{"close", true, e.Close},
		{"task state after close", false, func() error { return e.WriteTaskState(TaskState{}) }},
		{"waiter after close", false, func() error { return e.WriteWaiter(okW) }},
		{"open wait after close", false, func() error { return e.WriteOpenWait(okO) }},
	}
	for _, s := range steps {
		before := e.Offset()
		err := s.call()
		if s.ok && err != nil {
			t.Fatalf("%s: %v", s.name, err)
		}
		if !s.ok {
			if err == nil {
				t.Fatalf("%s: accepted", s.name)
			}
			if e.Offset() != before {
				t.Fatalf("%s: refused, but wrote %d bytes", s.name, e.Offset()-before)
			}
			if !strings.HasPrefix(err.Error(), "format: ") {
				t.Errorf("%s: error %q", s.name, err)
			}
		}
	}
	if int64(buf.Len()) != e.Offset() {
		t.Fatalf("wrote %d bytes, Offset() %d", buf.Len(), e.Offset())
	}
	_, items, err := decodeAll(buf.Bytes())
	if err != nil {
		t.Fatalf("the accepted calls made a stream the decoder rejects: %v", err)
	}
	var kinds []string
	for _, it := range items[5:] {
		kinds = append(kinds, strings.TrimPrefix(fmt.Sprintf("%T", it), "*format."))
	}
	if got := strings.Join(kinds, " "); got != "Waiter Waiter TaskState TaskState OpenWait OpenWait Note" {
		t.Errorf("decoded %s", got)
	}
}
