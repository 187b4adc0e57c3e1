package diagnose

import (
	"cmp"
	"slices"
	"strings"
	"time"

	"github.com/pipesnap/pipesnap/pipemodel"
)

// Kind is what a finding found.
type Kind string

// Stalls: something that will not move by itself, with a culprit.
const (
	// A writer waits for room in a pipe (or the pipe is full) whose
	// reader is not reading it.
	FullReaderIdle Kind = "full-reader-idle"
	// Data waits in a pipe whose reader has not run, let alone read, for
	// a while (a writer need not be waiting; there may be none left).
	Unread Kind = "unread"
	// A reader waits on an empty pipe whose writer is stopped (SIGSTOP,
	// a debugger) or stuck in uninterruptible sleep.
	WriterStopped Kind = "writer-stopped"
	// A reader waits on an empty pipe whose only write ends are its own:
	// the writer exited and end of file never comes.
	WriterGone Kind = "writer-gone"
	// Bytes sit in a pipe nobody can read any more: no reader is left.
	DataNoReader Kind = "data-no-reader"
	// A task sleeps in open(2) of a FIFO that nobody opens from the
	// other end.
	OpenNoReader Kind = "open-no-reader"
	OpenNoWriter Kind = "open-no-writer"
)

// Lower categories: not stalls by default.
const (
	// A reader waits on an empty pipe whose writer is alive and waiting
	// for something itself (its input, a timer): an idle stage.
	EmptyWriterIdle Kind = "empty-writer-idle"
	// An empty pipe with no reader left: the next write gets SIGPIPE or
	// EPIPE. Often an fd leaked into many processes.
	NoReaders Kind = "no-readers"
	// The pipe's ring could not be read: its fill is unknown.
	BadRing Kind = "bad-ring"
)

// Category orders findings: stalls are what diagnose is for.
type Category string

const (
	Stall   Category = "stall"   // stuck, with a culprit: exit status 1
	Idle    Category = "idle"    // waiting for input that may yet come
	Warning Category = "warning" // not stuck, but wrong (a leaked pipe)
)

// Category of a kind.
func (k Kind) Category() Category {
	switch k {
	case EmptyWriterIdle:
		return Idle
	case NoReaders, BadRing:
		return Warning
	}
	return Stall
}

// Report is the diagnosis of one sample, or of what did not move between
// two.
type Report struct {
	Stuck bool `json:"stuck"` // some stall
	// Chains are the processes that pipes connect, stuck ones first.
	Chains []Chain `json:"chains"`
	// Findings are the stalls, then the idle waits and the warnings.
	Findings []Finding `json:"findings"`
	// Moving are the pipes that moved between the two samples: not
	// stuck, whatever their state looked like.
	Moving []uint64 `json:"moving"`
	// Considered counts the waits looked at: tasks waiting on a pipe
	// (blocked in read or write, or in poll/select/epoll for it), tasks
	// opening a FIFO, and pipes with data and nobody waiting; LeftOut
	// says why those that are no stall were left out, by reason.
	Considered int            `json:"considered"`
	LeftOut    map[string]int `json:"left_out"`
	// MinWait is how long a wait had to last to count as a stall.
	MinWait time.Duration `json:"min_wait_ns"`
	// Offline: diagnosed from a snapshot.
	Offline bool `json:"offline,omitempty"`

	pending int // stall-shaped waits younger than MinWait
}

// Stalls returns the findings that are stalls.
func (r *Report) Stalls() []Finding {
	var out []Finding
	for _, f := range r.Findings {
		if f.Category == Stall {
			out = append(out, f)
		}
	}
	return out
}

// Reasons things are left out (Report.LeftOut keys).
const (
	LeftIdle   = "idle, waiting for input" // EmptyWriterIdle
	LeftMoving = "on a pipe that moved"
	LeftYoung  = "shorter than the minimum wait"
	LeftNew    = "on a pipe too new to judge"
	LeftSelf   = "on a process's own pipe (self-pipe)"
)

// Finding is one pipe (or FIFO being opened) where something waits.
type Finding struct {
	Kind     Kind     `json:"kind"`
	Category Category `json:"category"`
	Ino      uint64   `json:"ino"`
	PipeKind string   `json:"pipe_kind"`
	Path     string   `json:"path,omitempty"`
	Bytes    uint64   `json:"bytes"`
	Capacity uint64   `json:"capacity"`
	Readers  uint32   `json:"readers"`
	Writers  uint32   `json:"writers"`
	// Waiting are the tasks waiting on the pipe: blocked in read or
	// write, asleep in poll/select/epoll_wait for it, or in open(2).
	Waiting []Task `json:"waiting"`
	// OtherEnd are the processes holding the end that should move it.
	OtherEnd []Task `json:"other_end"`
	// Culprits are the processes that explain the stall: the reader that
	// does not read, the writer that is stopped. Empty when none holds
	// the end that would move it.
	Culprits []Task `json:"culprits"`
	// For is how long it has lasted, as far as the kernel's timestamps
	// tell: the longest wait, or the culprit's idle time.
	For     time.Duration `json:"for_ns"`
	ForText string        `json:"for"`
	Message string        `json:"message"`
}

// Task is a process (or one of its threads) taking part in a finding.
type Task struct {
	PID  uint32        `json:"pid"`
	TID  uint32        `json:"tid,omitempty"`
	Comm string        `json:"comm"`
	End  pipemodel.End `json:"end,omitempty"` // the end it holds or waits on
	// Via says how a waiting task waits: "read" or "write" (blocked in
	// the call), "poll" (poll or select), "epoll", or "open".
	Via     string  `json:"via,omitempty"`
	EpollFD int32   `json:"epoll_fd,omitempty"`
	FDs     []int32 `json:"fds,omitempty"`
	State   string  `json:"state"`
	// Wait is how long it has not run: for a waiting task, how long it
	// has waited; for a holder, its process's idle time.
	Wait      time.Duration `json:"wait_ns"`
	WaitKnown bool          `json:"wait_known"`
	Wchan     string        `json:"wchan,omitempty"`
	Stack     []string      `json:"stack,omitempty"`
	// Threads counts where the threads of a multi-threaded process
	// sleep (wchan -> threads).
	Threads map[string]int `json:"threads,omitempty"`
	// BlockedOn are the pipes the process waits on itself.
	BlockedOn []Blocking `json:"blocked_on,omitempty"`
	// Outside: not one of the processes asked for.
	Outside bool `json:"outside,omitempty"`
	// NSPID is its pid in its own pid namespace, where that differs;
	// Container and Pod name the container it runs in; Monitor: it is
	// the container runtime's monitor of that container (conmon), which
	// reads the container's stdout and stderr.
	NSPID       uint32 `json:"nspid,omitempty"`
	Container   string `json:"container,omitempty"`
	ContainerID string `json:"container_id,omitempty"`
	Pod         string `json:"pod,omitempty"`
	Monitor     bool   `json:"monitor,omitempty"`
}

// annotate copies what the sample knows of a task's process: its pid in
// its namespace and its container.
func (t *Task) annotate(pr *pipemodel.Proc) {
	if pr == nil {
		return
	}
	t.NSPID = pr.NSPID
	if c := pr.Container; c != nil {
		t.Container, t.ContainerID, t.Pod, t.Monitor = c.Label(), c.ID, c.Pod, c.Monitor
		if c.Monitor {
			t.Container = strings.TrimSuffix(t.Container, " (monitor)")
		}
	}
}

// Blocking is a pipe a process waits on, and how.
type Blocking struct {
	Ino uint64 `json:"ino"`
	How string `json:"how"` // "reading" or "writing"
	Via string `json:"via,omitempty"`
}

// Kernel tells where tasks sleep. Procfs reads /proc; a snapshot
// answers from what it recorded.
type Kernel interface {
	Wchan(pid, tid uint32) string   // "" when running or unknown
	Stack(pid, tid uint32) []string // nil when unreadable
	Threads(pid uint32) []uint32
}

// Options tunes a diagnosis.
type Options struct {
	Ignore map[uint64]bool // pipes left out (pipesnap's own stdin/stdout)
	Kernel Kernel          // nil: Procfs{}
	// MinWait is how long a wait must have lasted to be a stall; 0
	// counts every wait.
	MinWait time.Duration
}

// DefaultMinWait is how long a wait must last to be a stall unless told
// otherwise: longer than a consumer that reads in bursts of a second
// sleeps, short enough that a stall is reported within seconds.
const DefaultMinWait = 3 * time.Second

// Diagnose looks at cur and, when prev is not nil, at what moved since
// prev: a pipe whose ring changed in between is moving, not stuck, and a
// pipe that did not exist in prev is too new to tell.
func Diagnose(prev, cur *pipemodel.Sample, opts Options) *Report {
	d := &diagnosis{cur: cur, kernel: opts.Kernel, minWait: opts.MinWait, waitsOn: map[uint32][]Blocking{}}
	if d.kernel == nil {
		d.kernel = Procfs{}
	}
	rep := &Report{Chains: []Chain{}, Findings: []Finding{}, Moving: []uint64{}, LeftOut: map[string]int{},
		MinWait: opts.MinWait, Offline: cur.Offline}
	d.rep = rep
	for _, p := range cur.Pipes {
		for _, w := range p.Waiters {
			if w.WaitsFor(p) && w.PID != 0 {
				d.waitsOn[w.PID] = appendBlocking(d.waitsOn[w.PID], Blocking{Ino: p.Ino, How: w.Queue.Verb(), Via: viaOf(w)})
			}
		}
	}
	for _, p := range cur.Pipes {
		if opts.Ignore[p.Ino] {
			continue
		}
		if prev != nil {
			q := prev.Find(p.Ino)
			moved := q != nil && (q.Head != p.Head || q.Tail != p.Tail || q.Bytes != p.Bytes) || p.Moving
			if q == nil || moved {
				if n := d.waitCount(p); n > 0 {
					rep.Considered += n
					if moved {
						rep.LeftOut[LeftMoving] += n
					} else {
						rep.LeftOut[LeftNew] += n
					}
				}
				if moved {
					rep.Moving = append(rep.Moving, p.Ino)
				}
				continue
			}
		}
		d.pipe(p)
	}
	for _, ow := range cur.OpenWaits {
		d.openWait(ow)
	}
	// Stalls first, then idle waits, then warnings; by inode within.
	order := map[Category]int{Stall: 0, Idle: 1, Warning: 2}
	slices.SortStableFunc(rep.Findings, func(a, b Finding) int {
		if a.Category != b.Category {
			return order[a.Category] - order[b.Category]
		}
		return cmp.Compare(a.Ino, b.Ino)
	})
	rep.Stuck = len(rep.Stalls()) > 0
	rep.Chains = d.chains(cur, opts.Ignore, rep.Findings)
	for k, n := range rep.LeftOut {
		if n == 0 {
			delete(rep.LeftOut, k)
		}
	}
	return rep
}

// Pending tells whether the report left out stall-shaped waits only
// because they were younger than the minimum wait: looking again later
// may make them stalls.
func (r *Report) Pending() bool { return r.pending > 0 }

type diagnosis struct {
	cur     *pipemodel.Sample
	kernel  Kernel
	minWait time.Duration
	rep     *Report
	waitsOn map[uint32][]Blocking // pid -> pipes it waits on
}

// waitCount is how many waits a pipe contributes to Considered.
func (d *diagnosis) waitCount(p *pipemodel.Pipe) int {
	n := len(p.Waiting(pipemodel.QueueRead)) + len(p.Waiting(pipemodel.QueueWrite))
	if n == 0 && p.Bytes > 0 {
		n = 1 // data with nobody waiting: a wait of the data
	}
	return n
}

func appendBlocking(bs []Blocking, b Blocking) []Blocking {
	if slices.Contains(bs, b) {
		return bs
	}
	return append(bs, b)
}

func viaOf(w pipemodel.Waiter) string {
	switch w.Kind {
	case pipemodel.WaiterPoll:
		return "poll"
	case pipemodel.WaiterEpoll:
		return "epoll"
	}
	if w.Queue == pipemodel.QueueWrite {
		return "write"
	}
	return "read"
}
