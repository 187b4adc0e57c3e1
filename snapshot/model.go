package snapshot

import (
	"slices"

	"github.com/pipesnap/pipesnap/format"
	"github.com/pipesnap/pipesnap/pipemodel"
)

// Sample turns the snapshot into the model a live walk fills
// (pipemodel), so that diagnose and the views read both alike: its
// pipes with their holders and the waiters the dump recorded (revision
// 2; none in revision 1), its processes with the states of their
// threads and, from revision 3, their containers, cgroups and pids in
// their own pid namespaces, and the tasks that were blocked opening a
// FIFO. Waits are as long as they were when the snapshot was taken.
func (s *Snapshot) Sample() *pipemodel.Sample {
	out := &pipemodel.Sample{Time: s.Header.Time, Procs: map[uint32]*pipemodel.Proc{}, Offline: true}
	for _, t := range s.Tasks {
		if out.Procs[t.PID] == nil {
			out.Procs[t.PID] = &pipemodel.Proc{PID: t.PID, Comm: t.Comm, Threads: 1}
		}
	}
	for _, ts := range s.TaskStates {
		pr := out.Procs[ts.PID]
		if pr == nil {
			// A holder of a pipe's other end, outside the processes dumped.
			pr = &pipemodel.Proc{PID: ts.PID, Comm: "?", Outside: true}
			out.Procs[ts.PID] = pr
		}
		th := pipemodel.Thread{TID: ts.TID, State: state(ts.State), Idle: ts.Wait, Wchan: ts.Wchan}
		if ts.TID == ts.PID {
			pr.State = th.State
		}
		pr.Tasks = append(pr.Tasks, th)
		pr.Threads = uint32(len(pr.Tasks))
		if ts.WaitKnown && (!pr.IdleKnown || ts.Wait < pr.Idle) {
			pr.Idle, pr.IdleKnown = ts.Wait, true
		}
		if th.State == "R" {
			pr.Idle, pr.IdleKnown = 0, true
		}
	}
	s.addProcs(out)
	// The main thread first, as a live walk has it (one pass: a stream
	// may hold many states).
	for _, pr := range out.Procs {
		if i := slices.IndexFunc(pr.Tasks, func(t pipemodel.Thread) bool { return t.TID == pr.PID }); i > 0 {
			pr.Tasks[0], pr.Tasks[i] = pr.Tasks[i], pr.Tasks[0]
		}
	}
	// Holders by pipe, in one pass over the fds.
	holders := map[*Pipe][]pipemodel.Holder{}
	for _, t := range s.Tasks {
		for _, fd := range t.FDs {
			holders[fd.Pipe] = append(holders[fd.Pipe], pipemodel.Holder{
				PID: t.PID, Comm: t.Comm, FD: fd.FD, End: pipemodel.End(fd.End), Flags: fd.Flags, File: uint64(fd.FileRef),
			})
		}
	}
	for _, p := range s.Pipes {
		mp := &pipemodel.Pipe{
			Ino: p.Ino, Kind: "pipe", Path: p.Path, Bytes: p.Bytes, Capacity: uint64(p.Capacity),
			Bufs: p.NrBufs, MaxUsage: p.MaxUsage, RingSize: p.RingSize, Head: p.Head, Tail: p.Tail,
			Readers: p.Readers, Writers: p.Writers,
		}
		if p.Kind == format.KindFIFO {
			mp.Kind = "fifo"
		}
		if out.PageSize == 0 {
			out.PageSize = uint64(p.PageSize)
		}
		mp.Holders = holders[p]
		slices.SortFunc(mp.Holders, func(a, b pipemodel.Holder) int {
			if a.PID != b.PID {
				return int(a.PID) - int(b.PID)
			}
			return int(a.FD - b.FD)
		})
		for _, w := range p.Waiters {
			mp.Waiters = append(mp.Waiters, waiter(w))
		}
		mp.CountUnseen()
		mp.MarkHolders()
		out.Pipes = append(out.Pipes, mp)
	}
	slices.SortFunc(out.Pipes, func(a, b *pipemodel.Pipe) int {
		switch {
		case a.Ino < b.Ino:
			return -1
		case a.Ino > b.Ino:
			return 1
		}
		return 0
	})
	for _, o := range s.OpenWaits {
		ow := pipemodel.OpenWait{PID: o.PID, TID: o.TID, Comm: o.Comm, State: state(o.State), End: pipemodel.EndRead,
			Ino: o.Ino, Path: o.Path, Wait: o.Wait, Writers: 1}
		if o.End == format.OpenWrite {
			ow.End, ow.Readers, ow.Writers = pipemodel.EndWrite, 0, 1
		} else {
			ow.Readers, ow.Writers = 1, 0
		}
		out.OpenWaits = append(out.OpenWaits, ow)
	}
	return out
}

// addProcs gives the sample's processes what the stream's PS_PROCs say
// of them; a PS_PROC of a process with no PS_TASK or PS_TASK_STATE (an
// outside waiter) adds it, outside.
func (s *Snapshot) addProcs(out *pipemodel.Sample) {
	conts := make([]*pipemodel.Container, len(s.Containers))
	for i, c := range s.Containers {
		conts[i] = &pipemodel.Container{Runtime: c.Runtime, ID: c.ID, Name: c.Name, Pod: c.Pod, Namespace: c.Namespace, KubeName: c.KubeName}
	}
	for _, p := range s.Procs {
		pr := out.Procs[p.PID]
		if pr == nil {
			pr = &pipemodel.Proc{PID: p.PID, Comm: "?", Outside: true}
			out.Procs[p.PID] = pr
		}
		if pr.Comm == "?" && p.Comm != "" {
			pr.Comm = p.Comm
		}
		pr.NSPID, pr.CgroupID, pr.Cgroup = p.NSPID, p.CgroupID, p.Cgroup
		if p.Container > 0 && int(p.Container) <= len(conts) {
			c := conts[p.Container-1]
			if p.Monitor {
				// Monitor is per process: a copy for the monitor.
				m := *c
				m.Monitor = true
				c = &m
			}
			pr.Container = c
		}
	}
}

func waiter(w format.Waiter) pipemodel.Waiter {
	out := pipemodel.Waiter{
		Queue: pipemodel.QueueRead, PID: w.PID, TID: w.TID, Comm: w.Comm, State: state(w.State),
		Events: w.Events, Wait: w.Wait, Outside: w.Outside,
		// Only tasks asleep in the call are recorded (dumpstream).
		Sleeping: true,
	}
	if w.Queue == format.QueueWrite {
		out.Queue = pipemodel.QueueWrite
	}
	switch w.Via {
	case format.ViaDirect:
		out.Kind = pipemodel.WaiterBlocked
	case format.ViaPoll:
		out.Kind = pipemodel.WaiterPoll
	case format.ViaEpoll:
		out.Kind = pipemodel.WaiterEpoll
		if w.EpollFD > 0 {
			out.EpollFD = w.EpollFD
		}
	default:
		out.Kind = pipemodel.WaiterOther
	}
	return out
}

func state(b byte) pipemodel.State {
	if b == 0 {
		return ""
	}
	return pipemodel.State(string(b))
}

// Kernel answers diagnose's questions from what the snapshot recorded:
// where each thread slept; no stacks.
type Kernel struct{ s *pipemodel.Sample }

// NewKernel answers from a sample made by Sample.
func NewKernel(s *pipemodel.Sample) Kernel { return Kernel{s} }

// Wchan is where thread tid slept when the snapshot was taken.
func (k Kernel) Wchan(pid, tid uint32) string {
	if pr := k.s.Procs[pid]; pr != nil {
		for _, t := range pr.Tasks {
			if t.TID == tid {
				return t.Wchan
			}
		}
	}
	return ""
}

// Stack: a snapshot records none.
func (Kernel) Stack(pid, tid uint32) []string { return nil }

// Threads lists the threads recorded of process pid.
func (k Kernel) Threads(pid uint32) []uint32 {
	var out []uint32
	if pr := k.s.Procs[pid]; pr != nil {
		for _, t := range pr.Tasks {
			out = append(out, t.TID)
		}
	}
	return out
}
