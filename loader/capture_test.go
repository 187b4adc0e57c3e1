package loader_test

import (
	"bytes"
	"context"
	"slices"
	"testing"

	"github.com/pipesnap/pipesnap/format"
	"github.com/pipesnap/pipesnap/internal/pipetest"
	"github.com/pipesnap/pipesnap/loader"
	"github.com/pipesnap/pipesnap/snapshot"
)

func TestMain(m *testing.M) { pipetest.Main(m) }

// TestDumpKinds dumps the 14 kinds of pipe state at once and checks each
// byte for byte, then checks that the pipes still hold exactly what they
// held: the dump consumed nothing.
func TestDumpKinds(t *testing.T) {
	pipetest.RequireBPF(t)
	holders := map[string]*pipetest.Holder{}
	readEnds := map[string]int{}
	before := map[string]int{}
	var pids []int
	for _, kind := range pipetest.Kinds {
		h := pipetest.StartHolder(t, kind)
		holders[kind] = h
		pids = append(pids, h.Rep.PIDs...)
		readEnds[kind] = pipetest.GrabReadEnd(t, h)
		before[kind] = pipetest.Queued(t, readEnds[kind])
	}

	var buf bytes.Buffer
	report, err := loader.Dump(context.Background(), &buf, loader.Options{PIDs: pids})
	if err != nil {
		t.Fatalf("dump: %v", err)
	}
	if len(report.Problems) > 0 {
		t.Errorf("problems in a quiet capture: %v", report.Problems)
	}
	snap, err := snapshot.Read(bytes.NewReader(buf.Bytes()), snapshot.Options{Data: true})
	if err != nil {
		t.Fatalf("reading the snapshot back: %v", err)
	}
	var inos []uint64 // the holders' stdio pipes are in the snapshot too
	for _, p := range snap.Pipes {
		inos = append(inos, p.Ino)
	}
	pipetest.EachOnce(t, inos)

	for _, kind := range pipetest.Kinds {
		t.Run(kind, func(t *testing.T) {
			h, w := holders[kind], pipetest.Expected(kind)
			p, err := snap.Find(h.Rep.Ino)
			if err != nil {
				t.Fatal(err)
			}
			checkPipe(t, p, h, w)
			pipetest.CheckUntouched(t, readEnds[kind], before[kind], w)
		})
	}
}

func checkPipe(t *testing.T, p *snapshot.Pipe, h *pipetest.Holder, w pipetest.Want) {
	t.Helper()
	if !p.Complete() || p.Status&format.StatusTorn != 0 {
		t.Errorf("status %#x (%s), want complete", p.Status, p.Reason)
	}
	if got := p.Data(); !bytes.Equal(got, w.Data) {
		t.Errorf("captured %d bytes, want %d; first difference at %d", len(got), len(w.Data), pipetest.FirstDiff(got, w.Data))
	}
	if p.Bytes != uint64(len(w.Data)) {
		t.Errorf("bytes = %d, want %d", p.Bytes, len(w.Data))
	}
	if w.BufLens != nil {
		var lens []int
		for _, b := range p.Buffers {
			lens = append(lens, int(b.Len))
		}
		if !slices.Equal(lens, w.BufLens) {
			t.Errorf("buffer lengths %v, want %v", lens, w.BufLens)
		}
	}
	if len(p.Buffers) > 0 && int(p.Buffers[0].Offset) != w.FirstOffset {
		t.Errorf("first buffer offset %d, want %d", p.Buffers[0].Offset, w.FirstOffset)
	}
	if p.Readers != w.Readers || p.Writers != w.Writers {
		t.Errorf("readers/writers %d/%d, want %d/%d", p.Readers, p.Writers, w.Readers, w.Writers)
	}
	if p.Kind != w.Kind {
		t.Errorf("kind %v, want %v", p.Kind, w.Kind)
	}
	if h.Rep.Path != "" && p.Path != h.Rep.Path {
		t.Errorf("path %q, want %q", p.Path, h.Rep.Path)
	}
	if p.Capacity != w.Capacity {
		t.Errorf("capacity %d, want %d", p.Capacity, w.Capacity)
	}
	if p.Head < w.MinHead || p.Head-p.Tail != uint32(len(p.Buffers)) {
		t.Errorf("head %d tail %d with %d buffers, want head >= %d", p.Head, p.Tail, len(p.Buffers), w.MinHead)
	}
	procs := map[uint32]bool{}
	for _, hd := range p.Holders {
		procs[hd.PID] = true
		if !slices.Contains(h.Rep.PIDs, int(hd.PID)) {
			t.Errorf("holder pid %d is not one of the holder processes %v", hd.PID, h.Rep.PIDs)
		}
	}
	if len(p.Holders) != w.FDs || len(procs) != w.Procs {
		t.Errorf("%d holders in %d processes, want %d in %d: %+v", len(p.Holders), len(procs), w.FDs, w.Procs, p.Holders)
	}
	if got := p.Status&format.StatusPacket != 0; got != w.Packet {
		t.Errorf("packet flag %v, want %v", got, w.Packet)
	}
}
