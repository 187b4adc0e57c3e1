package pipemodel

import (
	"slices"
	"strconv"
	"time"
)

// Sample is one look at pipes: every pipe the looked-at processes hold,
// the processes, and the tasks waiting for pipes.
type Sample struct {
	Time     time.Time
	Took     time.Duration // the walk itself
	PageSize uint64
	Pipes    []*Pipe          // by inode
	Procs    map[uint32]*Proc // the walked processes that hold pipes, by pid
	Gone     []uint32         // requested processes that exited (or whose pid was reused)
	// OpenWaits are the tasks asleep in open(2) of a FIFO, waiting for
	// the other end to be opened: they hold no fd of it yet.
	OpenWaits []OpenWait
	// Scoped: only some processes were asked for (--pid); holders of
	// their pipes' other ends are added, marked outside.
	Scoped bool
	// Offline: the sample comes from a snapshot, not a live walk; waits
	// are as long as they were when it was taken.
	Offline bool
}

// Proc is a process that holds pipes.
type Proc struct {
	PID     uint32 `json:"pid"`
	Comm    string `json:"comm"`
	State   State  `json:"state"` // its main thread's, as /proc shows it: R, S, D, T...
	Threads uint32 `json:"threads"`
	// Idle is how long since any of its threads last ran (0: one is
	// running, or unknown: see IdleKnown).
	Idle      time.Duration `json:"idle_ns"`
	IdleKnown bool          `json:"idle_known"`
	// Tasks are its threads as the walk saw them (the main one first).
	Tasks []Thread `json:"tasks,omitempty"`
	// Outside: not one of the processes asked for; it holds the other
	// end of one of their pipes.
	Outside bool `json:"outside,omitempty"`
	// NSPID is its pid in its own, innermost pid namespace (a container's
	// pid 1), when that differs from PID; 0 otherwise.
	NSPID uint32 `json:"nspid,omitempty"`
	// CgroupID and Cgroup are its cgroup on the unified (v2) hierarchy,
	// the path from that hierarchy's root (never relative to a cgroup
	// namespace), as the kernel walk read them; 0 and "" when not read.
	CgroupID uint64 `json:"cgroup_id,omitempty"`
	Cgroup   string `json:"cgroup,omitempty"`
	// CgroupTruncated: Cgroup did not fit the walk's bound (16 levels,
	// 1024 bytes): it holds the path's innermost components only.
	CgroupTruncated bool `json:"cgroup_truncated,omitempty"`
	// CgroupV1 is its cgroup on one v1 hierarchy, on hybrid hosts (where
	// a runtime may name a container, or its monitor, only there).
	CgroupV1 *Cgroup `json:"cgroup_v1,omitempty"`
	// Container is the container it runs in, when it runs in one.
	Container *Container `json:"container,omitempty"`
}

// Cgroup is a process's cgroup on one hierarchy, as the kernel walk read
// it: its id (the cgroup's kernfs node: the inode number of its directory
// in cgroupfs) and its path from the hierarchy's root.
type Cgroup struct {
	// Controller names a v1 hierarchy (cpu, memory, pids); "" is the
	// unified (v2) one.
	Controller string `json:"controller,omitempty"`
	ID         uint64 `json:"id"`
	Path       string `json:"path"`
	// Truncated: the path did not fit; Path holds its innermost
	// components.
	Truncated bool `json:"truncated,omitempty"`
}

// Cgroups are the cgroups the kernel walk read for a process: V2 (nil
// when not read) and, on hybrid hosts, one v1 hierarchy's.
type Cgroups struct {
	V2, V1 *Cgroup
}

// SetCgroups fills in p's cgroup fields.
func (p *Proc) SetCgroups(c Cgroups) {
	if c.V2 != nil {
		p.CgroupID, p.Cgroup, p.CgroupTruncated = c.V2.ID, c.V2.Path, c.V2.Truncated
	}
	p.CgroupV1 = c.V1
}

// Cgroups are p's cgroups as SetCgroups set them.
func (p *Proc) Cgroups() Cgroups {
	c := Cgroups{V1: p.CgroupV1}
	if p.Cgroup != "" {
		c.V2 = &Cgroup{ID: p.CgroupID, Path: p.Cgroup, Truncated: p.CgroupTruncated}
	}
	return c
}

// Container is a container as its cgroup and its runtime name it.
type Container struct {
	Runtime string `json:"runtime"`        // docker, containerd, cri-o, podman
	ID      string `json:"id"`             // the full id
	Name    string `json:"name,omitempty"` // the runtime's name, when it answered
	// Pod and Namespace, under Kubernetes; KubeName the container's name
	// in the pod.
	Pod       string `json:"pod,omitempty"`
	Namespace string `json:"namespace,omitempty"`
	KubeName  string `json:"kube_container,omitempty"`
	// Monitor: the process is the runtime's monitor of the container
	// (conmon), not in it.
	Monitor bool `json:"monitor,omitempty"`
}

// Label is how views name the container: its name, else a short id.
func (c *Container) Label() string {
	if c == nil {
		return ""
	}
	s := c.Name
	if s == "" && len(c.ID) >= 12 {
		s = c.ID[:12]
	} else if s == "" {
		s = c.ID
	}
	if c.Monitor {
		s += " (monitor)"
	}
	return s
}

// PIDText is "812", or "24524/1" for a process whose own pid namespace
// calls it 1.
func (p *Proc) PIDText() string {
	if p.NSPID != 0 && p.NSPID != p.PID {
		return strconv.FormatUint(uint64(p.PID), 10) + "/" + strconv.FormatUint(uint64(p.NSPID), 10)
	}
	return strconv.FormatUint(uint64(p.PID), 10)
}

// Stopped tells whether the process cannot run until it is continued
// (SIGSTOP, a debugger).
func (p *Proc) Stopped() bool { return p.State == "T" || p.State == "t" }

// Running tells whether a thread of the process is running or runnable.
func (p *Proc) Running() bool {
	if p.State == "R" {
		return true
	}
	for _, t := range p.Tasks {
		if t.State == "R" {
			return true
		}
	}
	return false
}

// Thread is one task (thread) of a process.
type Thread struct {
	TID   uint32        `json:"tid"`
	State State         `json:"state"`
	Idle  time.Duration `json:"idle_ns"` // since it last ran
	Wchan string        `json:"wchan,omitempty"`
}

// State is a task's state as /proc shows it: R running, S sleeping, D
// uninterruptible, T stopped, t traced, X dead, Z zombie, P parked, I
// idle; "" unknown.
type State string

// Name says the state in words for tables: "stopped", "zombie"...
func (s State) Name() string {
	switch s {
	case "R":
		return "running"
	case "S":
		return "sleeping"
	case "D":
		return "disk-wait"
	case "T":
		return "stopped"
	case "t":
		return "traced"
	case "Z":
		return "zombie"
	case "X":
		return "dead"
	case "I":
		return "idle"
	case "P":
		return "parked"
	}
	return "-"
}

// StateName turns a task's __state into the letter /proc shows.
func StateName(state uint32) State {
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
	return State("SDTtXZP"[i : i+1])
}

// End is which end of a pipe an open file is.
type End string

const (
	EndRead  End = "read"
	EndWrite End = "write"
	EndRdwr  End = "rdwr" // a FIFO opened O_RDWR: both
	EndNone  End = "none"
)

// Reads tells whether the end reads (read or rdwr); Writes likewise.
func (e End) Reads() bool  { return e == EndRead || e == EndRdwr }
func (e End) Writes() bool { return e == EndWrite || e == EndRdwr }

// EndOfMode names the end of an open file from its f_mode bits.
func EndOfMode(mode uint32) End {
	const read, write = 0x1, 0x2
	switch mode & (read | write) {
	case read:
		return EndRead
	case write:
		return EndWrite
	case read | write:
		return EndRdwr
	}
	return EndNone
}

// Queue is a pipe's wait queue: "read" (rd_wait: waiting for data) or
// "write" (wr_wait: waiting for room).
type Queue string

const (
	QueueRead  Queue = "read"
	QueueWrite Queue = "write"
)

// Verb says what a task on the queue waits to do: "reading", "writing".
func (q Queue) Verb() string {
	if q == QueueWrite {
		return "writing"
	}
	return "reading"
}

// WaiterKind is what a wait queue entry is.
type WaiterKind string

const (
	// A task asleep in read, write or splice on the pipe.
	WaiterBlocked WaiterKind = "blocked"
	// poll(2)/select(2): the task is inside the call right now.
	WaiterPoll WaiterKind = "poll"
	// An epoll instance watches the pipe; a task is known when one
	// sleeps in epoll_wait on that instance.
	WaiterEpoll WaiterKind = "epoll"
	// An entry whose wake function pipesnap does not know.
	WaiterOther WaiterKind = "other"
)

// Pipe is a pipe or FIFO as the kernel had it during the walk.
type Pipe struct {
	Ino      uint64
	Kind     string // "pipe" or "fifo"
	Path     string // a FIFO's
	Bytes    uint64 // queued: the sum of the buffers' lengths
	Capacity uint64 // bytes: max_usage pages
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
	BadRing                      bool   // head/tail/ring_size not a ring pipesnap knows: contents unknown
	Slots                        []Slot // the first buffers from the tail: offset and length
	Holders                      []Holder
	Waiters                      []Waiter
}

// Slot is one pipe buffer: where its unread bytes start and how many.
type Slot struct {
	Offset, Len uint32
}

// Holder is one fd of a process that refers to the pipe.
type Holder struct {
	PID  uint32 `json:"pid"`
	Comm string `json:"comm"`
	FD   int32  `json:"fd"`
	End  End    `json:"end"`
	// Blocked is "reading" or "writing" when a thread of the process
	// sleeps on the pipe's read or write wait queue, "" otherwise.
	Blocked     string   `json:"blocked"`
	BlockedTIDs []uint32 `json:"blocked_tids,omitempty"`
	// Waiting is "reading" or "writing" when a thread of the process
	// sleeps in poll, select or epoll_wait waiting for this pipe to
	// become readable or writable; Via says which ("poll", "epoll").
	Waiting     string   `json:"waiting,omitempty"`
	Via         string   `json:"via,omitempty"`
	EpollFD     int32    `json:"epoll_fd,omitempty"`
	WaitingTIDs []uint32 `json:"waiting_tids,omitempty"`
	Polling     bool     `json:"polling,omitempty"` // a thread is in poll/select on it
	// Wait is how long its blocked or waiting thread has not run.
	Wait  time.Duration `json:"wait_ns,omitempty"`
	Flags uint32        `json:"flags"` // open flags (O_NONBLOCK...)
	// Outside: the process was not among those asked for; it was found
	// as a holder of a pipe they share.
	Outside bool   `json:"outside,omitempty"`
	File    uint64 `json:"-"` // the open file: fds sharing it share an offset and count once
	Mode    uint32 `json:"-"` // f_mode
}

// Waits tells whether a thread of the holder waits on the pipe, blocked
// or through poll/select/epoll.
func (h Holder) Waits() bool { return h.Blocked != "" || h.Waiting != "" }

// Waiter is one entry of the pipe's wait queues.
type Waiter struct {
	Queue Queue      `json:"queue"`
	Kind  WaiterKind `json:"kind"`
	PID   uint32     `json:"pid,omitempty"`
	TID   uint32     `json:"tid,omitempty"`
	Comm  string     `json:"comm,omitempty"`
	State State      `json:"state,omitempty"`
	// Sleeping: for poll and epoll, the task sleeps in the call right
	// now (poll/select not yet woken; a thread in epoll_wait on the
	// instance).
	Sleeping bool `json:"sleeping,omitempty"`
	// Events are the poll/epoll events it waits for (EPOLLIN...).
	Events uint32 `json:"events,omitempty"`
	// EpollFD is the epoll instance's fd in the waiting process, when
	// known (-1 or 0 with Kind epoll: not found).
	EpollFD int32 `json:"epoll_fd,omitempty"`
	// TargetFD is the fd number the epoll registration names.
	TargetFD int32 `json:"target_fd,omitempty"`
	// Wait is how long the task has not run.
	Wait time.Duration `json:"wait_ns"`
	// Outside: the task is not one of the walked processes' threads.
	Outside bool   `json:"outside,omitempty"`
	Entry   uint64 `json:"-"` // the wait queue entry: one waiter across records
}

// Event bits of poll(2) and epoll.
const (
	EventIn  = 0x1 // POLLIN
	EventOut = 0x4 // POLLOUT
)

// Asleep tells whether the waiter is a task asleep right now on the
// pipe's queue or in poll/select/epoll_wait with the queue's event asked
// for (readable for the read queue, writable for the write queue).
func (w Waiter) Asleep() bool {
	switch w.Kind {
	case WaiterBlocked:
		return true
	case WaiterPoll, WaiterEpoll:
		if !w.Sleeping || w.PID == 0 {
			return false
		}
		if w.Events == 0 {
			return true // mask unknown
		}
		if w.Queue == QueueRead {
			return w.Events&EventIn != 0
		}
		return w.Events&EventOut != 0
	}
	return false
}

// WaitsFor tells whether the waiter waits for this pipe right now: a
// task blocked in read or write on it (the kernel's own word), or asleep
// in poll/select/epoll_wait for an event the pipe does not have: data
// when it is empty, room when it is full. A poller of a pipe that is
// readable (or writable) waits for something else: an edge-triggered
// epoll asks for every event of every fd.
func (w Waiter) WaitsFor(p *Pipe) bool {
	if !w.Asleep() {
		return false
	}
	if w.Kind == WaiterBlocked {
		return true
	}
	if w.Queue == QueueRead {
		return p.Bytes == 0
	}
	return p.Full()
}

// Blocked returns the tasks blocked reading (queue read) or writing.
func (p *Pipe) Blocked(q Queue) []Waiter {
	var out []Waiter
	for _, w := range p.Waiters {
		if w.Kind == WaiterBlocked && w.Queue == q {
			out = append(out, w)
		}
	}
	return out
}

// Waiting returns the tasks waiting on one queue: blocked, or asleep in
// poll/select/epoll waiting for it.
func (p *Pipe) Waiting(q Queue) []Waiter {
	var out []Waiter
	for _, w := range p.Waiters {
		if w.Queue == q && w.WaitsFor(p) {
			out = append(out, w)
		}
	}
	return out
}

// BlockedTasks counts the tasks waiting on the pipe, on either queue.
func (p *Pipe) BlockedTasks() int {
	return len(p.Waiting(QueueRead)) + len(p.Waiting(QueueWrite))
}

// LongestWait is the longest wait of a task waiting on the pipe; false
// when none waits.
func (p *Pipe) LongestWait() (time.Duration, bool) {
	var out time.Duration
	any := false
	for _, w := range p.Waiters {
		if w.PID != 0 && w.WaitsFor(p) {
			out, any = max(out, w.Wait), true
		}
	}
	return out, any
}

// Full tells whether a writer would have to wait for room.
func (p *Pipe) Full() bool { return p.MaxUsage > 0 && p.Bufs >= p.MaxUsage }

// Fill is how full the pipe is, 0 to 1.
func (p *Pipe) Fill() float64 {
	if p.Capacity == 0 {
		return 0
	}
	return float64(p.Bytes) / float64(p.Capacity)
}

// Ends returns the holders of one end (rdwr holders count for both).
func (p *Pipe) Ends(e End) []Holder {
	var out []Holder
	for _, h := range p.Holders {
		if h.End == e || h.End == EndRdwr {
			out = append(out, h)
		}
	}
	return out
}

// Holds tells whether process pid holds the pipe.
func (p *Pipe) Holds(pid uint32) bool {
	return slices.ContainsFunc(p.Holders, func(h Holder) bool { return h.PID == pid })
}

// OpenWait is a task asleep in open(2) of a FIFO: a reader waiting for
// a writer to open it, or a writer waiting for a reader.
type OpenWait struct {
	PID   uint32 `json:"pid"`
	TID   uint32 `json:"tid"`
	Comm  string `json:"comm"`
	State State  `json:"state"`
	// End is the end it is opening: read (waits for a writer) or write.
	End  End    `json:"end"`
	Ino  uint64 `json:"ino"`
	Path string `json:"path"` // absolute when resolved; else as given to open
	// Wait is how long it has not run: how long it has been waiting.
	Wait time.Duration `json:"wait_ns"`
	// Readers and Writers are the FIFO's open ends, its own included.
	Readers uint32 `json:"readers"`
	Writers uint32 `json:"writers"`
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

// CountUnseen sets UnseenReaders and UnseenWriters: the open files of
// each end that no holder asked for shows (outside holders do not
// count), fds sharing one open file (dup, fork) once, as the kernel
// counts them.
func (p *Pipe) CountUnseen() {
	var rd, wr uint32
	seen := make(map[uint64]bool, len(p.Holders))
	for _, h := range p.Holders {
		if h.Outside || seen[h.File] {
			continue
		}
		seen[h.File] = true
		if h.End.Reads() {
			rd++
		}
		if h.End.Writes() {
			wr++
		}
	}
	p.UnseenReaders = p.Readers - min(rd, p.Readers)
	p.UnseenWriters = p.Writers - min(wr, p.Writers)
}

// MarkHolders records on each holder what its threads do on the pipe,
// from the waiters: Blocked (asleep in read or write on an end it
// holds), Waiting and Via (asleep in poll, select or epoll_wait for it:
// WaitsFor), Polling (in poll/select with it), and Wait, the longest of
// those waits. A live walk and a snapshot both end with it.
func (p *Pipe) MarkHolders() {
	if len(p.Waiters) == 0 {
		return
	}
	byPID := map[uint32][]Waiter{}
	for _, w := range p.Waiters {
		byPID[w.PID] = append(byPID[w.PID], w)
	}
	for i := range p.Holders {
		h := &p.Holders[i]
		for _, w := range byPID[h.PID] {
			if w.PID != h.PID || !(w.Queue == QueueRead && h.End.Reads() || w.Queue == QueueWrite && h.End.Writes()) {
				continue
			}
			switch {
			case w.Kind == WaiterBlocked:
				h.Blocked = w.Queue.Verb()
				if !slices.Contains(h.BlockedTIDs, w.TID) {
					h.BlockedTIDs = append(h.BlockedTIDs, w.TID)
				}
			case w.WaitsFor(p):
				h.Waiting, h.Via = w.Queue.Verb(), string(w.Kind)
				if w.EpollFD > 0 {
					h.EpollFD = w.EpollFD
				}
				if !slices.Contains(h.WaitingTIDs, w.TID) {
					h.WaitingTIDs = append(h.WaitingTIDs, w.TID)
				}
			default:
				if w.Kind == WaiterPoll {
					h.Polling = true
				}
				continue
			}
			if w.Kind == WaiterPoll {
				h.Polling = true
			}
			h.Wait = max(h.Wait, w.Wait)
		}
	}
}
