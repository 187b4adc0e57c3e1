// Package freeze stops a set of processes for a consistent cut and lets
// them go again: with the cgroup v2 freezer where it can be used without
// side effects (see cgroup.go), else with SIGSTOP, sent through pidfds so
// a recycled pid is never signalled, waiting until every thread is
// stopped; Thaw then sends SIGCONT to exactly the processes it stopped. A
// process that was already stopped is left as it was found.
//
// Nothing is left behind, whatever happens to pipesnap: one freeze at a
// time per process (lock.go); the children forked during the freeze are
// frozen and resumed with their parents; and a watchdog process
// (watchdog.go), started before anything is stopped and told every step
// before it is taken, thaws and moves back what pipesnap stopped if
// pipesnap dies (SIGKILL included) before Thaw.
package freeze

import (
	"cmp"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"time"

	"golang.org/x/sys/unix"

	"github.com/pipesnap/pipesnap/internal/host"
)

// ErrTimeout means a process did not stop in time (a thread in
// uninterruptible sleep, say); nothing is left stopped.
var ErrTimeout = errors.New("processes did not stop in time")

// useCgroup is off in tests of the SIGSTOP path.
var useCgroup = true

// testHookFreezing, set by tests, runs once the freeze has begun and
// before the processes are stopped (after their move to the cgroup; before
// the signals): it widens the window a fork lands in.
var testHookFreezing func()

// Set is the processes Stop stopped.
type Set struct {
	procs []proc        // stopped with SIGSTOP
	cg    *cgroupFreeze // or frozen through this cgroup
	How   string        // "cgroup v2 freezer", or "SIGSTOP" and why not the freezer

	locks  []*procLock // one freeze at a time per process (lock.go)
	wd     *watchdog   // thaws if pipesnap dies before Thaw (watchdog.go)
	since  time.Time   // the first process stopped
	thawed time.Time   // the last one resumed
}

type proc struct {
	pid   int
	pidfd int
}

// Stop stops the processes and waits, up to timeout, until all their
// threads are stopped; the children they fork meanwhile are stopped too.
// It first starts the watchdog that thaws them should pipesnap die
// before Thaw, then takes the freeze lock of every process (waiting up to
// LockWait for another pipesnap's freeze of one to end). On error,
// whatever it stopped is resumed.
func Stop(pids []int, timeout time.Duration) (_ *Set, err error) {
	if slices.Contains(pids, os.Getpid()) {
		return nil, errors.New("freezing pipesnap itself would never end")
	}
	s := &Set{}
	defer func() {
		if err != nil {
			s.Thaw()
		}
	}()
	if s.wd, err = startWatchdog(); err != nil {
		return nil, fmt.Errorf("freeze: no watchdog to thaw the processes should pipesnap be killed: %w", err)
	}
	if s.locks, err = lockProcs(pids, LockWait, s.wd); err != nil {
		return nil, err
	}
	cgErr := errors.New("disabled")
	if useCgroup {
		var how string
		s.cg, how, cgErr = freezeCgroup(pids, timeout, s.wd, &s.since)
		if cgErr == nil {
			s.How = cmp.Or(how, "cgroup v2 freezer")
			return s, nil
		}
		s.cg = nil
		if errors.Is(cgErr, errWatchdog) || errors.Is(cgErr, ErrBusy) {
			return nil, cgErr
		}
		if err := s.wd.send("nocgroup"); err != nil {
			return nil, err
		}
	}
	s.How = fmt.Sprintf("SIGSTOP (no cgroup freezer: %v)", cgErr)
	if err := s.stopSignals(pids, timeout); err != nil {
		return nil, err
	}
	return s, nil
}

// stopSignals stops pids with SIGSTOP, then the children they forked
// since (a fork between the signal and the stop, or one that was under
// way), until a scan of their children finds no new one.
func (s *Set) stopSignals(pids []int, timeout time.Duration) error {
	s.since = time.Now()
	startTick := bootTicks()
	if testHookFreezing != nil {
		testHookFreezing()
	}
	known := map[int]bool{os.Getpid(): true, s.wd.pid(): true}
	for _, pid := range pids {
		known[pid] = true
	}
	for _, pid := range pids {
		fd, err := unix.PidfdOpen(pid, 0)
		if err != nil {
			return fmt.Errorf("freezing pid %d: %w", pid, err)
		}
		if err := s.stopOne(pid, fd); err != nil {
			return err
		}
	}
	deadline := time.Now().Add(timeout)
	for {
		for _, p := range s.procs {
			for !allStopped(p.pid) {
				if time.Now().After(deadline) {
					return fmt.Errorf("freezing pid %d: %w after %v", p.pid, ErrTimeout, timeout)
				}
				time.Sleep(200 * time.Microsecond)
			}
		}
		// Every process stopped: none forks any more. A child forked
		// before its parent stopped is stopped now, and its own
		// children looked for in the next round.
		added, err := s.stopNewChildren(known, startTick)
		if err != nil {
			return err
		}
		if added == 0 {
			return nil
		}
	}
}

// stopOne stops pid (pidfd fd, which it takes), unless it was stopped
// already: then it is someone else's to resume.
func (s *Set) stopOne(pid, fd int) error {
	if allStopped(pid) {
		unix.Close(fd)
		return nil
	}
	start, _ := host.StartTicks(uint32(pid))
	if err := s.wd.send("stopped", strconv.Itoa(pid), strconv.FormatUint(start, 10)); err != nil {
		unix.Close(fd)
		return err
	}
	if err := unix.PidfdSendSignal(fd, unix.SIGSTOP, nil, 0); err != nil {
		unix.Close(fd)
		if errors.Is(err, unix.ESRCH) {
			return nil // gone
		}
		return fmt.Errorf("freezing pid %d: %w", pid, err)
	}
	s.procs = append(s.procs, proc{pid, fd})
	return nil
}

// stopNewChildren stops the children of the stopped processes that
// started at startTick or later, and are not known yet.
func (s *Set) stopNewChildren(known map[int]bool, startTick uint64) (int, error) {
	added := 0
	for i := 0; i < len(s.procs); i++ {
		for _, c := range childrenOf(s.procs[i].pid) {
			if known[c] {
				continue
			}
			start, ok := host.StartTicks(uint32(c))
			if !ok || start < startTick {
				continue // gone, or older than the freeze: not stopped by it
			}
			known[c] = true
			fd, err := unix.PidfdOpen(c, 0)
			if err != nil {
				continue // gone
			}
			if now, ok := host.StartTicks(uint32(c)); !ok || now != start {
				unix.Close(fd) // the pid was given out again
				continue
			}
			n := len(s.procs)
			if err := s.stopOne(c, fd); err != nil {
				return added, err
			}
			added += len(s.procs) - n
		}
	}
	return added, nil
}

// childrenOf lists pid's children, of all its threads.
func childrenOf(pid int) []int {
	files, _ := filepath.Glob(fmt.Sprintf("/proc/%d/task/*/children", pid))
	var out []int
	for _, f := range files {
		b, err := os.ReadFile(f)
		if err != nil {
			continue
		}
		for w := range strings.FieldsSeq(string(b)) {
			if n, err := strconv.Atoi(w); err == nil {
				out = append(out, n)
			}
		}
	}
	if len(files) > 0 || isGone(pid) {
		return out
	}
	// No /proc/PID/task/TID/children (CONFIG_PROC_CHILDREN off): scan.
	ents, _ := os.ReadDir("/proc")
	for _, e := range ents {
		if n, err := strconv.Atoi(e.Name()); err == nil && ppidOf(n) == pid {
			out = append(out, n)
		}
	}
	return out
}

// bootTicks is now, in the clock ticks since boot of /proc/PID/stat's
// start times.
func bootTicks() uint64 {
	var ts unix.Timespec
	if unix.ClockGettime(unix.CLOCK_BOOTTIME, &ts) != nil {
		return 0
	}
	return uint64(ts.Nano()) / (1e9 / host.ClockTicks)
}

// Thaw resumes every process Stop stopped, tells the watchdog, and lets
// go of the locks. It is safe to call twice.
func (s *Set) Thaw() error {
	err := s.resume()
	// The watchdog forgets what is resumed, the lock files go (the
	// watchdog's copy of each lock, of a file no longer linked, goes
	// with it), and only then is it let go: a SIGKILL at any point in
	// between leaves nothing the watchdog would not remove.
	s.wd.send("resumed")
	unlockAll(s.locks)
	s.locks = nil
	if s.wd != nil {
		s.wd.finish()
		s.wd = nil
	}
	return err
}

// resume lets the processes go: the part of Thaw the watchdog does too.
func (s *Set) resume() error {
	var errs []error
	cg := s.cg
	if err := cg.thaw(); err != nil {
		errs = append(errs, err)
	}
	s.cg = nil
	resumed := time.Now()
	if cg != nil && !cg.resumed.IsZero() {
		resumed = cg.resumed // not the wait for its removal
	}
	for _, p := range s.procs {
		if err := unix.PidfdSendSignal(p.pidfd, unix.SIGCONT, nil, 0); err != nil && !errors.Is(err, unix.ESRCH) {
			errs = append(errs, fmt.Errorf("resuming pid %d: %w (run: kill -CONT %d)", p.pid, err, p.pid))
		}
		unix.Close(p.pidfd)
		resumed = time.Now()
	}
	s.procs = nil
	if s.thawed.IsZero() {
		s.thawed = resumed
	}
	return errors.Join(errs...)
}

// Frozen is how long the processes were stopped: from the first stopped
// to the last resumed (so far, before Thaw).
func (s *Set) Frozen() time.Duration {
	if s.since.IsZero() {
		return 0
	}
	if s.thawed.IsZero() {
		return time.Since(s.since)
	}
	return s.thawed.Sub(s.since)
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
