package diagnose

import (
	"fmt"
	"slices"
	"time"

	"github.com/pipesnap/pipesnap/pipemodel"
)

// The rule, as an on-call engineer would apply it (README "How diagnose
// decides"): a pipe is stuck when it did not move while it was watched
// and one of these holds for at least the minimum wait:
//
//   - a writer waits for room (or the pipe is full) and its reader does
//     not read: FullReaderIdle, the reader is the culprit;
//   - data is queued and the reader has not run: Unread;
//   - a reader waits on an empty pipe whose writer is stopped or stuck in
//     uninterruptible sleep: WriterStopped;
//   - a reader waits on an empty pipe whose only write ends are its own:
//     WriterGone, end of file never comes;
//   - data sits in a pipe nobody can read: DataNoReader;
//   - a task waits in open(2) of a FIFO nobody opens from the other end.
//
// A reader waiting on an empty pipe whose writer is alive and waiting
// itself is idle (EmptyWriterIdle), not stuck: an idle daemon, a `tail
// -f | grep`. An empty pipe with no reader is a warning (NoReaders).

// pipe classifies one pipe that did not move.
func (d *diagnosis) pipe(p *pipemodel.Pipe) {
	waitR, waitW := p.Waiting(pipemodel.QueueRead), p.Waiting(pipemodel.QueueWrite)
	n := d.waitCount(p)
	f := d.newFinding(p)
	var age time.Duration
	own, threads := d.ownPipe(p)
	switch {
	case p.BadRing:
		// Head, tail or ring size were not a ring pipesnap knows: its
		// bytes and fill are unknown, so nothing can be said of them.
		f.Kind = BadRing
		f.Message = fmt.Sprintf("%s: its ring could not be read (head %d, tail %d, ring size %d are not a ring pipesnap knows): how full it is is unknown",
			d.pipeName(p), p.Head, p.Tail, p.RingSize)
		d.add(f, 0, 0)
		return
	case own && len(waitW) == 0 && (p.Bytes > 0 || !waitsDirectly(waitR) || threads > 1):
		// A process's own pipe, both ends its own and nobody else's: the
		// self-pipe of an event loop (libuv, glib), woken by its own
		// signal handler or another of its threads. Data in it, or a
		// wait in poll or epoll on it, is its business; only a lone
		// thread blocked in read on it waits for ever (WriterGone).
		if n > 0 {
			d.rep.Considered += n
			d.rep.LeftOut[LeftSelf] += n
		}
		return
	case p.Readers == 0:
		if p.Writers == 0 {
			return
		}
		f.OtherEnd = d.holders(p, pipemodel.EndWrite, nil)
		if p.Bytes == 0 {
			f.Kind = NoReaders
			f.Message = msgNoReaders(d.pipeName(p), f.OtherEnd, p.UnseenWriters)
			d.add(f, 0, 0)
			return
		}
		f.Kind = DataNoReader
		age = minIdle(f.OtherEnd)
		f.Message = msgDataNoReader(d.pipeName(p), p.Bytes, f.OtherEnd)
		n = max(n, 1)
	case len(waitW) > 0 || p.Full():
		f.Kind = FullReaderIdle
		f.Waiting = d.waiters(waitW)
		f.OtherEnd = d.holders(p, pipemodel.EndRead, nil)
		f.Culprits = culprits(f.OtherEnd)
		age = maxWait(f.Waiting)
		if len(f.Waiting) == 0 {
			age = minIdle(f.OtherEnd)
		}
		f.Message = msgFull(d.pipeName(p), p, f.Waiting, f.OtherEnd, p.UnseenReaders, d.scoped())
		if m, ok := msgRuntimeReader(d.pipeName(p), p, f.Waiting, f.OtherEnd); ok {
			f.Message = m
		}
	case p.Bytes > 0:
		f.Kind = Unread
		f.Waiting = d.waiters(waitR)
		f.OtherEnd = d.holders(p, pipemodel.EndRead, nil)
		f.Culprits = culprits(f.OtherEnd)
		age = minIdle(f.OtherEnd)
		f.Message = msgUnread(d.pipeName(p), p, f.Waiting, f.OtherEnd, p.UnseenReaders, d.scoped())
	case len(waitR) > 0:
		f.Waiting = d.waiters(waitR)
		own := map[uint32]bool{}
		for _, t := range f.Waiting {
			own[t.PID] = true
		}
		f.OtherEnd = d.holders(p, pipemodel.EndWrite, own)
		age = maxWait(f.Waiting)
		var stopped []Task
		for _, t := range f.OtherEnd {
			if t.State == "T" || t.State == "t" || t.State == "D" && t.WaitKnown && t.Wait >= d.minWait {
				stopped = append(stopped, t)
			}
		}
		switch {
		case len(f.OtherEnd) == 0 && p.UnseenWriters == 0:
			f.Kind = WriterGone
			f.OtherEnd = d.holders(p, pipemodel.EndWrite, nil) // its own: where to look
			f.Culprits = f.OtherEnd
			f.Message = msgWriterGone(d.pipeName(p), f.Waiting, f.OtherEnd)
		case len(stopped) > 0 && len(stopped) == len(f.OtherEnd) && p.UnseenWriters == 0:
			// Every writer is stopped: none can write until continued.
			f.Kind = WriterStopped
			f.Culprits = stopped
			f.Message = msgWriterStopped(d.pipeName(p), f.Waiting, stopped)
		default:
			f.Kind = EmptyWriterIdle
			f.Message = msgIdle(d.pipeName(p), f.Waiting, f.OtherEnd, p.UnseenWriters, d.scoped())
		}
	default:
		return
	}
	d.add(f, age, n)
}

// ownPipe tells whether one process holds both ends of p and nobody
// else any, and how many
// threads it has.
func (d *diagnosis) ownPipe(p *pipemodel.Pipe) (bool, uint32) {
	if len(p.Holders) == 0 || p.Readers == 0 || p.Writers == 0 || p.UnseenReaders > 0 || p.UnseenWriters > 0 {
		return false, 0
	}
	pid := p.Holders[0].PID
	for _, h := range p.Holders {
		if h.PID != pid {
			return false, 0
		}
	}
	threads := uint32(1)
	if pr := d.cur.Procs[pid]; pr != nil {
		threads = max(pr.Threads, uint32(len(pr.Tasks)))
	}
	return true, threads
}

// waitsDirectly tells whether some waiter is blocked in read or write
// itself, not in poll or epoll.
func waitsDirectly(ws []pipemodel.Waiter) bool {
	for _, w := range ws {
		if w.Kind == pipemodel.WaiterBlocked {
			return true
		}
	}
	return false
}

// openWait classifies a task asleep opening a FIFO.
func (d *diagnosis) openWait(ow pipemodel.OpenWait) {
	f := Finding{
		Kind: OpenNoReader, Ino: ow.Ino, PipeKind: "fifo", Path: ow.Path,
		Readers: ow.Readers, Writers: ow.Writers, OtherEnd: []Task{}, Culprits: []Task{},
		Waiting: []Task{{
			PID: ow.PID, TID: ow.TID, Comm: ow.Comm, End: ow.End, Via: "open", State: string(ow.State),
			Wait: ow.Wait, WaitKnown: true, Wchan: d.kernel.Wchan(ow.PID, ow.TID),
		}},
	}
	if ow.End == pipemodel.EndRead {
		f.Kind = OpenNoWriter
	}
	f.Message = msgOpen(f.Waiting[0], ow)
	d.add(f, ow.Wait, 1)
}

// add files a finding: a stall only once it has lasted the minimum wait.
func (d *diagnosis) add(f Finding, age time.Duration, waits int) {
	f.Category = f.Kind.Category()
	f.For, f.ForText = age, duration(age)
	d.rep.Considered += waits
	switch f.Category {
	case Stall:
		if age < d.minWait {
			d.rep.pending++
			d.rep.LeftOut[LeftYoung] += max(waits, 1)
			return
		}
		// Kernel stacks of the tasks that tell the story, for stalls
		// only: reading every idle reader's would cost a walk of /proc.
		for _, ts := range [][]Task{f.Waiting, f.Culprits, f.OtherEnd} {
			for i := range ts {
				tid := ts[i].TID
				if tid == 0 {
					tid = ts[i].PID
				}
				ts[i].Stack = d.kernel.Stack(ts[i].PID, tid)
			}
		}
	case Idle:
		d.rep.LeftOut[LeftIdle] += waits
	}
	d.rep.Findings = append(d.rep.Findings, f)
}

func (d *diagnosis) newFinding(p *pipemodel.Pipe) Finding {
	return Finding{
		Ino: p.Ino, PipeKind: p.Kind, Path: p.Path, Bytes: p.Bytes, Capacity: p.Capacity,
		Readers: p.Readers, Writers: p.Writers, Waiting: []Task{}, OtherEnd: []Task{}, Culprits: []Task{},
	}
}

// scoped tells whether the sample walked some processes only.
func (d *diagnosis) scoped() bool {
	for _, pr := range d.cur.Procs {
		if pr.Outside {
			return true
		}
	}
	return d.cur.Scoped
}

// holders returns the processes holding one end of p, one Task each,
// leaving out the pids in skip.
func (d *diagnosis) holders(p *pipemodel.Pipe, end pipemodel.End, skip map[uint32]bool) []Task {
	out := []Task{}
	at := map[uint32]int{} // pid -> index in out
	for _, h := range p.Ends(end) {
		if skip[h.PID] {
			continue
		}
		if i, ok := at[h.PID]; ok {
			out[i].FDs = append(out[i].FDs, h.FD)
			continue
		}
		at[h.PID] = len(out)
		t := Task{PID: h.PID, Comm: h.Comm, End: h.End, FDs: []int32{h.FD}, Outside: h.Outside}
		if pr := d.cur.Procs[h.PID]; pr != nil {
			t.State = string(pr.State)
			t.Wait, t.WaitKnown = pr.Idle, pr.IdleKnown
			t.Outside = t.Outside || pr.Outside
			if pr.Threads > 1 {
				t.Threads = d.threads(h.PID)
			}
		}
		t.Wchan = d.kernel.Wchan(h.PID, h.PID)
		t.BlockedOn = d.waitsOn[h.PID]
		t.annotate(d.cur.Procs[h.PID])
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
	if len(out) == 0 {
		return nil
	}
	return out
}

// waiters turns waiters into tasks, one per thread.
func (d *diagnosis) waiters(ws []pipemodel.Waiter) []Task {
	out := []Task{}
	seen := map[uint32]bool{}
	for _, w := range ws {
		if seen[w.TID] {
			continue
		}
		seen[w.TID] = true
		end := pipemodel.EndRead
		if w.Queue == pipemodel.QueueWrite {
			end = pipemodel.EndWrite
		}
		t := Task{
			PID: w.PID, TID: w.TID, Comm: w.Comm, End: end, Via: viaOf(w), EpollFD: w.EpollFD,
			State: string(w.State), Wait: w.Wait, WaitKnown: true, Outside: w.Outside,
			Wchan: d.kernel.Wchan(w.PID, w.TID),
		}
		if pr := d.cur.Procs[w.PID]; pr != nil && pr.Outside {
			t.Outside = true
		}
		t.annotate(d.cur.Procs[w.PID])
		out = append(out, t)
	}
	return out
}

// culprits orders the other end's processes: those not waiting on a pipe
// themselves first (where the chain stopped), then the others.
func culprits(other []Task) []Task {
	out := slices.Clone(other)
	slices.SortStableFunc(out, func(a, b Task) int {
		return boolInt(len(a.BlockedOn) > 0) - boolInt(len(b.BlockedOn) > 0)
	})
	return out
}

func boolInt(b bool) int {
	if b {
		return 1
	}
	return 0
}

// maxWait is the longest wait of tasks.
func maxWait(ts []Task) time.Duration {
	var out time.Duration
	for _, t := range ts {
		out = max(out, t.Wait)
	}
	return out
}

// minIdle is how long the least idle of the processes has not run: as
// long as one of them runs, something may yet move the pipe. Unknown
// idle times count as long ago: the kernel could not say, the state
// decides.
func minIdle(ts []Task) time.Duration {
	out := time.Duration(-1)
	for _, t := range ts {
		w := t.Wait
		if !t.WaitKnown {
			w = 1<<63 - 1
		}
		if t.State == "R" {
			w = 0
		}
		if out < 0 || w < out {
			out = w
		}
	}
	return max(out, 0)
}
