package pipestate_test

import (
	"context"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/pipesnap/pipesnap/internal/pipetest"
	"github.com/pipesnap/pipesnap/pipemodel"
	"github.com/pipesnap/pipesnap/pipestate"
)

// start runs name with args, stdin and stdout as given and extra files
// from fd 3 on; the process is killed when the test ends.
func start(t *testing.T, stdin, stdout *os.File, name string, args ...string) int {
	t.Helper()
	cmd := exec.Command(name, args...)
	cmd.Stdin, cmd.Stdout = stdin, stdout
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		cmd.Process.Kill()
		cmd.Wait()
	})
	return cmd.Process.Pid
}

// pipe2 is a pipe whose ends block (os.Pipe's do not, and children
// would inherit that): packet mode when direct.
func pipe2(t *testing.T, direct bool) (r, w *os.File) {
	t.Helper()
	var fds [2]int
	flags := syscall.O_CLOEXEC
	if direct {
		flags |= syscall.O_DIRECT
	}
	if err := syscall.Pipe2(fds[:], flags); err != nil {
		t.Fatal(err)
	}
	return os.NewFile(uintptr(fds[0]), "r"), os.NewFile(uintptr(fds[1]), "w")
}

func inoOf(t *testing.T, f *os.File) uint64 {
	t.Helper()
	fi, err := f.Stat()
	if err != nil {
		t.Fatal(err)
	}
	return fi.Sys().(*syscall.Stat_t).Ino
}

// sampleUntil samples pids until ok says the pipe is as wanted, or fails.
func sampleUntil(t *testing.T, opts pipestate.Options, ino uint64, ok func(*pipemodel.Pipe) bool) *pipemodel.Pipe {
	t.Helper()
	s, err := pipestate.Open(opts)
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	var p *pipemodel.Pipe
	for deadline := time.Now().Add(10 * time.Second); ; {
		smp, err := s.Sample(context.Background())
		if err != nil {
			t.Fatal(err)
		}
		if p = smp.Find(ino); p != nil && ok(p) || time.Now().After(deadline) {
			break
		}
		time.Sleep(20 * time.Millisecond)
	}
	if p == nil {
		t.Fatalf("pipe %d not in the sample", ino)
	}
	return p
}

// TestManyWaiters: readers blocked on one pipe, one process each, are
// each matched to their process; beyond the waiters a record carries, the
// pipe is marked truncated.
func TestManyWaiters(t *testing.T) {
	pipetest.RequireBPF(t)
	for _, n := range []int{5, 20} {
		r, w := pipe2(t, false)
		defer w.Close()
		var pids []int
		for range n {
			pids = append(pids, start(t, r, nil, "head", "-c", "1"))
		}
		r.Close()
		want := min(n, 16)
		p := sampleUntil(t, pipestate.Options{PIDs: pids}, inoOf(t, w), func(p *pipemodel.Pipe) bool {
			return len(p.Blocked(pipemodel.QueueRead)) >= want
		})
		got := blockedPIDs(p, pipemodel.QueueRead)
		if len(got) != want || len(p.Holders) != n || p.Truncated != (n > 16) || p.Writers != 1 || p.UnseenWriters != 1 {
			t.Errorf("%d readers: blocked %v, %d holders, truncated %v, writers %d (unseen %d); want %d blocked, %d holders, truncated %v, 1 unseen writer",
				n, got, len(p.Holders), p.Truncated, p.Writers, p.UnseenWriters, want, n, n > 16)
		}
		for _, pid := range got {
			if !slices.Contains(pids, pid) {
				t.Errorf("blocked pid %d is none of the readers %v", pid, pids)
			}
		}
		for _, h := range p.Holders {
			if h.FD != 0 || h.End != pipemodel.EndRead || h.Comm != "head" {
				t.Errorf("holder %+v: want head's fd 0, read end", h)
			}
		}
	}
}

// TestSamePipeManyFDs: a pipe held at several fds of one process (whose
// later fds are bare records) and by another process has one state and
// every holder.
func TestSamePipeManyFDs(t *testing.T) {
	pipetest.RequireBPF(t)
	r, w := pipe2(t, true) // packet mode: a buffer per write
	defer r.Close()
	defer w.Close()
	for _, s := range []string{"three buffers: one, ", "two, ", "three"} {
		if _, err := w.Write([]byte(s)); err != nil {
			t.Fatal(err)
		}
	}
	// fds 0, 3, 4 the read end, 1 and 5 the write end
	a := start(t, r, w, "sh", "-c", "exec 3<&0 4<&0 5>&1; exec sleep 1000")
	b := start(t, r, nil, "sleep", "1000")
	ino := inoOf(t, r)
	p := sampleUntil(t, pipestate.Options{PIDs: []int{a, b}}, ino, func(p *pipemodel.Pipe) bool {
		return len(p.Holders) == 6 && !slices.ContainsFunc(p.Holders, func(h pipemodel.Holder) bool { return h.Comm != "sleep" })
	})
	checkHolders(t, p,
		holder{a, 0, "read", ""}, holder{a, 1, "write", ""}, holder{a, 3, "read", ""},
		holder{a, 4, "read", ""}, holder{a, 5, "write", ""}, holder{b, 0, "read", ""})
	if p.Bytes != 30 || p.Bufs != 3 || len(p.Slots) != 3 || p.Slots[1].Len != 5 || p.Readers != 1 || p.Writers != 1 {
		t.Errorf("pipe %+v: want 30 bytes in 3 buffers, one open file of each end", p)
	}
}

// TestFIFOPath: a FIFO's path, long or short, from bpf_d_path or, without
// it, from /proc.
func TestFIFOPath(t *testing.T) {
	pipetest.RequireBPF(t)
	dir := t.TempDir()
	long := filepath.Join(dir, strings.Repeat("d", 100), strings.Repeat("f", 250-len(dir)-102))
	if err := os.MkdirAll(filepath.Dir(long), 0o700); err != nil {
		t.Fatal(err)
	}
	for _, path := range []string{filepath.Join(dir, "fifo"), long} {
		if err := syscall.Mkfifo(path, 0o600); err != nil {
			t.Fatal(err)
		}
		f, err := os.OpenFile(path, os.O_RDWR, 0)
		if err != nil {
			t.Fatal(err)
		}
		defer f.Close()
		pid := start(t, f, f, "sleep", "1000")
		p := sampleUntil(t, pipestate.Options{PIDs: []int{pid}}, inoOf(t, f), func(p *pipemodel.Pipe) bool {
			return len(p.Holders) == 2 && p.Holders[0].Comm == "sleep"
		})
		if p.Kind != "fifo" || p.Path != path {
			t.Errorf("pipe %d: kind %q, path %q; want fifo at %q (%d bytes)", p.Ino, p.Kind, p.Path, path, len(path))
		}
	}
}
