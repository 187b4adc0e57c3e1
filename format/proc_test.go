package format

import (
	"bytes"
	"math"
	"strings"
	"testing"
)

// The revision 3 records: PS_CONTAINER and PS_PROC.

func TestProcMalformed(t *testing.T) {
	last := func(w *wire) int { return w.offs[len(w.offs)-1] }
	at := func(typ uint32, k int) func(w *wire) int { return func(w *wire) int { return w.at(typ, k) } }
	v3 := func() *wire { return new(wire).stdHeaderV3() }
	cont := func(w *wire) *wire { return w.container(1, "podman", goldenCID, "web", "", "", "") }
	rawProc := func(pid uint32, container, flags uint32) []byte {
		return bytes.Join([][]byte{u32(pid), u32(0), u64(0), u32(container), u32(flags), comm16("")}, nil)
	}
	cases := []struct {
		name  string
		w     *wire
		off   func(w *wire) int
		words []string
	}{
		// Older revisions have none.
		{"container in rev 2", cont(new(wire).stdHeaderV2()), at(TypeContainer, 0), []string{"PS_CONTAINER record", "not in a revision 2 stream (new in revision 3)"}},
		{"proc in rev 2", new(wire).stdHeaderV2().proc(1, 0, 0, 0, 0, "", ""), at(TypeProc, 0), []string{"PS_PROC record", "not in a revision 2 stream"}},
		{"proc in rev 1", new(wire).stdHeader().proc(1, 0, 0, 0, 0, "", ""), at(TypeProc, 0), []string{"not in a revision 1 stream"}},

		// After every task section, and not inside a pipe.
		{"task after container", cont(v3()).task(1, 1, 0, 0, ""), last, []string{"PS_TASK record", "after the wait records"}},
		{"task after proc", v3().proc(1, 0, 0, 0, 0, "", "").task(1, 1, 0, 0, ""), last, []string{"PS_TASK record", "after the wait records", "PS_PROC"}},
		{"proc before FILE", v3().task(1, 1, 0, 0, "").fdent(1, 0, 0).proc(1, 0, 0, 0, 0, "", ""), at(TypeProc, 0), []string{"unexpected", "want FILE defining objref 1"}},
		{"FILE after proc", v3().proc(1, 0, 0, 0, 0, "", "").file(ModeRead, 0, 0, 0, 2), last,
			[]string{"FILE record", "want PS_TASK_STATE, PS_WAITER, PS_OPEN_WAIT, PS_CONTAINER, PS_PROC, PS_NOTE or PS_TRAILER"}},

		// Container numbers are dense from 1; a process names one already defined.
		{"container ref 0", v3().container(0, "", "x", "", "", "", ""), at(TypeContainer, 0), []string{"ref 0: want the next container number 1"}},
		{"container ref 2 first", v3().container(2, "", "x", "", "", "", ""), at(TypeContainer, 0), []string{"ref 2: want the next container number 1"}},
		{"container ref repeated", cont(cont(v3())), at(TypeContainer, 1), []string{"ref 1: want the next container number 2"}},
		{"proc container undefined", v3().proc(1, 0, 0, 1, 0, "", ""), at(TypeProc, 0), []string{"container 1 is not defined (0 are so far)"}},
		{"proc container after", cont(v3()).proc(1, 0, 0, 2, 0, "", ""), at(TypeProc, 0), []string{"container 2 is not defined (1 are so far)"}},
		{"proc container max", cont(v3()).proc(1, 0, 0, math.MaxUint32, 0, "", ""), at(TypeProc, 0), []string{"is not defined"}},

		// Fields.
		{"proc pid 0", v3().proc(0, 0, 0, 0, 0, "", ""), at(TypeProc, 0), []string{"pid 0"}},
		{"proc pid twice", v3().proc(7, 0, 0, 0, 0, "", "").note(0, 0, "").proc(7, 1, 0, 0, 0, "", ""), at(TypeProc, 1), []string{"pid 7 has a PS_PROC already"}},
		{"proc flags", cont(v3()).proc(1, 0, 0, 1, 2, "", ""), at(TypeProc, 0), []string{"flags 0x2: unknown bits"}},
		{"monitor of nothing", v3().proc(1, 0, 0, 0, 1, "", ""), at(TypeProc, 0), []string{"monitor of no container"}},
		{"container pad", v3().rec(TypeContainer, u32(1), []byte{0, 0, 1, 0}), last, []string{"padding not zero"}},
		{"container empty id", v3().container(1, "podman", "", "", "", "", ""), func(w *wire) int { return w.at(TypeString, 1) }, []string{"STRING record", "empty container id"}},

		// Lengths.
		{"container short", v3().rec(TypeContainer, pad(4)), last, []string{"len 12, want 16"}},
		{"proc long", v3().rec(TypeProc, pad(48)), last, []string{"len 56, want 48"}},
		{"proc comm without NUL", v3().rec(TypeProc, append(rawProc(1, 0, 0)[:24], "0123456789abcdef"...)), last, []string{"comm has no NUL"}},
		{"proc comm junk", v3().rec(TypeProc, append(rawProc(1, 0, 0)[:24], comm16("a\x00b")...)), last, []string{"comm padding"}},

		// The STRINGs that must follow.
		{"container without strings", v3().rec(TypeContainer, u32(1), pad(4)).str("podman").str(goldenCID).note(0, 0, ""), last2,
			[]string{"PS_NOTE", "want STRING with the container's name"}},
		{"proc without cgroup", v3().rec(TypeProc, rawProc(1, 0, 0)).rec(TypeTrailer, pad(16)), last, []string{"PS_TRAILER", "want STRING with the process's cgroup"}},
		{"cgroup too long", v3().proc(1, 0, 0, 0, 0, "", strings.Repeat("c", MaxString)), last, []string{"len 4105"}},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			off := c.off(c.w)
			wantErr(t, c.w.end(), ErrMalformed, off, c.words...)
		})
	}
	// The golden v3 stream, but for its revision.
	wantErr(t, asRevision(goldenWireV3().b, 2), ErrMalformed, goldenV3Containers, "PS_CONTAINER record", "not in a revision 2 stream (new in revision 3)")
}

// TestProcSection: containers and processes alone, among notes and wait
// records, with extreme values; what they decode to.
func TestProcSection(t *testing.T) {
	long := strings.Repeat("n", MaxString-1)
	w := new(wire).stdHeaderV3().
		proc(math.MaxUint32, math.MaxUint32, math.MaxUint64, 0, 0, "123456789012345", long).
		container(1, long, long, long, long, long, long).
		taskState(1, 1, 'S', 0, 0, "").
		proc(1, 0, 0, 1, 1, "conmon", "").
		note(0, 0, "x").
		container(2, "", "y", "", "", "", "")
	_, items, err := decodeAll(w.end())
	if err != nil {
		t.Fatal(err)
	}
	checkItems(t, items, []any{
		&Proc{PID: math.MaxUint32, NSPID: math.MaxUint32, CgroupID: math.MaxUint64, Comm: "123456789012345", Cgroup: long},
		&Container{Ref: 1, Runtime: long, ID: long, Name: long, Pod: long, Namespace: long, KubeName: long},
		&TaskState{PID: 1, TID: 1, State: 'S'},
		&Proc{PID: 1, Container: 1, Monitor: true, Comm: "conmon"},
		&Note{Msg: "x"},
		&Container{Ref: 2, ID: "y"},
	})
}

// TestEncoderRefusesProcs: the encoder writes nothing the decoder would
// refuse, and a refused call leaves the stream usable.
func TestEncoderRefusesProcs(t *testing.T) {
	var buf bytes.Buffer
	e, err := NewEncoder(&buf, goldenHeader)
	if err != nil {
		t.Fatal(err)
	}
	for name, err := range map[string]error{
		"container ref 2":         e.WriteContainer(Container{Ref: 2, ID: "x"}),
		"container without id":    e.WriteContainer(Container{Ref: 1}),
		"container NUL":           e.WriteContainer(Container{Ref: 1, ID: "x", Name: "a\x00b"}),
		"proc pid 0":              e.WriteProc(Proc{}),
		"proc container 1":        e.WriteProc(Proc{PID: 1, Container: 1}),
		"proc monitor of nothing": e.WriteProc(Proc{PID: 1, Monitor: true}),
		"proc long cgroup":        e.WriteProc(Proc{PID: 1, Cgroup: strings.Repeat("c", MaxString)}),
		"proc long comm":          e.WriteProc(Proc{PID: 1, Comm: "0123456789abcdef"}),
	} {
		if err == nil {
			t.Errorf("%s: written", name)
		}
	}
	if err := e.WriteContainer(Container{Ref: 1, ID: "x"}); err != nil {
		t.Fatal(err)
	}
	if err := e.WriteProc(Proc{PID: 1, Container: 1}); err != nil {
		t.Fatal(err)
	}
	if err := e.WriteProc(Proc{PID: 1}); err == nil {
		t.Error("a second PS_PROC for pid 1 written")
	}
	if err := e.WriteTask(Task{PID: 2, TID: 2}); err == nil {
		t.Error("a task after the process records written")
	}
	if err := e.Close(); err != nil {
		t.Fatal(err)
	}
	if _, _, err := decodeAll(buf.Bytes()); err != nil {
		t.Fatalf("the stream after refused calls: %v", err)
	}
}
