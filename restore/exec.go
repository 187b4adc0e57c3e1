package restore

import (
	"errors"
	"fmt"
	"os"
	"os/exec"
	"sync"
	"syscall"

	"golang.org/x/sys/unix"
)

// Process is a command started by Set.Start.
type Process struct {
	Pid int

	mu    sync.Mutex
	pidfd int // -1 once waited for (or if the kernel gave none)
	done  bool
	set   *Set
}

// Start runs argv (argv[0] looked up in PATH) with env. The command gets
// the set's fds at their numbers, without close-on-exec, fds that shared
// an open file sharing it still; where the set has no fd 0, 1 or 2 it gets
// the caller's. No other fd of the caller's reaches it, even one not
// close-on-exec. Once the command runs, the restorer's copies are closed,
// so it holds the only ones (but for the write ends KeepWriter keeps,
// which Wait closes).
func (s *Set) Start(argv, env []string) (*Process, error) {
	if s.started {
		return nil, errors.New("restore: the set was already handed to a command")
	}
	if len(argv) == 0 {
		return nil, errors.New("restore: no command to run")
	}
	path, err := exec.LookPath(argv[0])
	if err != nil {
		return nil, err
	}
	files := s.plan()
	if err := checkRoom(files); err != nil {
		return nil, err
	}
	pidfd := -1
	attr := &syscall.ProcAttr{Env: env, Files: files, Sys: &syscall.SysProcAttr{PidFD: &pidfd}}
	pid, err := syscall.ForkExec(path, argv, attr)
	if err != nil {
		return nil, &exec.Error{Name: argv[0], Err: err}
	}
	s.started = true
	s.owned.closeRuns(s.keep.has)
	return &Process{Pid: pid, pidfd: pidfd, set: s}, nil
}

// plan is the command's fd table for syscall.ForkExec: entry i is the
// restorer's fd that becomes fd i, or -1 to have i closed. ForkExec moves
// sources out of the way before it dup2s (so a source that is some
// other entry's target is safe) and clears close-on-exec on every entry.
func (s *Set) plan() []uintptr {
	const none = ^uintptr(0)
	n := 3
	for _, fd := range s.fds {
		n = max(n, fd.Num+1)
	}
	// The caller's fds that an exec would pass on: listed as -1, the
	// command gets them closed. (The restorer's own are close-on-exec.)
	for _, fd := range inheritable(&s.owned) {
		if fd >= 3 {
			n = max(n, fd+1)
		}
	}
	files := make([]uintptr, n)
	for i := range files {
		files[i] = none
	}
	for _, fd := range s.fds {
		files[fd.Num] = uintptr(fd.src)
	}
	for i := 0; i < 3; i++ {
		if files[i] == none && !s.owned.has(i) && isOpen(i) {
			files[i] = uintptr(i)
		}
	}
	return files
}

// checkRoom refuses a plan the child could not carry out under
// RLIMIT_NOFILE (which would fail in the child with EBADF or EINVAL, an
// "exec" error naming the command): syscall.ForkExec first moves its
// status pipe, then every source below its target, to fd numbers above
// both the table and every source, and dup3 takes no number at or above
// the limit.
func checkRoom(files []uintptr) error {
	top := len(files) // the first number ForkExec moves to, less one
	moves := 0
	for i, f := range files {
		if int(f) > top { // int: -1 (closed) never is
			top = int(f)
		}
		if int(f) >= 0 && int(f) < i {
			moves++
		}
	}
	highest := top + 1 + moves // the status pipe, then the sources moved
	lim, err := nofile(uint64(highest) + 1)
	if err != nil || uint64(highest) < lim.Cur {
		return nil
	}
	return fmt.Errorf("putting the command's fds in place (up to fd %d) takes fd numbers up to %d, at or above %w, %d (hard limit %d)",
		len(files)-1, highest, ErrFDLimit, lim.Cur, lim.Max)
}

func isOpen(fd int) bool {
	_, err := unix.FcntlInt(uintptr(fd), unix.F_GETFD, 0)
	return err == nil
}

// Signal sends sig to the command, unless it has been waited for.
func (p *Process) Signal(sig syscall.Signal) error {
	p.mu.Lock()
	defer p.mu.Unlock()
	switch {
	case p.done:
		return os.ErrProcessDone
	case p.pidfd >= 0:
		return unix.PidfdSendSignal(p.pidfd, sig, nil, 0)
	}
	return syscall.Kill(p.Pid, sig)
}

// Wait waits for the command to end, closes the write ends KeepWriter
// kept, and returns its exit status: its exit code, or 128 plus the
// number of the signal that killed it, as a shell reports it.
func (p *Process) Wait() (int, error) {
	var ws syscall.WaitStatus
	for {
		_, err := syscall.Wait4(p.Pid, &ws, 0, nil)
		if errors.Is(err, syscall.EINTR) {
			continue
		}
		if err != nil {
			return -1, fmt.Errorf("waiting for pid %d: %w", p.Pid, err)
		}
		break
	}
	p.mu.Lock()
	p.done = true
	if p.pidfd >= 0 {
		unix.Close(p.pidfd)
		p.pidfd = -1
	}
	p.mu.Unlock()
	p.set.Close()
	switch {
	case ws.Exited():
		return ws.ExitStatus(), nil
	case ws.Signaled():
		return 128 + int(ws.Signal()), nil
	}
	return -1, fmt.Errorf("pid %d: unexpected wait status %#x", p.Pid, uint32(ws))
}
