package loader

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"runtime"
	"strconv"
	"strings"

	"github.com/cilium/ebpf"
	"github.com/cilium/ebpf/btf"

	"github.com/pipesnap/pipesnap/format"
	"github.com/pipesnap/pipesnap/internal/dumpstream"
	"github.com/pipesnap/pipesnap/internal/host"
	"github.com/pipesnap/pipesnap/pipemodel"
)

// Sentinels for what stops a dump before it starts.
var (
	ErrNoProcess    = host.ErrNoProcess
	ErrNoBTF        = host.ErrNoBTF
	ErrPermission   = host.ErrPermission
	ErrFreezeAll    = errors.New("freezing every process would stop the machine: freeze takes pids")
	ErrNotSupported = ebpf.ErrNotSupported
)

// Options says what to dump.
type Options struct {
	PIDs        []int  // processes to dump; a thread id stands for its process
	All         bool   // every task in pipesnap's pid namespace but pipesnap
	ExcludeIno  uint64 // a pipe left out with a note: the snapshot's own output
	MaxAttempts int    // copies of a pipe before it is marked torn; 0 means 4
	Freeze      bool   // stop the processes (SIGSTOP) for the walk: a consistent cut
	// Skip is the process left out instead of pipesnap itself: the
	// client a resident serve dumps for, so that the serve is seen as the
	// client's own walk would see it (0: pipesnap itself).
	Skip uint32
	// BTF is the kernel's BTF as another load of this process decoded
	// it (pipestate's, for the waits); nil: decoded for this dump.
	BTF *btf.Cache
	// Waits, when set, are written after the tasks: who waited on what
	// (a live sample taken just before the walk, or alongside it).
	Waits *dumpstream.Waits
	// AwaitWaits, when set, gives Waits instead, from a sample taken on
	// another core meanwhile: called after the walk, or for a frozen
	// dump before it (the processes' states are those they run in).
	AwaitWaits func() *dumpstream.Waits
}

// Report sums up a dump; Problem is a pipe that was not fully and
// consistently captured.
type (
	Report  = dumpstream.Report
	Problem = dumpstream.Problem
)

// Dump walks the chosen tasks' pipes and FIFOs in the kernel and writes
// the pipesnap stream to w, one pipe at a time.
func Dump(ctx context.Context, w io.Writer, opts Options) (*Report, error) {
	targets, err := Preflight(opts)
	if err != nil {
		return nil, err
	}
	cfg := newIterConfig(targets, opts.MaxAttempts)
	cfg.btf = opts.BTF
	it, err := loadIter(cfg)
	if err != nil {
		return nil, err
	}
	defer it.Close()
	if err := it.objs.SkipTgid.Set(opts.Skip); err != nil {
		return nil, fmt.Errorf("setting the process to leave out: %w", err)
	}
	tr, err := it.calibrate(uint32(os.Getpagesize()))
	if err != nil {
		return nil, err
	}
	return it.dumpTo(ctx, w, opts, targets, tr)
}

// newIterConfig is what a dump loads the programs with: the tgids to
// walk (none: every task) and the attempts at a moving pipe (0: 4).
func newIterConfig(targets []uint32, attempts int) iterConfig {
	pageSize := uint32(os.Getpagesize())
	if attempts <= 0 {
		attempts = 4
	}
	tries := uint32(min(attempts, 8))
	slots := scratchSlots(pageSize, tries)
	return iterConfig{
		selfTgid:     uint32(os.Getpid()),
		targets:      targets,
		pageSize:     pageSize,
		scratchSlots: slots,
		maxAttempts:  tries,
		ringBytes:    ringBytes(slots, pageSize, tries),
		copyData:     true,
	}
}

// dumpTo runs one dump of targets with the programs loaded and their
// translation tr verified and set.
func (it *pipeIter) dumpTo(ctx context.Context, w io.Writer, opts Options, targets []uint32, tr translation) (*Report, error) {
	pageSize := uint32(os.Getpagesize())
	s, err := dumpstream.New(w, opts.Freeze, tr.source)
	if err != nil {
		return nil, err
	}
	if err := s.WriteNote(variantNote(it.features)); err != nil {
		return nil, err
	}
	s.SetWaits(opts.Waits)
	await := func() {
		if opts.AwaitWaits != nil {
			s.SetWaits(opts.AwaitWaits())
			opts.AwaitWaits = nil
		}
	}
	if opts.Freeze {
		await()
	}
	d := &dumper{
		ctx:      ctx,
		it:       it,
		s:        s,
		pageSize: pageSize,
		exclude:  opts.ExcludeIno,
		files:    map[fileKey]int32{},
		cgroups:  map[uint32]pipemodel.Cgroups{},
		written:  map[uint32]pipemodel.Cgroups{},
		starts:   host.StartTimes(targets),
	}
	it.taken = s.HasPipe
	defer func() { it.taken = nil }()
	if err := it.newRun(); err != nil {
		return nil, err
	}
	if err := s.Walk(targets, func() error { return it.walk(targets, d.onFD) }); err != nil {
		return nil, err
	}
	await()
	rep, err := s.Finish(targets)
	if rep != nil {
		rep.Cgroups = d.written
	}
	return rep, err
}

// Preflight checks what a dump needs before anything is loaded or
// written: something to dump, processes that exist, privileges, kernel
// BTF, a supported architecture. It returns the processes to walk.
func Preflight(opts Options) ([]uint32, error) {
	if !opts.All && len(opts.PIDs) == 0 {
		return nil, errors.New("nothing to dump: give pids or all")
	}
	if opts.Freeze && opts.All {
		return nil, ErrFreezeAll
	}
	targets, err := host.Resolve(opts.PIDs)
	if err != nil {
		return nil, err
	}
	if err := host.CheckBPF(); err != nil {
		return nil, err
	}
	if pageSize := os.Getpagesize(); !layoutKnown(runtime.GOARCH, pageSize) {
		return nil, fmt.Errorf("page translation for %s with %d-byte pages: %w", runtime.GOARCH, pageSize, ErrNotSupported)
	}
	return targets, nil
}

// Note codes pipesnap writes (format.Note.Code).
const (
	NoteNoPipes  = dumpstream.NoteNoPipes
	NoteExcluded = dumpstream.NoteExcluded
	NoteLost     = dumpstream.NoteLost
	NoteExited   = dumpstream.NoteExited
	NoteReused   = dumpstream.NoteReused
)

// dumper turns ps_fd records and ring data into the stream; s hands out
// the objrefs.
type dumper struct {
	ctx      context.Context
	it       *pipeIter
	s        *dumpstream.Writer
	pageSize uint32
	exclude  uint64

	files map[fileKey]int32 // open file -> objref
	// cgroups are the walked processes' cgroups as the kernel read them,
	// by tgid: known before a process's first fd record is handled.
	cgroups map[uint32]pipemodel.Cgroups
	written map[uint32]pipemodel.Cgroups // of the processes with a task section
	starts  map[uint32]uint64            // requested tgid -> start time in clock ticks
	skip    uint32                       // tgid of a task section being left out
	task    [2]uint32                    // tgid, tid of the open task section
	comm    string                       // the comm of task commOf
	commOf  [2]uint32
}

func (d *dumper) onFD(b []byte) error {
	if err := d.ctx.Err(); err != nil {
		return err
	}
	var r pipesPsFd
	if err := decodeRec(b, &r); err != nil {
		return err
	}
	if r.Cgroup != 0 {
		cg, err := fdCgroups(b)
		if err != nil {
			return err
		}
		d.cgroups[r.Tgid] = cg
	}
	// One string per task, not per fd.
	if d.commOf != [2]uint32{r.Tgid, r.Tid} {
		d.comm, d.commOf = cString(r.Comm[:]), [2]uint32{r.Tgid, r.Tid}
	}
	comm := d.comm
	if d.task != [2]uint32{r.Tgid, r.Tid} && d.reused(&r) {
		d.task = [2]uint32{r.Tgid, r.Tid}
		d.skip = r.Tgid
		return d.s.Reused(r.Tgid, comm)
	}
	if d.skip == r.Tgid && d.task == [2]uint32{r.Tgid, r.Tid} {
		return nil
	}
	if d.task != [2]uint32{r.Tgid, r.Tid} {
		d.task = [2]uint32{r.Tgid, r.Tid}
		// The cgroups of the task's process, as the kernel read them
		// (absent when it could not read them): for the stream's
		// container identity.
		if cg, ok := d.cgroups[r.Tgid]; ok {
			d.written[r.Tgid] = cg
		}
		if err := d.s.Task(format.Task{PID: r.Tgid, TID: r.Tid, StartNS: r.StartNs, UID: r.Uid, Comm: comm}); err != nil {
			return err
		}
	}

	key := fileKey{r.FileId, r.Ino}
	fileRef, known := d.files[key]
	if !known {
		fileRef = d.s.NewRef()
		d.files[key] = fileRef
	}
	if err := d.s.FD(format.FDEnt{FD: int32(r.Fd), FileRef: fileRef, Cloexec: r.Cloexec != 0}); err != nil || known {
		return err
	}
	pipeRef, newPipe, err := d.s.File(format.File{
		Ref:   fileRef,
		Mode:  r.F_mode & (format.ModeRead | format.ModeWrite),
		Flags: r.F_flags,
	}, r.Ino)
	if err != nil || !newPipe {
		return err
	}
	return d.writePipe(&r, pipeRef, comm)
}

// reused tells whether a requested pid now names another process than
// the one asked for (it exited and the pid was given out again). Start
// times are compared in clock ticks, /proc's unit.
func (d *dumper) reused(r *pipesPsFd) bool {
	want, ok := d.starts[r.Tgid]
	return ok && r.StartNs/(1e9/host.ClockTicks) != want
}

// fileKey identifies an open file during one walk. The inode guards
// against a file freed and another allocated at the same address.
type fileKey struct{ id, ino uint64 }

func (d *dumper) writePipe(r *pipesPsFd, ref int32, comm string) error {
	c, err := d.it.takePipe(r.Ino, r.First != 0, func(ino uint64) bool { return d.s.HasPipe(ino) && ino != r.Ino })
	if err != nil {
		return err
	}
	// The buffers are written from the ring itself: it gets them back
	// once they are in the output.
	defer d.it.ring.release()
	p := format.Pipe{Ref: ref, Ino: r.Ino, Kind: format.Kind(r.Kind), PageSize: d.pageSize}
	var bufs []capturedBuf
	switch {
	case c == nil:
		p.Status = format.StatusIncomplete
		p.Reason = format.ReasonChannel
		d.s.Note(r.Tgid, NoteLost, fmt.Sprintf("pipe %d: the kernel's copy did not arrive", r.Ino))
	default:
		h := &c.hdr
		p.Status = format.Status(h.Status)
		p.Reason = format.Reason(h.Reason)
		p.Attempts = h.Attempts
		p.RingSize, p.MaxUsage, p.Capacity = h.RingSize, h.MaxUsage, h.MaxUsage*d.pageSize
		p.Head, p.Tail = h.Head, h.Tail
		p.Readers, p.Writers = h.Readers, h.Writers
		p.Path = d.it.fifoPath(c.path, r)
		bufs = c.bufs
		if c.lost {
			p.Status |= format.StatusIncomplete
			p.Reason = format.ReasonChannel
		}
	}
	if r.Ino == d.exclude && d.exclude != 0 {
		bufs = nil
		d.s.Exclude(&p, r.Tgid)
	}
	for _, b := range bufs {
		p.Bytes += uint64(len(b.data))
	}
	p.NrBufs = uint32(len(bufs))
	if err := d.s.Pipe(p); err != nil {
		return err
	}
	for _, b := range bufs {
		err := d.s.Buffer(format.Buffer{Index: b.index, Offset: b.offset, Len: uint32(len(b.data)), Flags: b.flags, Data: b.data})
		if err != nil {
			return err
		}
	}
	return d.s.EndPipe(&p, r.Tgid, comm, int32(r.Fd))
}

// scratchSlots is how many buffers of one pipe can be copied: enough for
// the largest pipe an unprivileged user can make (pipe-max-size), as far
// as a ring of at most maxRing holds every attempt at it. (A larger pipe
// is copied in part and marked incomplete, reason too large.)
func scratchSlots(pageSize, attempts uint32) uint32 {
	maxSize := uint64(1 << 20)
	if b, err := os.ReadFile("/proc/sys/fs/pipe-max-size"); err == nil {
		if n, err := strconv.ParseUint(strings.TrimSpace(string(b)), 10, 32); err == nil {
			maxSize = n
		}
	}
	return slotsFor(maxSize, pageSize, attempts)
}

func slotsFor(maxSize uint64, pageSize, attempts uint32) uint32 {
	slots := max(256, maxSize/uint64(pageSize))
	fit := (maxRing - 64<<10) / (uint64(pageSize+64) * uint64(attempts))
	return uint32(min(slots, fit, 1<<16))
}

// maxRing bounds the ring buffer's size (pipe-max-size can be raised far).
const maxRing = 256 << 20

// ringBytes holds every copy attempt at the largest pipe: the
// program copies a pipe only when the ring has room for all its attempts,
// and an empty ring always has (rounding up to a power of two leaves
// room for more pipes per read).
func ringBytes(slots, pageSize, attempts uint32) uint32 {
	need := uint64(slots)*uint64(pageSize+64)*uint64(attempts) + 64<<10
	size := uint64(8 << 20)
	for size < need {
		size <<= 1
	}
	return uint32(size)
}

func cString[T ~int8 | ~uint8](b []T) string {
	var buf bytes.Buffer
	for _, c := range b {
		if c == 0 {
			break
		}
		buf.WriteByte(byte(c))
	}
	return buf.String()
}
