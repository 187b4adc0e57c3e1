package loader_test

import (
	"context"
	"errors"
	"io"
	"os"
	"strings"
	"testing"

	"github.com/pipesnap/pipesnap/internal/pipetest"
	"github.com/pipesnap/pipesnap/loader"
)

// ourPrograms counts the BPF programs, maps and links this process holds
// (the prog_id/map_id/link_id lines of /proc/self/fdinfo): programs other
// processes load on the machine do not count.
func ourPrograms(t *testing.T) int {
	t.Helper()
	ents, err := os.ReadDir("/proc/self/fdinfo")
	if err != nil {
		t.Fatal(err)
	}
	n := 0
	for _, e := range ents {
		b, err := os.ReadFile("/proc/self/fdinfo/" + e.Name())
		if err != nil {
			continue // closed meanwhile (the ReadDir's own fd)
		}
		for _, line := range strings.Split(string(b), "\n") {
			if strings.HasPrefix(line, "prog_id:") || strings.HasPrefix(line, "map_id:") || strings.HasPrefix(line, "link_id:") {
				n++
				break
			}
		}
	}
	return n
}

// TestDumpLeavesNothing: no fd, program or map outlives a dump, whether
// it succeeds or fails.
func TestDumpLeavesNothing(t *testing.T) {
	pipetest.RequireBPF(t)
	h := pipetest.StartHolder(t, "few")
	progs, fds := ourPrograms(t), pipetest.OpenFDs(t)
	for range 3 {
		if _, err := loader.Dump(context.Background(), io.Discard, loader.Options{PIDs: h.Rep.PIDs}); err != nil {
			t.Fatal(err)
		}
	}
	// A dump that fails while writing.
	if _, err := loader.Dump(context.Background(), failingWriter{}, loader.Options{PIDs: h.Rep.PIDs}); err == nil {
		t.Error("dump into a failing writer succeeded")
	}
	// A dump cancelled before it starts walking.
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	if _, err := loader.Dump(ctx, io.Discard, loader.Options{PIDs: h.Rep.PIDs}); !errors.Is(err, context.Canceled) {
		t.Errorf("cancelled dump: %v", err)
	}
	if n := ourPrograms(t); n != progs {
		t.Errorf("%d BPF objects held after the dumps, %d before", n, progs)
	}
	if n := pipetest.OpenFDs(t); n != fds {
		t.Errorf("%d fds open after the dumps, %d before", n, fds)
	}
}

type failingWriter struct{}

func (failingWriter) Write([]byte) (int, error) { return 0, errors.New("disk full") }
