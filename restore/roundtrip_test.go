package restore_test

// Round trips on real pipes: the 14 kinds of pipe state of
// internal/pipetest, captured with BPF, restored into the reporter, and
// compared with the holders' own fd tables.

import (
	"bufio"
	"bytes"
	"context"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"testing"

	"golang.org/x/sys/unix"

	"github.com/pipesnap/pipesnap/format"
	"github.com/pipesnap/pipesnap/internal/pipetest"
	"github.com/pipesnap/pipesnap/loader"
	"github.com/pipesnap/pipesnap/restore"
	"github.com/pipesnap/pipesnap/snapshot"
)

func TestRoundTripKinds(t *testing.T) {
	pipetest.RequireBPF(t)
	holders := map[string]*pipetest.Holder{}
	readFlags := map[string]int{}
	var pids []int
	for _, kind := range pipetest.Kinds {
		h := pipetest.StartHolder(t, kind)
		holders[kind] = h
		pids = append(pids, h.Rep.PIDs...)
		fl, err := unix.FcntlInt(uintptr(pipetest.GrabReadEnd(t, h)), unix.F_GETFL, 0)
		if err != nil {
			t.Fatal(err)
		}
		readFlags[kind] = fl
	}
	var buf bytes.Buffer
	if _, err := loader.Dump(context.Background(), &buf, loader.Options{PIDs: pids}); err != nil {
		t.Fatalf("dump: %v", err)
	}
	snap, err := snapshot.Read(bytes.NewReader(buf.Bytes()), snapshot.Options{Data: true})
	if err != nil {
		t.Fatalf("reading the snapshot back: %v", err)
	}

	for _, kind := range pipetest.Kinds {
		t.Run(kind, func(t *testing.T) {
			h, w := holders[kind], pipetest.Expected(kind)
			p, err := snap.Find(h.Rep.Ino)
			if err != nil {
				t.Fatal(err)
			}
			if !p.Complete() {
				t.Fatalf("captured %s: the round trip needs a complete capture", partial(p))
			}
			t.Run("ino", func(t *testing.T) { roundTripIno(t, snap, h, w, readFlags[kind]) })
			for _, pid := range h.Rep.PIDs {
				t.Run(fmt.Sprintf("pid-%d", pid), func(t *testing.T) { roundTripPID(t, snap, h, w, pid) })
			}
		})
	}
}

func partial(p *snapshot.Pipe) string {
	return fmt.Sprintf("status %#x (%s)", p.Status, p.Reason)
}

// roundTripIno feeds the kind's pipe to the reporter at fd 3.
func roundTripIno(t *testing.T, snap *snapshot.Snapshot, h *pipetest.Holder, w pipetest.Want, origFlags int) {
	set := mustBuild(t, snap, restore.Options{Ino: h.Rep.Ino, As: 3})
	rep := runReporter(t, set)
	checkFDSet(t, rep, []int{3})
	// The read end only, with the holder's status flags (O_DIRECT).
	f := checkFD(t, rep, 3, unix.O_RDONLY|origFlags&(flagMask&^unix.O_ACCMODE), int(w.Capacity))
	var reads []int
	if w.Packet {
		reads = w.BufLens
	}
	checkData(t, f, w.Data, reads, true)
	if f.Queued != len(w.Data) {
		t.Errorf("FIONREAD %d, want %d", f.Queued, len(w.Data))
	}
}

// origFD is one pipe fd of a holder, read from /proc and the fd itself.
type origFD struct {
	fd      int
	ino     uint64
	flags   int
	cloexec bool
	size    int
}

func origTable(t *testing.T, pid int) []origFD {
	t.Helper()
	dir := fmt.Sprintf("/proc/%d/fd", pid)
	ents, err := os.ReadDir(dir)
	if err != nil {
		t.Fatal(err)
	}
	pidfd, err := unix.PidfdOpen(pid, 0)
	if err != nil {
		t.Fatal(err)
	}
	defer unix.Close(pidfd)
	var fds []origFD
	for _, e := range ents {
		fd, err := strconv.Atoi(e.Name())
		if err != nil {
			continue
		}
		st, err := os.Stat(filepath.Join(dir, e.Name()))
		if err != nil || st.Mode()&os.ModeNamedPipe == 0 {
			continue
		}
		o := origFD{fd: fd, ino: st.Sys().(*syscall.Stat_t).Ino}
		info, err := os.ReadFile(fmt.Sprintf("/proc/%d/fdinfo/%d", pid, fd))
		if err != nil {
			t.Fatal(err)
		}
		sc := bufio.NewScanner(bytes.NewReader(info))
		for sc.Scan() {
			if v, ok := strings.CutPrefix(sc.Text(), "flags:"); ok {
				fl, err := strconv.ParseInt(strings.TrimSpace(v), 8, 64)
				if err != nil {
					t.Fatal(err)
				}
				o.flags, o.cloexec = int(fl), fl&unix.O_CLOEXEC != 0
			}
		}
		dup, err := unix.PidfdGetfd(pidfd, fd, 0)
		if err != nil {
			t.Fatal(err)
		}
		o.size, err = unix.FcntlInt(uintptr(dup), unix.F_GETPIPE_SZ, 0)
		unix.Close(dup)
		if err != nil {
			t.Fatal(err)
		}
		fds = append(fds, o)
	}
	slices.SortFunc(fds, func(a, b origFD) int { return a.fd - b.fd })
	return fds
}

func kcmpFile(pid, fd1, fd2 int) bool {
	r, _, errno := unix.Syscall6(unix.SYS_KCMP, uintptr(pid), uintptr(pid), 0 /* KCMP_FILE */, uintptr(fd1), uintptr(fd2), 0)
	return errno == 0 && r == 0
}

// roundTripPID restores a holder process's whole fd table into the
// reporter and compares it with the holder's.
func roundTripPID(t *testing.T, snap *snapshot.Snapshot, h *pipetest.Holder, w pipetest.Want, pid int) {
	orig := origTable(t, pid)
	root := t.TempDir()
	// AllowPartial: the holders' stderr may be the live pipe go test
	// reads; its bytes are compared only if captured whole.
	set := mustBuild(t, snap, restore.Options{PID: uint32(pid), Root: root, KeepCloexec: true, AllowPartial: true})
	rep := runReporter(t, set)
	got := rep.byFD()

	var nums []int
	newIno := map[uint64]uint64{} // holder's pipe -> restored pipe
	for _, o := range orig {
		nums = append(nums, o.fd)
		r, ok := got[o.fd]
		if !ok {
			t.Errorf("fd %d (pipe %d) not restored", o.fd, o.ino)
			continue
		}
		if r.Flags&flagMask != o.flags&flagMask {
			t.Errorf("fd %d: flags %#o, holder's %#o", o.fd, r.Flags&flagMask, o.flags&flagMask)
		}
		if r.Size != o.size {
			t.Errorf("fd %d: capacity %d, holder's %d", o.fd, r.Size, o.size)
		}
		if n, ok := newIno[o.ino]; ok && n != r.Ino {
			t.Errorf("fd %d: pipe %d restored as %d and as %d", o.fd, o.ino, n, r.Ino)
		}
		newIno[o.ino] = r.Ino
		p, err := snap.Find(o.ino)
		if err != nil {
			t.Errorf("fd %d: %v", o.fd, err)
			continue
		}
		if p.Kind == format.KindFIFO && r.Link != filepath.Join(root, p.Path) {
			t.Errorf("fd %d: fifo %s, want it under the root at %s", o.fd, r.Link, filepath.Join(root, p.Path))
		}
	}
	checkFDSet(t, rep, nums)
	if restored := uniq(newIno); len(restored) != len(newIno) {
		t.Errorf("%d pipes restored as %d", len(newIno), len(restored))
	}
	// Fds share an open file exactly where the holder's did.
	for i, a := range orig {
		for _, b := range orig[i+1:] {
			if same, was := got[a.fd].Shares == got[b.fd].Shares, kcmpFile(pid, a.fd, b.fd); same != was {
				t.Errorf("fds %d and %d: share an open file %v, in the holder %v", a.fd, b.fd, same, was)
			}
		}
	}
	// Every pipe holds what was captured; the kind's pipe what the
	// holder put in it, in the same packets.
	for ino := range newIno {
		p, _ := snap.Find(ino)
		var first *fdReport
		writer := false
		for _, o := range orig {
			r := got[o.fd]
			if o.ino != ino {
				continue
			}
			if first == nil {
				first = &r
			}
			writer = writer || r.Flags&unix.O_ACCMODE != unix.O_RDONLY
		}
		if first == nil || !p.Complete() {
			continue
		}
		want, reads := p.Data(), []int(nil)
		if ino == h.Rep.Ino {
			if !bytes.Equal(want, w.Data) {
				t.Errorf("pipe %d captured differently from what the holder wrote", ino)
			}
			if w.Packet {
				reads = w.BufLens
			}
		}
		checkData(t, *first, want, reads, !writer)
	}

	// Without KeepCloexec, the close-on-exec fds are dropped.
	set = mustBuild(t, snap, restore.Options{PID: uint32(pid), Root: t.TempDir(), AllowPartial: true})
	var kept, dropped []int
	for _, o := range orig {
		if o.cloexec {
			dropped = append(dropped, o.fd)
		} else {
			kept = append(kept, o.fd)
		}
	}
	if d := set.Dropped(); !slices.Equal(d, dropped) {
		t.Errorf("dropped %v, want the close-on-exec fds %v", d, dropped)
	}
	checkFDSet(t, runReporter(t, set), kept)
}

func uniq(m map[uint64]uint64) map[uint64]bool {
	out := map[uint64]bool{}
	for _, v := range m {
		out[v] = true
	}
	return out
}
