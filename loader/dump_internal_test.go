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

// TestRingSize: the ring holds every attempt at the largest pipe copied,
// and stays bounded however far pipe-max-size was raised.
func TestRingSize(t *testing.T) {
	for _, maxSize := range []uint64{4096, 1 << 20, 16 << 20, 1 << 30} {
		for attempts := uint32(1); attempts <= 8; attempts++ {
			slots := slotsFor(maxSize, 4096, attempts)
			ring := uint64(ringBytes(slots, 4096, attempts))
			need := uint64(slots) * uint64(attempts) * (4096 + 64)
			if slots < 256 || ring < need || ring > maxRing || ring&(ring-1) != 0 {
				t.Errorf("pipe-max-size %d, %d attempts: %d slots, ring %d bytes for %d: want >= 256 slots, room, at most %d, a power of two",
					maxSize, attempts, slots, ring, need, maxRing)
			}
		}
	}
	if s := slotsFor(1<<20, 4096, 4); s != 256 {
		t.Errorf("default pipe-max-size, 4 attempts: %d slots, want 256", s)
	}
}
