package loader

import (
	"os"
	"testing"

	"github.com/pipesnap/pipesnap/internal/host"
)

// A requested pid whose process started at another time than when it was
// resolved was reused (its task is left out: dumpstream.Writer.Reused).
func TestReusedPid(t *testing.T) {
	self := uint32(os.Getpid())
	starts := host.StartTimes([]uint32{self})
	if starts[self] == 0 {
		t.Fatalf("no start time read for pid %d", self)
	}
	d := &dumper{starts: starts}
	same := pipesPsFd{Tgid: self, StartNs: starts[self]*(1e9/host.ClockTicks) + 1234}
	if d.reused(&same) {
		t.Errorf("the same process taken for a reused pid")
	}
	later := pipesPsFd{Tgid: self, StartNs: (starts[self] + 1) * (1e9 / host.ClockTicks)}
	if !d.reused(&later) {
		t.Errorf("a process started later not taken for a reused pid")
	}
	other := pipesPsFd{Tgid: self + 1, StartNs: 1}
	if d.reused(&other) {
		t.Errorf("a pid nobody asked for taken for a reused one")
	}
}
