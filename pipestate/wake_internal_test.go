package pipestate

import (
	"context"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"github.com/pipesnap/pipesnap/internal/pipetest"
	"github.com/pipesnap/pipesnap/pipemodel"
)

// openSampler opens a sampler of pids, closed when the test ends.
func openSampler(t *testing.T, pids []int) *Sampler {
	t.Helper()
	s, err := Open(Options{PIDs: pids})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { s.Close() })
	return s
}

func mustSample(t *testing.T, s *Sampler) *pipemodel.Sample {
	t.Helper()
	smp, err := s.Sample(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	return smp
}

// waiterKey is what a waiter says, without the entry's address.
type waiterKey struct {
	Queue, Kind string
	PID, TID    uint32
	Comm        string
	Outside     bool
}

func waiterKeys(t *testing.T, smp *pipemodel.Sample, ino uint64) []waiterKey {
	t.Helper()
	p := smp.Find(ino)
	if p == nil {
		t.Fatalf("pipe %d not in the sample", ino)
	}
	var out []waiterKey
	for _, w := range p.Waiters {
		out = append(out, waiterKey{string(w.Queue), string(w.Kind), w.PID, w.TID, w.Comm, w.Outside})
	}
	slices.SortFunc(out, func(a, b waiterKey) int {
		return strings.Compare(a.Queue+a.Kind, b.Queue+b.Kind)
	})
	return out
}

// knowingSampler is a sampler that has the wake functions from the start,
// as the program had them when they were __ksym externs.
func knowingSampler(t *testing.T, pids []int) *Sampler {
	t.Helper()
	s := openSampler(t, pids)
	w := readWakeFuncs()
	if w == (wakeFuncs{}) {
		t.Fatal("/proc/kallsyms gives no wake function: cannot compare with the program that has them")
	}
	if err := s.setWakeFuncs(w); err != nil {
		t.Fatal(err)
	}
	s.wake = wakeSet
	return s
}

// TestWakeFuncsNotNeeded: pipelines whose blocked tasks are threads of
// the walked processes are classified without reading kallsyms, however
// often they are sampled, and exactly as with the wake functions.
func TestWakeFuncsNotNeeded(t *testing.T) {
	pipetest.RequireBPF(t)
	for _, kind := range []string{"full", "empty", "own-writer", "chain", "thread-reader"} {
		t.Run(kind, func(t *testing.T) {
			pl := pipetest.StartStuck(t, kind)
			s := openSampler(t, pl.PIDs())
			var smp *pipemodel.Sample
			for range 3 {
				smp = mustSample(t, s)
			}
			if s.kallsymsReads != 0 || s.wake != wakeUnread {
				t.Fatalf("kallsyms read %d times (state %d), want never", s.kallsymsReads, s.wake)
			}
			ref := mustSample(t, knowingSampler(t, pl.PIDs()))
			blocked := 0
			for _, ino := range pl.Inos {
				got, want := waiterKeys(t, smp, ino), waiterKeys(t, ref, ino)
				if !slices.Equal(got, want) {
					t.Errorf("pipe %d waiters without kallsyms:\n got %+v\nwant %+v", ino, got, want)
				}
				for _, w := range got {
					if w.Kind != "blocked" || w.Outside {
						t.Errorf("pipe %d waiter %+v: want a blocked thread of a walked process", ino, w)
					}
					blocked++
				}
			}
			if blocked == 0 {
				t.Errorf("no blocked waiter in %s: the test proves nothing", kind)
			}
			if kind == "thread-reader" {
				r := pl.Stages["reader"]
				if w := smp.Find(pl.Ino()).Blocked("read"); len(w) != 1 || w[0].TID != uint32(r.TID) {
					t.Errorf("blocked readers %+v, want thread %d of %d", w, r.TID, r.PID)
				}
			}
		})
	}
}

// sampleAfterKallsyms samples three times: each sample must give pipe
// ino's waiters as want, with kallsyms read once in all.
func sampleAfterKallsyms(t *testing.T, s *Sampler, ino uint64, want []waiterKey) {
	t.Helper()
	for range 3 {
		smp := mustSample(t, s)
		if got := waiterKeys(t, smp, ino); !slices.Equal(got, want) {
			t.Errorf("waiters:\n got %+v\nwant %+v", got, want)
		}
		if s.kallsymsReads != 1 || s.wake != wakeSet {
			t.Errorf("kallsyms read %d times (state %d), want once and set", s.kallsymsReads, s.wake)
		}
	}
}

// TestWakeFuncsNeeded: a poller, an epoll watcher and a sleeper in a
// process outside the walk are only told apart with the wake functions:
// the first walk leaves them "other", the Sampler reads kallsyms once and
// walks again, and samples after that need no second read.
func TestWakeFuncsNeeded(t *testing.T) {
	pipetest.RequireBPF(t)
	t.Run("poller", func(t *testing.T) {
		pl := pipetest.StartStuck(t, "poller")
		reader := pl.Stages["reader"]
		s := openSampler(t, pl.PIDs())
		first, err := s.sample(context.Background())
		if err != nil {
			t.Fatal(err)
		}
		if !unexplained(first) {
			t.Fatalf("waiters %+v without the wake functions: want them unexplained", first.Find(pl.Ino()).Waiters)
		}
		sampleAfterKallsyms(t, s, pl.Ino(), []waiterKey{
			{Queue: "read", Kind: "epoll"},
			{Queue: "read", Kind: "poll", PID: uint32(reader.PID), TID: uint32(reader.TID), Comm: reader.Comm},
		})
	})
	t.Run("outside", func(t *testing.T) {
		pl := pipetest.StartStuck(t, "empty")
		reader := pl.PID("reader")
		// The walk for the other end of the pipe finds the reader and
		// matches its thread there: no kallsyms needed, and the task is
		// still outside the walked processes.
		s := openSampler(t, []int{pl.PID("writer")})
		want := []waiterKey{{Queue: "read", Kind: "blocked", PID: uint32(reader), TID: uint32(reader), Comm: "cat", Outside: true}}
		if got := waiterKeys(t, mustSample(t, s), pl.Ino()); !slices.Equal(got, want) {
			t.Errorf("waiters:\n got %+v\nwant %+v", got, want)
		}
		if s.kallsymsReads != 0 {
			t.Errorf("kallsyms read %d times, want none", s.kallsymsReads)
		}
	})
	t.Run("hidden", func(t *testing.T) {
		// kallsyms with hidden addresses (kptr_restrict): read once, then
		// never again, and the waiters stay "other".
		pl := pipetest.StartStuck(t, "poller")
		hidden := filepath.Join(t.TempDir(), "kallsyms")
		body := "0000000000000000 T _text\n0000000000000000 T default_wake_function\n" +
			"0000000000000000 T autoremove_wake_function\n0000000000000000 t pollwake\n"
		if err := os.WriteFile(hidden, []byte(body), 0o600); err != nil {
			t.Fatal(err)
		}
		defer func(p string) { kallsymsPath = p }(kallsymsPath)
		kallsymsPath = hidden
		s := openSampler(t, pl.PIDs())
		for range 3 {
			smp := mustSample(t, s)
			if !unexplained(smp) {
				t.Errorf("waiters %+v: want them unexplained", smp.Find(pl.Ino()).Waiters)
			}
		}
		if s.kallsymsReads != 1 || s.wake != wakeUnavailable {
			t.Errorf("kallsyms read %d times (state %d), want once and unavailable", s.kallsymsReads, s.wake)
		}
	})
}

func TestParseWakeFuncs(t *testing.T) {
	for _, tc := range []struct {
		name, in string
		want     wakeFuncs
	}{
		{"all", "ffffffff81000000 T _text\n" +
			"ffffffff813a8d70 T default_wake_function\n" +
			"ffffffff813a8d80 D woken_wake_function\n" + // not a function
			"ffffffff813cf0d0 T woken_wake_function\n" +
			"ffffffff813d2580 T autoremove_wake_function\n" +
			"ffffffff816d8f00 t pollwake\n" +
			"ffffffff816d8f10 t pollwake\n" + // the first one counts
			"ffffffff8172fab0 t ep_poll_callback", // no newline at the end
			wakeFuncs{0xffffffff813d2580, 0xffffffff813a8d70, 0xffffffff813cf0d0, 0xffffffff816d8f00, 0xffffffff8172fab0, 0}},
		{"hidden", "0000000000000000 T _text\n0000000000000000 T autoremove_wake_function\n", wakeFuncs{}},
		{"modules", "ffffffff813d2580 T autoremove_wake_function\n" +
			"ffffffffc0000000 t pollwake\t[mod]\n" +
			"ffffffff816d8f00 t pollwake\n",
			wakeFuncs{autoremove: 0xffffffff813d2580}},
		{"empty", "", wakeFuncs{}},
	} {
		got, err := parseWakeFuncs(strings.NewReader(tc.in))
		if err != nil || got != tc.want {
			t.Errorf("%s: got %+v, %v; want %+v", tc.name, got, err, tc.want)
		}
	}
}

// TestAddWaiterKeepsTheBest: records of different processes see one wait
// queue entry; whatever their order, the waiter is what the best-informed
// said (a thread matched in its own process over a task seen from
// outside, over an entry no record could explain).
func TestAddWaiterKeepsTheBest(t *testing.T) {
	other := pipemodel.Waiter{Queue: "read", Kind: "other", Entry: 1}
	outside := pipemodel.Waiter{Queue: "read", Kind: "blocked", PID: 7, TID: 8, Outside: true, Entry: 1}
	thread := pipemodel.Waiter{Queue: "read", Kind: "blocked", PID: 7, TID: 8, Entry: 1}
	for _, order := range [][]pipemodel.Waiter{
		{other, thread}, {thread, other}, {outside, thread}, {thread, outside},
		{other, outside, thread}, {thread, outside, other},
	} {
		var p pipemodel.Pipe
		for _, w := range order {
			addWaiter(&p, w)
		}
		if len(p.Waiters) != 1 || p.Waiters[0] != thread {
			t.Errorf("%+v merged into %+v, want %+v", order, p.Waiters, thread)
		}
	}
	var p pipemodel.Pipe
	addWaiter(&p, other)
	addWaiter(&p, outside)
	if len(p.Waiters) != 1 || p.Waiters[0] != outside {
		t.Errorf("other then outside merged into %+v, want %+v", p.Waiters, outside)
	}
}

// BenchmarkReadWakeFuncs measures what a Sampler pays, once, when a walk
// leaves a waiter unexplained.
func BenchmarkReadWakeFuncs(b *testing.B) {
	pipetest.RequireBPF(b)
	for b.Loop() {
		if readWakeFuncs() == (wakeFuncs{}) {
			b.Fatal("no wake function in kallsyms")
		}
	}
}
