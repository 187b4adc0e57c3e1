package freeze

import (
	"os"
	"os/exec"
	"syscall"
	"testing"
	"time"
)

func startSleep(t *testing.T) *exec.Cmd {
	t.Helper()
	cmd := exec.Command("sleep", "60")
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	ownTarget(t, cmd.Process.Pid)
	t.Cleanup(func() { cmd.Process.Kill(); cmd.Wait() })
	return cmd
}

// withSignals runs a test on the SIGSTOP path.
func withSignals(t *testing.T) {
	useCgroup = false
	t.Cleanup(func() { useCgroup = true })
}

func TestStopThawSignals(t *testing.T) {
	withSignals(t)
	a, b := startSleep(t), startSleep(t)
	s, err := Stop([]int{a.Process.Pid, b.Process.Pid}, time.Second)
	if err != nil {
		t.Fatal(err)
	}
	if s.Len() != 2 || !allStopped(a.Process.Pid) || !allStopped(b.Process.Pid) {
		t.Fatalf("after Stop: %d stopped, states stopped %v %v", s.Len(), allStopped(a.Process.Pid), allStopped(b.Process.Pid))
	}
	if err := s.Thaw(); err != nil {
		t.Fatal(err)
	}
	if err := s.Thaw(); err != nil {
		t.Fatalf("second Thaw: %v", err)
	}
	time.Sleep(20 * time.Millisecond)
	if allStopped(a.Process.Pid) || allStopped(b.Process.Pid) {
		t.Error("still stopped after Thaw")
	}
}

// The cgroup v2 freezer, where the machine has it: frozen in a cgroup of
// pipesnap's, then back in their own cgroup, the temporary one removed.
func TestStopThawCgroup(t *testing.T) {
	if _, err := cgroup2Mount(); err != nil || os.Geteuid() != 0 {
		t.Skip("no cgroup v2 hierarchy, or not root")
	}
	a, b := startSleep(t), startSleep(t)
	before, err := cgroupOf(a.Process.Pid)
	if err != nil {
		t.Fatal(err)
	}
	s, err := Stop([]int{a.Process.Pid, b.Process.Pid}, time.Second)
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("frozen with: %s", s.How)
	if s.cg == nil {
		t.Skipf("the freezer could not be used here: %s", s.How)
	}
	dir := s.cg.dir
	defer s.Thaw() // on a failed check below too
	if !cgroupFrozen(dir) {
		t.Errorf("cgroup %s not frozen", dir)
	}
	if err := s.Thaw(); err != nil {
		t.Fatal(err)
	}
	if cgroupFrozen(dir) {
		t.Errorf("cgroup %s still frozen", dir)
	}
	for _, p := range []*exec.Cmd{a, b} {
		if now, _ := cgroupOf(p.Process.Pid); now != before {
			t.Errorf("pid %d in cgroup %q after Thaw, was in %q", p.Process.Pid, now, before)
		}
	}
	if _, err := os.Stat(dir); err == nil && dir != "" && before == "/" {
		t.Errorf("temporary cgroup %s left behind", dir)
	}
}

// A process someone else stopped stays stopped.
func TestAlreadyStoppedLeftAlone(t *testing.T) {
	for _, signals := range []bool{true, false} {
		if signals {
			withSignals(t)
		} else {
			useCgroup = true
		}
		a := startSleep(t)
		a.Process.Signal(syscall.SIGSTOP)
		for !allStopped(a.Process.Pid) {
			time.Sleep(time.Millisecond)
		}
		s, err := Stop([]int{a.Process.Pid}, time.Second)
		if err != nil {
			t.Fatal(err)
		}
		if s.Len() != 0 {
			t.Errorf("Stop took over a process that was already stopped")
		}
		s.Thaw()
		time.Sleep(20 * time.Millisecond)
		if !allStopped(a.Process.Pid) {
			t.Errorf("Thaw (%s) resumed a process it had not stopped", s.How)
		}
		a.Process.Signal(syscall.SIGCONT)
	}
}

func TestStopUnknownPid(t *testing.T) {
	if _, err := Stop([]int{4194305}, time.Second); err == nil {
		t.Error("Stop of a pid that cannot exist succeeded")
	}
}

func TestStopSelfRefused(t *testing.T) {
	if _, err := Stop([]int{os.Getpid()}, time.Second); err == nil {
		t.Error("Stop of pipesnap itself succeeded")
	}
}
