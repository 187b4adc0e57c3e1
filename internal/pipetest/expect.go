package pipetest

import (
	"bytes"
	"fmt"
	"os"
	"slices"
	"testing"

	"golang.org/x/sys/unix"

	"github.com/pipesnap/pipesnap/format"
)

// RequireBPF skips where BPF cannot run, except under CI, where a skip
// would hide that the BPF path never ran. Where BPF runs, it makes the
// test wait for the BPF tests of other packages (see lockBPF).
func RequireBPF(t testing.TB) {
	t.Helper()
	why := ""
	if os.Geteuid() != 0 {
		why = "needs root"
	} else if _, err := os.Stat("/sys/kernel/btf/vmlinux"); err != nil {
		why = "needs kernel BTF"
	}
	if why == "" {
		lockBPF(t)
		return
	}
	if os.Getenv("CI") != "" {
		t.Fatalf("%s, and CI is set: the BPF tests must run", why)
	}
	t.Skip(why)
}

// Want is what a kind's pipe holds and looks like.
type Want struct {
	Data             []byte
	BufLens          []int // one per buffer (packets, merges); nil: not checked
	FirstOffset      int
	Readers, Writers uint32
	FDs, Procs       int // fds holding the pipe, in how many processes
	Kind             format.Kind
	Capacity         uint32
	MinHead          uint32
	Packet           bool
}

// Expected returns what the holder of kind sets up.
func Expected(kind string) Want {
	w := Want{Readers: 1, Writers: 1, FDs: 2, Procs: 1, Kind: format.KindPipe, Capacity: 65536}
	switch kind {
	case "few":
		w.Data = []byte("hello, pipe\n")
	case "full":
		w.Data = Pattern(3, 65536)
	case "merged":
		w.Data, w.BufLens = Pattern(4, 1000), []int{1000}
	case "packet":
		all := Pattern(5, 1<<16)
		off := 0
		for _, n := range PacketSizes {
			w.Data = append(w.Data, all[off:off+n]...)
			off += n
		}
		w.BufLens, w.Packet = PacketSizes, true
	case "big":
		w.Data, w.Capacity = Pattern(6, 1<<20), 1<<20
	case "spliced":
		w.Data, w.FirstOffset = Pattern(7, 3*4096)[100:5100], 100
	case "vmspliced":
		w.Data = Pattern(8, 2*4096)
	case "shared":
		w.Data, w.FDs, w.Procs = Pattern(9, 5000), 4, 2
	case "writer-closed":
		w.Data, w.Writers, w.FDs = Pattern(10, 3000), 0, 1
	case "split-ends":
		w.Data, w.Procs = Pattern(11, 2000), 2
	case "fifo":
		w.Data, w.Kind, w.Writers = Pattern(12, 777), format.KindFIFO, 2
	case "partly-read":
		w.Data, w.FirstOffset = Pattern(13, 10000)[3000:], 3000
	case "wrapped":
		w.Data, w.Capacity, w.MinHead = Pattern(14, 5000), 4*4096, 1000
	}
	return w
}

// GrabReadEnd duplicates a holder's read end into the test (pidfd_getfd):
// the same open file, so FIONREAD and reads see the holder's pipe.
func GrabReadEnd(t testing.TB, h *Holder) int {
	t.Helper()
	pidfd, err := unix.PidfdOpen(h.Rep.ReadPID, 0)
	if err != nil {
		t.Fatalf("pidfd_open %d: %v", h.Rep.ReadPID, err)
	}
	defer unix.Close(pidfd)
	fd, err := unix.PidfdGetfd(pidfd, h.Rep.ReadFD, 0)
	if err != nil {
		t.Fatalf("pidfd_getfd: %v", err)
	}
	t.Cleanup(func() { unix.Close(fd) })
	return fd
}

// Queued is FIONREAD: the bytes a pipe holds.
func Queued(t testing.TB, fd int) int {
	t.Helper()
	n, err := unix.IoctlGetInt(fd, unix.TIOCINQ) // FIONREAD
	if err != nil {
		t.Fatalf("FIONREAD: %v", err)
	}
	return n
}

// ReadBack reads a pipe out and checks it held exactly w.Data, in the
// same packets where w.BufLens says so, and nothing more.
func ReadBack(t testing.TB, fd int, w Want) {
	t.Helper()
	var got []byte
	var lens []int
	buf := make([]byte, 1<<20)
	for len(got) < len(w.Data) {
		n, err := unix.Read(fd, buf)
		if err != nil || n == 0 {
			t.Fatalf("reading back after %d bytes: %d, %v", len(got), n, err)
		}
		got = append(got, buf[:n]...)
		lens = append(lens, n)
	}
	if !bytes.Equal(got, w.Data) {
		t.Errorf("pipe holds different bytes; first difference at %d", FirstDiff(got, w.Data))
	}
	if w.BufLens != nil && !slices.Equal(lens, w.BufLens) {
		t.Errorf("read back in pieces %v, want %v", lens, w.BufLens)
	}
	if n := Queued(t, fd); n != 0 {
		t.Errorf("%d bytes left after reading back what was expected", n)
	}
}

// FirstDiff is the index of the first byte where a and b differ.
func FirstDiff(a, b []byte) int {
	for i := range min(len(a), len(b)) {
		if a[i] != b[i] {
			return i
		}
	}
	return min(len(a), len(b))
}

// CheckUntouched checks a pipe a dump went over: it held w's bytes before
// (FIONREAD then), holds as many after, and reads back exactly w.
func CheckUntouched(t testing.TB, fd, before int, w Want) {
	t.Helper()
	if before != len(w.Data) {
		t.Errorf("FIONREAD before the dump %d, want %d", before, len(w.Data))
	}
	if n := Queued(t, fd); n != before {
		t.Errorf("FIONREAD after the dump %d, before %d", n, before)
	}
	ReadBack(t, fd, w)
}

// EachOnce checks that no inode appears twice among a snapshot's pipes:
// a pipe is copied once whatever number of fds and processes hold it.
func EachOnce(t testing.TB, inos []uint64) {
	t.Helper()
	seen := map[uint64]bool{}
	for _, ino := range inos {
		if seen[ino] {
			t.Errorf("pipe %d appears twice", ino)
		}
		seen[ino] = true
	}
}

// OpenFDs counts this process's open fds, to check a test left none.
func OpenFDs(t testing.TB) int {
	t.Helper()
	ents, err := os.ReadDir("/proc/self/fd")
	if err != nil {
		t.Fatal(err)
	}
	return len(ents)
}

// Stopped tells whether process pid is in the stopped state (T).
func Stopped(t testing.TB, pid int) bool {
	t.Helper()
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		t.Fatal(err)
	}
	i := bytes.LastIndexByte(b, ')')
	return i+2 < len(b) && b[i+2] == 'T'
}
