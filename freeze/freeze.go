// Package freeze stops a set of processes for a consistent cut and lets
// them go again: with the cgroup v2 freezer where it can be used without
// side effects (see cgroup.go), else with SIGSTOP, sent through pidfds so
// a recycled pid is never signalled, waiting until every thread is
// stopped; Thaw then sends SIGCONT to exactly the processes it stopped. A
// process that was already stopped is left as it was found.
package freeze

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"time"

	"golang.org/x/sys/unix"
)

// ErrTimeout means a process did not stop in time (a thread in
// uninterruptible sleep, say); nothing is left stopped.
var ErrTimeout = errors.New("processes did not stop in time")

// useCgroup is off in tests of the SIGSTOP path.
var useCgroup = true

// Set is the processes Stop stopped.
type Set struct {
	procs []proc        // stopped with SIGSTOP
	cg    *cgroupFreeze // or frozen through this cgroup
	How   string        // "cgroup v2 freezer", or "SIGSTOP" and why not the freezer
}

type proc struct {
	pid   int
	pidfd int
}

// Stop stops the processes and waits, up to timeout, until all their
// threads are stopped. On error, whatever it stopped is resumed.
func Stop(pids []int, timeout time.Duration) (_ *Set, err error) {
	if slices.Contains(pids, os.Getpid()) {
		return nil, errors.New("freezing pipesnap itself would never end")
	}
	cg, cgErr := (*cgroupFreeze)(nil), errors.New("disabled")
	if useCgroup {
		cg, cgErr = freezeCgroup(pids, timeout)
	}
	if cgErr == nil {
		return &Set{cg: cg, How: "cgroup v2 freezer"}, nil
	}
	s := &Set{How: fmt.Sprintf("SIGSTOP (no cgroup freezer: %v)", cgErr)}
	defer func() {
		if err != nil {
			s.Thaw()
		}
	}()
	for _, pid := range pids {
		fd, err := unix.PidfdOpen(pid, 0)
		if err != nil {
			return nil, fmt.Errorf("freezing pid %d: %w", pid, err)
		}
		if allStopped(pid) {
			unix.Close(fd) // stopped by someone else: theirs to resume
			continue
		}
		if err := unix.PidfdSendSignal(fd, unix.SIGSTOP, nil, 0); err != nil {
			unix.Close(fd)
			return nil, fmt.Errorf("freezing pid %d: %w", pid, err)
		}
		s.procs = append(s.procs, proc{pid, fd})
	}
	deadline := time.Now().Add(timeout)
	for _, p := range s.procs {
		for !allStopped(p.pid) {
			if time.Now().After(deadline) {
				return nil, fmt.Errorf("freezing pid %d: %w after %v", p.pid, ErrTimeout, timeout)
			}
			time.Sleep(200 * time.Microsecond)
		}
	}
	return s, nil
}

// Thaw resumes every process Stop stopped. It is safe to call twice.
func (s *Set) Thaw() error {
	var errs []error
	if err := s.cg.thaw(); err != nil {
		errs = append(errs, err)
	}
	s.cg = nil
	for _, p := range s.procs {
		if err := unix.PidfdSendSignal(p.pidfd, unix.SIGCONT, nil, 0); err != nil && !errors.Is(err, unix.ESRCH) {
			errs = append(errs, fmt.Errorf("resuming pid %d: %w", p.pid, err))
		}
		unix.Close(p.pidfd)
	}
	s.procs = nil
	return errors.Join(errs...)
}

// Len is the number of processes this set stopped with SIGSTOP.
func (s *Set) Len() int { return len(s.procs) }

// allStopped reports whether every thread of pid is stopped (T or t), or
// gone (Z, X, or no longer listed).
func allStopped(pid int) bool {
	tasks, err := filepath.Glob(fmt.Sprintf("/proc/%d/task/*/stat", pid))
	if err != nil || len(tasks) == 0 {
		return true
	}
	for _, path := range tasks {
		b, err := os.ReadFile(path)
		if err != nil {
			continue // the thread exited
		}
		// The state follows the last ')' : "pid (comm) S ...".
		i := strings.LastIndexByte(string(b), ')')
		if i < 0 || i+2 >= len(b) {
			continue
		}
		switch b[i+2] {
		case 'T', 't', 'Z', 'X':
		default:
			return false
		}
	}
	return true
}
