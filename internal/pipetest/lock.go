package pipetest

import (
	"os"
	"path/filepath"
	"sync"
	"testing"

	"golang.org/x/sys/unix"
)

// bpfLock makes the BPF tests of different packages take turns: go test
// ./... runs the test binaries of several packages at once, and some
// tests count the pipesnap programs loaded on the whole machine, which a
// dump in another package's test would change under them. The first
// RequireBPF of a process takes an flock on a file in the temporary
// directory; the lock is let go when the last test holding it ends.
// Tests of one process share it (subtests, helpers calling RequireBPF
// again), so a test never waits for itself.
var bpfLock struct {
	sync.Mutex
	holders int
	f       *os.File
}

func lockBPF(t testing.TB) {
	t.Helper()
	bpfLock.Lock()
	defer bpfLock.Unlock()
	if bpfLock.holders == 0 {
		f, err := os.OpenFile(filepath.Join(os.TempDir(), "pipesnap-bpf-tests.lock"), os.O_CREATE|os.O_RDWR, 0o600)
		if err != nil {
			t.Logf("running without the BPF tests' lock: %v", err)
			return
		}
		for {
			err = unix.Flock(int(f.Fd()), unix.LOCK_EX)
			if err != unix.EINTR {
				break
			}
		}
		if err != nil {
			f.Close()
			t.Logf("running without the BPF tests' lock: %v", err)
			return
		}
		bpfLock.f = f
	}
	bpfLock.holders++
	t.Cleanup(func() {
		bpfLock.Lock()
		defer bpfLock.Unlock()
		if bpfLock.holders--; bpfLock.holders == 0 {
			bpfLock.f.Close() // lets the flock go
			bpfLock.f = nil
		}
	})
}
