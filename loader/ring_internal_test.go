package loader

import (
	"bytes"
	"errors"
	"slices"
	"testing"
	"unsafe"
)

// fakeRing hands out records as the mapped ring does: in place, valid
// until released. A record released is overwritten, as the program
// would, so that a slice kept past its release shows.
type fakeRing struct {
	recs  [][]byte
	taken int // records taken and not released: recs[:taken]
}

func (f *fakeRing) peek() ([]byte, error) {
	if f.taken == len(f.recs) {
		return nil, nil
	}
	return f.recs[f.taken], nil
}

func (f *fakeRing) take() {
	if f.taken < len(f.recs) {
		f.taken++
	}
}

func (f *fakeRing) release() {
	for _, r := range f.recs[:f.taken] {
		for i := range r {
			r[i] = 0xaa
		}
	}
	f.recs = f.recs[f.taken:]
	f.taken = 0
}

func (f *fakeRing) pos() uint64 { return uint64(f.taken) }
func (f *fakeRing) gen() uint64 { return 0 } // never moves

func (f *fakeRing) at(uint64, int) ([]byte, error) {
	return nil, errors.New("the fake ring never moves")
}

func (f *fakeRing) Close() error { return nil }

func rawOf[T any](v *T, n int) []byte {
	return bytes.Clone(unsafe.Slice((*byte)(unsafe.Pointer(v)), unsafe.Sizeof(*v))[:n])
}

func bufRec(ino uint64, attempt, index uint32, data string, fault int64) []byte {
	b := pipesPsBuf{Type: ringBuf, Index: index, Len: uint32(len(data)), Attempt: attempt, Ino: ino, Fault: fault}
	copy(b.Data[:], data)
	return rawOf(&b, int(unsafe.Sizeof(b))) // reserved whole, as the program does
}

func pipeRec(ino uint64, attempts, nbufs uint32) []byte {
	p := pipesPsPipe{Type: ringPipe, Ino: ino, Attempts: attempts, Nbufs: nbufs}
	return rawOf(&p, pipeHdrSize+1)
}

func fakeIter(recs ...[]byte) (*pipeIter, *[]uint64) {
	var forgot []uint64
	it := &pipeIter{ring: &fakeRing{recs: recs}}
	it.forget = func(ino uint64) error { forgot = append(forgot, ino); return nil }
	return it, &forgot
}

func datas(p *capturedPipe) []string {
	var out []string
	for _, b := range p.bufs {
		out = append(out, string(b.data))
	}
	return out
}

// TestTakePipeProtocol: what the loader keeps of the ring records the
// program writes, without BPF: the attempt the ps_pipe names, no faulted
// page, and records of pipes nobody will ask for dropped and forgotten.
func TestTakePipeProtocol(t *testing.T) {
	none := func(uint64) bool { return false }
	t.Run("attempts", func(t *testing.T) {
		it, _ := fakeIter(bufRec(7, 1, 0, "old", 0), bufRec(7, 1, 1, "moved", 0),
			bufRec(7, 2, 0, "new", 0), bufRec(7, 2, 1, "bytes", 0), pipeRec(7, 2, 2))
		p, err := it.takePipe(7, true, none)
		if err != nil || p == nil || p.lost || !slices.Equal(datas(p), []string{"new", "bytes"}) {
			t.Fatalf("got %+v, %v; want the bufs of attempt 2", p, err)
		}
	})
	t.Run("verdict names an attempt without bufs", func(t *testing.T) {
		it, _ := fakeIter(bufRec(7, 1, 0, "moved", 0), pipeRec(7, 2, 0))
		p, err := it.takePipe(7, true, none)
		if err != nil || p == nil || p.lost || len(p.bufs) != 0 {
			t.Fatalf("got %+v, %v; want an empty pipe", p, err)
		}
	})
	t.Run("fault", func(t *testing.T) {
		it, _ := fakeIter(bufRec(7, 1, 0, "ok", 0), bufRec(7, 1, 1, "garbage", -14), pipeRec(7, 1, 1))
		p, err := it.takePipe(7, true, none)
		if err != nil || p == nil || p.lost || !slices.Equal(datas(p), []string{"ok"}) {
			t.Fatalf("got %+v, %v; want the page before the fault", p, err)
		}
	})
	t.Run("missing bufs", func(t *testing.T) {
		it, _ := fakeIter(bufRec(7, 1, 0, "one", 0), pipeRec(7, 1, 2))
		p, err := it.takePipe(7, true, none)
		if err != nil || p == nil || !p.lost {
			t.Fatalf("got %+v, %v; want lost", p, err)
		}
	})
	t.Run("orphan ahead", func(t *testing.T) {
		// Pipe 5 was copied for an element whose fd record never came;
		// pipe 7's fd record (first) comes with 7's records behind it.
		it, forgot := fakeIter(bufRec(5, 1, 0, "orphan", 0), pipeRec(5, 1, 1),
			bufRec(7, 1, 0, "mine", 0), pipeRec(7, 1, 1), bufRec(9, 1, 0, "next", 0), pipeRec(9, 1, 1))
		p, err := it.takePipe(7, true, none)
		if err != nil || p == nil || !slices.Equal(datas(p), []string{"mine"}) {
			t.Fatalf("got %+v, %v; want pipe 7's bytes", p, err)
		}
		if !slices.Equal(*forgot, []uint64{5, 5}) {
			t.Errorf("forgot %v, want pipe 5 (for each of its records)", *forgot)
		}
		// Pipe 9's records stay for its own fd record.
		if p, err := it.takePipe(9, true, none); err != nil || p == nil || !slices.Equal(datas(p), []string{"next"}) {
			t.Fatalf("pipe 9: got %+v, %v", p, err)
		}
	})
	t.Run("not first: left for its own fd", func(t *testing.T) {
		it, forgot := fakeIter(bufRec(5, 1, 0, "other", 0), pipeRec(5, 1, 1))
		if p, err := it.takePipe(7, false, none); p != nil || err != nil {
			t.Fatalf("got %+v, %v; want nothing", p, err)
		}
		if len(*forgot) != 0 {
			t.Errorf("forgot %v, want nothing", *forgot)
		}
		if p, err := it.takePipe(5, false, none); err != nil || p == nil || !slices.Equal(datas(p), []string{"other"}) {
			t.Fatalf("pipe 5 after being left: got %+v, %v", p, err)
		}
	})
	t.Run("drain", func(t *testing.T) {
		it, forgot := fakeIter(bufRec(5, 1, 0, "a", 0), pipeRec(5, 1, 1), pipeRec(6, 1, 0))
		it.taken = func(ino uint64) bool { return ino == 6 }
		if err := it.dropOrphans(); err != nil {
			t.Fatal(err)
		}
		if !slices.Equal(*forgot, []uint64{5, 5}) {
			t.Errorf("forgot %v, want pipe 5 only (6 was written)", *forgot)
		}
		if raw, _ := it.ring.peek(); raw != nil {
			t.Errorf("ring not empty after the drain")
		}
	})
}
