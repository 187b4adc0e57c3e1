package loader_test

import (
	"bytes"
	"context"
	"slices"
	"strings"
	"testing"

	"github.com/pipesnap/pipesnap/format"
	"github.com/pipesnap/pipesnap/internal/bpfload"
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
	dumpKinds(t, "")
}

// TestDumpKindsWithoutNewerHelpers is TestDumpKinds with the programs'
// variant for kernels without bpf_loop and bpf_d_path in iterators
// (bpf/compat.h), whatever this kernel has: the fallbacks must capture
// the same.
func TestDumpKindsWithoutNewerHelpers(t *testing.T) {
	pipetest.RequireBPF(t)
	bpfload.Force = &bpfload.Features{}
	defer func() { bpfload.Force = nil }()
	dumpKinds(t, "bounded loops (no bpf_loop), FIFO paths from /proc")
}

// dumpKinds dumps the kinds and checks them, and that the stream names
// the variant that ran (with variant in its note, when not empty).
func dumpKinds(t *testing.T, variant string) {
	k := pipetest.StartKinds(t)
	var buf bytes.Buffer
	report, err := loader.Dump(context.Background(), &buf, loader.Options{PIDs: k.PIDs})
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
	pipetest.CheckKinds(t, k, snap.Pipes, func(p *snapshot.Pipe) uint64 { return p.Ino }, checkPipe)
	var notes []string
	for _, n := range snap.Notes {
		if n.Code == loader.NoteVariant && n.PID == 0 {
			notes = append(notes, n.Msg)
		}
	}
	switch {
	case len(notes) != 1:
		t.Errorf("%d notes of the variant that ran, want 1: %q", len(notes), notes)
	case !strings.Contains(notes[0], variant):
		t.Errorf("variant note %q does not say %q", notes[0], variant)
	default:
		t.Logf("variant note: %s", notes[0])
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
	pipetest.CheckHolders(t, h, w, p.Holders, func(hd snapshot.Holder) uint32 { return hd.PID })
	if got := p.Status&format.StatusPacket != 0; got != w.Packet {
		t.Errorf("packet flag %v, want %v", got, w.Packet)
	}
}
