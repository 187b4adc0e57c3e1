package loader_test

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"testing"
	"time"

	"github.com/pipesnap/pipesnap/internal/pipetest"
	"github.com/pipesnap/pipesnap/loader"
	"github.com/pipesnap/pipesnap/snapshot"
)

// dumpPipes dumps pids with their bytes, reads the stream back, and
// returns its pipes by inode; a torn or incomplete pipe fails the test.
func dumpPipes(t *testing.T, pids []int) map[uint64]*snapshot.Pipe {
	t.Helper()
	var buf bytes.Buffer
	report, err := loader.Dump(context.Background(), &buf, loader.Options{PIDs: pids})
	if err != nil {
		t.Fatal(err)
	}
	if len(report.Problems) > 0 {
		t.Errorf("%d problems, first %v", len(report.Problems), report.Problems[0])
	}
	snap, err := snapshot.Read(&buf, snapshot.Options{Data: true})
	if err != nil {
		t.Fatal(err)
	}
	byIno := map[uint64]*snapshot.Pipe{}
	for _, p := range snap.Pipes {
		byIno[p.Ino] = p
	}
	return byIno
}

// TestDumpManyPipes: 10,000 pipes (20,000 fds) in two processes, each
// captured with its own bytes. (Two processes because the machines this
// runs on cap a process at 20,000 fds and give no CAP_SYS_RESOURCE.)
func TestDumpManyPipes(t *testing.T) {
	pipetest.RequireBPF(t)
	const perProc = 5000
	var holders []*pipetest.Holder
	var pids []int
	for range 2 {
		h := pipetest.StartHolder(t, "many", fmt.Sprintf("PIPESNAP_TEST_PIPES=%d", perProc))
		holders = append(holders, h)
		pids = append(pids, h.Rep.PIDs...)
	}
	start := time.Now()
	byIno := dumpPipes(t, pids)
	t.Logf("%d pipes: dump and read back took %v", len(byIno), time.Since(start))
	for _, h := range holders {
		for i, ino := range h.Rep.Inos {
			p := byIno[ino]
			if p == nil {
				t.Fatalf("pipe %d (ino %d) of pid %d missing", i, ino, h.Rep.PIDs[0])
			}
			if want := pipetest.ManyData(i); !bytes.Equal(p.Data(), want) || len(p.Holders) != 2 {
				t.Fatalf("pipe %d: %q with %d holders, want %q with 2", i, p.Data(), len(p.Holders), want)
			}
		}
	}
}

// TestDumpProcessWithManyFDs: a process with as many fds as the limit
// allows (20,000 on the machines this runs on), a few of them pipes: the
// walk goes through all of them and finds every pipe.
func TestDumpProcessWithManyFDs(t *testing.T) {
	pipetest.RequireBPF(t)
	h := pipetest.StartHolder(t, "fds", "PIPESNAP_TEST_PIPES=10")
	var buf bytes.Buffer
	start := time.Now()
	report, err := loader.Dump(context.Background(), &buf, loader.Options{PIDs: h.Rep.PIDs})
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("a process with %d fds: dump took %v", h.Rep.ReadFD+1, time.Since(start))
	snap, err := snapshot.Read(&buf, snapshot.Options{Data: true})
	if err != nil {
		t.Fatal(err)
	}
	for i, ino := range h.Rep.Inos {
		p, err := snap.Find(ino)
		if err != nil {
			t.Fatalf("pipe %d: %v", i, err)
		}
		if !bytes.Equal(p.Data(), pipetest.ManyData(i)) {
			t.Errorf("pipe %d: %q", i, p.Data())
		}
	}
	if report.Pipes < len(h.Rep.Inos) {
		t.Errorf("%d pipes in the report, want at least %d", report.Pipes, len(h.Rep.Inos))
	}
}

// TestDumpChurn: dumps of every process while pipes are opened and closed
// and processes holding pipes start and exit, without pause: each dump
// completes and its stream reads back whole.
func TestDumpChurn(t *testing.T) {
	pipetest.RequireBPF(t)
	pipetest.StartHolder(t, "churn")
	for i := range 20 {
		var buf bytes.Buffer
		report, err := loader.Dump(context.Background(), &buf, loader.Options{All: true})
		if err != nil {
			t.Fatalf("dump %d: %v", i, err)
		}
		if _, err := snapshot.Read(&buf, snapshot.Options{}); err != nil {
			t.Fatalf("dump %d reads back: %v", i, err)
		}
		if i == 0 {
			t.Logf("%d processes, %d pipes", report.Tasks, report.Pipes)
		}
	}
}

// BenchmarkDumpThousandPipes: one dump of 1,000 small pipes, end to end
// (load, calibration, walk, encoding).
func BenchmarkDumpThousandPipes(b *testing.B) {
	pipetest.RequireBPF(b)
	h := pipetest.StartHolder(b, "many", "PIPESNAP_TEST_PIPES=1000")
	for b.Loop() {
		if _, err := loader.Dump(context.Background(), io.Discard, loader.Options{PIDs: h.Rep.PIDs}); err != nil {
			b.Fatal(err)
		}
	}
}

// TestDumpBulk: 20 pipes of 1 MiB, most of them full: their copies go
// through the ring several times over (it holds 8 MiB), read in place
// through a window that moves with the reader, also in the middle of a
// pipe's copy, and every byte arrives.
func TestDumpBulk(t *testing.T) {
	pipetest.RequireBPF(t)
	const pipes = 20
	h := pipetest.StartHolder(t, "bulk", fmt.Sprintf("PIPESNAP_TEST_PIPES=%d", pipes))
	byIno := dumpPipes(t, h.Rep.PIDs)
	for i, ino := range h.Rep.Inos {
		p := byIno[ino]
		if p == nil {
			t.Fatalf("pipe %d (ino %d) missing", i, ino)
		}
		if want := pipetest.BulkData(i); !bytes.Equal(p.Data(), want) {
			t.Fatalf("pipe %d: %d bytes, first difference at %d", i, len(p.Data()), pipetest.FirstDiff(p.Data(), want))
		}
	}
}
