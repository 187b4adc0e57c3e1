// Package diagnose says where pipelines are stuck and why, from samples
// of the kernel's pipe state (package pipestate): which task is blocked
// on which pipe, which process on the other end is not moving it, and
// where that process sleeps (/proc/PID/wchan and stack).
package diagnose

import (
	"fmt"
	"slices"
	"strings"

	"github.com/pipesnap/pipesnap/pipestate"
)

// Kinds of finding.
const (
	// A writer is blocked on (or data waits in) a full pipe whose
	// reader is not reading.
	FullReaderIdle = "full-reader-idle"
	// A reader is blocked on an empty pipe whose writer is alive but
	// not writing.
	EmptyWriterIdle = "empty-writer-idle"
	// A reader is blocked on an empty pipe whose only write ends are its
	// own: the writer exited, end of file never comes.
	WriterGone = "writer-gone"
	// Nobody holds the read end: the next write gets SIGPIPE/EPIPE.
	NoReaders = "no-readers"
	// Data is left in a pipe without writers, and the reader does not
	// read it.
	UnreadNoWriters = "unread-no-writers"
)

// Report is the diagnosis of one or two samples.
type Report struct {
	Stuck    bool      `json:"stuck"` // some finding
	Chains   []Chain   `json:"chains"`
	Findings []Finding `json:"findings"`
	// Moving are the pipes that moved between the two samples: not stuck,
	// whatever their state looked like.
	Moving []uint64 `json:"moving"`
}

// Finding is one pipe where something is stuck.
type Finding struct {
	Kind     string `json:"kind"`
	Ino      uint64 `json:"ino"`
	PipeKind string `json:"pipe_kind"`
	Path     string `json:"path,omitempty"`
	Bytes    uint64 `json:"bytes"`
	Capacity uint64 `json:"capacity"`
	Readers  uint32 `json:"readers"`
	Writers  uint32 `json:"writers"`
	// Blocked are the tasks sleeping on the pipe, reading or writing.
	Blocked []Task `json:"blocked"`
	// Idle are the processes holding the other end that do not move the
	// pipe: where to look.
	Idle    []Task `json:"idle"`
	Message string `json:"message"`
}

// Task is a process (or one of its threads) taking part in a finding.
type Task struct {
	PID   uint32   `json:"pid"`
	TID   uint32   `json:"tid,omitempty"`
	Comm  string   `json:"comm"`
	End   string   `json:"end"` // the end it holds ("read", "write", "rdwr") or is blocked on
	FDs   []int32  `json:"fds,omitempty"`
	State string   `json:"state"`
	Wchan string   `json:"wchan,omitempty"`
	Stack []string `json:"stack,omitempty"`
	// Threads counts where the threads of a multi-threaded process
	// sleep (wchan -> threads).
	Threads map[string]int `json:"threads,omitempty"`
	// BlockedOn are the pipes the process is blocked on itself.
	BlockedOn []Blocking `json:"blocked_on,omitempty"`
	// Outside: not one of the walked processes.
	Outside bool `json:"outside,omitempty"`
}

// Blocking is a pipe a process is blocked on, and how.
type Blocking struct {
	Ino uint64 `json:"ino"`
	How string `json:"how"` // "reading" or "writing"
}

// Chain is a set of processes connected by pipes (a shell pipeline is
// one), in the order data flows where there is one.
type Chain struct {
	Procs []ChainProc `json:"procs"`
	Pipes []uint64    `json:"pipes"`
	Stuck bool        `json:"stuck"`
	// StuckAt are the processes where the chain stopped: those its
	// findings point at that are not themselves blocked on a pipe.
	StuckAt  []uint32 `json:"stuck_at"`
	Findings []int    `json:"findings"` // indexes into Report.Findings
	Summary  string   `json:"summary"`
}

// ChainProc is one process of a chain.
type ChainProc struct {
	PID  uint32 `json:"pid"`
	Comm string `json:"comm"`
}

// Kernel tells where tasks sleep. Procfs reads /proc.
type Kernel interface {
	Wchan(pid, tid uint32) string   // "" when running or unknown
	Stack(pid, tid uint32) []string // nil when unreadable
	Threads(pid uint32) []uint32
}

// Options tunes a diagnosis.
type Options struct {
	Ignore map[uint64]bool // pipes left out (pipesnap's own stdin/stdout)
	Kernel Kernel          // nil: Procfs{}
}

// Diagnose looks at cur and, when prev is not nil, at what moved since
// prev: a pipe whose ring or queue changed in between is moving, not
// stuck, and a pipe that did not exist in prev is too new to tell.
func Diagnose(prev, cur *pipestate.Sample, opts Options) *Report {
	d := &diagnosis{cur: cur, kernel: opts.Kernel, blockedOn: map[uint32][]Blocking{}}
	if d.kernel == nil {
		d.kernel = Procfs{}
	}
	rep := &Report{Chains: []Chain{}, Findings: []Finding{}, Moving: []uint64{}}
	var pipes []*pipestate.Pipe
	for _, p := range cur.Pipes {
		if opts.Ignore[p.Ino] {
			continue
		}
		if prev != nil {
			q := prev.Find(p.Ino)
			if q == nil {
				continue
			}
			if q.Head != p.Head || q.Tail != p.Tail || q.Bytes != p.Bytes || p.Moving {
				rep.Moving = append(rep.Moving, p.Ino)
				continue
			}
		}
		pipes = append(pipes, p)
	}
	for _, p := range cur.Pipes {
		for _, w := range p.Waiters {
			if w.Kind == "blocked" {
				how := map[string]string{"read": "reading", "write": "writing"}[w.Queue]
				d.blockedOn[w.PID] = append(d.blockedOn[w.PID], Blocking{Ino: p.Ino, How: how})
			}
		}
	}
	for _, p := range pipes {
		if f, ok := d.finding(p); ok {
			rep.Findings = append(rep.Findings, f)
		}
	}
	rep.Stuck = len(rep.Findings) > 0
	rep.Chains = d.chains(cur, opts.Ignore, rep.Findings)
	return rep
}

type diagnosis struct {
	cur       *pipestate.Sample
	kernel    Kernel
	blockedOn map[uint32][]Blocking // pid -> pipes it is blocked on
}

func (d *diagnosis) finding(p *pipestate.Pipe) (Finding, bool) {
	f := Finding{
		Ino: p.Ino, PipeKind: p.Kind, Path: p.Path, Bytes: p.Bytes, Capacity: p.Capacity,
		Readers: p.Readers, Writers: p.Writers, Blocked: []Task{}, Idle: []Task{},
	}
	blockedR, blockedW := p.Blocked("read"), p.Blocked("write")
	name := d.pipeName(p)
	switch {
	case p.Readers == 0 && p.Writers > 0:
		f.Kind = NoReaders
		f.Idle = d.holders(p, "write", nil)
		f.Message = fmt.Sprintf("%s has no reader left: %s will get SIGPIPE (or EPIPE) on %s next write",
			name, d.names(f.Idle, p.UnseenWriters, "its writer", "its writers"), pronoun(f.Idle))
		if p.Bytes > 0 {
			f.Message += fmt.Sprintf(", and the %d bytes in it will never be read", p.Bytes)
		}
	case len(blockedW) > 0 || p.Full() && p.Readers > 0:
		f.Kind = FullReaderIdle
		f.Blocked = d.blocked(blockedW)
		f.Idle = d.holders(p, "read", nil)
		fill := fmt.Sprintf("which is full (%d/%d)", p.Bytes, p.Capacity)
		if !p.Full() {
			fill = fmt.Sprintf("which holds %d/%d bytes", p.Bytes, p.Capacity)
		}
		if len(f.Blocked) > 0 {
			f.Message = fmt.Sprintf("%s blocked writing to %s, %s; %s", d.names(f.Blocked, 0, "", ""), name, fill,
				d.why(f.Idle, p.UnseenReaders, "its reader", "its readers", "reading it"))
		} else {
			f.Message = fmt.Sprintf("%s is full (%d/%d) and nobody reads it; %s", name, p.Bytes, p.Capacity,
				d.why(f.Idle, p.UnseenReaders, "its reader", "its readers", "reading it"))
		}
	case len(blockedR) > 0 && p.Bytes == 0:
		f.Blocked = d.blocked(blockedR)
		own := map[uint32]bool{}
		for _, t := range f.Blocked {
			own[t.PID] = true
		}
		f.Idle = d.holders(p, "write", own)
		if len(f.Idle) == 0 && p.UnseenWriters == 0 {
			f.Kind = WriterGone
			var fds []string
			for _, t := range d.holders(p, "write", nil) {
				for _, fd := range t.FDs {
					fds = append(fds, fmt.Sprintf("fd %d of %s (pid %d)", fd, t.Comm, t.PID))
				}
			}
			f.Idle = d.holders(p, "write", nil) // itself: where to look
			f.Message = fmt.Sprintf("%s blocked reading %s, which is empty, and will wait forever: "+
				"the only write end left is its own (%s), so end of file never comes "+
				"(the writer is gone; the reader should close its copy of the write end)",
				d.names(f.Blocked, 0, "", ""), name, strings.Join(fds, ", "))
		} else {
			f.Kind = EmptyWriterIdle
			f.Message = fmt.Sprintf("%s blocked reading %s, which is empty; %s", d.names(f.Blocked, 0, "", ""), name,
				d.why(f.Idle, p.UnseenWriters, "its writer", "its writers", "writing"))
		}
	case p.Writers == 0 && p.Bytes > 0 && p.Readers > 0:
		f.Kind = UnreadNoWriters
		f.Idle = d.holders(p, "read", nil)
		f.Message = fmt.Sprintf("%s holds %d bytes and has no writer left; %s", name, p.Bytes,
			d.why(f.Idle, p.UnseenReaders, "its reader", "its readers", "reading them"))
	default:
		return Finding{}, false
	}
	return f, true
}

func (d *diagnosis) pipeName(p *pipestate.Pipe) string {
	if p.Kind == "fifo" && p.Path != "" {
		return fmt.Sprintf("FIFO %s (inode %d)", p.Path, p.Ino)
	}
	return fmt.Sprintf("%s %d", p.Kind, p.Ino)
}

// holders returns the processes holding one end of p, one Task each,
// leaving out the pids in skip.
func (d *diagnosis) holders(p *pipestate.Pipe, end string, skip map[uint32]bool) []Task {
	var out []Task
	for _, h := range p.Ends(end) {
		if skip[h.PID] {
			continue
		}
		if i := slices.IndexFunc(out, func(t Task) bool { return t.PID == h.PID }); i >= 0 {
			out[i].FDs = append(out[i].FDs, h.FD)
			continue
		}
		t := Task{PID: h.PID, Comm: h.Comm, End: h.End, FDs: []int32{h.FD}}
		if pr := d.cur.Procs[h.PID]; pr != nil {
			t.State = pr.State
			if pr.Threads > 1 {
				t.Threads = d.threads(h.PID)
			}
		}
		t.Wchan = d.kernel.Wchan(h.PID, h.PID)
		t.Stack = d.kernel.Stack(h.PID, h.PID)
		t.BlockedOn = d.blockedOn[h.PID]
		out = append(out, t)
	}
	return out
}

func (d *diagnosis) threads(pid uint32) map[string]int {
	out := map[string]int{}
	for _, tid := range d.kernel.Threads(pid) {
		w := d.kernel.Wchan(pid, tid)
		if w == "" {
			w = "running"
		}
		out[w]++
	}
	return out
}

// blocked turns waiters into tasks, one per thread.
func (d *diagnosis) blocked(ws []pipestate.Waiter) []Task {
	var out []Task
	for _, w := range ws {
		out = append(out, Task{
			PID: w.PID, TID: w.TID, Comm: w.Comm, End: w.Queue, State: w.State, Outside: w.Outside,
			Wchan: d.kernel.Wchan(w.PID, w.TID), Stack: d.kernel.Stack(w.PID, w.TID),
		})
	}
	return out
}

// names says who: "gzip (pid 812) is", "gzip (pid 812) and ssh (pid 813)
// are", with one, many, or the unseen holders.
func (d *diagnosis) names(ts []Task, unseen uint32, one, many string) string {
	var parts []string
	seen := map[uint32]bool{}
	for _, t := range ts {
		if seen[t.PID] {
			continue
		}
		seen[t.PID] = true
		s := fmt.Sprintf("%s (pid %d)", t.Comm, t.PID)
		if t.TID != 0 && t.TID != t.PID {
			s = fmt.Sprintf("%s (pid %d, thread %d)", t.Comm, t.PID, t.TID)
		}
		parts = append(parts, s)
	}
	who := strings.Join(parts, ", ")
	if one != "" {
		if len(parts) > 1 {
			who = many + " " + who
		} else if len(parts) == 1 {
			who = one + " " + who
		}
	}
	if unseen > 0 {
		out := fmt.Sprintf("%d open end(s) held outside the walked processes", unseen)
		if who == "" {
			who = out
		} else {
			who += fmt.Sprintf(" (and %s)", out)
		}
	}
	if one == "" {
		if len(parts) > 1 {
			return who + " are"
		}
		return who + " is"
	}
	return who
}

func pronoun(ts []Task) string {
	if len(ts) > 1 {
		return "their"
	}
	return "its"
}

// why says why the idle side does not move the pipe: blocked elsewhere,
// or where it sleeps.
func (d *diagnosis) why(idle []Task, unseen uint32, one, many, doing string) string {
	if len(idle) == 0 {
		if unseen > 0 {
			who := one + " is"
			if unseen > 1 {
				who = many + " are"
			}
			return fmt.Sprintf("%s outside the walked processes (%d open end(s)): give their pids, or use --all", who, unseen)
		}
		return fmt.Sprintf("%s: none", many)
	}
	var parts []string
	for _, t := range idle {
		s := fmt.Sprintf("%s (pid %d)", t.Comm, t.PID)
		switch {
		case len(t.BlockedOn) > 0:
			var on []string
			for _, b := range t.BlockedOn {
				on = append(on, fmt.Sprintf("%s pipe %d", b.How, b.Ino))
			}
			s += " is itself blocked " + strings.Join(on, " and ")
		default:
			s += " is not " + doing + ": " + t.sleep()
		}
		parts = append(parts, s)
	}
	lead := one
	if len(idle) > 1 {
		lead = many
	}
	out := lead + " " + strings.Join(parts, "; ")
	if unseen > 0 {
		out += fmt.Sprintf(" (and %d open end(s) held outside the walked processes)", unseen)
	}
	return out
}

// sleep says what a task is doing: "state S, waiting in do_nanosleep".
func (t Task) sleep() string {
	s := "state " + t.State
	if t.State == "" {
		s = "state unknown"
	}
	switch {
	case t.State == "T":
		s += " (stopped)"
	case t.State == "R":
		s += " (running)"
	}
	if t.Wchan != "" {
		s += ", waiting in " + t.Wchan
	}
	if len(t.Threads) > 1 {
		var ws []string
		for w, n := range t.Threads {
			ws = append(ws, fmt.Sprintf("%d in %s", n, w))
		}
		slices.Sort(ws)
		s += " (threads: " + strings.Join(ws, ", ") + ")"
	}
	return s
}
