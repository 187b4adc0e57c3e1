package freeze

import (
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
	t.Cleanup(func() { cmd.Process.Kill(); cmd.Wait() })
	return cmd
}

func TestStopThaw(t *testing.T) {
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

// A process someone else stopped stays stopped.
func TestAlreadyStoppedLeftAlone(t *testing.T) {
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
		t.Error("Thaw resumed a process it had not stopped")
	}
	a.Process.Signal(syscall.SIGCONT)
}

func TestStopUnknownPid(t *testing.T) {
	if _, err := Stop([]int{4194305}, time.Second); err == nil {
		t.Error("Stop of a pid that cannot exist succeeded")
	}
}
