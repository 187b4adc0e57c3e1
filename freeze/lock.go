package freeze

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"syscall"
	"time"

	"golang.org/x/sys/unix"

	"github.com/pipesnap/pipesnap/internal/host"
)

// One pipesnap freeze at a time per process: a second freeze of a
// process that is frozen would take the first one's cgroup for the
// process's own and move it back there, or thaw what the first still
// walks. The lock is an flock(2) on a file per process, named by pid and
// start time (a pid given out again is another process, another lock):
//
//   - the kernel releases an flock when its last holder dies, SIGKILL
//     included, so a dead pipesnap never leaves a process locked;
//   - the lock belongs to the open file, and the watchdog is sent it: a
//     pipesnap killed while it freezes keeps the process locked until its
//     watchdog has moved everything back, and no other freeze can come
//     in between and take a pipesnap cgroup for where the process lives;
//   - it works alike for the freezer and for SIGSTOP (a cgroup's
//     existence would only serve the former, and outlive a SIGKILL).
//
// The file is removed by its holder before it lets go (a waiter that
// then gets the lock of a removed file sees it and opens the path again),
// so a freeze leaves no file behind.

// LockWait is how long Stop waits for another pipesnap's freeze of the
// same process to end before it gives up with ErrBusy.
var LockWait = 10 * time.Second

// ErrBusy means another pipesnap freezes one of the processes.
var ErrBusy = errors.New("another pipesnap is freezing it")

// lockDirs are where the lock files can go, best first: /run/pipesnap
// for root, the user's runtime directory otherwise, then a directory of
// the user's in the temporary directory (a read-only /run).
func lockDirs() []string {
	var dirs []string
	if os.Geteuid() == 0 {
		dirs = append(dirs, "/run/pipesnap")
	} else if d := os.Getenv("XDG_RUNTIME_DIR"); d != "" {
		dirs = append(dirs, filepath.Join(d, "pipesnap"))
	}
	return append(dirs, filepath.Join(os.TempDir(), fmt.Sprintf("pipesnap-%d", os.Geteuid())))
}

// lockDir is the first of lockDirs that is, or can be made, a directory
// only this user writes.
func lockDir() (string, error) {
	var errs []error
	for _, d := range lockDirs() {
		err := ensureDir(d)
		if err == nil {
			return d, nil
		}
		errs = append(errs, err)
	}
	return "", errors.Join(errs...)
}

// procLock is the lock of one process.
type procLock struct {
	path string
	f    *os.File
}

// lockProcs takes the locks of pids, in pid order (two freezes of
// overlapping sets cannot each hold what the other waits for), waiting
// up to wait for each. On error it holds none.
func lockProcs(pids []int, wait time.Duration, wd *watchdog) (_ []*procLock, err error) {
	dir, err := lockDir()
	if err != nil {
		return nil, fmt.Errorf("freeze lock: %w", err)
	}
	sweep(dir)
	sorted := slices.Clone(pids)
	slices.Sort(sorted)
	sorted = slices.Compact(sorted)
	var locks []*procLock
	defer func() {
		if err != nil {
			unlockAll(locks)
			locks = nil
		}
	}()
	for _, pid := range sorted {
		start, ok := host.StartTicks(uint32(pid))
		if !ok {
			return nil, fmt.Errorf("freezing pid %d: %w", pid, unix.ESRCH)
		}
		path := filepath.Join(dir, fmt.Sprintf("freeze-%d-%d.lock", pid, start))
		if err := wd.send("lockpath", path); err != nil {
			return nil, err
		}
		l, err := lockFile(path, wait)
		if err != nil {
			return nil, fmt.Errorf("freezing pid %d: %w", pid, err)
		}
		locks = append(locks, l)
		if err := wd.sendFD(int(l.f.Fd()), "lock", path); err != nil {
			return nil, err
		}
	}
	return locks, nil
}

// ensureDir makes dir (mode 0700) or checks that it is a directory of
// this user's, not a link.
func ensureDir(dir string) error {
	if err := os.MkdirAll(filepath.Dir(dir), 0o755); err != nil {
		return err
	}
	if err := os.Mkdir(dir, 0o700); err != nil && !errors.Is(err, os.ErrExist) {
		return err
	}
	st, err := os.Lstat(dir)
	if err != nil {
		return err
	}
	sys, ok := st.Sys().(*syscall.Stat_t)
	if !st.IsDir() || !ok || int(sys.Uid) != os.Geteuid() || st.Mode().Perm()&0o022 != 0 {
		return fmt.Errorf("%s is not a directory of uid %d's that only it can write", dir, os.Geteuid())
	}
	return nil
}

// lockFile takes an exclusive flock on path, waiting up to wait.
func lockFile(path string, wait time.Duration) (*procLock, error) {
	deadline := time.Now().Add(wait)
	for {
		f, err := os.OpenFile(path, os.O_RDWR|os.O_CREATE|unix.O_NOFOLLOW|unix.O_CLOEXEC, 0o600)
		if err != nil {
			return nil, fmt.Errorf("freeze lock: %w", err)
		}
		err = unix.Flock(int(f.Fd()), unix.LOCK_EX|unix.LOCK_NB)
		if err == nil {
			if samePath(f, path) {
				// Who holds it, for the message of a freeze that waits.
				f.Truncate(0)
				f.WriteAt([]byte(fmt.Sprintf("pid %d\n", os.Getpid())), 0)
				return &procLock{path: path, f: f}, nil
			}
			// Removed by its last holder between open and flock: the
			// lock of a file nobody else will open. Open the path again.
			f.Close()
			continue
		}
		if !errors.Is(err, unix.EWOULDBLOCK) {
			f.Close()
			return nil, fmt.Errorf("freeze lock %s: %w", path, err)
		}
		holder, _ := os.ReadFile(path)
		f.Close()
		if time.Now().After(deadline) {
			who := strings.TrimSpace(string(holder))
			if who == "" {
				who = "another process"
			}
			return nil, fmt.Errorf("%w (%s holds %s); gave up after %v", ErrBusy, who, path, wait)
		}
		time.Sleep(2 * time.Millisecond)
	}
}

// samePath tells whether f still is the file at path.
func samePath(f *os.File, path string) bool {
	a, err1 := f.Stat()
	b, err2 := os.Lstat(path)
	return err1 == nil && err2 == nil && os.SameFile(a, b)
}

// unlock removes the file, then lets go of the lock.
func (l *procLock) unlock() {
	if l == nil || l.f == nil {
		return
	}
	if samePath(l.f, l.path) {
		os.Remove(l.path)
	}
	l.f.Close()
	l.f = nil
}

func unlockAll(locks []*procLock) {
	for _, l := range locks {
		l.unlock()
	}
}

// sweep removes the lock files of processes that are gone, left by a
// pipesnap killed after it locked and before its watchdog ran (a file
// without a holder: it locks nothing, but would stay until reboot).
func sweep(dir string) {
	ents, err := os.ReadDir(dir)
	if err != nil {
		return
	}
	for _, e := range ents {
		var pid int
		var start uint64
		name := e.Name()
		if _, err := fmt.Sscanf(name, "freeze-%d-%d.lock", &pid, &start); err != nil || name != fmt.Sprintf("freeze-%d-%d.lock", pid, start) {
			continue
		}
		if now, ok := host.StartTicks(uint32(pid)); ok && now == start {
			continue // the process lives: its lock may be in use
		}
		removeStale(filepath.Join(dir, name))
	}
}

// removeStale removes the lock file at path if nobody holds it.
func removeStale(path string) {
	f, err := os.OpenFile(path, os.O_RDWR|unix.O_NOFOLLOW|unix.O_CLOEXEC, 0)
	if err != nil {
		return
	}
	if unix.Flock(int(f.Fd()), unix.LOCK_EX|unix.LOCK_NB) == nil && samePath(f, path) {
		os.Remove(path)
	}
	f.Close()
}
