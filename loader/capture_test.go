package loader_test

import (
	"bytes"
	"context"
	"os"
	"slices"
	"testing"

	"golang.org/x/sys/unix"

	"github.com/pipesnap/pipesnap/format"
	"github.com/pipesnap/pipesnap/loader"
	"github.com/pipesnap/pipesnap/snapshot"
)

// requireBPF skips where BPF cannot run, except under CI, where a skip
// would hide that the BPF path never ran.
func requireBPF(t *testing.T) {
	t.Helper()
	why := ""
	if os.Geteuid() != 0 {
		why = "needs root"
	} else if _, err := os.Stat("/sys/kernel/btf/vmlinux"); err != nil {
		why = "needs kernel BTF"
	}
	if why == "" {
		return
	}
	if os.Getenv("CI") != "" {
		t.Fatalf("%s, and CI is set: the BPF tests must run", why)
	}
	t.Skip(why)
}

// want is what a kind's pipe must look like in the snapshot.
type want struct {
	data             []byte
	bufLens          []int // nil: not checked
	firstOffset      int
	readers, writers uint32
	fds, procs       int
	kind             format.Kind
	capacity         uint32
	minHead          uint32
}

func expected(kind string) want {
	w := want{readers: 1, writers: 1, fds: 2, procs: 1, kind: format.KindPipe, capacity: 65536}
	switch kind {
	case "few":
		w.data = []byte("hello, pipe\n")
	case "full":
		w.data = pattern(3, 65536)
	case "merged":
		w.data, w.bufLens = pattern(4, 1000), []int{1000}
	case "packet":
		all := pattern(5, 1<<16)
		off := 0
		for _, n := range packetSizes {
			w.data = append(w.data, all[off:off+n]...)
			off += n
		}
		w.bufLens = packetSizes
	case "big":
		w.data, w.capacity = pattern(6, 1<<20), 1<<20
	case "spliced":
		w.data, w.firstOffset = pattern(7, 3*4096)[100:5100], 100
	case "vmspliced":
		w.data = pattern(8, 2*4096)
	case "shared":
		w.data, w.fds, w.procs = pattern(9, 5000), 4, 2
	case "writer-closed":
		w.data, w.writers, w.fds = pattern(10, 3000), 0, 1
	case "split-ends":
		w.data, w.procs = pattern(11, 2000), 2
	case "fifo":
		w.data, w.kind, w.writers = pattern(12, 777), format.KindFIFO, 2
	case "partly-read":
		w.data, w.firstOffset = pattern(13, 10000)[3000:], 3000
	case "wrapped":
		w.data, w.capacity, w.minHead = pattern(14, 5000), 4*4096, 1000
	}
	return w
}

// grabReadEnd duplicates a holder's read end into the test (pidfd_getfd):
// the same open file, so FIONREAD and reads see the holder's pipe.
func grabReadEnd(t *testing.T, h *holder) int {
	t.Helper()
	pidfd, err := unix.PidfdOpen(h.rep.ReadPID, 0)
	if err != nil {
		t.Fatalf("pidfd_open %d: %v", h.rep.ReadPID, err)
	}
	defer unix.Close(pidfd)
	fd, err := unix.PidfdGetfd(pidfd, h.rep.ReadFD, 0)
	if err != nil {
		t.Fatalf("pidfd_getfd: %v", err)
	}
	t.Cleanup(func() { unix.Close(fd) })
	return fd
}

func queued(t *testing.T, fd int) int {
	t.Helper()
	n, err := unix.IoctlGetInt(fd, unix.TIOCINQ) // FIONREAD
	if err != nil {
		t.Fatalf("FIONREAD: %v", err)
	}
	return n
}

// TestDumpKinds dumps the 14 kinds of pipe state at once and checks each
// byte for byte, then checks that the pipes still hold exactly what they
// held: the dump consumed nothing.
func TestDumpKinds(t *testing.T) {
	requireBPF(t)
	holders := map[string]*holder{}
	readEnds := map[string]int{}
	before := map[string]int{}
	var pids []int
	for _, kind := range holderKinds {
		h := startHolder(t, kind)
		holders[kind] = h
		pids = append(pids, h.rep.PIDs...)
		readEnds[kind] = grabReadEnd(t, h)
		before[kind] = queued(t, readEnds[kind])
	}

	var buf bytes.Buffer
	report, err := loader.Dump(context.Background(), &buf, loader.Options{PIDs: pids})
	if err != nil {
		t.Fatalf("dump: %v", err)
	}
	if len(report.Problems) > 0 {
		t.Errorf("problems in a quiet capture: %v", report.Problems)
	}
	snap, err := snapshot.Read(bytes.NewReader(buf.Bytes()), snapshot.Options{Data: true})
	if err != nil {
		t.Fatalf("reading the snapshot back: %v", err)
	}
	// Each pipe once, whatever number of fds and processes hold it (the
	// holders' stdio pipes are in the snapshot too).
	inos := map[uint64]bool{}
	for _, p := range snap.Pipes {
		if inos[p.Ino] {
			t.Errorf("pipe %d appears twice", p.Ino)
		}
		inos[p.Ino] = true
	}

	for _, kind := range holderKinds {
		t.Run(kind, func(t *testing.T) {
			h, w := holders[kind], expected(kind)
			p, err := snap.Find(h.rep.Ino)
			if err != nil {
				t.Fatal(err)
			}
			checkPipe(t, p, h, w)
			checkUntouched(t, readEnds[kind], before[kind], w)
		})
	}
}

func checkPipe(t *testing.T, p *snapshot.Pipe, h *holder, w want) {
	t.Helper()
	if !p.Complete() || p.Status&format.StatusTorn != 0 {
		t.Errorf("status %#x (%s), want complete", p.Status, p.Reason)
	}
	if got := p.Data(); !bytes.Equal(got, w.data) {
		t.Errorf("captured %d bytes, want %d; first difference at %d", len(got), len(w.data), firstDiff(got, w.data))
	}
	if p.Bytes != uint64(len(w.data)) {
		t.Errorf("bytes = %d, want %d", p.Bytes, len(w.data))
	}
	if w.bufLens != nil {
		var lens []int
		for _, b := range p.Buffers {
			lens = append(lens, int(b.Len))
		}
		if !slices.Equal(lens, w.bufLens) {
			t.Errorf("buffer lengths %v, want %v", lens, w.bufLens)
		}
	}
	if len(p.Buffers) > 0 && int(p.Buffers[0].Offset) != w.firstOffset {
		t.Errorf("first buffer offset %d, want %d", p.Buffers[0].Offset, w.firstOffset)
	}
	if p.Readers != w.readers || p.Writers != w.writers {
		t.Errorf("readers/writers %d/%d, want %d/%d", p.Readers, p.Writers, w.readers, w.writers)
	}
	if p.Kind != w.kind {
		t.Errorf("kind %v, want %v", p.Kind, w.kind)
	}
	if h.rep.Path != "" && p.Path != h.rep.Path {
		t.Errorf("path %q, want %q", p.Path, h.rep.Path)
	}
	if p.Capacity != w.capacity {
		t.Errorf("capacity %d, want %d", p.Capacity, w.capacity)
	}
	if p.Head < w.minHead || p.Head-p.Tail != uint32(len(p.Buffers)) {
		t.Errorf("head %d tail %d with %d buffers, want head >= %d", p.Head, p.Tail, len(p.Buffers), w.minHead)
	}
	procs := map[uint32]bool{}
	for _, hd := range p.Holders {
		procs[hd.PID] = true
		if !slices.Contains(h.rep.PIDs, int(hd.PID)) {
			t.Errorf("holder pid %d is not one of the holder processes %v", hd.PID, h.rep.PIDs)
		}
	}
	if len(p.Holders) != w.fds || len(procs) != w.procs {
		t.Errorf("%d holders in %d processes, want %d in %d: %+v", len(p.Holders), len(procs), w.fds, w.procs, p.Holders)
	}
	if p.Status&format.StatusPacket != 0 != (w.bufLens != nil && h.kind == "packet") {
		t.Errorf("packet flag %v for %s", p.Status&format.StatusPacket != 0, h.kind)
	}
}

// checkUntouched reads the pipe out after the dump: it must still hold
// the same bytes, in the same packets.
func checkUntouched(t *testing.T, fd, before int, w want) {
	t.Helper()
	if before != len(w.data) {
		t.Errorf("FIONREAD before the dump %d, want %d", before, len(w.data))
	}
	if n := queued(t, fd); n != before {
		t.Errorf("FIONREAD after the dump %d, before %d", n, before)
	}
	var got []byte
	var lens []int
	buf := make([]byte, 1<<20)
	for len(got) < len(w.data) {
		n, err := unix.Read(fd, buf)
		if err != nil || n == 0 {
			t.Fatalf("reading back: %d, %v", n, err)
		}
		got = append(got, buf[:n]...)
		lens = append(lens, n)
	}
	if !bytes.Equal(got, w.data) {
		t.Errorf("pipe holds different bytes after the dump; first difference at %d", firstDiff(got, w.data))
	}
	if w.bufLens != nil && !slices.Equal(lens, w.bufLens) {
		t.Errorf("packets read back %v, want %v", lens, w.bufLens)
	}
	if n := queued(t, fd); n != 0 {
		t.Errorf("%d bytes left after reading back what was captured", n)
	}
}

func firstDiff(a, b []byte) int {
	for i := range min(len(a), len(b)) {
		if a[i] != b[i] {
			return i
		}
	}
	return min(len(a), len(b))
}
