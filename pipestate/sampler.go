// Package pipestate reads the state of pipes and FIFOs from the kernel
// with a BPF iterator (bpf/pipestate): who holds which end, how full each
// pipe is, and which tasks sleep on its wait queues, blocked reading or
// writing. Metadata only: no page is read, nothing is copied out of a
// pipe, no process is stopped. A Sampler loads the program once and can
// then walk as often as wanted (ls, watch, serve).
package pipestate

import (
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"os"
	"time"
	"unsafe"

	"github.com/cilium/ebpf"
	"github.com/cilium/ebpf/btf"
	"github.com/cilium/ebpf/link"
	"golang.org/x/sys/unix"

	"github.com/pipesnap/pipesnap/internal/bpfload"
	"github.com/pipesnap/pipesnap/internal/host"
	"github.com/pipesnap/pipesnap/internal/kcgroup"
	"github.com/pipesnap/pipesnap/internal/taskiter"
	"github.com/pipesnap/pipesnap/pipemodel"
)

// Sentinels for what stops a sampler before it starts.
var (
	ErrNoProcess  = host.ErrNoProcess
	ErrNoBTF      = host.ErrNoBTF
	ErrPermission = host.ErrPermission
)

// Options says which processes to walk.
type Options struct {
	PIDs []int // processes to walk; a thread id stands for its process
	All  bool  // every task in pipesnap's pid namespace but pipesnap
	// MaxThreads bounds the threads of one process compared with a
	// pipe's waiters; 0 means 4096.
	MaxThreads int
	// Skip is the process left out instead of pipesnap itself: the
	// client a resident serve walks for, so that the serve is seen as the
	// client's own walk would see it (0: pipesnap itself).
	Skip uint32
	// BTF is the kernel's BTF, to share its decoding with another load
	// of this process (a dump's); nil: decoded for this sampler.
	BTF *btf.Cache
}

// Scope is the processes a walk takes, resolved once: their start times
// tell a requested process from a later one given its pid.
type Scope struct {
	targets []uint32
	starts  map[uint32]uint64
	skip    uint32
}

// NewScope checks what a walk of opts needs (Preflight) and resolves its
// processes.
func NewScope(opts Options) (Scope, error) {
	targets, err := Preflight(opts)
	if err != nil {
		return Scope{}, err
	}
	return Scope{targets: targets, starts: host.StartTimes(targets), skip: opts.Skip}, nil
}

// Sampler owns what it puts in the kernel: the program, its maps, and
// the iterator link of unscoped walks. Nothing is pinned; Close releases
// all of it. A Sampler is not safe for concurrent use.
type Sampler struct {
	objs     pipestateObjects
	all      *link.Iter // the fd walk of every task
	allTasks *link.Iter // the task walk of every task
	gen      uint32     // walks so far: the program's walk_gen
	targets  []uint32
	starts   map[uint32]uint64 // requested tgid -> start time, clock ticks
	unscoped bool              // the kernel cannot scope iterators
	pageSize uint64
	seq      []byte
	// wake says whether the program has the wake functions' addresses
	// (wake.go); kallsymsReads counts the reads of /proc/kallsyms (at
	// most one).
	wake          wakeState
	kallsymsReads int
	// features are what the loaded program uses of the kernel: which
	// variant of bpf/compat.h runs.
	features bpfload.Features
}

// Open checks privileges and BTF, loads the program and attaches it.
func Open(opts Options) (_ *Sampler, err error) {
	scope, err := NewScope(opts)
	if err != nil {
		return nil, err
	}
	maxThreads := opts.MaxThreads
	if maxThreads <= 0 {
		maxThreads = 4096
	}
	spec := func(f bpfload.Features) (*ebpf.CollectionSpec, map[string]any, error) {
		load := loadPipestate
		if !f.Loop {
			load = loadPipestateNoLoop
		}
		cs, err := load()
		return cs, map[string]any{
			pipestateVarSelfTgid:    uint32(os.Getpid()),
			pipestateVarMaxThreads:  uint32(maxThreads),
			pipestateVarMaxAttempts: uint32(3),
		}, err
	}
	s := &Sampler{
		pageSize: uint64(os.Getpagesize()),
		seq:      make([]byte, 64<<10),
	}
	if s.features, err = bpfload.Load(spec, &s.objs, opts.BTF); err != nil {
		return nil, fmt.Errorf("loading BPF program: %w", err)
	}
	defer func() {
		if err != nil {
			s.Close()
		}
	}()
	if err := s.SetScope(scope); err != nil {
		return nil, err
	}
	if s.all, err = link.AttachIter(link.IterOptions{Program: s.objs.PipeState}); err != nil {
		return nil, fmt.Errorf("attaching iterator: %w", host.ExplainPermission(err))
	}
	if s.allTasks, err = link.AttachIter(link.IterOptions{Program: s.objs.TaskState}); err != nil {
		return nil, fmt.Errorf("attaching task iterator: %w", host.ExplainPermission(err))
	}
	return s, nil
}

// SetScope has the following walks take the processes of sc: a resident
// serve walks for one client after another with one program.
func (s *Sampler) SetScope(sc Scope) error {
	for _, tgid := range s.targets {
		if err := s.objs.Targets.Delete(tgid); err != nil && !errors.Is(err, ebpf.ErrKeyNotExist) {
			return fmt.Errorf("removing pid %d from the target map: %w", tgid, err)
		}
	}
	s.targets, s.starts = nil, nil
	for _, tgid := range sc.targets {
		if err := s.objs.Targets.Put(tgid, uint8(1)); err != nil {
			return fmt.Errorf("adding pid %d to the target map: %w", tgid, err)
		}
		s.targets = append(s.targets, tgid)
	}
	s.starts = sc.starts
	if err := s.objs.FilterTgids.Set(len(sc.targets) > 0); err != nil {
		return fmt.Errorf("setting the target filter: %w", err)
	}
	if err := s.objs.SkipTgid.Set(sc.skip); err != nil {
		return fmt.Errorf("setting the process to leave out: %w", err)
	}
	return nil
}

// Close releases the program, its maps and links.
func (s *Sampler) Close() error {
	var errs []error
	for _, l := range []**link.Iter{&s.all, &s.allTasks} {
		if *l != nil {
			errs = append(errs, (*l).Close())
			*l = nil
		}
	}
	errs = append(errs, s.objs.Close())
	return errors.Join(errs...)
}

// Variant says which variant of the program runs (bpf/compat.h): what the
// kernel offered it. Without bpf_loop, a pipe of more than 4096 buffers
// is reported unreadable (BadRing) and a process's threads are compared
// with a pipe's waiters up to the 1024th.
func (s *Sampler) Variant() bpfload.Features { return s.features }

// Targets are the processes the sampler walks; none means every process.
func (s *Sampler) Targets() []uint32 { return s.targets }

// Sample walks the processes and returns what their pipes look like.
// The program starts without the wake functions' addresses (wake.go):
// the first walk that leaves a waiter unexplained has the Sampler read
// them from /proc/kallsyms, once, and walk again.
func (s *Sampler) Sample(ctx context.Context) (*pipemodel.Sample, error) {
	out, err := s.sample(ctx)
	if err != nil || s.wake != wakeUnread || !unexplained(out) {
		return out, err
	}
	w, cached := loadWakeCache()
	if !cached {
		s.kallsymsReads++
		w = readWakeFuncs()
		storeWakeCache(w)
	}
	if w == (wakeFuncs{}) {
		s.wake = wakeUnavailable
		return out, nil
	}
	if err := s.setWakeFuncs(w); err != nil {
		s.wake = wakeUnavailable
		return nil, err
	}
	s.wake = wakeSet
	return s.sample(ctx)
}

// sample walks the processes once: their fds, then, when the other end
// of one of their pipes is held by a process that was not asked for, the
// fds of every process for those pipes alone (who holds the other end is
// where a stall often is), then the threads of every process seen.
func (s *Sampler) sample(ctx context.Context) (*pipemodel.Sample, error) {
	b := newBuilder(s.pageSize, s.starts)
	start := time.Now()
	s.gen++
	if err := s.objs.WalkGen.Set(s.gen); err != nil {
		return nil, fmt.Errorf("setting the walk number: %w", err)
	}
	if err := s.walk(ctx, b.add); err != nil {
		return nil, err
	}
	outside, err := s.walkOtherEnds(ctx, b)
	if err != nil {
		return nil, err
	}
	if err := s.walkTasks(ctx, b, outside); err != nil {
		return nil, err
	}
	out := b.finish()
	out.Time, out.Took = start, time.Since(start)
	out.Scoped = len(s.targets) > 0
	resolveEpollFDs(out)
	for _, tgid := range s.targets {
		if !b.seen[tgid] && !processAlive(tgid, s.starts[tgid]) {
			out.Gone = append(out.Gone, tgid)
		}
	}
	return out, nil
}

// walk runs the program over the targets: one pid-scoped walk per process
// where the kernel allows it (the cost follows their fds, not the
// machine's), else one walk of every task, filtered in the program.
func (s *Sampler) walk(ctx context.Context, fn func(*fdRec) error) error {
	if len(s.targets) == 0 || s.unscoped {
		return s.read(ctx, s.all, fn)
	}
	for _, tgid := range s.targets {
		l, err := taskiter.AttachProcess(s.objs.PipeState, tgid)
		switch {
		case errors.Is(err, taskiter.ErrNoScope):
			s.unscoped = true
			return s.read(ctx, s.all, fn)
		case errors.Is(err, unix.ESRCH) || errors.Is(err, unix.ENOENT):
			continue // exited: Sample notes it
		case err != nil:
			return fmt.Errorf("attaching iterator to pid %d: %w", tgid, err)
		}
		err = s.read(ctx, l, fn)
		l.Close()
		if err != nil {
			return err
		}
	}
	return nil
}

// fdRec is one fd record of a walk as read, valid until the next read:
// the fd, its process and, on the first fd of a pipe in that process,
// the pipe's state.
type fdRec struct {
	proc    *pipestatePstProc
	fd      *pipestatePstFd
	pipe    *pipestatePstPipe // nil: a later fd of a pipe the process's records gave
	slots   []pipestatePstSlot
	waiters []pipestatePstWaiter
	path    []byte // a FIFO's, when the kernel gave it
}

var (
	procRecSize = int(unsafe.Sizeof(pipestatePstProc{}))
	fdRecSize   = int(unsafe.Sizeof(pipestatePstFd{}))
	pipeRecSize = int(unsafe.Sizeof(pipestatePstPipe{}))
	slotSize    = int(unsafe.Sizeof(pipestatePstSlot{}))
	waiterSize  = int(unsafe.Sizeof(pipestatePstWaiter{}))
)

// recHdrSize is what a record's length is read from (type, len).
const recHdrSize = 8

// recLen is a record's length from its header (at least the header, so
// that a broken one is seen, not looped on).
func recLen(h []byte) int {
	return max(int(binary.NativeEndian.Uint16(h[2:])), recHdrSize)
}

// read runs one walk of an iterator, handing fn each fd record.
func (s *Sampler) read(ctx context.Context, l *link.Iter, fn func(*fdRec) error) error {
	// A session's records name their process once, before its first fd.
	var proc pipestatePstProc
	haveProc := false
	var rec fdRec
	return taskiter.ReadRecords(ctx, l, s.seq, recHdrSize, recLen, func(b []byte) error {
		// Records are 8-byte multiples in an 8-byte aligned buffer: read
		// in place, valid until the next read.
		switch t := binary.NativeEndian.Uint16(b); t {
		case uint16(pipestatePstRecPST_REC_PROC):
			if len(b) != procRecSize {
				return fmt.Errorf("process record of %d bytes, want %d", len(b), procRecSize)
			}
			proc, haveProc = *(*pipestatePstProc)(unsafe.Pointer(&b[0])), true
			return nil
		case uint16(pipestatePstRecPST_REC_FD):
			if !haveProc {
				return errors.New("fd record before its process's")
			}
			if err := parseFD(b, &rec); err != nil {
				return err
			}
			rec.proc = &proc
			if rec.pipe != nil && !s.features.DPath {
				rec.path = fifoPath(&rec)
			}
			return fn(&rec)
		default:
			return fmt.Errorf("record of unknown type %d", t)
		}
	}, nil)
}

// parseFD reads an fd record into rec (slices of b).
func parseFD(b []byte, rec *fdRec) error {
	if len(b) < fdRecSize {
		return fmt.Errorf("fd record of %d bytes", len(b))
	}
	*rec = fdRec{fd: (*pipestatePstFd)(unsafe.Pointer(&b[0]))}
	if len(b) == fdRecSize {
		return nil
	}
	at := fdRecSize
	if len(b) < at+pipeRecSize {
		return fmt.Errorf("fd record of %d bytes", len(b))
	}
	p := (*pipestatePstPipe)(unsafe.Pointer(&b[at]))
	at += pipeRecSize
	nslots, nwaiters, pathLen := int(p.Nslots), int(p.Nwaiters), int(p.PathLen)
	want := at + nslots*slotSize + nwaiters*waiterSize
	if pathLen > 0 {
		want += (pathLen + 8) &^ 7
	}
	if nslots > pstSlots || nwaiters > pstMaxWaiters || pathLen >= pstPathLen || len(b) != want {
		return fmt.Errorf("fd record of %d bytes with %d slots, %d waiters, a path of %d", len(b), nslots, nwaiters, pathLen)
	}
	rec.pipe = p
	if nslots > 0 {
		rec.slots = unsafe.Slice((*pipestatePstSlot)(unsafe.Pointer(&b[at])), nslots)
		at += nslots * slotSize
	}
	if nwaiters > 0 {
		rec.waiters = unsafe.Slice((*pipestatePstWaiter)(unsafe.Pointer(&b[at])), nwaiters)
		at += nwaiters * waiterSize
	}
	if pathLen > 0 {
		rec.path = b[at : at+pathLen]
	}
	return nil
}

// Bounds of bpf/pipestate/pipestate.h (#defines, which BTF does not carry).
const (
	pstSlots      = 16
	pstMaxWaiters = 16
	pstPathLen    = 256
)

// fifoPath is the path of a FIFO's record where the kernel gives
// iterators no bpf_d_path: the link of the fd in /proc, the same d_path()
// of the same open file (none, as bpf_d_path would, when it does not fit).
func fifoPath(r *fdRec) []byte {
	if r.pipe.Kind != uint32(pipestatePstKindPST_KIND_FIFO) || len(r.path) != 0 {
		return r.path
	}
	p := bpfload.FDPath(r.proc.Tgid, r.fd.Fd)
	if len(p) >= pstPathLen {
		return nil
	}
	return []byte(p)
}

// walkOtherEnds walks every process's fds for the pipes whose other end
// the walked processes do not hold all of, and adds those holders,
// marked outside. It returns whether it found any.
func (s *Sampler) walkOtherEnds(ctx context.Context, b *builder) (bool, error) {
	if len(s.targets) == 0 {
		return false, nil
	}
	var want []uint64
	for _, o := range b.order {
		p := o.p
		if len(want) == maxOtherEnds {
			break
		}
		var rd, wr uint32
		for _, h := range p.Holders {
			if h.End.Reads() {
				rd++
			}
			if h.End.Writes() {
				wr++
			}
		}
		if p.Readers > rd || p.Writers > wr {
			want = append(want, p.Ino)
		}
	}
	if len(want) == 0 {
		return false, nil
	}
	for _, ino := range want {
		if err := s.objs.Inos.Put(ino, uint8(1)); err != nil {
			return false, fmt.Errorf("adding inode %d to the inode map: %w", ino, err)
		}
	}
	defer func() {
		for _, ino := range want {
			s.objs.Inos.Delete(ino)
		}
		s.objs.FilterInos.Set(false)
		s.objs.FilterTgids.Set(true)
	}()
	if err := s.objs.FilterTgids.Set(false); err != nil {
		return false, err
	}
	if err := s.objs.FilterInos.Set(true); err != nil {
		return false, err
	}
	b.outside = true
	defer func() { b.outside = false }()
	if err := s.read(ctx, s.all, b.add); err != nil {
		return false, err
	}
	return len(b.outsideProcs) > 0, nil
}

// maxOtherEnds bounds the pipes looked for outside the walked processes
// in one sample (the program's inode map).
const maxOtherEnds = 4096

// walkTasks reads the threads of the processes the fd walks reported,
// and the tasks asleep opening a FIFO: scoped to the targets where the
// kernel allows and no holder outside them was found, else every task
// (the program keeps those of the processes seen in this walk).
func (s *Sampler) walkTasks(ctx context.Context, b *builder, outside bool) error {
	fn := func(rec []byte) error {
		// Records are 8-byte multiples in an 8-byte aligned buffer: read
		// in place, valid until the next read.
		r := (*pipestatePstTask)(unsafe.Pointer(&rec[0]))
		if r.Cgroup == 0 {
			b.addTask(r, nil)
			return nil
		}
		c := (*pipestateCgProc)(unsafe.Pointer(&rec[taskRecSize]))
		cg := kcgroup.Decode(c.Id, c.Off, c.Flags, c.V1Ctl, &c.Path)
		b.addTask(r, &cg)
		return nil
	}
	read := func(l *link.Iter) error {
		return taskiter.ReadRecords(ctx, l, s.seq, taskRecSize, taskSize, fn, nil)
	}
	if len(s.targets) == 0 || s.unscoped || outside {
		if outside {
			if err := s.objs.FilterTgids.Set(false); err != nil {
				return err
			}
			defer s.objs.FilterTgids.Set(true)
		}
		return read(s.allTasks)
	}
	for _, tgid := range s.targets {
		l, err := taskiter.AttachProcess(s.objs.TaskState, tgid)
		switch {
		case errors.Is(err, taskiter.ErrNoScope):
			return read(s.allTasks)
		case errors.Is(err, unix.ESRCH) || errors.Is(err, unix.ENOENT):
			continue
		case err != nil:
			return fmt.Errorf("attaching task iterator to pid %d: %w", tgid, err)
		}
		err = read(l)
		l.Close()
		if err != nil {
			return err
		}
	}
	return nil
}

var (
	taskRecSize  = int(unsafe.Sizeof(pipestatePstTask{}))
	cgRecSize    = int(unsafe.Sizeof(pipestateCgProc{}))
	taskCgroupAt = int(unsafe.Offsetof(pipestatePstTask{}.Cgroup))
)

// taskSize is the size of a task record: with the cg_proc that follows
// a thread group leader's.
func taskSize(h []byte) int {
	if binary.NativeEndian.Uint32(h[taskCgroupAt:]) != 0 {
		return taskRecSize + cgRecSize
	}
	return taskRecSize
}

// resolveEpollFDs names the epoll fd of each epoll waiter with a task.
func resolveEpollFDs(smp *pipemodel.Sample) {
	for _, p := range smp.Pipes {
		for i := range p.Waiters {
			w := &p.Waiters[i]
			if w.Kind != pipemodel.WaiterEpoll || w.PID == 0 || !w.WaitsFor(p) {
				continue
			}
			w.EpollFD = epollFD(w.PID, w.TargetFD, p.Ino)
			for j := range p.Holders {
				h := &p.Holders[j]
				if h.PID == w.PID && h.Via == "epoll" && h.EpollFD == 0 {
					h.EpollFD = w.EpollFD
				}
			}
		}
	}
}

// Preflight checks what a walk needs before anything is loaded: something
// to walk, processes that exist, privileges, kernel BTF. It returns the
// processes to walk (none: every process).
func Preflight(opts Options) ([]uint32, error) {
	if !opts.All && len(opts.PIDs) == 0 {
		return nil, errors.New("nothing to walk: give pids or all")
	}
	var targets []uint32
	if !opts.All {
		var err error
		if targets, err = host.Resolve(opts.PIDs); err != nil {
			return nil, err
		}
	}
	if err := host.CheckBPF(); err != nil {
		return nil, err
	}
	return targets, nil
}

// processAlive tells whether tgid still names the process that started
// at start (clock ticks; 0: unknown, any process will do).
func processAlive(tgid uint32, start uint64) bool {
	now, ok := host.StartTicks(tgid)
	return ok && (start == 0 || now == start)
}
