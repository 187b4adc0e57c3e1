package pipestate

import (
	"cmp"
	"fmt"
	"slices"
	"time"

	"github.com/pipesnap/pipesnap/internal/host"
	"github.com/pipesnap/pipesnap/pipemodel"
)

// builder turns records into a Sample. The first record of a pipe gives
// its state; every record adds a holder and the waiters it matched; task
// records add the threads of the processes and the tasks asleep opening
// a FIFO.
type builder struct {
	pageSize uint64
	starts   map[uint32]uint64 // requested tgid -> start time (clock ticks)
	pipes    map[uint64]*pipemodel.Pipe
	procs    map[uint32]*pipemodel.Proc
	seen     map[uint32]bool
	opens    []pipemodel.OpenWait
	// outside: records of the walk for the other ends of walked pipes
	// come from processes that were not asked for.
	outside bool
	// outsideProcs are those processes: shown as holders, not walked.
	outsideProcs map[uint32]*pipemodel.Proc
	// pipeBlock and holderBlock are allocated ahead (newPipe, holders).
	pipeBlock   []pipemodel.Pipe
	holderBlock []pipemodel.Holder
	// order is the pipes as first seen, with their inodes: walked and
	// sorted without a map's or a pointer's indirection.
	order []pipeAt
	// cur is the process of the last record: records come process by
	// process, so the maps are looked up once per process.
	cur curProc
}

type pipeAt struct {
	ino uint64
	p   *pipemodel.Pipe
}

// curProc is what add found for one process's records.
type curProc struct {
	valid   bool
	tgid    uint32
	startNs uint64
	outside bool
	proc    *pipemodel.Proc // nil: the process's records are left out
}

func newBuilder(pageSize uint64, starts map[uint32]uint64) *builder {
	return &builder{
		pageSize:     pageSize,
		starts:       starts,
		pipes:        map[uint64]*pipemodel.Pipe{},
		procs:        map[uint32]*pipemodel.Proc{},
		seen:         map[uint32]bool{},
		outsideProcs: map[uint32]*pipemodel.Proc{},
	}
}

// reused tells whether a record's process is not the one asked for: the
// pid now names another process.
func (b *builder) reused(tgid uint32, startNs uint64) bool {
	want, ok := b.starts[tgid]
	return ok && want != 0 && startNs/(1e9/host.ClockTicks) != want
}

func (b *builder) add(r *fdRec) error {
	pr, fd := r.proc, r.fd
	c := &b.cur
	if !c.valid || c.tgid != pr.Tgid || c.startNs != pr.StartNs || c.outside != b.outside {
		*c = curProc{valid: true, tgid: pr.Tgid, startNs: pr.StartNs, outside: b.outside, proc: b.process(pr)}
	}
	proc := c.proc
	if proc == nil {
		return nil
	}
	p := b.pipes[fd.Ino]
	if p == nil {
		if b.outside {
			return nil // only the other ends of walked pipes
		}
		if r.pipe == nil {
			// The process's records gave the pipe's state before this.
			return fmt.Errorf("fd %d of pid %d: pipe %d without its state", fd.Fd, pr.Tgid, fd.Ino)
		}
		p = b.newPipe(r)
		b.pipes[fd.Ino] = p
		b.order = append(b.order, pipeAt{fd.Ino, p})
	}
	h := pipemodel.Holder{
		PID: pr.Tgid, Comm: proc.Comm, FD: int32(fd.Fd), End: pipemodel.EndOfMode(fd.F_mode), Flags: fd.F_flags,
		File: fd.FileId, Mode: fd.F_mode, Outside: b.outside,
	}
	// A bare fd record: its process's earlier record of the pipe gave
	// the same state and waiters.
	if r.pipe != nil {
		if r.pipe.Status&uint32(pipestatePstStatusPST_STATUS_WAITERS_TRUNC|pipestatePstStatusPST_STATUS_THREADS_TRUNC) != 0 {
			p.Truncated = true
		}
		for i := range r.waiters {
			w := waiterOf(&r.waiters[i])
			if _, walked := b.procs[w.PID]; b.outside && !walked {
				w.Outside = true // its own thread, but not a walked process
			}
			addWaiter(p, w)
		}
	}
	if p.Holders == nil {
		p.Holders = b.holders()
	}
	p.Holders = append(p.Holders, h)
	return nil
}

// process is the process of a record, nil when its records are left out:
// a pid that names another process now, or in the walk for the other
// ends one that the walk proper saw.
func (b *builder) process(pr *pipestatePstProc) *pipemodel.Proc {
	if b.reused(pr.Tgid, pr.StartNs) {
		return nil
	}
	procs := b.procs
	if b.outside {
		if _, walked := b.procs[pr.Tgid]; walked {
			return nil // already seen in the walk proper
		}
		procs = b.outsideProcs
	} else {
		b.seen[pr.Tgid] = true
	}
	proc := procs[pr.Tgid]
	if proc == nil {
		proc = &pipemodel.Proc{PID: pr.Tgid, Comm: cString(pr.Comm[:]), State: pipemodel.StateName(pr.TaskState), Threads: pr.NrThreads}
		procs[pr.Tgid] = proc
	}
	return proc
}

// holders is room for a pipe's first two holders (most pipes have two
// ends), carved from a shared block: one allocation for many pipes.
func (b *builder) holders() []pipemodel.Holder {
	if len(b.holderBlock) < 2 {
		b.holderBlock = make([]pipemodel.Holder, 2*b.blockLen())
	}
	h := b.holderBlock[:0:2]
	b.holderBlock = b.holderBlock[2:]
	return h
}

// blockLen is how many pipes' structs to allocate at once: as many as
// so far, between 8 and 256 (a small sample keeps little room unused).
func (b *builder) blockLen() int {
	return min(max(len(b.pipes), 8), 256)
}

func (b *builder) newPipe(r *fdRec) *pipemodel.Pipe {
	if len(b.pipeBlock) == 0 {
		b.pipeBlock = make([]pipemodel.Pipe, b.blockLen())
	}
	p := &b.pipeBlock[0]
	b.pipeBlock = b.pipeBlock[1:]
	rp := r.pipe
	*p = pipemodel.Pipe{
		Ino:      r.fd.Ino,
		Kind:     "pipe",
		Bytes:    rp.Bytes,
		Capacity: uint64(rp.MaxUsage) * b.pageSize,
		Bufs:     rp.Nbufs,
		MaxUsage: rp.MaxUsage,
		RingSize: rp.RingSize,
		Head:     rp.Head,
		Tail:     rp.Tail,
		Readers:  rp.Readers,
		Writers:  rp.Writers,
		Moving:   rp.Status&uint32(pipestatePstStatusPST_STATUS_MOVED) != 0,
		BadRing:  rp.Status&uint32(pipestatePstStatusPST_STATUS_BAD_RING) != 0,
	}
	if rp.Kind == uint32(pipestatePstKindPST_KIND_FIFO) {
		p.Kind = "fifo"
		p.Path = cString(r.path)
	}
	if n := min(int(rp.Nbufs), len(r.slots)); n > 0 {
		p.Slots = make([]pipemodel.Slot, n)
		for i := range n {
			p.Slots[i] = pipemodel.Slot{Offset: r.slots[i].Offset, Len: r.slots[i].Len}
		}
	}
	return p
}

// addTask adds one thread of a reported process, or a task asleep
// opening a FIFO.
// addTask adds a task record; cg, when not nil, is its process's
// cgroups, which the record of the thread group leader carries.
func (b *builder) addTask(r *pipestatePstTask, cg *pipemodel.Cgroups) {
	if b.reused(r.Tgid, r.StartNs) {
		return
	}
	idle, known := idleOf(r.IdleNs)
	state := pipemodel.StateName(r.State)
	if r.Open != uint32(pipestatePstOpenPST_OPEN_NONE) {
		ow := pipemodel.OpenWait{
			PID: r.Tgid, TID: r.Tid, Comm: cString(r.Comm[:]), State: state,
			End: pipemodel.EndRead, Ino: r.OpenIno, Wait: idle,
			Readers: r.OpenReaders, Writers: r.OpenWriters,
		}
		if r.Open == uint32(pipestatePstOpenPST_OPEN_WRITE) {
			ow.End = pipemodel.EndWrite
		}
		if n := int(r.NameLen); n > 0 && n <= len(r.Name) {
			ow.Path = resolveOpenPath(r.Tgid, r.OpenDfd, cString(r.Name[:n]), r.OpenIno)
		}
		if !slices.ContainsFunc(b.opens, func(o pipemodel.OpenWait) bool { return o.TID == ow.TID }) {
			b.opens = append(b.opens, ow)
		}
	}
	proc := b.procs[r.Tgid]
	if proc == nil {
		proc = b.outsideProcs[r.Tgid]
	}
	if proc != nil && cg != nil {
		proc.SetCgroups(*cg)
	}
	if proc == nil || slices.ContainsFunc(proc.Tasks, func(t pipemodel.Thread) bool { return t.TID == r.Tid }) {
		return
	}
	th := pipemodel.Thread{TID: r.Tid, State: state, Idle: idle}
	if r.Tid == r.Tgid {
		proc.Tasks = slices.Insert(proc.Tasks, 0, th)
	} else {
		proc.Tasks = append(proc.Tasks, th)
	}
	// The process is idle as long as its least idle thread.
	if known && (!proc.IdleKnown || idle < proc.Idle) {
		proc.Idle, proc.IdleKnown = idle, true
	}
}

func idleOf(ns uint64) (time.Duration, bool) {
	if ns == pstIdleUnknown {
		return 0, false
	}
	return time.Duration(min(ns, uint64(1<<63-1))), true
}

// pstIdleUnknown is PST_IDLE_UNKNOWN of bpf/pipestate/pipestate.h (a
// #define, which BTF does not carry).
const pstIdleUnknown = ^uint64(0)

// addWaiter merges a waiter seen from one record with those seen from
// others: the same wait queue entry is one waiter, and a record that
// matched it to a thread of its own process knows more than one that did
// not: one that saw a task outside its process (the wake function said
// so), or, before the sampler has the wake functions, one that could not
// tell what the entry is ("other").
func addWaiter(p *pipemodel.Pipe, w pipemodel.Waiter) {
	for i, o := range p.Waiters {
		if o.Entry == w.Entry && o.Queue == w.Queue {
			if knowledge(w) > knowledge(o) {
				p.Waiters[i] = w
			}
			return
		}
	}
	p.Waiters = append(p.Waiters, w)
}

// knowledge ranks what a record told of a wait queue entry.
func knowledge(w pipemodel.Waiter) int {
	switch {
	case w.Kind == pipemodel.WaiterOther:
		return 0
	case w.Outside:
		return 1
	}
	return 2
}

func waiterOf(w *pipestatePstWaiter) pipemodel.Waiter {
	out := pipemodel.Waiter{Queue: pipemodel.QueueRead, Entry: w.Entry}
	if w.Queue == uint8(pipestatePstQueuePST_QUEUE_WRITE) {
		out.Queue = pipemodel.QueueWrite
	}
	switch pipestatePstWkind(w.Kind) {
	case pipestatePstWkindPST_W_THREAD, pipestatePstWkindPST_W_TASK:
		out.Kind = pipemodel.WaiterBlocked
		out.Outside = pipestatePstWkind(w.Kind) == pipestatePstWkindPST_W_TASK
	case pipestatePstWkindPST_W_POLL:
		out.Kind = pipemodel.WaiterPoll
	case pipestatePstWkindPST_W_EPOLL:
		out.Kind = pipemodel.WaiterEpoll
		out.TargetFD = w.TargetFd
	default:
		out.Kind = pipemodel.WaiterOther
	}
	out.Events = w.Events
	out.Sleeping = w.Sleeping != 0
	if w.Tid != 0 {
		out.PID, out.TID, out.Comm, out.State = w.Tgid, w.Tid, cString(w.Comm[:]), pipemodel.StateName(w.State)
		out.Wait, _ = idleOf(w.WaitNs)
	}
	return out
}

func (b *builder) finish() *pipemodel.Sample {
	s := &pipemodel.Sample{PageSize: b.pageSize, Procs: b.procs, OpenWaits: b.opens}
	for pid, pr := range b.outsideProcs {
		pr.Outside = true
		b.procs[pid] = pr
	}
	// Pipes come in nearly in inode order (pipes made one after the
	// other); sorted by the inode held beside the pointer, not behind it.
	slices.SortFunc(b.order, func(a, b pipeAt) int { return cmp.Compare(a.ino, b.ino) })
	s.Pipes = make([]*pipemodel.Pipe, 0, len(b.order))
	for _, o := range b.order {
		p := o.p
		sortHolders(p.Holders)
		p.CountUnseen()
		// A blocked task first seen from another process's record (it was
		// not compared with its own threads) belongs to a walked process
		// only if that process holds the pipe: then it was matched there.
		for i := range p.Waiters {
			w := &p.Waiters[i]
			if w.Kind == pipemodel.WaiterBlocked && w.Outside {
				if pr, ok := b.procs[w.PID]; ok && !pr.Outside && p.Holds(w.PID) {
					w.Outside = false
				}
			}
		}
		p.MarkHolders()
		s.Pipes = append(s.Pipes, p)
	}
	slices.SortFunc(s.OpenWaits, func(a, b pipemodel.OpenWait) int { return cmp.Compare(a.TID, b.TID) })
	return s
}

// sortHolders orders holders by pid and fd; two, the most common, are
// compared once.
func sortHolders(h []pipemodel.Holder) {
	less := func(a, b *pipemodel.Holder) bool {
		return a.PID < b.PID || a.PID == b.PID && a.FD < b.FD
	}
	switch {
	case len(h) == 2:
		if less(&h[1], &h[0]) {
			h[0], h[1] = h[1], h[0]
		}
	case len(h) > 2:
		slices.SortFunc(h, func(a, b pipemodel.Holder) int {
			if a.PID != b.PID {
				return cmp.Compare(a.PID, b.PID)
			}
			return cmp.Compare(a.FD, b.FD)
		})
	}
}

func cString[T ~int8 | ~uint8](b []T) string {
	out := make([]byte, 0, len(b))
	for _, c := range b {
		if c == 0 {
			break
		}
		out = append(out, byte(c))
	}
	return string(out)
}
