package teecap_test

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/pipesnap/pipesnap/format"
	"github.com/pipesnap/pipesnap/internal/pipetest"
	"github.com/pipesnap/pipesnap/loader"
	"github.com/pipesnap/pipesnap/snapshot"
	"github.com/pipesnap/pipesnap/teecap"
)

func TestMain(m *testing.M) { pipetest.Main(m) }

func dump(t *testing.T, opts loader.Options) (*loader.Report, *snapshot.Snapshot) {
	t.Helper()
	var buf bytes.Buffer
	report, err := teecap.Dump(context.Background(), &buf, opts)
	if err != nil {
		t.Fatalf("tee dump: %v", err)
	}
	snap, err := snapshot.Read(bytes.NewReader(buf.Bytes()), snapshot.Options{Data: true})
	if err != nil {
		t.Fatalf("reading the snapshot back: %v", err)
	}
	return report, snap
}

// TestDumpKinds dumps the 14 kinds of pipe state through tee, checks the
// bytes of each, and that every pipe still holds what it held.
func TestDumpKinds(t *testing.T) {
	k := pipetest.StartKinds(t)
	report, snap := dump(t, loader.Options{PIDs: k.PIDs})
	var held []uint64
	for _, h := range k.Holders {
		held = append(held, h.Rep.Ino)
	}
	if pr := problemsOf(report, held...); len(pr) > 0 {
		t.Errorf("problems in a quiet capture: %v", pr)
	}
	if report.Translation != teecap.Method {
		t.Errorf("report says method %q", report.Translation)
	}
	if len(snap.Notes) == 0 || snap.Notes[0].Code != teecap.NoteTee || snap.Notes[0].PID != 0 {
		t.Errorf("the stream does not open with the tee note: %+v", snap.Notes)
	}
	pipetest.CheckKinds(t, k, snap.Pipes, func(p *snapshot.Pipe) uint64 { return p.Ino }, checkPipe)
}

// checkPipe checks what the tee path can see, and that what it cannot is
// marked unknown.
func checkPipe(t *testing.T, p *snapshot.Pipe, h *pipetest.Holder, w pipetest.Want) {
	t.Helper()
	if !p.Complete() || p.Attempts != 1 {
		t.Errorf("status %#x (%s), %d attempts: want complete in 1", p.Status, p.Reason, p.Attempts)
	}
	if got := p.Data(); !bytes.Equal(got, w.Data) {
		t.Errorf("captured %d bytes, want %d; first difference at %d", len(got), len(w.Data), pipetest.FirstDiff(got, w.Data))
	}
	var lens []int
	for k, b := range p.Buffers {
		lens = append(lens, int(b.Len))
		if b.Offset != 0 || b.Index != uint32(k) {
			t.Errorf("buffer %d: index %d offset %d, want %d and 0 (layout unknown)", k, b.Index, b.Offset, k)
		}
		if want := uint32(0); w.Packet {
			want = format.BufPacket
			if b.Flags != want {
				t.Errorf("buffer %d: flags %#x, want %#x", k, b.Flags, want)
			}
		} else if b.Flags != 0 {
			t.Errorf("buffer %d: flags %#x, want 0", k, b.Flags)
		}
	}
	// Reads of a pipe without packets run over every buffer: one chunk.
	switch {
	case w.Packet && !slices.Equal(lens, w.BufLens):
		t.Errorf("packets %v, want %v", lens, w.BufLens)
	case !w.Packet && len(w.Data) > 0 && len(lens) != 1:
		t.Errorf("chunks %v, want one", lens)
	case len(w.Data) == 0 && len(lens) != 0:
		t.Errorf("chunks %v in an empty pipe", lens)
	}
	if got := p.Status&format.StatusPacket != 0; got != w.Packet {
		t.Errorf("packet status %v, want %v", got, w.Packet)
	}
	if p.RingSize != 0 || p.Head != 0 || p.Tail != 0 || p.Readers != 0 || p.Writers != 0 {
		t.Errorf("ring %d head %d tail %d readers %d writers %d: want all 0 (not observed)",
			p.RingSize, p.Head, p.Tail, p.Readers, p.Writers)
	}
	if p.Kind != w.Kind {
		t.Errorf("kind %v, want %v", p.Kind, w.Kind)
	}
	if h.Rep.Path != "" && p.Path != h.Rep.Path {
		t.Errorf("path %q, want %q", p.Path, h.Rep.Path)
	}
	if p.Capacity != w.Capacity || p.MaxUsage*p.PageSize != w.Capacity {
		t.Errorf("capacity %d (max_usage %d), want %d", p.Capacity, p.MaxUsage, w.Capacity)
	}
	pipetest.CheckHolders(t, h, w, p.Holders, func(hd snapshot.Holder) uint32 { return hd.PID })
}

// TestSameAsBPF dumps the same holders both ways: tasks, fds, open-file
// sharing, flags, pipes and bytes must agree wherever the tee path can
// see them.
func TestSameAsBPF(t *testing.T) {
	pipetest.RequireBPF(t)
	var pids []int
	for _, kind := range pipetest.Kinds {
		pids = append(pids, pipetest.StartHolder(t, kind).Rep.PIDs...)
	}
	var kbuf bytes.Buffer
	if _, err := loader.Dump(context.Background(), &kbuf, loader.Options{PIDs: pids}); err != nil {
		t.Fatal(err)
	}
	ksnap, err := snapshot.Read(&kbuf, snapshot.Options{Data: true})
	if err != nil {
		t.Fatal(err)
	}
	_, tsnap := dump(t, loader.Options{PIDs: pids})

	if len(tsnap.Tasks) != len(ksnap.Tasks) {
		t.Fatalf("%d tasks, BPF %d", len(tsnap.Tasks), len(ksnap.Tasks))
	}
	for i, tt := range tsnap.Tasks {
		kt := ksnap.Tasks[i]
		if tt.PID != kt.PID || tt.TID != kt.TID || tt.Comm != kt.Comm || tt.UID != kt.UID {
			t.Errorf("task %d: %+v, BPF %+v", i, tt.Task, kt.Task)
		}
		if d := int64(tt.StartNS) - int64(kt.StartNS); d > 10e6 || d < -10e6 {
			t.Errorf("task %d: start %d, BPF %d", tt.PID, tt.StartNS, kt.StartNS)
		}
		if len(tt.FDs) != len(kt.FDs) {
			t.Errorf("pid %d: fds %v, BPF %v", tt.PID, fdNums(tt.FDs), fdNums(kt.FDs))
			continue
		}
		for j, tf := range tt.FDs {
			kf := kt.FDs[j]
			if tf.FD != kf.FD || tf.Ino != kf.Ino || tf.End != kf.End || tf.Cloexec != kf.Cloexec || tf.Flags != kf.Flags {
				t.Errorf("pid %d fd %d: ino %d %s cloexec %v flags %#o; BPF fd %d ino %d %s cloexec %v flags %#o",
					tt.PID, tf.FD, tf.Ino, tf.End, tf.Cloexec, tf.Flags, kf.FD, kf.Ino, kf.End, kf.Cloexec, kf.Flags)
			}
		}
	}
	// Objrefs are handed out in the same order, so they must be equal.
	if !slices.Equal(fileRefs(tsnap), fileRefs(ksnap)) {
		t.Errorf("file objrefs %v, BPF %v", fileRefs(tsnap), fileRefs(ksnap))
	}
	if len(tsnap.Pipes) != len(ksnap.Pipes) {
		t.Fatalf("%d pipes, BPF %d", len(tsnap.Pipes), len(ksnap.Pipes))
	}
	for i, tp := range tsnap.Pipes {
		kp := ksnap.Pipes[i]
		if tp.Reason == format.ReasonNotCaptured {
			// Not empty, and its read end is outside the walk (a holder's
			// stdio pipe, say): bytes only BPF can copy.
			tp.Bytes, tp.Buffers, kp.Bytes, kp.Buffers = 0, nil, 0, nil
		}
		if tp.Ino != kp.Ino || tp.Ref != kp.Ref || tp.Kind != kp.Kind || tp.Path != kp.Path ||
			tp.Capacity != kp.Capacity || tp.MaxUsage != kp.MaxUsage || tp.Bytes != kp.Bytes ||
			tp.Status&format.StatusPacket != kp.Status&format.StatusPacket || !bytes.Equal(tp.Data(), kp.Data()) {
			t.Errorf("pipe %d: ref %d %v %q cap %d/%d bytes %d status %#x; BPF ref %d %v %q cap %d/%d bytes %d status %#x",
				tp.Ino, tp.Ref, tp.Kind, tp.Path, tp.Capacity, tp.MaxUsage, tp.Bytes, tp.Status,
				kp.Ref, kp.Kind, kp.Path, kp.Capacity, kp.MaxUsage, kp.Bytes, kp.Status)
		}
	}
}

func fdNums(fds []snapshot.FD) []int32 {
	var out []int32
	for _, f := range fds {
		out = append(out, f.FD)
	}
	return out
}

func fileRefs(s *snapshot.Snapshot) []int32 {
	var out []int32
	for _, t := range s.Tasks {
		for _, f := range t.FDs {
			out = append(out, f.FileRef)
		}
	}
	return out
}

// TestLive: tee copies under the pipe's lock, so a pipe that never stands
// still is still captured as one consistent run of its stream.
func TestLive(t *testing.T) {
	h := pipetest.StartHolder(t, "live")
	for range 20 {
		report, snap := dump(t, loader.Options{PIDs: h.Rep.PIDs})
		if pr := problemsOf(report, h.Rep.Ino); len(pr) > 0 {
			t.Fatalf("problems: %v", pr)
		}
		p, err := snap.Find(h.Rep.Ino)
		if err != nil {
			t.Fatal(err)
		}
		b := p.Data()
		for k := 1; k < len(b); k++ {
			if (int(b[k-1])+1)%251 != int(b[k]) {
				t.Fatalf("%d bytes captured, not one run of the stream at byte %d: %d then %d", len(b), k, b[k-1], b[k])
			}
		}
	}
}

// TestNoReadEnd: the writer alone is walked; the tee path does not open
// a read end of its own, so the pipe is recorded without bytes, flagged.
func TestNoReadEnd(t *testing.T) {
	h := pipetest.StartHolder(t, "split-ends") // pid 0 writes, pid 1 reads
	readEnd := pipetest.GrabReadEnd(t, h)
	report, snap := dump(t, loader.Options{PIDs: h.Rep.PIDs[:1]})
	p, err := snap.Find(h.Rep.Ino)
	if err != nil {
		t.Fatal(err)
	}
	if p.Complete() || p.Reason != format.ReasonNotCaptured || len(p.Buffers) != 0 || p.Capacity != 65536 {
		t.Errorf("status %#x reason %s, %d buffers, capacity %d: want incomplete, not captured, none, 65536",
			p.Status, p.Reason, len(p.Buffers), p.Capacity)
	}
	if len(problemsOf(report, h.Rep.Ino)) != 1 || !hasNote(snap, teecap.NoteNoReadEnd) {
		t.Errorf("problems %v, notes %+v", report.Problems, snap.Notes)
	}
	pipetest.ReadBack(t, readEnd, pipetest.Expected("split-ends"))
}

// TestExclude: the snapshot's own output pipe is left out with a note.
func TestExclude(t *testing.T) {
	h := pipetest.StartHolder(t, "few")
	_, snap := dump(t, loader.Options{PIDs: h.Rep.PIDs, ExcludeIno: h.Rep.Ino})
	p, err := snap.Find(h.Rep.Ino)
	if err != nil {
		t.Fatal(err)
	}
	if p.Reason != format.ReasonExcluded || len(p.Buffers) != 0 || !hasNote(snap, loader.NoteExcluded) {
		t.Errorf("reason %s, %d buffers, notes %+v", p.Reason, len(p.Buffers), snap.Notes)
	}
}

// TestAll walks every process: pid 1's fds are unreadable, which is a
// note, never a failure, and the dumping process is not in the snapshot.
func TestAll(t *testing.T) {
	h := pipetest.StartHolder(t, "few")
	report, snap := dump(t, loader.Options{All: true})
	if _, err := snap.Find(h.Rep.Ino); err != nil {
		t.Error(err)
	}
	for _, tk := range snap.Tasks {
		if tk.PID == uint32(os.Getpid()) {
			t.Errorf("the dumping process is in the snapshot")
		}
	}
	if _, err := os.Readlink("/proc/1/fd/0"); errors.Is(err, os.ErrPermission) {
		found := false
		for _, n := range snap.Notes {
			found = found || n.PID == 1 && n.Code == teecap.NoteUnreadable
		}
		if !found {
			t.Errorf("no note for pid 1, whose fds are unreadable: %v", report.Notes)
		}
	}
}

// TestRequested: a requested pid without pipes gets loader's note; bad
// requests fail before anything is written.
func TestRequested(t *testing.T) {
	_, snap := dump(t, loader.Options{PIDs: []int{os.Getpid()}})
	if !hasNote(snap, loader.NoteNoPipes) || len(snap.Tasks) != 0 {
		t.Errorf("dumping only itself: tasks %d, notes %+v", len(snap.Tasks), snap.Notes)
	}
	for _, opts := range []loader.Options{{}, {PIDs: []int{-1}}, {PIDs: []int{1 << 30}}, {All: true, Freeze: true}} {
		var buf bytes.Buffer
		if _, err := teecap.Dump(context.Background(), &buf, opts); err == nil || buf.Len() != 0 {
			t.Errorf("%+v: err %v, %d bytes written", opts, err, buf.Len())
		}
	}
}

// TestFreeze: the holders are stopped for the capture and resumed after.
func TestFreeze(t *testing.T) {
	h := pipetest.StartHolder(t, "shared")
	report, snap := dump(t, loader.Options{PIDs: h.Rep.PIDs, Freeze: true})
	if snap.Header.Flags&format.HeaderFrozen == 0 || report.Frozen <= 0 {
		t.Errorf("header flags %#x, frozen %v", snap.Header.Flags, report.Frozen)
	}
	for _, pid := range h.Rep.PIDs {
		b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
		if err != nil {
			t.Fatal(err)
		}
		if f := strings.Fields(string(b[bytes.LastIndexByte(b, ')')+1:])); f[0] == "T" {
			t.Errorf("pid %d left stopped", pid)
		}
	}
}

// problemsOf keeps the problems with the test's own pipes: the holders'
// stdio pipes have their read ends in processes outside the walk, and
// those that hold bytes cannot be copied by tee.
func problemsOf(r *loader.Report, inos ...uint64) []loader.Problem {
	var out []loader.Problem
	for _, p := range r.Problems {
		if slices.Contains(inos, p.Ino) {
			out = append(out, p)
		}
	}
	return out
}

func hasNote(s *snapshot.Snapshot, code uint32) bool {
	for _, n := range s.Notes {
		if n.Code == code {
			return true
		}
	}
	return false
}

// TestCanceled: a canceled context stops the dump with its error.
func TestCanceled(t *testing.T) {
	h := pipetest.StartHolder(t, "few")
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	if _, err := teecap.Dump(ctx, io.Discard, loader.Options{PIDs: h.Rep.PIDs}); !errors.Is(err, context.Canceled) {
		t.Errorf("err %v, want context.Canceled", err)
	}
}

// BenchmarkDumpThousandPipes: the tee path over 1,000 small pipes, as
// loader's benchmark of the same name.
func BenchmarkDumpThousandPipes(b *testing.B) {
	h := pipetest.StartHolder(b, "many", "PIPESNAP_TEST_PIPES=1000")
	start := time.Now()
	for b.Loop() {
		if _, err := teecap.Dump(context.Background(), io.Discard, loader.Options{PIDs: h.Rep.PIDs}); err != nil {
			b.Fatal(err)
		}
	}
	b.ReportMetric(float64(time.Since(start).Microseconds())/float64(b.N)/1000, "µs/pipe")
}
