package loader_test

import (
	"bytes"
	"context"
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
	runs, torn, bytesSeen := 50, 0, 0
	if testing.Short() {
		runs = 10
	}
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
		data := p.Data()
		bytesSeen += len(data)
		for k := 1; k < len(data); k++ {
			if data[k] != byte((int(data[k-1])+1)%251) {
				t.Fatalf("capture not marked torn is not contiguous at byte %d of %d (%d then %d)", k, len(data), data[k-1], data[k])
			}
		}
	}
	t.Logf("%d dumps of a live pipe: %d torn (%.0f%%), %d bytes checked in the others", runs, torn, 100*float64(torn)/float64(runs), bytesSeen)
	if torn == runs {
		t.Errorf("every dump was torn: the retry never got a consistent copy")
	}
}
