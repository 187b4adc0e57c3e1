package loader_test

import (
	"context"
	"errors"
	"io"
	"os"
	"testing"

	"github.com/cilium/ebpf"

	"github.com/pipesnap/pipesnap/internal/pipetest"
	"github.com/pipesnap/pipesnap/loader"
)

// ourPrograms counts the loaded BPF programs that are pipesnap's.
func ourPrograms(t *testing.T) int {
	t.Helper()
	n := 0
	for id := ebpf.ProgramID(0); ; {
		next, err := ebpf.ProgramGetNextID(id)
		if errors.Is(err, os.ErrNotExist) {
			return n
		}
		if err != nil {
			t.Fatal(err)
		}
		id = next
		p, err := ebpf.NewProgramFromID(id)
		if err != nil {
			continue // gone meanwhile
		}
		if info, err := p.Info(); err == nil && (info.Name == "dump_pipes" || info.Name == "calibrate") {
			n++
		}
		p.Close()
	}
}

func openFDs(t *testing.T) int {
	t.Helper()
	ents, err := os.ReadDir("/proc/self/fd")
	if err != nil {
		t.Fatal(err)
	}
	return len(ents)
}

// TestDumpLeavesNothing: no fd, program or map outlives a dump, whether
// it succeeds or fails.
func TestDumpLeavesNothing(t *testing.T) {
	pipetest.RequireBPF(t)
	h := pipetest.StartHolder(t, "few")
	progs, fds := ourPrograms(t), openFDs(t)
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
		t.Errorf("%d pipesnap programs loaded after the dumps, %d before", n, progs)
	}
	if n := openFDs(t); n != fds {
		t.Errorf("%d fds open after the dumps, %d before", n, fds)
	}
}

type failingWriter struct{}

func (failingWriter) Write([]byte) (int, error) { return 0, errors.New("disk full") }
