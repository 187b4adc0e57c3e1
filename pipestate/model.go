package pipestate

import (
	"slices"
	"time"
)

// Sample is one walk: every pipe the walked processes hold.
type Sample struct {
	Time     time.Time
	Took     time.Duration // the walk itself
	PageSize uint64
	Pipes    []*Pipe          // by inode
	Procs    map[uint32]*Proc // the walked processes that hold pipes, by pid
	Gone     []uint32         // requested processes that exited (or whose pid was reused)
}

// Proc is a process that holds pipes.
type Proc struct {
	PID     uint32 `json:"pid"`
	Comm    string `json:"comm"`
	State   string `json:"state"` // its main thread's, as /proc shows it: R, S, D, T...
	Threads uint32 `json:"threads"`
}

// Pipe is a pipe or FIFO as the kernel had it during the walk.
type Pipe struct {
	Ino      uint64
	Kind     string // "pipe" or "fifo"
	Path     string // a FIFO's
	Bytes    uint64 // queued: the sum of the buffers' lengths
	Capacity uint64 // max_usage pages
	Bufs     uint32 // buffers in use (head - tail)
	MaxUsage uint32 // buffers the pipe may use: full when Bufs reaches it
	RingSize uint32
	Head     uint32 // ring indices: head advances per buffer written,
	Tail     uint32 // tail per buffer read to its end
	// Readers and Writers count the open files of each end, as the kernel
	// does: those of processes outside the walk too.
	Readers, Writers uint32
	// UnseenReaders and UnseenWriters are the open files of each end that
	// no walked process holds.
	UnseenReaders, UnseenWriters uint32
	Moving                       bool   // head or tail moved during every read of it
	Truncated                    bool   // more waiters or threads than the walk compares
	Slots                        []Slot // the first buffers from the tail: offset and length
	Holders                      []Holder
	Waiters                      []Waiter
}

// Slot is one pipe buffer: where its unread bytes start and how many.
type Slot struct {
	Offset, Len uint32
}

// Holder is one fd of a walked process that refers to the pipe.
type Holder struct {
	PID  uint32 `json:"pid"`
	Comm string `json:"comm"`
	FD   int32  `json:"fd"`
	End  string `json:"end"` // "read", "write" or "rdwr"
	// Blocked is "reading" or "writing" when a thread of the process
	// sleeps on the pipe's read or write wait queue, "" otherwise.
	Blocked     string   `json:"blocked"`
	BlockedTIDs []uint32 `json:"blocked_tids,omitempty"`
	Polling     bool     `json:"polling,omitempty"` // a thread waits in poll/select on it
	Flags       uint32   `json:"flags"`             // open flags (O_NONBLOCK...)
	file        uint64   // the open file: fds sharing it share an offset and count once
	mode        uint32
}

// Waiter is one entry of the pipe's wait queues.
type Waiter struct {
	// Queue is "read" (rd_wait: waiting for data) or "write" (wr_wait:
	// waiting for room).
	Queue string `json:"queue"`
	// Kind is "blocked" (a task sleeping in read, write or splice on this
	// pipe), "poll" (poll/select), "epoll" (an epoll instance; no task is
	// known) or "other".
	Kind  string `json:"kind"`
	PID   uint32 `json:"pid,omitempty"`
	TID   uint32 `json:"tid,omitempty"`
	Comm  string `json:"comm,omitempty"`
	State string `json:"state,omitempty"`
	// Outside: the task is not one of the walked processes' threads.
	Outside bool `json:"outside,omitempty"`
	entry   uint64
}

// Blocked returns the tasks blocked reading ("read") or writing ("write").
func (p *Pipe) Blocked(queue string) []Waiter {
	var out []Waiter
	for _, w := range p.Waiters {
		if w.Kind == "blocked" && w.Queue == queue {
			out = append(out, w)
		}
	}
	return out
}

// Full tells whether a writer would have to wait for room.
func (p *Pipe) Full() bool { return p.MaxUsage > 0 && p.Bufs >= p.MaxUsage }

// Ends returns the holders of one end ("read" or "write"; "rdwr" counts
// for both).
func (p *Pipe) Ends(end string) []Holder {
	var out []Holder
	for _, h := range p.Holders {
		if h.End == end || h.End == "rdwr" {
			out = append(out, h)
		}
	}
	return out
}

// Find returns the pipe with inode ino, or nil.
func (s *Sample) Find(ino uint64) *Pipe {
	i, ok := slices.BinarySearchFunc(s.Pipes, ino, func(p *Pipe, ino uint64) int {
		switch {
		case p.Ino < ino:
			return -1
		case p.Ino > ino:
			return 1
		}
		return 0
	})
	if !ok {
		return nil
	}
	return s.Pipes[i]
}

// builder turns records into a Sample. The first record of a pipe gives
// its state; every record adds a holder and the waiters it matched.
type builder struct {
	pageSize uint64
	starts   map[uint32]uint64 // requested tgid -> start time (clock ticks)
	pipes    map[uint64]*Pipe
	procs    map[uint32]*Proc
	seen     map[uint32]bool
}

func newBuilder(pageSize uint64, starts map[uint32]uint64) *builder {
	return &builder{
		pageSize: pageSize,
		starts:   starts,
		pipes:    map[uint64]*Pipe{},
		procs:    map[uint32]*Proc{},
		seen:     map[uint32]bool{},
	}
}

const (
	fmodeRead  = 0x1
	fmodeWrite = 0x2
)

func (b *builder) add(r *pipestatePstFd) error {
	if want, ok := b.starts[r.Tgid]; ok && want != 0 && r.StartNs/(1e9/clockTicks) != want {
		return nil // the pid now names another process: not the one asked for
	}
	b.seen[r.Tgid] = true
	proc := b.procs[r.Tgid]
	if proc == nil {
		proc = &Proc{PID: r.Tgid, Comm: cString(r.Comm[:]), State: StateName(r.TaskState), Threads: r.NrThreads}
		b.procs[r.Tgid] = proc
	}
	p := b.pipes[r.Ino]
	if p == nil {
		p = &Pipe{
			Ino:      r.Ino,
			Kind:     "pipe",
			Bytes:    r.Bytes,
			Capacity: uint64(r.MaxUsage) * b.pageSize,
			Bufs:     r.Nbufs,
			MaxUsage: r.MaxUsage,
			RingSize: r.RingSize,
			Head:     r.Head,
			Tail:     r.Tail,
			Readers:  r.Readers,
			Writers:  r.Writers,
			Moving:   r.Status&pstStatusMoved != 0,
		}
		if r.Kind == pstKindFIFO {
			p.Kind = "fifo"
			if n := int(r.PathLen); n > 0 && n <= len(r.Path) {
				p.Path = cString(r.Path[:n])
			}
		}
		if n := min(int(r.Nbufs), len(r.Slots)); n > 0 {
			p.Slots = make([]Slot, n)
			for i := range n {
				p.Slots[i] = Slot{Offset: r.Slots[i].Offset, Len: r.Slots[i].Len}
			}
		}
		b.pipes[r.Ino] = p
	}
	if r.Status&(pstStatusWaitersTrunc|pstStatusThreadsTrunc) != 0 {
		p.Truncated = true
	}
	h := Holder{PID: r.Tgid, Comm: proc.Comm, FD: int32(r.Fd), End: endName(r.F_mode), Flags: r.F_flags, file: r.FileId, mode: r.F_mode}
	for i := range min(int(r.Nwaiters), len(r.Waiters)) {
		w := waiterOf(&r.Waiters[i])
		if w.Kind == "blocked" && w.PID == r.Tgid && !w.Outside {
			if w.Queue == "read" && r.F_mode&fmodeRead != 0 {
				h.Blocked = "reading"
			} else if w.Queue == "write" && r.F_mode&fmodeWrite != 0 {
				h.Blocked = "writing"
			}
			if h.Blocked != "" && !slices.Contains(h.BlockedTIDs, w.TID) {
				h.BlockedTIDs = append(h.BlockedTIDs, w.TID)
			}
		}
		if w.Kind == "poll" && w.PID == r.Tgid {
			h.Polling = true
		}
		p.addWaiter(w)
	}
	p.Holders = append(p.Holders, h)
	return nil
}

// addWaiter merges a waiter seen from one record with those seen from
// others: the same wait queue entry is one waiter, and a record that
// matched it to a thread of its own process knows more than one that did
// not: one that saw a task outside its process (the wake function said
// so), or, before the sampler has the wake functions, one that could not
// tell what the entry is ("other").
func (p *Pipe) addWaiter(w Waiter) {
	for i, o := range p.Waiters {
		if o.entry == w.entry && o.Queue == w.Queue {
			if knowledge(w) > knowledge(o) {
				p.Waiters[i] = w
			}
			return
		}
	}
	p.Waiters = append(p.Waiters, w)
}

// knowledge ranks what a record told of a wait queue entry.
func knowledge(w Waiter) int {
	switch {
	case w.Kind == "other":
		return 0
	case w.Outside:
		return 1
	}
	return 2
}

func waiterOf(w *pipestatePstWaiter) Waiter {
	out := Waiter{Queue: "read", entry: w.Entry}
	if w.Queue == pstQueueWrite {
		out.Queue = "write"
	}
	switch w.Kind {
	case pstWThread, pstWTask:
		out.Kind = "blocked"
		out.Outside = w.Kind == pstWTask
	case pstWPoll:
		out.Kind = "poll"
	case pstWEpoll:
		out.Kind = "epoll"
	default:
		out.Kind = "other"
	}
	if w.Kind == pstWThread || w.Kind == pstWTask || w.Kind == pstWPoll {
		out.PID, out.TID, out.Comm, out.State = w.Tgid, w.Tid, cString(w.Comm[:]), StateName(w.State)
	}
	return out
}

func (b *builder) finish() *Sample {
	s := &Sample{PageSize: b.pageSize, Procs: b.procs}
	for _, p := range b.pipes {
		slices.SortFunc(p.Holders, func(a, b Holder) int {
			if a.PID != b.PID {
				return cmpU(a.PID, b.PID)
			}
			return int(a.FD - b.FD)
		})
		// Open files of each end the walk saw: fds that share one (dup,
		// fork) count once, as the kernel counts them.
		var rd, wr uint32
		for i, h := range p.Holders {
			if slices.ContainsFunc(p.Holders[:i], func(o Holder) bool { return o.file == h.file }) {
				continue
			}
			if h.mode&fmodeRead != 0 {
				rd++
			}
			if h.mode&fmodeWrite != 0 {
				wr++
			}
		}
		p.UnseenReaders = p.Readers - min(rd, p.Readers)
		p.UnseenWriters = p.Writers - min(wr, p.Writers)
		// A blocked task first seen from another process's record (it was
		// not compared with its own threads) belongs to a walked process
		// only if that process holds the pipe: then it was matched there.
		for i := range p.Waiters {
			w := &p.Waiters[i]
			if w.Kind == "blocked" && w.Outside {
				if _, walked := b.procs[w.PID]; walked && holds(p, w.PID) {
					w.Outside = false
				}
			}
		}
		s.Pipes = append(s.Pipes, p)
	}
	slices.SortFunc(s.Pipes, func(a, b *Pipe) int { return cmpU(a.Ino, b.Ino) })
	return s
}

func holds(p *Pipe, pid uint32) bool {
	for _, h := range p.Holders {
		if h.PID == pid {
			return true
		}
	}
	return false
}

func cmpU[T uint32 | uint64](a, b T) int {
	switch {
	case a < b:
		return -1
	case a > b:
		return 1
	}
	return 0
}

func endName(mode uint32) string {
	switch mode & (fmodeRead | fmodeWrite) {
	case fmodeRead:
		return "read"
	case fmodeWrite:
		return "write"
	case fmodeRead | fmodeWrite:
		return "rdwr"
	}
	return "none"
}

// StateName turns a task's __state into the letter /proc shows: R
// running, S sleeping, D uninterruptible, T stopped, t traced, X dead, Z
// zombie, P parked, I idle.
func StateName(state uint32) string {
	const taskIdle = 0x402 // TASK_UNINTERRUPTIBLE | TASK_NOLOAD
	if state == taskIdle {
		return "I"
	}
	s := state & 0x7f
	if s == 0 {
		return "R"
	}
	i := 0
	for s > 1 {
		s >>= 1
		i++
	}
	return string("SDTtXZP"[i])
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

// Constants of bpf/pipestate/pipestate.h.
const (
	pstKindFIFO           = 2
	pstQueueWrite         = 1
	pstWThread            = 1
	pstWTask              = 2
	pstWPoll              = 3
	pstWEpoll             = 4
	pstStatusMoved        = 1
	pstStatusWaitersTrunc = 2
	pstStatusThreadsTrunc = 4
)
