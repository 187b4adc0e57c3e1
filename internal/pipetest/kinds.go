package pipetest

import (
	"slices"
	"testing"
)

// KindHolders are holders of every kind of Kinds, for a dump of all at
// once, each with its read end taken and what it held before the dump.
type KindHolders struct {
	Holders  map[string]*Holder
	PIDs     []int // every holder process
	readEnds map[string]int
	before   map[string]int // FIONREAD before the dump
}

// StartKinds starts a holder of every kind.
func StartKinds(t testing.TB) *KindHolders {
	t.Helper()
	k := &KindHolders{Holders: map[string]*Holder{}, readEnds: map[string]int{}, before: map[string]int{}}
	for _, kind := range Kinds {
		h := StartHolder(t, kind)
		k.Holders[kind] = h
		k.PIDs = append(k.PIDs, h.Rep.PIDs...)
		k.readEnds[kind] = GrabReadEnd(t, h)
		k.before[kind] = Queued(t, k.readEnds[kind])
	}
	return k
}

// CheckKinds checks a dump of k given the snapshot's pipes (generic: the
// snapshot package's tests import this one): each pipe is there once,
// then, in a subtest per kind, check runs on the kind's pipe, which must
// still hold what it held (CheckUntouched).
func CheckKinds[P any](t *testing.T, k *KindHolders, pipes []P, ino func(P) uint64, check func(*testing.T, P, *Holder, Want)) {
	t.Helper()
	var inos []uint64 // the holders' stdio pipes are in the snapshot too
	for _, p := range pipes {
		inos = append(inos, ino(p))
	}
	EachOnce(t, inos)
	for _, kind := range Kinds {
		t.Run(kind, func(t *testing.T) {
			h, w := k.Holders[kind], Expected(kind)
			i := slices.Index(inos, h.Rep.Ino)
			if i < 0 {
				t.Fatalf("pipe %d not in the snapshot", h.Rep.Ino)
			}
			check(t, pipes[i], h, w)
			CheckUntouched(t, k.readEnds[kind], k.before[kind], w)
		})
	}
}

// CheckHolders checks who holds a kind's pipe: processes of h only, as
// many fds and processes as w says. pid gives a holder's process.
func CheckHolders[H any](t testing.TB, h *Holder, w Want, holders []H, pid func(H) uint32) {
	t.Helper()
	procs := map[uint32]bool{}
	for _, hd := range holders {
		procs[pid(hd)] = true
		if !slices.Contains(h.Rep.PIDs, int(pid(hd))) {
			t.Errorf("holder pid %d is not one of the holder processes %v", pid(hd), h.Rep.PIDs)
		}
	}
	if len(holders) != w.FDs || len(procs) != w.Procs {
		t.Errorf("%d holders in %d processes, want %d in %d: %+v", len(holders), len(procs), w.FDs, w.Procs, holders)
	}
}
