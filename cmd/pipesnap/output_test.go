package main

import (
	"bytes"
	"errors"
	"fmt"
	"math/rand/v2"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/pipesnap/pipesnap/internal/pipetest"
	"github.com/pipesnap/pipesnap/snapshot"
)

// sleeper starts `sleep 60` reading stdin, killed when the test ends.
func sleeper(t *testing.T, stdin *os.File) int {
	t.Helper()
	cmd := exec.Command("sleep", "60")
	cmd.Stdin = stdin
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { cmd.Process.Kill(); cmd.Wait() })
	return cmd.Process.Pid
}

// fifoReader makes a FIFO and starts a process that holds its read end
// and never reads (sleep). The FIFO's buffer is shrunk to one page so
// that a dump fills it. The test's own read end is returned too.
func fifoReader(t *testing.T) (fifo string, pid int, r *os.File) {
	t.Helper()
	fifo = filepath.Join(t.TempDir(), "out.fifo")
	if err := syscall.Mkfifo(fifo, 0o600); err != nil {
		t.Fatal(err)
	}
	r, err := os.OpenFile(fifo, os.O_RDONLY|syscall.O_NONBLOCK, 0)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { r.Close() })
	rc, err := r.SyscallConn()
	if err != nil {
		t.Fatal(err)
	}
	var serr error
	rc.Control(func(fd uintptr) { _, serr = unix.FcntlInt(fd, unix.F_SETPIPE_SZ, os.Getpagesize()) })
	if serr != nil {
		t.Fatal(serr)
	}
	return fifo, sleeper(t, r), r
}

// readFIFO opens the read end of fifo, so that a writer's non-blocking
// open succeeds, and returns what is written into it up to the writer's
// close.
func readFIFO(t *testing.T, fifo string) <-chan []byte {
	t.Helper()
	fd, err := unix.Open(fifo, unix.O_RDONLY|unix.O_NONBLOCK|unix.O_CLOEXEC, 0)
	if err != nil {
		t.Fatal(err)
	}
	got := make(chan []byte, 1)
	go func() {
		defer unix.Close(fd)
		var b []byte
		buf := make([]byte, 1<<16)
		for {
			// Until a writer has come, poll waits (no POLLHUP) and read
			// would say EOF; afterwards, read returns 0 once it is gone.
			pfd := []unix.PollFd{{Fd: int32(fd), Events: unix.POLLIN}}
			if _, err := unix.Poll(pfd, -1); err != nil && err != unix.EINTR {
				break
			}
			n, err := unix.Read(fd, buf)
			if n > 0 {
				b = append(b, buf[:n]...)
			}
			if n == 0 && err == nil || err != nil && err != unix.EAGAIN && err != unix.EINTR {
				break
			}
		}
		got <- b
	}()
	return got
}

// TestDumpFIFONoReader: -o FIFO with nobody reading it fails at once,
// saying so, instead of waiting in open(2) out of reach of Ctrl-C.
func TestDumpFIFONoReader(t *testing.T) {
	pid, _ := stuckReader(t, "x")
	fifo := filepath.Join(t.TempDir(), "out.fifo")
	if err := syscall.Mkfifo(fifo, 0o600); err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command(pipesnapBin, "dump", "--method", "tee", "--pid", strconv.Itoa(pid), "-o", fifo)
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	done := make(chan error, 1)
	go func() { done <- cmd.Wait() }()
	select {
	case err := <-done:
		var ee *exec.ExitError
		msg := stderr.String()
		if !errors.As(err, &ee) || ee.ExitCode() == 0 || !strings.Contains(msg, "has no reader: start the consumer first") || strings.Count(msg, "\n") != 1 {
			t.Errorf("dump -o FIFO without a reader: %v, %q; want a failure and one line about the reader", err, msg)
		}
	case <-time.After(5 * time.Second):
		cmd.Process.Kill()
		<-done
		t.Fatal("dump -o FIFO without a reader is still waiting after 5s")
	}
}

// TestDumpFIFOStalledReaderInterrupted: a dump blocked writing into a FIFO
// whose reader does not read ends on SIGINT, and the processes it froze
// are resumed.
func TestDumpFIFOStalledReaderInterrupted(t *testing.T) {
	pid, _ := stuckReader(t, strings.Repeat("x", 32<<10))
	fifo, _, r := fifoReader(t)
	cmd := exec.Command(pipesnapBin, "dump", "--method", "tee", "--freeze", "--pid", strconv.Itoa(pid), "-o", fifo)
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	done := make(chan error, 1)
	go func() { done <- cmd.Wait() }()
	t.Cleanup(func() {
		if cmd.ProcessState == nil {
			cmd.Process.Kill()
			<-done
		}
	})
	// Wait until the FIFO is full: the dump is then blocked in write.
	for deadline := time.Now().Add(10 * time.Second); ; time.Sleep(10 * time.Millisecond) {
		var n int
		rc, err := r.SyscallConn()
		if err == nil {
			rc.Control(func(fd uintptr) { n, err = unix.IoctlGetInt(int(fd), unix.TIOCINQ) })
		}
		if err != nil {
			t.Fatal(err)
		}
		if n >= os.Getpagesize() {
			break
		}
		select {
		case err := <-done:
			t.Fatalf("dump ended before filling the FIFO: %v, %q", err, stderr.String())
		default:
		}
		if time.Now().After(deadline) {
			t.Fatalf("the FIFO holds %d bytes after 10s", n)
		}
	}
	time.Sleep(100 * time.Millisecond)
	cmd.Process.Signal(syscall.SIGINT)
	select {
	case err := <-done:
		var ee *exec.ExitError
		if !errors.As(err, &ee) || ee.ExitCode() == 0 || !strings.Contains(stderr.String(), "interrupted") {
			t.Errorf("SIGINT: %v, %q; want a failure saying interrupted", err, stderr.String())
		}
	case <-time.After(2 * time.Second):
		t.Fatal("dump blocked on a stalled FIFO reader did not end within 2s of SIGINT")
	}
	if pipetest.Stopped(t, pid) {
		t.Errorf("process %d left stopped", pid)
	}
}

// TestDumpFreezeReaderOfOutput: --freeze refuses to stop a process that
// reads the output, pipe or FIFO: the dump would wait for it forever.
func TestDumpFreezeReaderOfOutput(t *testing.T) {
	// A pipeline: pipesnap dump -o - | sleep 60, with sleep dumped.
	r, w, err := os.Pipe()
	if err != nil {
		t.Fatal(err)
	}
	cpid := sleeper(t, r)
	r.Close()
	st, _ := w.Stat()
	cmd := exec.Command(pipesnapBin, "dump", "--method", "tee", "--freeze", "--pid", strconv.Itoa(cpid), "-o", "-")
	cmd.Stdout = w
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	w.Close()
	done := make(chan error, 1)
	go func() { done <- cmd.Wait() }()
	select {
	case err := <-done:
		want := fmt.Sprintf("--freeze: pid %d reads the output (pipe:[%d])", cpid, statIno(st))
		var ee *exec.ExitError
		if !errors.As(err, &ee) || ee.ExitCode() != 2 || !strings.Contains(stderr.String(), want) {
			t.Errorf("--freeze with the reader of stdout: %v, %q; want exit 2, %q", err, stderr.String(), want)
		}
	case <-time.After(10 * time.Second):
		cmd.Process.Kill()
		<-done
		t.Fatal("--freeze with the reader of stdout: still running after 10s")
	}
	if pipetest.Stopped(t, cpid) {
		t.Errorf("consumer %d left stopped", cpid)
	}

	// A FIFO whose reader is dumped.
	fifo, fpid, _ := fifoReader(t)
	_, stderr2, code := run(t, "dump", "--method", "tee", "--freeze", "--pid", strconv.Itoa(fpid), "-o", fifo)
	if want := fmt.Sprintf("--freeze: pid %d reads the output (%s)", fpid, fifo); code != 2 || !strings.Contains(stderr2, want) {
		t.Errorf("--freeze with the reader of the FIFO: exit %d, %q; want 2, %q", code, stderr2, want)
	}
	if pipetest.Stopped(t, fpid) {
		t.Errorf("FIFO reader %d left stopped", fpid)
	}
}

// TestDumpRefusedOutputs: a socket, a block device or a symbolic link to
// a regular file are not written over; a link to a device is written
// through.
func TestDumpRefusedOutputs(t *testing.T) {
	pid, _ := stuckReader(t, "x")
	dir := t.TempDir()
	sock := filepath.Join(dir, "s.sock")
	l, err := net.Listen("unix", sock)
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	for _, force := range []bool{false, true} {
		args := []string{"dump", "--method", "tee", "--pid", strconv.Itoa(pid), "-o", sock}
		if force {
			args = append(args, "--force")
		}
		if _, stderr, code := run(t, args...); code != 2 || !strings.Contains(stderr, "is a socket") {
			t.Errorf("dump -o SOCKET (force %v): exit %d, %q; want 2, is a socket", force, code, stderr)
		}
		if st, err := os.Lstat(sock); err != nil || st.Mode()&os.ModeSocket == 0 {
			t.Errorf("socket after dump: %v, %v", st, err)
		}
	}

	target := filepath.Join(dir, "target")
	if err := os.WriteFile(target, []byte("keep"), 0o600); err != nil {
		t.Fatal(err)
	}
	link := filepath.Join(dir, "link")
	if err := os.Symlink(target, link); err != nil {
		t.Fatal(err)
	}
	_, stderr, code := run(t, "dump", "--method", "tee", "--pid", strconv.Itoa(pid), "-o", link, "--force")
	if code != 2 || !strings.Contains(stderr, "is a symbolic link: name the file it points to") {
		t.Errorf("dump -o SYMLINK --force: exit %d, %q; want 2, symbolic link", code, stderr)
	}
	if st, err := os.Lstat(link); err != nil || st.Mode()&os.ModeSymlink == 0 {
		t.Errorf("link after dump --force: %v, %v; want it still a symbolic link", st, err)
	}
	if b, _ := os.ReadFile(target); string(b) != "keep" {
		t.Errorf("link target rewritten: %q", b)
	}
	if left, _ := filepath.Glob(filepath.Join(dir, ".*")); len(left) > 0 {
		t.Errorf("temporary files left: %v", left)
	}

	devLink := filepath.Join(dir, "null")
	if err := os.Symlink(os.DevNull, devLink); err != nil {
		t.Fatal(err)
	}
	if _, stderr, code := run(t, "dump", "--method", "tee", "--pid", strconv.Itoa(pid), "-o", devLink, "--force"); code != 0 {
		t.Errorf("dump -o LINK-TO-/dev/null --force: exit %d, %q", code, stderr)
	}
	if st, err := os.Lstat(devLink); err != nil || st.Mode()&os.ModeSymlink == 0 {
		t.Errorf("link to %s after dump: %v, %v", os.DevNull, st, err)
	}
}

// nobody is the user who plants outputs in these tests.
const nobody = 65534

// asNobody makes cmd run as nobody.
func asNobody(cmd *exec.Cmd) *exec.Cmd {
	cmd.SysProcAttr = &syscall.SysProcAttr{Credential: &syscall.Credential{Uid: nobody, Gid: nobody}}
	return cmd
}

// stickyDir is a directory like /tmp (mode 1777) that nobody can reach.
func stickyDir(t *testing.T) string {
	t.Helper()
	dir := t.TempDir()
	if err := os.Chmod(filepath.Dir(dir), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.Chmod(dir, 0o1777); err != nil {
		t.Fatal(err)
	}
	return dir
}

// runAsNobody runs a command as nobody, failing the test if it fails.
func runAsNobody(t *testing.T, name string, args ...string) {
	t.Helper()
	if out, err := asNobody(exec.Command(name, args...)).CombinedOutput(); err != nil {
		t.Fatalf("%s %v as nobody: %v, %s", name, args, err, out)
	}
}

// blockedInOpen tells whether pid waits in open(2) (for a FIFO's other
// end).
func blockedInOpen(t *testing.T, pid int) bool {
	t.Helper()
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/syscall", pid))
	if err != nil {
		t.Fatal(err)
	}
	nr, _, _ := strings.Cut(string(b), " ")
	for _, c := range openCalls {
		if nr == strconv.Itoa(c) {
			return true
		}
	}
	return false
}

// catAsNobody starts `cat FIFO` as nobody and waits until it is blocked
// opening the FIFO, for a writer. What cat reads is in the buffer once
// done is closed.
func catAsNobody(t *testing.T, fifo string) (pid int, got *bytes.Buffer, done <-chan struct{}) {
	t.Helper()
	cmd := asNobody(exec.Command("cat", fifo))
	got = new(bytes.Buffer)
	cmd.Stdout = got
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	ch := make(chan struct{})
	go func() { cmd.Wait(); close(ch) }()
	t.Cleanup(func() { cmd.Process.Kill(); <-ch })
	for deadline := time.Now().Add(5 * time.Second); !blockedInOpen(t, cmd.Process.Pid); time.Sleep(5 * time.Millisecond) {
		if time.Now().After(deadline) {
			t.Fatal("cat as nobody is not waiting in open after 5s")
		}
	}
	return cmd.Process.Pid, got, ch
}

// isSnapshot checks that b is one whole snapshot.
func isSnapshot(t *testing.T, what string, b []byte) {
	t.Helper()
	if _, err := snapshot.Read(bytes.NewReader(b), snapshot.Options{}); err != nil {
		t.Errorf("%s: %d bytes, not a snapshot: %v", what, len(b), err)
	}
}

// refusedForeign checks a dump's refusal of another user's output: exit
// 1, one line, saying what and how to allow it.
func refusedForeign(t *testing.T, what, stderr string, code int, want string) {
	t.Helper()
	if code != 1 || !strings.Contains(stderr, want) || strings.Count(stderr, "\n") != 1 {
		t.Errorf("%s: exit %d, %q; want 1 and one line with %q", what, code, stderr, want)
	}
}

// TestDumpOutputForeignFIFO: root's snapshot does not go into a FIFO of
// nobody's that nobody reads, nor through nobody's link to it, unless
// --allow-foreign-output names it.
func TestDumpOutputForeignFIFO(t *testing.T) {
	requireBPF(t) // root, to act as nobody
	pid, _ := stuckReader(t, "secret")
	dir := stickyDir(t)
	fifo := filepath.Join(dir, "x.snap")
	runAsNobody(t, "mkfifo", fifo)
	catPid, got, done := catAsNobody(t, fifo)
	dump := func(args ...string) (string, int) {
		_, stderr, code := run(t, append([]string{"dump", "--method", "tee", "--pid", strconv.Itoa(pid)}, args...)...)
		return stderr, code
	}

	stderr, code := dump("-o", fifo)
	refusedForeign(t, "dump -o nobody's FIFO", stderr, code, fmt.Sprintf(
		"%s is a FIFO owned by uid 65534 (nobody), not by root or the user running pipesnap: refusing to hand the snapshot to another user (--allow-foreign-output %s allows it)", fifo, fifo))

	link := filepath.Join(dir, "link.snap")
	runAsNobody(t, "ln", "-s", fifo, link)
	for _, force := range []bool{false, true} {
		args := []string{"-o", link}
		if force {
			args = append(args, "--force")
		}
		stderr, code := dump(args...)
		refusedForeign(t, fmt.Sprintf("dump -o nobody's link to nobody's FIFO (--force %v)", force), stderr, code, fmt.Sprintf(
			"%s is a symbolic link to a FIFO (%s) owned by uid 65534 (nobody), not by root or the user running pipesnap: refusing", link, fifo))
	}
	// A target named to forge lines is shown escaped, on one line.
	evil := filepath.Join(dir, "evil\n\x1b[2J.fifo")
	runAsNobody(t, "mkfifo", evil)
	evilLink := filepath.Join(dir, "evil.snap")
	runAsNobody(t, "ln", "-s", evil, evilLink)
	stderr, code = dump("-o", evilLink)
	refusedForeign(t, "dump -o nobody's link to a FIFO with a hostile name", stderr, code,
		evilLink+" is a symbolic link to a FIFO ("+dir+`/evil\n\x1b[2J.fifo) owned by uid 65534`)
	// Another path named: not allowed.
	if stderr, code := dump("-o", link, "--allow-foreign-output", fifo); code != 2 || !strings.Contains(stderr, "does not name the output") {
		t.Errorf("--allow-foreign-output naming another path: exit %d, %q; want 2", code, stderr)
	}
	// The reader never even saw a writer.
	if !blockedInOpen(t, catPid) || got.Len() != 0 {
		t.Fatalf("after the refusals, nobody's cat is not waiting for a writer any more (read %d bytes)", got.Len())
	}

	stderr, code = dump("-o", link, "--allow-foreign-output", link)
	if code != 0 {
		t.Fatalf("dump --allow-foreign-output: exit %d, %q", code, stderr)
	}
	select {
	case <-done:
	case <-time.After(5 * time.Second):
		t.Fatal("cat did not reach EOF 5s after the allowed dump")
	}
	isSnapshot(t, "what nobody read after --allow-foreign-output", got.Bytes())
	if !bytes.Contains(got.Bytes(), []byte("secret")) {
		t.Errorf("nobody did not get the pipe's bytes with --allow-foreign-output")
	}
}

// TestDumpOutputOwnFIFO: root's own FIFO, a link to it, and under sudo
// the invoking user's FIFO receive the snapshot.
func TestDumpOutputOwnFIFO(t *testing.T) {
	requireBPF(t)
	pid, _ := stuckReader(t, "x")
	dir := stickyDir(t)
	mine := filepath.Join(dir, "root.fifo")
	if err := syscall.Mkfifo(mine, 0o600); err != nil {
		t.Fatal(err)
	}
	link := filepath.Join(dir, "root.link")
	if err := os.Symlink(mine, link); err != nil {
		t.Fatal(err)
	}
	theirs := filepath.Join(dir, "sudoer.fifo")
	runAsNobody(t, "mkfifo", theirs)
	for _, tc := range []struct {
		what, fifo, out string
		env             []string
	}{
		{"root's FIFO", mine, mine, nil},
		{"root's link to root's FIFO", mine, link, nil},
		{"the FIFO of SUDO_UID", theirs, theirs, []string{"SUDO_UID=65534"}},
	} {
		got := readFIFO(t, tc.fifo)
		cmd := exec.Command(pipesnapBin, "dump", "--method", "tee", "--pid", strconv.Itoa(pid), "-o", tc.out)
		cmd.Env = append(os.Environ(), tc.env...)
		if out, err := cmd.CombinedOutput(); err != nil {
			t.Errorf("dump -o %s: %v, %s", tc.what, err, out)
			continue
		}
		isSnapshot(t, tc.what, <-got)
	}
}

// TestDumpOutputCharDevices: /dev/null works; nobody's character device
// (a terminal of nobody's, say) is refused.
func TestDumpOutputCharDevices(t *testing.T) {
	requireBPF(t)
	pid, _ := stuckReader(t, "x")
	if _, stderr, code := run(t, "dump", "--method", "tee", "--pid", strconv.Itoa(pid), "-o", os.DevNull); code != 0 {
		t.Errorf("dump -o %s: exit %d, %q", os.DevNull, code, stderr)
	}
	dev := filepath.Join(stickyDir(t), "tty")
	if err := unix.Mknod(dev, unix.S_IFCHR|0o620, int(unix.Mkdev(1, 3))); err != nil {
		t.Fatal(err)
	}
	if err := os.Chown(dev, nobody, nobody); err != nil {
		t.Fatal(err)
	}
	_, stderr, code := run(t, "dump", "--method", "tee", "--pid", strconv.Itoa(pid), "-o", dev)
	refusedForeign(t, "dump -o nobody's character device", stderr, code, dev+" is a character device owned by uid 65534 (nobody)")
	if _, stderr, code := run(t, "dump", "--method", "tee", "--pid", strconv.Itoa(pid), "-o", dev, "--allow-foreign-output", dev); code != 0 {
		t.Errorf("dump -o nobody's character device --allow-foreign-output: exit %d, %q", code, stderr)
	}
}

// shmDir is a directory on tmpfs (/dev/shm), where O_TMPFILE works.
func shmDir(t *testing.T) string {
	t.Helper()
	dir, err := os.MkdirTemp("/dev/shm", "pipesnap-test-")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(dir) })
	fd, err := unix.Open(dir, unix.O_TMPFILE|unix.O_WRONLY|unix.O_CLOEXEC, 0o600)
	if err != nil {
		t.Fatalf("O_TMPFILE in %s: %v", dir, err)
	}
	unix.Close(fd)
	return dir
}

// TestDumpOutputKilled: dumps killed (SIGKILL) at random moments while
// their output is open, before it is complete, leave no temporary file,
// and every file they leave is a whole snapshot.
func TestDumpOutputKilled(t *testing.T) {
	requireBPF(t)
	pid := fullPipeReader(t, 1<<20) // 1 MiB to write: a wider window
	dir := shmDir(t)
	start := func(name string) *exec.Cmd {
		cmd := exec.Command(pipesnapBin, "dump", "--method", "tee", "--pid", strconv.Itoa(pid), "-o", filepath.Join(dir, name))
		if err := cmd.Start(); err != nil {
			t.Fatal(err)
		}
		return cmd
	}
	// waitOpen waits until cmd has its output open, false if it ended.
	waitOpen := func(cmd *exec.Cmd) bool {
		for deadline := time.Now().Add(10 * time.Second); !outputOpen(cmd.Process.Pid, dir); time.Sleep(200 * time.Microsecond) {
			if time.Now().After(deadline) {
				t.Fatal("no dump output open after 10s")
			}
			var st unix.Stat_t
			if unix.Stat(fmt.Sprintf("/proc/%d/fd", cmd.Process.Pid), &st) != nil {
				return false
			}
			if b, _ := os.ReadFile(fmt.Sprintf("/proc/%d/stat", cmd.Process.Pid)); bytes.Contains(b, []byte(") Z ")) {
				return false
			}
		}
		return true
	}
	// How long a dump has its output open (the shortest of three): the
	// output is opened only after the wait-sampling program is loaded,
	// tens of ms in, so the kills are spread over that window rather
	// than over the first ms of the run: over the first half of it, as
	// detection takes some of it.
	window := time.Duration(1 << 62)
	for range 3 {
		cmd := start("first.snap")
		waitOpen(cmd)
		opened := time.Now()
		if err := cmd.Wait(); err != nil {
			t.Fatal(err)
		}
		window = min(window, time.Since(opened))
		os.Remove(filepath.Join(dir, "first.snap"))
	}
	t.Logf("output open for %v", window)

	// check wants nothing in dir but whole snapshots, and removes them.
	check := func() {
		ents, err := os.ReadDir(dir)
		if err != nil {
			t.Fatal(err)
		}
		for _, e := range ents {
			path := filepath.Join(dir, e.Name())
			if !strings.HasSuffix(e.Name(), ".snap") || strings.HasPrefix(e.Name(), ".") {
				t.Errorf("left behind: %s", e.Name())
			} else if b, err := os.ReadFile(path); err != nil {
				t.Error(err)
			} else {
				isSnapshot(t, e.Name(), b)
			}
			os.Remove(path)
		}
	}
	const runs = 50
	killed := 0
	for i := range runs {
		cmd := start(fmt.Sprintf("s%d.snap", i))
		if waitOpen(cmd) {
			time.Sleep(time.Duration(rand.Int64N(int64(window / 2))))
		}
		cmd.Process.Kill()
		if err := cmd.Wait(); err != nil {
			killed++
		}
		check()
	}
	t.Logf("%d of %d dumps killed with their output open", killed, runs)
	if killed < runs/10 {
		t.Errorf("only %d of %d dumps killed before they ended: the test checks too little", killed, runs)
	}
}

// fullPipeReader starts a process whose stdin is a pipe of size bytes,
// full, that it never reads.
func fullPipeReader(t *testing.T, size int) int {
	t.Helper()
	r, w, err := os.Pipe()
	if err != nil {
		t.Fatal(err)
	}
	defer r.Close()
	defer w.Close()
	if _, err := unix.FcntlInt(w.Fd(), unix.F_SETPIPE_SZ, size); err != nil {
		t.Fatal(err)
	}
	if _, err := w.Write(bytes.Repeat([]byte("y"), size)); err != nil {
		t.Fatal(err)
	}
	return sleeper(t, r)
}

// outputOpen tells whether process pid has a file in dir open that has
// no name yet: an O_TMPFILE file ("DIR/#INO (deleted)"), or a hidden
// temporary one where the filesystem has no O_TMPFILE.
func outputOpen(pid int, dir string) bool {
	fds := fmt.Sprintf("/proc/%d/fd", pid)
	ents, _ := os.ReadDir(fds)
	for _, e := range ents {
		l, _ := os.Readlink(filepath.Join(fds, e.Name()))
		if strings.HasPrefix(l, dir+"/#") && strings.HasSuffix(l, " (deleted)") {
			return true
		}
	}
	tmp, _ := filepath.Glob(filepath.Join(dir, ".*.tmp"))
	return len(tmp) > 0
}
