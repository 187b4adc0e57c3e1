package main

import (
	"bufio"
	"bytes"
	"encoding/json"
	"fmt"
	"io"
	"os"
	"slices"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/urfave/cli/v2"

	"github.com/pipesnap/pipesnap/diagnose"
	"github.com/pipesnap/pipesnap/format"
	"github.com/pipesnap/pipesnap/internal/termsafe"
	"github.com/pipesnap/pipesnap/pipemodel"
	"github.com/pipesnap/pipesnap/snapshot"
)

const previewBytes = 64

func inspectCommand() *cli.Command {
	return &cli.Command{
		Name:      "inspect",
		Usage:     "show what a snapshot holds: pipes, holders, fill, a preview of the bytes",
		ArgsUsage: "FILE",
		Description: `Prints one row per pipe: inode, kind, bytes queued / capacity, number of
buffers, flags (packet, torn, incomplete), the longest wait of a task
waiting on it, the containers of its holders (pod/container under
Kubernetes), the holders as pid(comm):fd:end (marked as ls marks them:
:blocked, :waiting, :polling, :stopped...; pid as 24524/1 when its own
pid namespace calls it 1) and a FIFO's path, then a preview of the
first bytes (text, or hex when not printable). Then the tasks that were
blocked opening a FIFO, and one row per process: state, how long it had
not run, threads, container, where its main thread slept (wchan).
Snapshots of revision 1 recorded no states or waiters, of revision 2 no
containers. FILE - reads stdin. The whole stream is checked (checksum included) before anything
is printed.

--json prints one object: header, tasks (pid, nspid, comm, container
[runtime, id, name, pod, namespace, kube_container, monitor], fds), pipes (ino,
objref, kind, path, capacity, bytes, packet, torn, complete, readers,
writers, buffers, holders, waiters [queue, kind, pid, tid, comm, state,
sleeping, events, epoll_fd, wait_ns, outside]), notes, procs (pid, comm,
state, idle_ns, tasks [tid, state, idle_ns, wchan], nspid, cgroup_id,
cgroup, container) and open_waits (pid,
tid, comm, state, end, ino, path, wait_ns).`,
		Flags: []cli.Flag{
			&cli.BoolFlag{Name: "json", Usage: "print one JSON object instead of the table"},
		},
		OnUsageError: onUsageError,
		Action: func(c *cli.Context) error {
			if c.NArg() != 1 {
				return usagef("inspect needs exactly one FILE")
			}
			s, err := readSnapshot(c.Args().First(), snapshot.Options{Preview: previewBytes})
			if err != nil {
				return err
			}
			if c.Bool("json") {
				return writeJSON(os.Stdout, s)
			}
			return writeTable(os.Stdout, s)
		},
	}
}

func readSnapshot(path string, opt snapshot.Options) (*snapshot.Snapshot, error) {
	var r io.Reader = os.Stdin
	if path != "-" {
		f, err := os.Open(path)
		if err != nil {
			return nil, fmt.Errorf("opening snapshot: %w", err)
		}
		defer f.Close()
		r = f
	}
	s, err := snapshot.Read(r, opt)
	if err != nil {
		return nil, fmt.Errorf("reading %s: %w", path, err)
	}
	return s, nil
}

func pipeFlags(p *snapshot.Pipe) []string {
	var fl []string
	if p.Status&format.StatusPacket != 0 {
		fl = append(fl, "packet")
	}
	if p.Status&format.StatusTorn != 0 {
		fl = append(fl, "torn")
	}
	if p.Status&format.StatusIncomplete != 0 {
		fl = append(fl, "incomplete("+p.Reason.String()+")")
	}
	return fl
}

func writeTable(w io.Writer, s *snapshot.Snapshot) error {
	h := s.Header
	fmt.Fprintf(w, "snapshot of %s (%s), %s: %s, %s\n\n",
		termsafe.String(h.Release), termsafe.String(h.Machine), h.Time.Format(time.RFC3339), count(len(s.Tasks), "process", "processes"), count(len(s.Pipes), "pipe", "pipes"))
	smp := s.Sample()
	tw := tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
	pods := hasPods(smp)
	head := "INO\tKIND\tBYTES/CAPACITY\tBUFS\tFLAGS\tWAIT\tCONTAINER\tHOLDERS\tPATH"
	if pods {
		head = strings.Replace(head, "CONTAINER", "CONTAINER\tPOD", 1)
	}
	fmt.Fprintln(tw, head)
	for _, p := range s.Pipes {
		flags := strings.Join(pipeFlags(p), ",")
		if flags == "" {
			flags = "-"
		}
		holders, wait, conts, podNames := "-", "-", "-", "-"
		if mp := smp.Find(p.Ino); mp != nil {
			holders, conts, podNames = holdersText(smp, mp), containersText(smp, mp), podsText(smp, mp)
			if d, ok := mp.LongestWait(); ok {
				wait = diagnose.Duration(d)
			}
		}
		cols := []string{fmt.Sprint(p.Ino), p.Kind.String(), fmt.Sprintf("%d/%d", p.Bytes, p.Capacity),
			fmt.Sprint(len(p.Buffers)), flags, wait, conts}
		if pods {
			cols = append(cols, podNames)
		}
		cols = append(cols, holders)
		fmt.Fprintln(tw, strings.Join(withPath(cols, termsafe.String(p.Path)), "\t"))
		if p.Bytes > 0 {
			for _, line := range strings.Split(preview(p), "\n") {
				fmt.Fprintf(tw, "%s%s\n", strings.Repeat("\t", len(cols)-1), line) // under HOLDERS: the last cell sets no width
			}
		}
	}
	if err := tw.Flush(); err != nil {
		return err
	}
	for _, o := range smp.OpenWaits {
		what := "writing: no reader had opened it"
		if o.End == pipemodel.EndRead {
			what = "reading: no writer had opened it"
		}
		fmt.Fprintf(w, "open: %s (pid %d) blocked %s opening FIFO %s (inode %d) for %s\n",
			termsafe.String(o.Comm), o.PID, diagnose.Duration(o.Wait), termsafe.String(orDash(o.Path)), o.Ino, what)
	}
	if len(s.TaskStates) > 0 {
		fmt.Fprintln(w)
		tw = tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
		if pods {
			fmt.Fprintln(tw, "PID\tCOMM\tSTATE\tIDLE\tTHREADS\tCONTAINER\tPOD\tWCHAN")
		} else {
			fmt.Fprintln(tw, "PID\tCOMM\tSTATE\tIDLE\tTHREADS\tCONTAINER\tWCHAN")
		}
		for _, pid := range procOrder(smp) {
			pr := smp.Procs[pid]
			if len(pr.Tasks) == 0 {
				continue // known only from a PS_PROC: no state was recorded
			}
			idle, wchan := "-", "-"
			if pr.IdleKnown {
				idle = diagnose.Duration(pr.Idle)
			}
			if len(pr.Tasks) > 0 && pr.Tasks[0].Wchan != "" {
				wchan = pr.Tasks[0].Wchan
			}
			cont := orDash(termsafe.String(pr.Container.Label()))
			if pods {
				cont += "\t" + orDash(termsafe.String(podText(pr.Container)))
			}
			fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%d\t%s\t%s\n", pr.PIDText(), termsafe.String(pr.Comm), pr.State.Name(), idle, len(pr.Tasks),
				cont, termsafe.String(wchan))
		}
		if err := tw.Flush(); err != nil {
			return err
		}
	} else if s.Header.Revision < 2 {
		fmt.Fprintln(w, "note: a revision 1 snapshot: no task states or waiters were recorded")
	}
	for _, n := range s.Notes {
		fmt.Fprintf(w, "note: %s\n", termsafe.String(n.Msg))
	}
	return nil
}

// procOrder lists a sample's processes by pid.
func procOrder(s *pipemodel.Sample) []uint32 {
	var out []uint32
	for pid := range s.Procs {
		out = append(out, pid)
	}
	slices.Sort(out)
	return out
}

// jsonSnapshot is what inspect --json writes (writeJSON writes it
// piece by piece).
type jsonSnapshot struct {
	Header    jsonHeader           `json:"header"`
	Tasks     []jsonTask           `json:"tasks"`
	Pipes     []jsonPipe           `json:"pipes"`
	Notes     []jsonNote           `json:"notes"`
	Procs     []pipemodel.Proc     `json:"procs"`      // states and threads (revision 2), containers (3)
	OpenWaits []pipemodel.OpenWait `json:"open_waits"` // tasks blocked opening a FIFO (revision 2)
}

type jsonHeader struct {
	Revision uint16    `json:"revision"`
	Time     time.Time `json:"time"`
	Release  string    `json:"release"`
	Version  string    `json:"version"`
	Machine  string    `json:"machine"`
	Frozen   bool      `json:"frozen"`
}

type jsonTask struct {
	jsonTaskHead
	FDs []jsonFD `json:"fds"`
}

type jsonFD struct {
	FD      int32  `json:"fd"`
	Ino     uint64 `json:"ino"`
	End     string `json:"end"`
	Cloexec bool   `json:"cloexec"`
	Flags   uint32 `json:"flags"`
}

type jsonPipe struct {
	jsonPipeHead
	Buffers []jsonBuffer       `json:"buffers"`
	Holders []jsonHolder       `json:"holders"`
	Waiters []pipemodel.Waiter `json:"waiters"`
}

type jsonBuffer struct {
	Offset uint32 `json:"offset"`
	Len    uint32 `json:"len"`
	Flags  uint32 `json:"flags"`
}

type jsonHolder struct {
	PID  uint32 `json:"pid"`
	Comm string `json:"comm"`
	FD   int32  `json:"fd"`
	End  string `json:"end"`
}

type jsonNote struct {
	PID  uint32 `json:"pid"`
	Code uint32 `json:"code"`
	Msg  string `json:"msg"`
}

// writeJSON writes the snapshot as one JSON object, the one jsonSnapshot
// would marshal to, indented, element by element: memory is what the
// snapshot holds, not also a copy of it and the whole output. Each task,
// pipe, note, process and open wait is marshaled on its own, and so is
// each fd of a task and each buffer, holder and waiter of a pipe (a
// process with a million fds is a million small values).
func writeJSON(w io.Writer, s *snapshot.Snapshot) error {
	smp := sampleWithoutFDs(s)
	j := &jsonStream{w: bufio.NewWriterSize(w, 64<<10)}
	j.str("{")
	j.key(1, "header", true)
	j.value(1, jsonHeader{
		Revision: s.Header.Revision, Time: s.Header.Time, Release: s.Header.Release,
		Version: s.Header.Version, Machine: s.Header.Machine, Frozen: s.Header.Flags&format.HeaderFrozen != 0,
	})
	j.key(1, "tasks", false)
	j.array(1, len(s.Tasks), func(i int) {
		t := s.Tasks[i]
		head := jsonTaskHead{PID: t.PID, TID: t.TID, Comm: t.Comm, UID: t.UID}
		if pr := smp.Procs[t.PID]; pr != nil {
			head.NSPID, head.Container = pr.NSPID, pr.Container
		}
		j.head(2, head)
		j.key(3, "fds", false)
		j.array(3, len(t.FDs), func(i int) {
			fd := t.FDs[i]
			j.value(4, jsonFD{FD: fd.FD, Ino: fd.Ino, End: fd.End, Cloexec: fd.Cloexec, Flags: fd.Flags})
		})
		j.end(2)
	})
	j.key(1, "pipes", false)
	j.array(1, len(s.Pipes), func(i int) {
		p := s.Pipes[i]
		head := jsonPipeHead{
			Ino: p.Ino, Objref: p.Ref, Kind: p.Kind.String(), Path: p.Path, Capacity: p.Capacity, Bytes: p.Bytes,
			Packet: p.Status&format.StatusPacket != 0, Torn: p.Status&format.StatusTorn != 0, Complete: p.Complete(),
			Readers: p.Readers, Writers: p.Writers,
		}
		if p.Reason != format.ReasonNone {
			head.Reason = p.Reason.String()
		}
		j.head(2, head)
		j.key(3, "buffers", false)
		j.array(3, len(p.Buffers), func(i int) {
			b := p.Buffers[i]
			j.value(4, jsonBuffer{Offset: b.Offset, Len: b.Len, Flags: b.Flags})
		})
		j.key(3, "holders", false)
		j.array(3, len(p.Holders), func(i int) {
			h := p.Holders[i]
			j.value(4, jsonHolder{PID: h.PID, Comm: h.Comm, FD: h.FD, End: h.End})
		})
		var waiters []pipemodel.Waiter
		if mp := smp.Find(p.Ino); mp != nil {
			waiters = mp.Waiters
		}
		j.key(3, "waiters", false)
		j.array(3, len(waiters), func(i int) { j.value(4, waiters[i]) })
		j.end(2)
	})
	j.key(1, "notes", false)
	j.array(1, len(s.Notes), func(i int) {
		n := s.Notes[i]
		j.value(2, jsonNote{PID: n.PID, Code: n.Code, Msg: n.Msg})
	})
	var procs []*pipemodel.Proc
	for _, pid := range procOrder(smp) {
		if pr := smp.Procs[pid]; len(pr.Tasks) > 0 || pr.Container != nil || pr.NSPID != 0 || pr.Cgroup != "" {
			procs = append(procs, pr)
		}
	}
	j.key(1, "procs", false)
	j.array(1, len(procs), func(i int) { j.value(2, procs[i]) })
	j.key(1, "open_waits", false)
	j.array(1, len(smp.OpenWaits), func(i int) { j.value(2, smp.OpenWaits[i]) })
	j.str("\n}\n")
	if j.err != nil {
		return j.err
	}
	return j.w.Flush()
}

// sampleWithoutFDs is s.Sample() for what writeJSON takes of it: the
// processes, the open waits and each pipe's waiters, none of which an fd
// changes. Made from the tasks without their fds, one per process (the
// first names it), it costs no memory or time per fd.
func sampleWithoutFDs(s *snapshot.Snapshot) *pipemodel.Sample {
	light := *s
	light.Tasks = nil
	seen := make(map[uint32]bool)
	for _, t := range s.Tasks {
		if !seen[t.PID] {
			seen[t.PID] = true
			light.Tasks = append(light.Tasks, &snapshot.Task{Task: t.Task})
		}
	}
	return light.Sample()
}

// jsonTaskHead is jsonTask without its fds, which writeJSON streams.
type jsonTaskHead struct {
	PID       uint32               `json:"pid"`
	TID       uint32               `json:"tid"`
	Comm      string               `json:"comm"`
	UID       uint32               `json:"uid"`
	NSPID     uint32               `json:"nspid,omitempty"`
	Container *pipemodel.Container `json:"container,omitempty"`
}

// jsonPipeHead is jsonPipe without its buffers, holders and waiters.
type jsonPipeHead struct {
	Ino      uint64 `json:"ino"`
	Objref   int32  `json:"objref"`
	Kind     string `json:"kind"`
	Path     string `json:"path"`
	Capacity uint32 `json:"capacity"`
	Bytes    uint64 `json:"bytes"`
	Packet   bool   `json:"packet"`
	Torn     bool   `json:"torn"`
	Complete bool   `json:"complete"`
	Reason   string `json:"reason,omitempty"`
	Readers  uint32 `json:"readers"`
	Writers  uint32 `json:"writers"`
}

// jsonStream writes indented JSON as json.Encoder with SetIndent("",
// "  ") writes one value, a piece at a time. Depth d is indented 2d
// spaces.
type jsonStream struct {
	w   *bufio.Writer
	err error
}

func (j *jsonStream) str(s string) {
	if j.err == nil {
		_, j.err = j.w.WriteString(s)
	}
}

func jsonIndent(depth int) string { return strings.Repeat("  ", depth) }

// value writes v, a value at depth.
func (j *jsonStream) value(depth int, v any) {
	if j.err != nil {
		return
	}
	b, err := json.MarshalIndent(v, jsonIndent(depth), "  ")
	if err != nil {
		j.err = err
		return
	}
	_, j.err = j.w.Write(b)
}

// key starts the member name of an object whose members are at depth.
func (j *jsonStream) key(depth int, name string, first bool) {
	if !first {
		j.str(",")
	}
	j.str("\n" + jsonIndent(depth) + `"` + name + `": `)
}

// array writes an array of n elements at depth, elem(i) writing each.
func (j *jsonStream) array(depth, n int, elem func(i int)) {
	if n == 0 {
		j.str("[]")
		return
	}
	j.str("[")
	for i := 0; i < n && j.err == nil; i++ {
		if i > 0 {
			j.str(",")
		}
		j.str("\n" + jsonIndent(depth+1))
		elem(i)
	}
	j.str("\n" + jsonIndent(depth) + "]")
}

// head starts an object at depth with the members of struct v; key and
// end add the others and close it.
func (j *jsonStream) head(depth int, v any) {
	if j.err != nil {
		return
	}
	b, err := json.MarshalIndent(v, jsonIndent(depth), "  ")
	if err != nil {
		j.err = err
		return
	}
	b, ok := bytes.CutSuffix(b, []byte("\n"+jsonIndent(depth)+"}"))
	if !ok {
		j.err = fmt.Errorf("json: %T is not an object with members", v)
		return
	}
	_, j.err = j.w.Write(b)
}

// end closes an object head started at depth.
func (j *jsonStream) end(depth int) { j.str("\n" + jsonIndent(depth) + "}") }
