package restore_test

// Restores of hand-built snapshots: no BPF, no root needed (TestUnprivileged
// runs them again as nobody when the tests run as root).

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"syscall"
	"testing"

	"golang.org/x/sys/unix"

	"github.com/pipesnap/pipesnap/format"
	"github.com/pipesnap/pipesnap/internal/pipetest"
	"github.com/pipesnap/pipesnap/restore"
	"github.com/pipesnap/pipesnap/snapshot"
)

const (
	rd = format.ModeRead
	wr = format.ModeWrite
	rw = format.ModeRead | format.ModeWrite
)

// flagMask is what a restore gives back of F_GETFL.
const flagMask = unix.O_ACCMODE | unix.O_NONBLOCK | unix.O_DIRECT | unix.O_APPEND

func readStream(t *testing.T, b []byte) *snapshot.Snapshot {
	t.Helper()
	s, err := snapshot.Read(bytes.NewReader(b), snapshot.Options{Data: true})
	if err != nil {
		t.Fatalf("reading the stream back: %v", err)
	}
	return s
}

// build restores and collects the warnings.
func build(t *testing.T, s *snapshot.Snapshot, opt restore.Options) (*restore.Set, []string, error) {
	t.Helper()
	var warnings []string
	opt.Warn = func(m string) { warnings = append(warnings, m) }
	set, err := restore.Build(s, opt)
	if err == nil {
		t.Cleanup(func() { set.Close() })
	}
	return set, warnings, err
}

func mustBuild(t *testing.T, s *snapshot.Snapshot, opt restore.Options) *restore.Set {
	t.Helper()
	set, _, err := build(t, s, opt)
	if err != nil {
		t.Fatalf("build: %v", err)
	}
	return set
}

func checkFD(t *testing.T, rep report, fd, flags, size int) fdReport {
	t.Helper()
	r, ok := rep.byFD()[fd]
	if !ok {
		t.Errorf("fd %d missing", fd)
		return r
	}
	if !r.FIFO {
		t.Errorf("fd %d is not a pipe: %s", fd, r.Link)
	}
	if r.Flags&flagMask != flags {
		t.Errorf("fd %d flags %#o, want %#o", fd, r.Flags&flagMask, flags)
	}
	if r.Size != size {
		t.Errorf("fd %d capacity %d, want %d", fd, r.Size, size)
	}
	return r
}

func checkData(t *testing.T, r fdReport, want []byte, reads []int, eof bool) {
	t.Helper()
	if !r.Read {
		t.Errorf("fd %d: pipe not read out (was it read on another fd?)", r.FD)
		return
	}
	if !bytes.Equal(r.Data, want) {
		t.Errorf("fd %d: %d bytes %q, want %d %q", r.FD, len(r.Data), trunc(r.Data), len(want), trunc(want))
	}
	if reads != nil && !slices.Equal(r.Reads, reads) {
		t.Errorf("fd %d: reads of %v, want %v", r.FD, r.Reads, reads)
	}
	if r.EOF != eof {
		t.Errorf("fd %d: EOF %v, want %v", r.FD, r.EOF, eof)
	}
}

func trunc(b []byte) []byte { return b[:min(len(b), 40)] }

// consumer is a task that held a bit of everything.
func consumer() (pipetest.STask, map[string]*pipetest.SPipe) {
	p := map[string]*pipetest.SPipe{
		"a":       {Ino: 1001, Bufs: [][]byte{[]byte("hello, "), []byte("world")}},
		"packet":  {Ino: 1002, Packet: true, Bufs: [][]byte{{1}, bytes.Repeat([]byte("p"), 100), pipetest.Pattern(1, 4096), {7, 7, 7}}},
		"cloexec": {Ino: 1003, Bufs: [][]byte{[]byte("only for exec-less eyes")}},
		"out":     {Ino: 1004, Capacity: 16384, Bufs: [][]byte{[]byte("for the next stage")}},
		"big":     {Ino: 1005, Capacity: 1 << 20, Bufs: split(pipetest.Pattern(2, 200000), 4096)},
	}
	return pipetest.STask{PID: 100, Comm: "consumer", FDs: []pipetest.SFD{
		{FD: 0, File: "a-r", Pipe: p["a"], Mode: rd},
		{FD: 1, File: "out-w", Pipe: p["out"], Mode: wr},
		{FD: 3, File: "a-r", Pipe: p["a"], Mode: rd}, // dup of fd 0
		{FD: 4, File: "a-w", Pipe: p["a"], Mode: wr, Flags: unix.O_NONBLOCK},
		{FD: 5, File: "packet-r", Pipe: p["packet"], Mode: rd, Flags: unix.O_DIRECT},
		{FD: 6, File: "a-r2", Pipe: p["a"], Mode: rd, Flags: unix.O_NONBLOCK}, // another open file
		{FD: 7, File: "cloexec-r", Pipe: p["cloexec"], Mode: rd, Cloexec: true},
		{FD: 9, File: "big-r", Pipe: p["big"], Mode: rd},
		{FD: 12, File: "a-rw", Pipe: p["a"], Mode: rw},
	}}, p
}

func split(b []byte, n int) [][]byte {
	var out [][]byte
	for len(b) > n {
		out = append(out, b[:n])
		b = b[n:]
	}
	return append(out, b)
}

func TestPIDTable(t *testing.T) {
	task, p := consumer()
	other := pipetest.STask{PID: 200, Comm: "producer", FDs: []pipetest.SFD{
		{FD: 1, File: "cloexec-w", Pipe: p["cloexec"], Mode: wr},
	}}
	s := readStream(t, pipetest.Stream(t, other, task))
	set := mustBuild(t, s, restore.Options{PID: 100})
	if d := set.Dropped(); !slices.Equal(d, []int{7}) {
		t.Errorf("dropped %v, want [7]", d)
	}
	rep := runReporter(t, set)
	checkFDSet(t, rep, []int{0, 1, 3, 4, 5, 6, 9, 12})

	f0 := checkFD(t, rep, 0, unix.O_RDONLY, 65536)
	f3 := checkFD(t, rep, 3, unix.O_RDONLY, 65536)
	f4 := checkFD(t, rep, 4, unix.O_WRONLY|unix.O_NONBLOCK, 65536)
	f6 := checkFD(t, rep, 6, unix.O_RDONLY|unix.O_NONBLOCK, 65536)
	f12 := checkFD(t, rep, 12, unix.O_RDWR, 65536)
	f1 := checkFD(t, rep, 1, unix.O_WRONLY, 16384)
	f5 := checkFD(t, rep, 5, unix.O_RDONLY|unix.O_DIRECT, 65536)
	f9 := checkFD(t, rep, 9, unix.O_RDONLY, 1<<20)

	// One pipe behind fds 0, 3, 4, 6 and 12; one open file behind 0 and 3.
	for _, f := range []fdReport{f3, f4, f6, f12} {
		if f.Ino != f0.Ino {
			t.Errorf("fd %d on pipe %d, fd 0 on %d: want the same pipe", f.FD, f.Ino, f0.Ino)
		}
	}
	if f3.Shares != 0 {
		t.Errorf("fd 3 shares the open file of fd %d, want 0 (a dup)", f3.Shares)
	}
	for _, f := range []fdReport{f4, f6, f12} {
		if f.Shares != f.FD {
			t.Errorf("fd %d shares the open file of fd %d: want one of its own", f.FD, f.Shares)
		}
	}
	if f1.Ino == f0.Ino || f5.Ino == f0.Ino || f9.Ino == f0.Ino || f5.Ino == f1.Ino {
		t.Errorf("distinct pipes share inodes: %d %d %d %d", f0.Ino, f1.Ino, f5.Ino, f9.Ino)
	}
	if f1.Queued != len("for the next stage") {
		t.Errorf("fd 1 (write end) FIONREAD %d", f1.Queued)
	}

	// The command holds write ends of pipe a (fds 4 and 12): no EOF.
	checkData(t, f0, []byte("hello, world"), nil, false)
	checkData(t, f5, slices.Concat(p["packet"].Bufs...), []int{1, 100, 4096, 3}, true)
	// Its read end was another task's: the command's fd 1 has no reader
	// but the reporter's own reopen.
	checkData(t, f1, []byte("for the next stage"), nil, false)
	checkData(t, f9, pipetest.Pattern(2, 200000), nil, true)
}

func TestPIDKeepCloexec(t *testing.T) {
	task, _ := consumer()
	s := readStream(t, pipetest.Stream(t, task))
	set := mustBuild(t, s, restore.Options{PID: 100, KeepCloexec: true})
	if d := set.Dropped(); len(d) != 0 {
		t.Errorf("dropped %v with KeepCloexec", d)
	}
	rep := runReporter(t, set)
	checkFDSet(t, rep, []int{0, 1, 3, 4, 5, 6, 7, 9, 12})
	f7 := checkFD(t, rep, 7, unix.O_RDONLY, 65536)
	checkData(t, f7, []byte("only for exec-less eyes"), nil, true)
	var fds []int
	for _, fd := range set.FDs() {
		if fd.Cloexec {
			fds = append(fds, fd.Num)
		}
	}
	if !slices.Equal(fds, []int{7}) {
		t.Errorf("FDs() marks %v close-on-exec, want [7]", fds)
	}
}

// TestFDCollisions puts 40 pipes at fd numbers the restorer's own fds
// are sure to have: every fd must still get its own pipe.
func TestFDCollisions(t *testing.T) {
	const n = 40
	task := pipetest.STask{PID: 300, Comm: "many"}
	for i := range n {
		pipe := &pipetest.SPipe{Ino: uint64(5000 + i), Bufs: [][]byte{[]byte(fmt.Sprintf("pipe %d", i))}}
		task.FDs = append(task.FDs, pipetest.SFD{FD: int32(3 + (i*7)%n), File: fmt.Sprint(i), Pipe: pipe, Mode: rd})
	}
	s := readStream(t, pipetest.Stream(t, task))
	set := mustBuild(t, s, restore.Options{PID: 300})
	var want []int
	for _, fd := range set.FDs() {
		want = append(want, fd.Num)
	}
	rep := runReporter(t, set)
	checkFDSet(t, rep, want)
	for i := range n {
		fd := 3 + (i*7)%n
		checkData(t, rep.byFD()[fd], []byte(fmt.Sprintf("pipe %d", i)), nil, true)
	}
}

func TestInoMode(t *testing.T) {
	task, p := consumer()
	s := readStream(t, pipetest.Stream(t, task))

	t.Run("stdin", func(t *testing.T) {
		set := mustBuild(t, s, restore.Options{Ino: 1001})
		rep := runReporter(t, set)
		checkFDSet(t, rep, []int{0})
		// The first read end the snapshot has is fd 0's: no status flags.
		f := checkFD(t, rep, 0, unix.O_RDONLY, 65536)
		checkData(t, f, []byte("hello, world"), nil, true)
	})
	t.Run("fd:5 packets", func(t *testing.T) {
		set := mustBuild(t, s, restore.Options{Ino: 1002, As: 5})
		rep := runReporter(t, set)
		checkFDSet(t, rep, []int{5})
		f := checkFD(t, rep, 5, unix.O_RDONLY|unix.O_DIRECT, 65536)
		checkData(t, f, slices.Concat(p["packet"].Bufs...), []int{1, 100, 4096, 3}, true)
	})
	t.Run("write end only", func(t *testing.T) {
		// Only a write end was captured: the command still gets the read end.
		set := mustBuild(t, s, restore.Options{Ino: 1004, As: 3})
		rep := runReporter(t, set)
		checkFDSet(t, rep, []int{3})
		f := checkFD(t, rep, 3, unix.O_RDONLY, 16384)
		checkData(t, f, []byte("for the next stage"), nil, true)
	})
	t.Run("keep writer", func(t *testing.T) {
		set := mustBuild(t, s, restore.Options{Ino: 1001, As: 3, KeepWriter: true})
		rep := runReporter(t, set)
		checkFDSet(t, rep, []int{3})
		checkData(t, rep.byFD()[3], []byte("hello, world"), nil, false)
	})
}

func TestKeepWriterPID(t *testing.T) {
	a := &pipetest.SPipe{Ino: 1, Bufs: [][]byte{[]byte("abc")}}
	b := &pipetest.SPipe{Ino: 2, Bufs: [][]byte{[]byte("def")}}
	task := pipetest.STask{PID: 5, FDs: []pipetest.SFD{
		{FD: 0, File: "a", Pipe: a, Mode: rd},
		{FD: 3, File: "b-r", Pipe: b, Mode: rd},
		{FD: 4, File: "b-w", Pipe: b, Mode: wr},
	}}
	s := readStream(t, pipetest.Stream(t, task))
	rep := runReporter(t, mustBuild(t, s, restore.Options{PID: 5}))
	checkData(t, rep.byFD()[0], []byte("abc"), nil, true) // no writer anywhere
	rep = runReporter(t, mustBuild(t, s, restore.Options{PID: 5, KeepWriter: true}))
	checkData(t, rep.byFD()[0], []byte("abc"), nil, false) // pipesnap keeps one
	checkData(t, rep.byFD()[3], []byte("def"), nil, false) // the command has one
}

// TestNoLeak: an fd of the caller's without close-on-exec does not reach
// the command.
func TestNoLeak(t *testing.T) {
	null, err := unix.Open("/dev/null", unix.O_RDONLY, 0) // not close-on-exec
	if err != nil {
		t.Fatal(err)
	}
	if err := unix.Dup3(null, 700, 0); err != nil {
		t.Fatal(err)
	}
	unix.Close(null)
	t.Cleanup(func() { unix.Close(700) })
	task, _ := consumer()
	s := readStream(t, pipetest.Stream(t, task))
	rep := runReporter(t, mustBuild(t, s, restore.Options{Ino: 1001, As: 3}))
	checkFDSet(t, rep, []int{3})
}

// TestNoLeakHigh: nor does one at a high number, whether the restore
// finds it by trying every fd number below the fd table's size or, the
// table being much larger than what it holds, by listing /proc/self/fd.
func TestNoLeakHigh(t *testing.T) {
	task, _ := consumer()
	s := readStream(t, pipetest.Stream(t, task))
	for _, fd := range []int{1900, 9000} {
		null, err := unix.Open("/dev/null", unix.O_RDONLY, 0) // not close-on-exec
		if err != nil {
			t.Fatal(err)
		}
		err = unix.Dup3(null, fd, 0)
		unix.Close(null)
		if err != nil {
			t.Skipf("fd %d: %v", fd, err)
		}
		t.Cleanup(func() { unix.Close(fd) })
		proc, err := mustBuild(t, s, restore.Options{Ino: 1001}).Start([]string{"sh", "-c", `
			for fd in 1900 9000; do test -e /proc/$$/fd/$fd && exit 1; done; exit 0`}, nil)
		if err != nil {
			t.Fatal(err)
		}
		if code, err := proc.Wait(); code != 0 || err != nil {
			t.Errorf("with fd %d open: the command got it (status %d, %v)", fd, code, err)
		}
	}
}

// TestCallerFDs: the restorer's fds fill the holes between the caller's;
// once the command runs, and once it exits, the restorer's are closed
// and the caller's are not.
func TestCallerFDs(t *testing.T) {
	var mine, holes []int
	for i := range 16 {
		fd, err := unix.Open("/dev/null", unix.O_RDONLY|unix.O_CLOEXEC, 0)
		if err != nil {
			t.Fatal(err)
		}
		if i%3 == 0 {
			holes = append(holes, fd)
		} else {
			mine = append(mine, fd)
		}
	}
	for _, fd := range holes {
		unix.Close(fd)
	}
	t.Cleanup(func() {
		for _, fd := range mine {
			unix.Close(fd)
		}
	})
	task := pipetest.STask{PID: 5}
	for i := range 12 {
		p := &pipetest.SPipe{Ino: uint64(100 + i), Bufs: [][]byte{[]byte("x")}}
		task.FDs = append(task.FDs,
			pipetest.SFD{FD: int32(10 + 2*i), File: fmt.Sprint("r", i), Pipe: p, Mode: rd},
			pipetest.SFD{FD: int32(11 + 2*i), File: fmt.Sprint("w", i), Pipe: p, Mode: wr})
	}
	s := readStream(t, pipetest.Stream(t, task))
	set := mustBuild(t, s, restore.Options{PID: 5})
	open := func(fd int) bool {
		_, err := unix.FcntlInt(uintptr(fd), unix.F_GETFD, 0)
		return err == nil
	}
	for _, fd := range holes {
		if !open(fd) {
			t.Fatalf("fd %d: the restore left this hole empty, the test proves nothing", fd)
		}
	}
	check := func(when string) {
		t.Helper()
		for _, fd := range mine {
			var st unix.Stat_t
			if err := unix.Fstat(fd, &st); err != nil || st.Mode&unix.S_IFMT != unix.S_IFCHR {
				t.Errorf("%s: the caller's fd %d: %v, mode %#o", when, fd, err, st.Mode)
			}
		}
		for _, fd := range holes {
			if open(fd) {
				t.Errorf("%s: the restorer's fd %d is still open", when, fd)
			}
		}
	}
	proc, err := set.Start([]string{"true"}, nil)
	if err != nil {
		t.Fatal(err)
	}
	check("once the command runs")
	if _, err := proc.Wait(); err != nil {
		t.Fatal(err)
	}
	check("once it exited")
}

func TestPartial(t *testing.T) {
	torn := &pipetest.SPipe{Ino: 77, Status: format.StatusTorn, Reason: format.ReasonMoved, Bufs: [][]byte{[]byte("mixed")}}
	task := pipetest.STask{PID: 1, FDs: []pipetest.SFD{{FD: 0, File: "t", Pipe: torn, Mode: rd}}}
	s := readStream(t, pipetest.Stream(t, task))
	for _, opt := range []restore.Options{{PID: 1}, {Ino: 77}} {
		if _, _, err := build(t, s, opt); !errors.Is(err, restore.ErrPartial) || !strings.Contains(err.Error(), "torn (moved during copy)") {
			t.Errorf("torn pipe: %v", err)
		}
	}
	set, warnings, err := build(t, s, restore.Options{Ino: 77, AllowPartial: true})
	if err != nil {
		t.Fatal(err)
	}
	if len(warnings) != 1 || !strings.Contains(warnings[0], "pipe 77 is torn") {
		t.Errorf("warnings %q", warnings)
	}
	checkData(t, runReporter(t, set).byFD()[0], []byte("mixed"), nil, true)
}

func TestUnknown(t *testing.T) {
	task, _ := consumer()
	s := readStream(t, pipetest.Stream(t, task))
	if _, _, err := build(t, s, restore.Options{PID: 4242}); !errors.Is(err, restore.ErrNoTask) || !strings.Contains(err.Error(), "pid 4242") {
		t.Errorf("unknown pid: %v", err)
	}
	if _, _, err := build(t, s, restore.Options{Ino: 4242}); !errors.Is(err, snapshot.ErrNoPipe) || !strings.Contains(err.Error(), "4242") {
		t.Errorf("unknown inode: %v", err)
	}
	if _, _, err := build(t, s, restore.Options{}); err == nil {
		t.Error("neither pid nor inode: no error")
	}
	if _, _, err := build(t, s, restore.Options{PID: 100, Ino: 1001}); err == nil {
		t.Error("both pid and inode: no error")
	}
}

func fifoTask(path string) (pipetest.STask, *pipetest.SPipe) {
	f := &pipetest.SPipe{Ino: 31, Kind: format.KindFIFO, Path: path, Bufs: [][]byte{[]byte("fifo bytes")}}
	return pipetest.STask{PID: 9, Comm: "fifo", FDs: []pipetest.SFD{
		{FD: 3, File: "rw", Pipe: f, Mode: rw},
		{FD: 4, File: "w", Pipe: f, Mode: wr, Flags: unix.O_NONBLOCK},
		{FD: 5, File: "r", Pipe: f, Mode: rd},
	}}, f
}

func TestFIFO(t *testing.T) {
	task, _ := fifoTask("/var/run/app/ctl.fifo")
	s := readStream(t, pipetest.Stream(t, task))
	if _, _, err := build(t, s, restore.Options{PID: 9}); !errors.Is(err, restore.ErrNeedRoot) {
		t.Errorf("fifo without a root: %v", err)
	}

	root := t.TempDir()
	set := mustBuild(t, s, restore.Options{PID: 9, Root: root})
	where := filepath.Join(root, "var/run/app/ctl.fifo")
	st, err := os.Lstat(where)
	if err != nil || st.Mode()&os.ModeNamedPipe == 0 || st.Mode().Perm() != 0o600 {
		t.Fatalf("%s: %v, %v", where, st.Mode(), err)
	}
	if st, err := os.Stat(filepath.Join(root, "var/run")); err != nil || st.Mode().Perm() != 0o700 {
		t.Errorf("directory on the way: %v, %v", st.Mode(), err)
	}
	rep := runReporter(t, set)
	checkFDSet(t, rep, []int{3, 4, 5})
	f3 := checkFD(t, rep, 3, unix.O_RDWR, 65536)
	f4 := checkFD(t, rep, 4, unix.O_WRONLY|unix.O_NONBLOCK, 65536)
	f5 := checkFD(t, rep, 5, unix.O_RDONLY, 65536)
	for _, f := range []fdReport{f3, f4, f5} {
		if f.Link != where || f.Ino != uint64(st.Sys().(*syscall.Stat_t).Ino) {
			t.Errorf("fd %d is %s (inode %d), want the fifo %s", f.FD, f.Link, f.Ino, where)
		}
	}
	checkData(t, f3, []byte("fifo bytes"), nil, false)

	// The FIFO stays; restoring again over it is refused.
	if _, _, err := build(t, s, restore.Options{PID: 9, Root: root}); err == nil || !strings.Contains(err.Error(), "already exists") {
		t.Errorf("restoring over an existing fifo: %v", err)
	}

	// With --ino and no root, the bytes go through an anonymous pipe.
	rep = runReporter(t, mustBuild(t, s, restore.Options{Ino: 31}))
	f0 := checkFD(t, rep, 0, unix.O_RDONLY, 65536)
	if !strings.HasPrefix(f0.Link, "pipe:") {
		t.Errorf("fd 0 is %s, want an anonymous pipe", f0.Link)
	}
	checkData(t, f0, []byte("fifo bytes"), nil, true)
}

func TestFIFOEscape(t *testing.T) {
	root, outside := t.TempDir(), t.TempDir()
	if err := os.Symlink(outside, filepath.Join(root, "link")); err != nil {
		t.Fatal(err)
	}
	if err := os.Mkdir(filepath.Join(root, "in"), 0o700); err != nil {
		t.Fatal(err)
	}
	if err := os.Symlink("../in", filepath.Join(root, "inlink")); err != nil {
		t.Fatal(err)
	}
	for _, path := range []string{
		"/../" + filepath.Base(outside) + "/evil",
		"/a/../../evil",
		"/link/evil",
		"/link/deeper/evil",
		"/inlink/evil", // stays inside, but a link is never followed
	} {
		task, _ := fifoTask(path)
		s := readStream(t, pipetest.Stream(t, task))
		_, _, err := build(t, s, restore.Options{PID: 9, Root: root})
		if !errors.Is(err, restore.ErrEscape) {
			t.Errorf("fifo at %s: %v, want %v", path, err, restore.ErrEscape)
		}
	}
	if ents, _ := os.ReadDir(outside); len(ents) != 0 {
		t.Errorf("created outside the root: %v", ents)
	}
	ents, _ := os.ReadDir(root)
	if len(ents) != 3 {
		t.Errorf("root holds %v, want only link, in and inlink", ents)
	}
	if ents, _ := os.ReadDir(filepath.Join(root, "in")); len(ents) != 0 {
		t.Errorf("created through a link: %v", ents)
	}
}

// TestUndo: when a restore fails half-way, the FIFO and the directories
// it created are removed again.
func TestUndo(t *testing.T) {
	task, _ := fifoTask("/new/dir/f")
	bad := &pipetest.SPipe{Ino: 32, Capacity: 0xffffffff} // no pipe is that large
	task.FDs = append(task.FDs, pipetest.SFD{FD: 6, File: "bad", Pipe: bad, Mode: rd})
	s := readStream(t, pipetest.Stream(t, task))
	root := t.TempDir()
	_, _, err := build(t, s, restore.Options{PID: 9, Root: root})
	if err == nil || !strings.Contains(err.Error(), "pipe 32") || !strings.Contains(err.Error(), "capacity") {
		t.Fatalf("impossible capacity: %v", err)
	}
	if ents, _ := os.ReadDir(root); len(ents) != 0 {
		t.Errorf("left behind in the root: %v", ents)
	}
}

// TestCapacityAboveLimit needs to run without CAP_SYS_RESOURCE: as root,
// TestUnprivileged runs it as nobody.
func TestCapacityAboveLimit(t *testing.T) {
	if os.Geteuid() == 0 {
		t.Skip("root may exceed pipe-max-size: TestUnprivileged runs this as nobody")
	}
	limit, err := os.ReadFile("/proc/sys/fs/pipe-max-size")
	if err != nil {
		t.Skip(err)
	}
	var max uint32
	fmt.Sscan(string(limit), &max)
	big := &pipetest.SPipe{Ino: 8, Capacity: max * 2, Bufs: [][]byte{[]byte("x")}}
	task := pipetest.STask{PID: 1, FDs: []pipetest.SFD{{FD: 0, File: "r", Pipe: big, Mode: rd}}}
	s := readStream(t, pipetest.Stream(t, task))
	for _, opt := range []restore.Options{{PID: 1}, {Ino: 8}} {
		_, _, err := build(t, s, opt)
		if !errors.Is(err, unix.EPERM) || !strings.Contains(err.Error(), "pipe-max-size") || !strings.Contains(err.Error(), "run as root") {
			t.Errorf("capacity %d above %d: %v", max*2, max, err)
		}
	}
}

// TestUnprivileged runs the hand-built restores again as uid nobody: a
// restore needs no root, and the capacity limit is met.
func TestUnprivileged(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skip("already unprivileged: the tests ran as such")
	}
	// The test binary sits in a directory only root may enter: copy it.
	dir, err := os.MkdirTemp("", "pipesnap-unpriv")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(dir) })
	os.Chmod(dir, 0o755)
	bin := filepath.Join(dir, "restore.test")
	src, err := os.Open(os.Args[0])
	if err != nil {
		t.Fatal(err)
	}
	defer src.Close()
	dst, err := os.OpenFile(bin, os.O_CREATE|os.O_WRONLY, 0o755)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := io.Copy(dst, src); err != nil {
		t.Fatal(err)
	}
	dst.Close()

	tmp := filepath.Join(dir, "tmp")
	if err := os.Mkdir(tmp, 0o700); err != nil {
		t.Fatal(err)
	}
	if err := os.Chown(tmp, 65534, 65534); err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command(bin, "-test.count=1", "-test.v",
		"-test.run=^(TestPIDTable|TestInoMode|TestFIFO|TestFIFOEscape|TestUndo|TestCapacityAboveLimit|TestFDCollisions)$")
	cmd.Dir = dir
	cmd.Env = append(os.Environ(), "TMPDIR="+tmp)
	cmd.SysProcAttr = &syscall.SysProcAttr{Credential: &syscall.Credential{Uid: 65534, Gid: 65534}}
	out, err := cmd.CombinedOutput()
	if err != nil {
		t.Fatalf("as nobody: %v\n%s", err, out)
	}
	for _, name := range []string{"TestPIDTable", "TestCapacityAboveLimit", "TestFIFO"} {
		if !strings.Contains(string(out), "--- PASS: "+name+" ") {
			t.Errorf("%s did not pass as nobody:\n%s", name, out)
		}
	}
}

func TestStart(t *testing.T) {
	task, _ := consumer()
	s := readStream(t, pipetest.Stream(t, task))
	run := func(argv ...string) int {
		t.Helper()
		proc, err := mustBuild(t, s, restore.Options{Ino: 1001}).Start(argv, os.Environ())
		if err != nil {
			t.Fatal(err)
		}
		code, err := proc.Wait()
		if err != nil {
			t.Fatal(err)
		}
		return code
	}
	if code := run("sh", "-c", `test "$(cat)" = "hello, world" && exit 3`); code != 3 {
		t.Errorf("exit status %d, want 3", code)
	}
	if code := run("sh", "-c", "kill -TERM $$"); code != 128+int(syscall.SIGTERM) {
		t.Errorf("killed by SIGTERM: status %d", code)
	}

	set := mustBuild(t, s, restore.Options{Ino: 1001})
	proc, err := set.Start([]string{"sleep", "60"}, nil)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := set.Start([]string{"true"}, nil); err == nil {
		t.Error("a set started twice")
	}
	if err := proc.Signal(syscall.SIGTERM); err != nil {
		t.Fatal(err)
	}
	if code, _ := proc.Wait(); code != 128+int(syscall.SIGTERM) {
		t.Errorf("sleep after SIGTERM: status %d", code)
	}
	if err := proc.Signal(syscall.SIGTERM); !errors.Is(err, os.ErrProcessDone) {
		t.Errorf("signal after wait: %v", err)
	}

	_, err = mustBuild(t, s, restore.Options{Ino: 1001}).Start([]string{"pipesnap-no-such-command"}, nil)
	if !errors.Is(err, exec.ErrNotFound) {
		t.Errorf("missing command: %v", err)
	}
}
