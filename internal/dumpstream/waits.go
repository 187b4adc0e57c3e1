package dumpstream

import (
	"slices"

	"github.com/pipesnap/pipesnap/format"
	"github.com/pipesnap/pipesnap/pipemodel"
)

// Waits is who waited on what when the dump was taken: a live sample of
// the same processes (pipestate), and where each thread slept.
type Waits struct {
	Sample *pipemodel.Sample
	Wchan  func(pid, tid uint32) string // "" when running or unreadable
}

// SetWaits has Finish write w after the last task (format revisions 2
// and 3): the state of every thread of the processes dumped, the
// waiters of the pipes the stream holds, the tasks blocked opening a
// FIFO, and who the processes are (container, cgroup, pid in their own
// pid namespace), of the dumped ones and of those outside that hold or
// wait on their pipes.
func (s *Writer) SetWaits(w *Waits) { s.waits = w }

func (s *Writer) writeWaits() error {
	w := s.waits
	if w == nil || w.Sample == nil {
		return nil
	}
	smp := w.Sample
	wchan := w.Wchan
	if wchan == nil {
		wchan = func(uint32, uint32) string { return "" }
	}
	for _, pid := range sortedPIDs(smp.Procs) {
		pr := smp.Procs[pid]
		if pr.Outside || !s.met[pid] {
			continue // not a process of the snapshot
		}
		tasks := pr.Tasks
		if len(tasks) == 0 {
			tasks = []pipemodel.Thread{{TID: pid, State: pr.State, Idle: pr.Idle}}
		}
		for _, th := range tasks {
			ts := format.TaskState{PID: pid, TID: th.TID, State: stateByte(th.State), Wchan: wchan(pid, th.TID)}
			if pr.IdleKnown || len(pr.Tasks) > 0 {
				ts.Wait, ts.WaitKnown = th.Idle, true
			}
			if err := s.enc.WriteTaskState(ts); err != nil {
				return wrap(err)
			}
		}
	}
	for _, p := range smp.Pipes {
		ref, ok := s.pipes[p.Ino]
		if !ok {
			continue
		}
		for _, wt := range p.Waiters {
			fw, ok := waiterRecord(ref, wt)
			if !ok {
				continue
			}
			if err := s.enc.WriteWaiter(fw); err != nil {
				return wrap(err)
			}
		}
	}
	for _, ow := range smp.OpenWaits {
		end := format.OpenRead
		if ow.End == pipemodel.EndWrite {
			end = format.OpenWrite
		}
		rec := format.OpenWait{PID: ow.PID, TID: ow.TID, End: end, State: stateByte(ow.State), Ino: ow.Ino,
			Wait: ow.Wait, WaitKnown: true, Comm: ow.Comm, Path: ow.Path}
		if err := s.enc.WriteOpenWait(rec); err != nil {
			return wrap(err)
		}
	}
	return s.writeProcs(smp)
}

// writeProcs writes a PS_PROC for each process of the snapshot and each
// outside one the sample has (a holder or waiter of its pipes), each
// container once, before the first process in it.
func (s *Writer) writeProcs(smp *pipemodel.Sample) error {
	refs := map[string]uint32{}
	for _, pid := range sortedPIDs(smp.Procs) {
		pr := smp.Procs[pid]
		if !pr.Outside && !s.met[pid] {
			continue
		}
		rec := format.Proc{PID: pid, NSPID: pr.NSPID, CgroupID: pr.CgroupID, Cgroup: pr.Cgroup, CgroupTruncated: pr.CgroupTruncated, Comm: pr.Comm}
		if len(rec.Comm) > 15 {
			rec.Comm = rec.Comm[:15]
		}
		if c := pr.Container; c != nil && c.ID != "" {
			ref, ok := refs[c.ID]
			if !ok {
				ref = uint32(len(refs) + 1)
				fc := format.Container{Ref: ref, Runtime: c.Runtime, ID: c.ID, Name: c.Name, Pod: c.Pod, Namespace: c.Namespace, KubeName: c.KubeName}
				if err := s.enc.WriteContainer(fc); err != nil {
					return wrap(err)
				}
				refs[c.ID] = ref
			}
			rec.Container, rec.Monitor = ref, c.Monitor
		}
		if err := s.enc.WriteProc(rec); err != nil {
			return wrap(err)
		}
	}
	return nil
}

// waiterRecord turns a live waiter into its record. Only tasks are
// recorded, and of poll and epoll entries only those whose task is
// asleep in the call: an epoll registration nobody waits on tells
// nothing of who waits.
func waiterRecord(ref int32, w pipemodel.Waiter) (format.Waiter, bool) {
	if w.PID == 0 || !w.Asleep() {
		return format.Waiter{}, false
	}
	fw := format.Waiter{PipeRef: ref, PID: w.PID, TID: w.TID, State: stateByte(w.State), EpollFD: -1,
		Events: w.Events, Wait: w.Wait, WaitKnown: true, Outside: w.Outside, Comm: w.Comm}
	if w.Queue == pipemodel.QueueWrite {
		fw.Queue = format.QueueWrite
	}
	switch w.Kind {
	case pipemodel.WaiterBlocked:
		fw.Via, fw.Events = format.ViaDirect, 0
	case pipemodel.WaiterPoll:
		fw.Via = format.ViaPoll
	case pipemodel.WaiterEpoll:
		fw.Via = format.ViaEpoll
		if w.EpollFD > 0 {
			fw.EpollFD = w.EpollFD
		}
	default:
		return format.Waiter{}, false
	}
	if len(fw.Comm) > 15 {
		fw.Comm = fw.Comm[:15]
	}
	return fw, true
}

func stateByte(s pipemodel.State) byte {
	if len(s) != 1 || !format.ValidState(s[0]) {
		return 0
	}
	return s[0]
}

func sortedPIDs(m map[uint32]*pipemodel.Proc) []uint32 {
	out := make([]uint32, 0, len(m))
	for pid := range m {
		out = append(out, pid)
	}
	slices.Sort(out)
	return out
}

// Trim drops from smp what the wait records never read: the holders and
// slots of every pipe, and the pipes no recordable waiter waits on. A
// sample of many pipes is mostly that, and a dump holds its sample
// through the whole walk.
func Trim(smp *pipemodel.Sample) {
	if smp == nil {
		return
	}
	var kept []*pipemodel.Pipe
	for i, p := range smp.Pipes {
		var ws []pipemodel.Waiter
		for _, w := range p.Waiters {
			if _, ok := waiterRecord(0, w); ok {
				ws = append(ws, w)
			}
		}
		if len(ws) > 0 {
			kept = append(kept, &pipemodel.Pipe{Ino: p.Ino, Waiters: ws})
		}
		smp.Pipes[i] = nil
	}
	smp.Pipes = kept
}
