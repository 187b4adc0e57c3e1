package loader_test

import (
	"bytes"
	"context"
	"os"
	"strconv"
	"testing"

	"github.com/pipesnap/pipesnap/format"
	"github.com/pipesnap/pipesnap/internal/pipetest"
	"github.com/pipesnap/pipesnap/loader"
	"github.com/pipesnap/pipesnap/snapshot"
)

// TestDumpLivePipe dumps a pipe that a producer and a consumer are busy
// with, many times: every copy that is not flagged torn must be a
// contiguous piece of the producer's stream.
func TestDumpLivePipe(t *testing.T) {
	pipetest.RequireBPF(t)
	h := pipetest.StartHolder(t, "live")
	runs, torn, retried, bytesSeen := 50, 0, 0, 0
	if testing.Short() {
		runs = 10
	}
	if n, err := strconv.Atoi(os.Getenv("PIPESNAP_LIVE_RUNS")); err == nil && n > 0 {
		runs = n // scripts/stress.sh
	}
	progs, fds := ourPrograms(t), pipetest.OpenFDs(t)
	defer func() {
		if n := ourPrograms(t); n != progs {
			t.Errorf("%d BPF objects held after %d dumps, %d before", n, runs, progs)
		}
		if n := pipetest.OpenFDs(t); n != fds {
			t.Errorf("%d fds open after %d dumps, %d before", n, runs, fds)
		}
	}()
	for range runs {
		var buf bytes.Buffer
		if _, err := loader.Dump(context.Background(), &buf, loader.Options{PIDs: h.Rep.PIDs}); err != nil {
			t.Fatal(err)
		}
		snap, err := snapshot.Read(&buf, snapshot.Options{Data: true})
		if err != nil {
			t.Fatal(err)
		}
		p, err := snap.Find(h.Rep.Ino)
		if err != nil {
			t.Fatal(err)
		}
		if p.Status&format.StatusTorn != 0 {
			torn++
			continue
		}
		if !p.Complete() {
			t.Errorf("live pipe incomplete: %s", p.Reason)
			continue
		}
		if p.Attempts > 1 {
			retried++ // the ring also held the bufs of the attempts that moved
		}
		data := p.Data()
		bytesSeen += len(data)
		for k := 1; k < len(data); k++ {
			if data[k] != byte((int(data[k-1])+1)%251) {
				t.Fatalf("capture not marked torn is not contiguous at byte %d of %d (%d then %d)", k, len(data), data[k-1], data[k])
			}
		}
	}
	t.Logf("%d dumps of a live pipe: %d torn (%.0f%%), %d consistent after a retry, %d bytes checked in the others",
		runs, torn, 100*float64(torn)/float64(runs), retried, bytesSeen)
	if torn == runs {
		t.Errorf("every dump was torn: the retry never got a consistent copy")
	}
}

// TestDumpLivePipeFrozen: with Freeze, every dump of the live pipe is a
// consistent cut, and the pipeline runs on afterwards.
func TestDumpLivePipeFrozen(t *testing.T) {
	pipetest.RequireBPF(t)
	h := pipetest.StartHolder(t, "live")
	var last []byte
	changed := 0
	runs := 20
	for i := range runs {
		var buf bytes.Buffer
		report, err := loader.Dump(context.Background(), &buf, loader.Options{PIDs: h.Rep.PIDs, Freeze: true})
		if err != nil {
			t.Fatal(err)
		}
		snap, err := snapshot.Read(&buf, snapshot.Options{Data: true})
		if err != nil {
			t.Fatal(err)
		}
		if snap.Header.Flags&format.HeaderFrozen == 0 {
			t.Error("frozen dump without the frozen flag in its header")
		}
		p, err := snap.Find(h.Rep.Ino)
		if err != nil {
			t.Fatal(err)
		}
		if !p.Complete() {
			t.Fatalf("dump %d of a frozen pipe: status %#x (%s)", i, p.Status, p.Reason)
		}
		data := p.Data()
		for k := 1; k < len(data); k++ {
			if data[k] != byte((int(data[k-1])+1)%251) {
				t.Fatalf("frozen capture not contiguous at byte %d", k)
			}
		}
		if !bytes.Equal(data, last) {
			changed++
		}
		last = data
		if i == 0 {
			t.Logf("processes stopped for %v, with the %s", report.Frozen, report.FrozenHow)
		}
		if pipetest.Stopped(t, h.Rep.PIDs[0]) {
			t.Fatalf("holder still stopped after dump %d", i)
		}
	}
	// The pipeline keeps moving between dumps.
	if changed < runs/2 {
		t.Errorf("pipe contents changed in only %d of %d dumps: the pipeline did not run on", changed, runs)
	}
}
