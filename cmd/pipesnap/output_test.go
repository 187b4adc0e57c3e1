package main

import (
	"bytes"
	"errors"
	"fmt"
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

// TestOutputKind: what -o does with each kind of existing file.
func TestOutputKind(t *testing.T) {
	for _, tc := range []struct {
		mode    os.FileMode
		special bool
		err     string
	}{
		{0o600, false, ""},
		{os.ModeDevice | os.ModeCharDevice | 0o666, true, ""},
		{os.ModeNamedPipe | 0o600, true, ""},
		{os.ModeDevice | 0o660, false, "is a block device: refusing to write a snapshot over it"},
		{os.ModeSocket | 0o755, false, "is a socket"},
		{os.ModeDir | 0o755, false, "is a directory"},
	} {
		special, err := outputKind("X", tc.mode)
		var u usageError
		switch {
		case tc.err == "" && (err != nil || special != tc.special):
			t.Errorf("%v: %v, %v; want %v", tc.mode, special, err, tc.special)
		case tc.err != "" && (err == nil || !errors.As(err, &u) || !strings.Contains(err.Error(), "X "+tc.err)):
			t.Errorf("%v: %v; want a usage error %q", tc.mode, err, tc.err)
		}
	}
}
