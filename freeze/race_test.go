package freeze

import (
	"bufio"
	"fmt"
	"io"
	"math/rand/v2"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/pipesnap/pipesnap/internal/host"
)

// The helper mode of this test binary: freeze the pid in
// FREEZE_TEST_HELPER ("PID" or "PID signals"), say "frozen", and wait to
// be killed.
func TestMain(m *testing.M) {
	if v := os.Getenv("FREEZE_TEST_HELPER"); v != "" {
		f := strings.Fields(v)
		pid, _ := strconv.Atoi(f[0])
		useCgroup = len(f) < 2
		s, err := Stop([]int{pid}, 2*time.Second)
		if err != nil {
			fmt.Fprintln(os.Stderr, "helper:", err)
			os.Exit(2)
		}
		fmt.Printf("frozen %s\n", s.How)
		time.Sleep(time.Minute)
		os.Exit(3)
	}
	os.Exit(m.Run())
}

func requireCgroup(t *testing.T) string {
	t.Helper()
	root, err := cgroup2Mount()
	if err != nil || os.Geteuid() != 0 {
		t.Skip("no cgroup v2 hierarchy, or not root")
	}
	if b, err := os.ReadFile(filepath.Join(root, "cgroup.subtree_control")); err != nil || strings.TrimSpace(string(b)) != "" {
		t.Skip("controllers enabled: the freezer path is not the one taken here")
	}
	return root
}

// The processes of this test binary's freezes: those that froze (the
// binary and its helpers: a freeze cgroup is named by the freezer's pid)
// and the targets (a lock file by the target's pid and start time).
// "go test ./..." runs other packages' tests at the same time, whose
// freezes (pipesnap dump --freeze) make cgroups and lock files of their
// own: leftovers counts only this binary's, so that it sees every one of
// them and none of another package's.
var mine = struct {
	sync.Mutex
	freezers map[int]bool
	targets  map[string]bool // lock file names
}{freezers: map[int]bool{os.Getpid(): true}, targets: map[string]bool{}}

// ownFreezer records pid as one that freezes.
func ownFreezer(pid int) {
	mine.Lock()
	defer mine.Unlock()
	mine.freezers[pid] = true
}

// ownTarget records the target pid (running) for its lock file.
func ownTarget(t *testing.T, pid int) {
	t.Helper()
	start, ok := host.StartTicks(uint32(pid))
	if !ok {
		t.Fatalf("pid %d: no start time", pid)
	}
	mine.Lock()
	defer mine.Unlock()
	mine.targets[fmt.Sprintf("freeze-%d-%d.lock", pid, start)] = true
}

// isOwnCgroup tells whether name is "pipesnap-freeze-PID" or
// "pipesnap-freeze-PID-N" of a freezer of this binary's.
func isOwnCgroup(name string) bool {
	rest, ok := strings.CutPrefix(name, PrefixCgroup)
	if !ok {
		return false
	}
	pid, _, _ := strings.Cut(rest, "-")
	n, err := strconv.Atoi(pid)
	mine.Lock()
	defer mine.Unlock()
	return err == nil && mine.freezers[n]
}

// leftovers lists the pipesnap cgroups and lock files of this binary's
// freezes that exist.
func leftovers(t *testing.T) []string {
	t.Helper()
	var out []string
	if root, err := cgroup2Mount(); err == nil {
		m, _ := filepath.Glob(filepath.Join(root, PrefixCgroup+"*"))
		for _, p := range m {
			if isOwnCgroup(filepath.Base(p)) {
				out = append(out, p)
			}
		}
	}
	for _, d := range lockDirs() {
		m, _ := filepath.Glob(filepath.Join(d, "freeze-*"))
		for _, p := range m {
			mine.Lock()
			own := mine.targets[filepath.Base(p)]
			mine.Unlock()
			if own {
				out = append(out, p)
			}
		}
	}
	return out
}

// state is the state letter of every thread of pid, "" if gone.
func state(pid int) string {
	tasks, _ := filepath.Glob(fmt.Sprintf("/proc/%d/task/*/stat", pid))
	var b strings.Builder
	for _, path := range tasks {
		s, err := os.ReadFile(path)
		if i := strings.LastIndexByte(string(s), ')'); err == nil && i > 0 && i+2 < len(s) {
			b.WriteByte(s[i+2])
		}
	}
	return b.String()
}

// running checks pid is not stopped, not frozen and back in cgroup want.
func running(pid int, want string) error {
	if st := state(pid); strings.ContainsAny(st, "Tt") {
		return fmt.Errorf("pid %d stopped (states %s)", pid, st)
	}
	if cg, err := cgroupOf(pid); err == nil && want != "" && cg != want {
		return fmt.Errorf("pid %d in cgroup %s, was in %s", pid, cg, want)
	}
	if cg, err := cgroupOf(pid); err == nil {
		if root, err := cgroup2Mount(); err == nil {
			if b, err := os.ReadFile(filepath.Join(root, cg, "cgroup.freeze")); err == nil && strings.TrimSpace(string(b)) == "1" {
				return fmt.Errorf("pid %d in frozen cgroup %s", pid, cg)
			}
		}
	}
	return nil
}

// eventually retries check for up to d.
func eventually(d time.Duration, check func() error) error {
	deadline := time.Now().Add(d)
	for {
		err := check()
		if err == nil || time.Now().After(deadline) {
			return err
		}
		time.Sleep(5 * time.Millisecond)
	}
}

func modes(t *testing.T, f func(t *testing.T)) {
	t.Run("cgroup", func(t *testing.T) { requireCgroup(t); f(t) })
	t.Run("signals", func(t *testing.T) { withSignals(t); f(t) })
}

// Two freezes of one process at the same time: one waits for the other;
// never both at once, and the process ends where it was, running.
func TestConcurrentStop(t *testing.T) {
	modes(t, func(t *testing.T) {
		a := startSleep(t)
		pid := a.Process.Pid
		before, _ := cgroupOf(pid)
		var inside atomic.Int32
		for round := range 20 {
			var wg sync.WaitGroup
			errs := make(chan error, 2)
			for range 2 {
				wg.Go(func() {
					s, err := Stop([]int{pid}, 2*time.Second)
					if err != nil {
						errs <- err
						return
					}
					if n := inside.Add(1); n != 1 {
						errs <- fmt.Errorf("%d freezes of pid %d at once", n, pid)
					}
					time.Sleep(time.Duration(rand.IntN(3000)) * time.Microsecond)
					inside.Add(-1)
					if err := s.Thaw(); err != nil {
						errs <- err
					}
				})
			}
			wg.Wait()
			close(errs)
			for err := range errs {
				t.Errorf("round %d: %v", round, err)
			}
			if err := running(pid, before); err != nil {
				t.Fatalf("round %d: %v", round, err)
			}
			if l := leftovers(t); len(l) > 0 {
				t.Fatalf("round %d: left behind: %v", round, l)
			}
		}
	})
}

// A second freeze gives up after LockWait, saying who holds the lock.
func TestBusyGivesUp(t *testing.T) {
	withSignals(t)
	a := startSleep(t)
	s, err := Stop([]int{a.Process.Pid}, time.Second)
	if err != nil {
		t.Fatal(err)
	}
	defer s.Thaw()
	old := LockWait
	LockWait = 50 * time.Millisecond
	defer func() { LockWait = old }()
	_, err = Stop([]int{a.Process.Pid}, time.Second)
	if err == nil || !strings.Contains(err.Error(), "another pipesnap is freezing it") || !strings.Contains(err.Error(), fmt.Sprintf("pid %d holds", os.Getpid())) {
		t.Errorf("second Stop: %v", err)
	}
}

// forker starts a shell forking children that live a while: a child
// forked while the freeze starts must be frozen, and come back.
func forker(t *testing.T) *exec.Cmd {
	t.Helper()
	cmd := exec.Command("sh", "-c", "while :; do sleep 0.3 & sleep 0.002; done")
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	ownTarget(t, cmd.Process.Pid)
	t.Cleanup(func() {
		cmd.Process.Kill()
		cmd.Wait()
	})
	time.Sleep(50 * time.Millisecond)
	return cmd
}

func TestForkingTarget(t *testing.T) {
	modes(t, func(t *testing.T) {
		sh := forker(t)
		pid := sh.Process.Pid
		before, _ := cgroupOf(pid)
		// The freeze starts, and the target keeps forking for 30 ms
		// before it is stopped.
		var hookTick uint64
		testHookFreezing = func() {
			hookTick = bootTicks()
			time.Sleep(30 * time.Millisecond)
		}
		defer func() { testHookFreezing = nil }()
		var born int
		for round := range 5 {
			s, err := Stop([]int{pid}, 2*time.Second)
			if err != nil {
				t.Fatal(err)
			}
			// Every child born since the freeze began (a clock tick
			// after the hook: start times count ticks) is stopped.
			time.Sleep(5 * time.Millisecond)
			var newKids []int
			for _, c := range childrenOf(pid) {
				if start, ok := host.StartTicks(uint32(c)); ok && start > hookTick {
					newKids = append(newKids, c)
				}
			}
			born += len(newKids)
			if s.cg != nil {
				members, _ := readProcs(s.cg.dir)
				if !cgroupFrozen(s.cg.dir) {
					t.Errorf("round %d: cgroup %s not frozen", round, s.cg.dir)
				}
				for _, c := range newKids {
					if st := state(c); !slices.Contains(members, c) && st != "" && st != "Z" {
						t.Errorf("round %d: child %d born during the freeze is not in the frozen cgroup %s (members %v)", round, c, s.cg.dir, members)
					}
				}
			} else {
				for _, c := range newKids {
					if st := state(c); st != "" && !strings.ContainsAny(st, "TtZX") {
						t.Errorf("round %d: child %d born during the freeze runs (%s)", round, c, st)
					}
				}
			}
			if err := s.Thaw(); err != nil {
				t.Fatalf("round %d: %v", round, err)
			}
			if err := running(pid, before); err != nil {
				t.Fatal(err)
			}
			for _, c := range childrenOf(pid) {
				if err := running(c, before); err != nil && state(c) != "" {
					t.Errorf("round %d: child: %v", round, err)
				}
			}
			if l := leftovers(t); len(l) > 0 {
				t.Fatalf("round %d: left behind: %v", round, l)
			}
			time.Sleep(20 * time.Millisecond)
		}
		t.Logf("%d children born during 5 freezes", born)
		if born == 0 {
			t.Error("no child was born during the freezes: the test tests nothing")
		}
	})
}

// startHelper runs this binary in helper mode, freezing pid; it returns
// once the helper has said frozen (wait) or at once.
func startHelper(t *testing.T, pid int, signals, wait bool) (*exec.Cmd, io.Reader) {
	t.Helper()
	env := strconv.Itoa(pid)
	if signals {
		env += " signals"
	}
	cmd := exec.Command(os.Args[0], "-test.run=^$")
	cmd.Env = append(os.Environ(), "FREEZE_TEST_HELPER="+env)
	stdout, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	stderr, err := cmd.StderrPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	ownFreezer(cmd.Process.Pid)
	t.Cleanup(func() { cmd.Process.Kill(); cmd.Wait() })
	if wait {
		line, err := bufio.NewReader(stdout).ReadString('\n')
		if !strings.HasPrefix(line, "frozen") {
			b, _ := io.ReadAll(stderr)
			t.Fatalf("helper said %q (%v): %s", line, err, b)
		}
	}
	return cmd, stderr
}

// SIGKILL of the process that froze: its watchdog thaws and moves back,
// at once, and removes what the freeze made.
func TestWatchdogAfterSIGKILL(t *testing.T) {
	modes(t, func(t *testing.T) {
		a := startSleep(t)
		pid := a.Process.Pid
		before, _ := cgroupOf(pid)
		for round := range 3 {
			helper, stderr := startHelper(t, pid, !useCgroup, true)
			if err := running(pid, ""); err == nil && !useCgroup {
				t.Fatalf("round %d: helper said frozen, pid %d runs", round, pid)
			}
			killed := time.Now()
			helper.Process.Signal(syscall.SIGKILL)
			msg, _ := io.ReadAll(stderr) // until the watchdog is gone too
			helper.Wait()
			if err := eventually(2*time.Second, func() error { return running(pid, before) }); err != nil {
				t.Fatalf("round %d: after SIGKILL: %v", round, err)
			}
			if l := leftovers(t); len(l) > 0 {
				t.Fatalf("round %d: left behind: %v", round, l)
			}
			if !strings.Contains(string(msg), "died during its freeze") {
				t.Errorf("round %d: watchdog said %q", round, msg)
			}
			t.Logf("round %d: running again %v after SIGKILL", round, time.Since(killed).Round(time.Millisecond))
		}
	})
}

// SIGKILL at random moments of Stop: whatever was done is undone.
func TestSIGKILLAnyMoment(t *testing.T) {
	modes(t, func(t *testing.T) {
		sh := forker(t)
		pid := sh.Process.Pid
		before, _ := cgroupOf(pid)
		for round := range 15 {
			helper, _ := startHelper(t, pid, !useCgroup, false)
			time.Sleep(time.Duration(rand.IntN(30000)) * time.Microsecond)
			helper.Process.Signal(syscall.SIGKILL)
			helper.Wait()
			check := func() error {
				if err := running(pid, before); err != nil {
					return err
				}
				for _, c := range childrenOf(pid) {
					if err := running(c, before); err != nil && state(c) != "" {
						return fmt.Errorf("child: %w", err)
					}
				}
				if l := leftovers(t); len(l) > 0 {
					return fmt.Errorf("left behind: %v", l)
				}
				return nil
			}
			if err := eventually(3*time.Second, check); err != nil {
				t.Fatalf("round %d: %v", round, err)
			}
		}
	})
}

// What the thaw cannot undo is named, with what to run; the processes
// run in any case.
func TestThawLeftBehindNamed(t *testing.T) {
	requireCgroup(t)
	a := startSleep(t)
	pid := a.Process.Pid
	before, _ := cgroupOf(pid)
	s, err := Stop([]int{pid}, time.Second)
	if err != nil {
		t.Fatal(err)
	}
	if s.cg == nil || !s.cg.created {
		s.Thaw()
		t.Skipf("frozen with %s, not in a cgroup of pipesnap's", s.How)
	}
	dir := s.cg.dir
	// A child cgroup: rmdir of dir is refused.
	sub := filepath.Join(dir, "held")
	if err := os.Mkdir(sub, 0o755); err != nil {
		s.Thaw()
		t.Fatal(err)
	}
	defer os.Remove(dir)
	defer os.Remove(sub)
	err = s.Thaw()
	if err == nil || !strings.Contains(err.Error(), "left behind") || !strings.Contains(err.Error(), "rmdir "+dir) {
		t.Errorf("Thaw: %v", err)
	}
	t.Logf("Thaw: %v", err)
	if err := running(pid, before); err != nil {
		t.Error(err)
	}
}
