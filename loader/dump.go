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
	"time"

	"github.com/cilium/ebpf"

	"github.com/pipesnap/pipesnap/format"
	"github.com/pipesnap/pipesnap/freeze"
	"github.com/pipesnap/pipesnap/internal/host"
)

// Sentinels for what stops a dump before it starts.
var (
	ErrNoProcess    = host.ErrNoProcess
	ErrNoBTF        = errors.New("kernel BTF not found at /sys/kernel/btf/vmlinux")
	ErrPermission   = errors.New("dump needs root, or CAP_BPF and CAP_PERFMON")
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
}

// Problem is a pipe that was not fully and consistently captured.
type Problem struct {
	Ino      uint64
	Status   format.Status
	Reason   format.Reason
	Attempts uint32
	Holder   string // the first holder met: "pid 12 (cat) fd 3"
}

func (p Problem) String() string {
	what := "incomplete"
	if p.Status&format.StatusTorn != 0 {
		what = "torn"
	}
	return fmt.Sprintf("pipe %d, held by %s: %s (%s, %d attempts)", p.Ino, p.Holder, what, p.Reason, p.Attempts)
}

// Report sums up a dump.
type Report struct {
	Tasks, FDs, Pipes int
	Bytes             uint64
	Problems          []Problem
	Notes             []string
	Translation       string        // where the page translation came from
	Frozen            time.Duration // how long the processes were stopped
	FrozenHow         string        // with what (freeze.Set.How)
}

// Dump walks the chosen tasks' pipes and FIFOs in the kernel and writes
// the pipesnap stream to w, one pipe at a time.
func Dump(ctx context.Context, w io.Writer, opts Options) (*Report, error) {
	targets, err := Preflight(opts)
	if err != nil {
		return nil, err
	}
	pageSize := uint32(os.Getpagesize())
	attempts := opts.MaxAttempts
	if attempts <= 0 {
		attempts = 4
	}
	slots := scratchSlots(pageSize)
	tries := uint32(min(attempts, 8))
	it, err := loadIter(iterConfig{
		selfTgid:     uint32(os.Getpid()),
		targets:      targets,
		pageSize:     pageSize,
		scratchSlots: slots,
		maxAttempts:  tries,
		ringBytes:    ringBytes(slots, pageSize, tries),
		copyData:     true,
	})
	if err != nil {
		return nil, err
	}
	defer it.Close()

	tr, err := it.calibrate(pageSize)
	if err != nil {
		return nil, err
	}
	hdr, err := host.KernelHeader()
	if err != nil {
		return nil, err
	}
	if opts.Freeze {
		hdr.Flags |= format.HeaderFrozen
	}
	enc, err := format.NewEncoder(w, hdr)
	if err != nil {
		return nil, fmt.Errorf("writing snapshot: %w", err)
	}
	d := &dumper{
		ctx:      ctx,
		it:       it,
		enc:      enc,
		pageSize: pageSize,
		exclude:  opts.ExcludeIno,
		files:    map[fileKey]int32{},
		pipes:    map[uint64]int32{},
		tasks:    map[uint32]bool{},
		starts:   host.StartTimes(targets),
		report:   &Report{Translation: tr.source},
		nextRef:  1,
	}
	if err := it.newRun(); err != nil {
		return nil, err
	}
	if opts.Freeze {
		// Stopped as late as possible, resumed as early as possible, and
		// resumed on every way out (the deferred Thaw runs on errors and
		// panics; signals reach the caller's context).
		frozenAt := time.Now()
		set, err := freeze.Stop(host.PIDs(targets), 2*time.Second)
		if err != nil {
			return nil, err
		}
		defer set.Thaw()
		d.report.FrozenHow = set.How
		err = it.walk(targets, d.onFD)
		d.report.Frozen = time.Since(frozenAt)
		if thawErr := set.Thaw(); err == nil && thawErr != nil {
			err = thawErr
		}
		if err != nil {
			return nil, err
		}
	} else if err := it.walk(targets, d.onFD); err != nil {
		return nil, err
	}
	for _, tgid := range targets {
		if d.tasks[tgid] {
			continue
		}
		if _, err := os.Stat(fmt.Sprintf("/proc/%d", tgid)); err != nil {
			d.note(tgid, NoteExited, fmt.Sprintf("pid %d exited before its files were walked", tgid))
		} else {
			d.note(tgid, NoteNoPipes, fmt.Sprintf("pid %d holds no pipes or FIFOs", tgid))
		}
	}
	if err := d.flushNotes(); err != nil {
		return nil, err
	}
	if err := enc.Close(); err != nil {
		return nil, fmt.Errorf("writing snapshot: %w", err)
	}
	return d.report, nil
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
	if !host.CanLoadBPF() {
		return nil, fmt.Errorf("%w: run it as root (sudo)", ErrPermission)
	}
	if _, err := os.Stat("/sys/kernel/btf/vmlinux"); err != nil {
		return nil, fmt.Errorf("%w (pipesnap needs a kernel built with CONFIG_DEBUG_INFO_BTF)", ErrNoBTF)
	}
	if pageSize := os.Getpagesize(); runtime.GOARCH != "amd64" || pageSize != 4096 {
		return nil, fmt.Errorf("page translation for %s with %d-byte pages: %w", runtime.GOARCH, pageSize, ErrNotSupported)
	}
	return targets, nil
}

// Note codes pipesnap writes (format.Note.Code).
const (
	NoteNoPipes  = 1 // a requested process holds no pipes
	NoteExcluded = 2 // a pipe left out on purpose
	NoteLost     = 3 // the kernel copied a pipe but its records did not arrive
	NoteExited   = 4 // a requested process exited before the walk reached it
	NoteReused   = 5 // a requested pid now belongs to another process: left out
)

// dumper turns ps_fd records and ring data into the stream, assigning
// objrefs: a file or pipe met the first time gets the next one and
// carries its contents; later encounters carry only the objref.
type dumper struct {
	ctx      context.Context
	it       *pipeIter
	enc      *format.Encoder
	pageSize uint32
	exclude  uint64

	files   map[fileKey]int32 // open file -> objref
	pipes   map[uint64]int32  // inode -> objref
	tasks   map[uint32]bool
	starts  map[uint32]uint64 // requested tgid -> start time in clock ticks
	skip    uint32            // tgid of a task section being left out
	nextRef int32
	task    [2]uint32 // tgid, tid of the open task section
	report  *Report
	pending []format.Note
}

func (d *dumper) onFD(b []byte) error {
	if err := d.ctx.Err(); err != nil {
		return err
	}
	var r pipesPsFd
	if err := decodeRec(b, &r); err != nil {
		return err
	}
	comm := cString(r.Comm[:])
	if d.task != [2]uint32{r.Tgid, r.Tid} && d.reused(&r, comm) {
		d.task = [2]uint32{r.Tgid, r.Tid}
		d.skip = r.Tgid
		return d.flushNotes()
	}
	if d.skip == r.Tgid && d.task == [2]uint32{r.Tgid, r.Tid} {
		return nil
	}
	if d.task != [2]uint32{r.Tgid, r.Tid} {
		d.task = [2]uint32{r.Tgid, r.Tid}
		d.tasks[r.Tgid] = true
		d.report.Tasks++
		err := d.enc.WriteTask(format.Task{PID: r.Tgid, TID: r.Tid, StartNS: r.StartNs, UID: r.Uid, Comm: comm})
		if err != nil {
			return fmt.Errorf("writing snapshot: %w", err)
		}
	}
	d.report.FDs++

	key := fileKey{r.FileId, r.Ino}
	fileRef, known := d.files[key]
	if !known {
		fileRef = d.newRef()
		d.files[key] = fileRef
	}
	if err := d.enc.WriteFDEnt(format.FDEnt{FD: int32(r.Fd), FileRef: fileRef, Cloexec: r.Cloexec != 0}); err != nil {
		return fmt.Errorf("writing snapshot: %w", err)
	}
	if known {
		return nil
	}
	pipeRef, known := d.pipes[r.Ino]
	if !known {
		pipeRef = d.newRef()
		d.pipes[r.Ino] = pipeRef
	}
	err := d.enc.WriteFile(format.File{
		Ref:     fileRef,
		Type:    format.FileTypePipe,
		Mode:    r.F_mode & (format.ModeRead | format.ModeWrite),
		Flags:   r.F_flags,
		PipeRef: pipeRef,
	})
	if err != nil {
		return fmt.Errorf("writing snapshot: %w", err)
	}
	if known {
		return nil
	}
	return d.writePipe(&r, pipeRef, comm)
}

// reused tells whether a requested pid now names another process than
// the one asked for (it exited and the pid was given out again), and
// notes it. Start times are compared in clock ticks, /proc's unit.
func (d *dumper) reused(r *pipesPsFd, comm string) bool {
	want, ok := d.starts[r.Tgid]
	if !ok || r.StartNs/(1e9/host.ClockTicks) == want {
		return false
	}
	d.tasks[r.Tgid] = true
	d.note(r.Tgid, NoteReused, fmt.Sprintf("pid %d now belongs to another process (%s, started later): left out", r.Tgid, comm))
	return true
}

// fileKey identifies an open file during one walk. The inode guards
// against a file freed and another allocated at the same address.
type fileKey struct{ id, ino uint64 }

func (d *dumper) newRef() int32 {
	ref := d.nextRef
	d.nextRef++
	return ref
}

func (d *dumper) writePipe(r *pipesPsFd, ref int32, comm string) error {
	c, err := d.it.takePipe(r.Ino, func(ino uint64) bool { _, ok := d.pipes[ino]; return ok && ino != r.Ino })
	if err != nil {
		return err
	}
	p := format.Pipe{Ref: ref, Ino: r.Ino, Kind: format.Kind(r.Kind), PageSize: d.pageSize}
	var bufs []capturedBuf
	switch {
	case c == nil:
		p.Status = format.StatusIncomplete
		p.Reason = format.ReasonChannel
		d.note(r.Tgid, NoteLost, fmt.Sprintf("pipe %d: the kernel's copy did not arrive", r.Ino))
	default:
		h := &c.hdr
		p.Status = format.Status(h.Status)
		p.Reason = format.Reason(h.Reason)
		p.Attempts = h.Attempts
		p.RingSize, p.MaxUsage, p.Capacity = h.RingSize, h.MaxUsage, h.MaxUsage*d.pageSize
		p.Head, p.Tail = h.Head, h.Tail
		p.Readers, p.Writers = h.Readers, h.Writers
		p.Path = c.path
		bufs = c.bufs
		if c.lost {
			p.Status |= format.StatusIncomplete
			p.Reason = format.ReasonChannel
		}
	}
	if r.Ino == d.exclude && d.exclude != 0 {
		bufs = nil
		p.Status = p.Status&^format.StatusTorn | format.StatusIncomplete
		p.Reason = format.ReasonExcluded
		d.note(r.Tgid, NoteExcluded, fmt.Sprintf("pipe %d is the snapshot's own output: left out", r.Ino))
	}
	for _, b := range bufs {
		p.Bytes += uint64(len(b.data))
	}
	p.NrBufs = uint32(len(bufs))
	if err := d.enc.WritePipe(p); err != nil {
		return fmt.Errorf("writing snapshot: %w", err)
	}
	for _, b := range bufs {
		err := d.enc.WriteBuffer(format.Buffer{Index: b.index, Offset: b.offset, Len: uint32(len(b.data)), Flags: b.flags, Data: b.data})
		if err != nil {
			return fmt.Errorf("writing snapshot: %w", err)
		}
	}
	if err := d.flushNotes(); err != nil {
		return err
	}
	d.report.Pipes++
	d.report.Bytes += p.Bytes
	if p.Status&(format.StatusTorn|format.StatusIncomplete) != 0 {
		d.report.Problems = append(d.report.Problems, Problem{
			Ino: r.Ino, Status: p.Status, Reason: p.Reason, Attempts: p.Attempts,
			Holder: fmt.Sprintf("pid %d (%s) fd %d", r.Tgid, comm, r.Fd),
		})
	}
	return nil
}

// note queues a note for the stream; flushNotes writes the queue where
// the grammar allows a note (between fd entries).
func (d *dumper) note(pid uint32, code uint32, msg string) {
	d.report.Notes = append(d.report.Notes, msg)
	d.pending = append(d.pending, format.Note{PID: pid, Code: code, Msg: msg})
}

func (d *dumper) flushNotes() error {
	for _, n := range d.pending {
		if err := d.enc.WriteNote(n); err != nil {
			return fmt.Errorf("writing snapshot: %w", err)
		}
	}
	d.pending = d.pending[:0]
	return nil
}

// scratchSlots is how many buffers of one pipe can be copied: enough for
// the largest pipe an unprivileged user can make (pipe-max-size).
func scratchSlots(pageSize uint32) uint32 {
	slots := uint32(256)
	if b, err := os.ReadFile("/proc/sys/fs/pipe-max-size"); err == nil {
		if n, err := strconv.ParseUint(strings.TrimSpace(string(b)), 10, 32); err == nil {
			slots = max(slots, uint32(n)/pageSize)
		}
	}
	return min(slots, 1<<16)
}

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
