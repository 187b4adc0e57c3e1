package main

import (
	"bufio"
	"fmt"
	"io"
	"slices"
	"strconv"
	"strings"

	"github.com/pipesnap/pipesnap/diagnose"
	"github.com/pipesnap/pipesnap/internal/table"
	"github.com/pipesnap/pipesnap/internal/termsafe"
	"github.com/pipesnap/pipesnap/pipemodel"
)

// tableOptions shape ls's and watch's table of pipes (stateTable).
type tableOptions struct {
	bar   bool                                      // a fill bar column
	rates map[uint64]pipemodel.Flow                 // watch: what went through, per pipe
	dt    float64                                   // seconds the rates are over
	order func([]*pipemodel.Pipe) []*pipemodel.Pipe // row order; nil: by inode
	rows  int                                       // at most this many rows; 0: all
}

// writeStateTable writes the table of a whole sample (watch's order and
// row bound apply).
func writeStateTable(w io.Writer, s *pipemodel.Sample, opt tableOptions) error {
	t := newStateTable(s, opt)
	pipes := s.Pipes
	if opt.order != nil {
		pipes = opt.order(pipes)
	}
	for _, p := range pipes {
		t.pipe(p)
	}
	return t.write(w)
}

// stateTable is ls's and watch's table, a row at a time: given the
// sample's head (its processes, open waits and gone pids), then each
// pipe, so that a streamed sample is laid out without being held.
type stateTable struct {
	s     *pipemodel.Sample
	opt   tableOptions
	pods  bool
	tb    table.Table
	width int
	shown int // rows added
	left  int // rows left out by opt.rows
}

func newStateTable(s *pipemodel.Sample, opt tableOptions) *stateTable {
	t := &stateTable{s: s, opt: opt, pods: hasPods(s)}
	head := []string{"INO", "KIND", "BYTES/CAPACITY"}
	if opt.bar {
		head = append(head, "FILL")
	}
	if opt.rates != nil {
		head = append(head, "IN", "OUT")
	}
	head = append(head, "R", "W", "WAIT", "STATE", "CONTAINER")
	if t.pods {
		head = append(head, "POD")
	}
	head = append(head, "HOLDERS", "PATH")
	t.width = len(head)
	t.tb.Add(head...)
	return t
}

// room tells whether another row fits opt.rows, counting it out if not.
func (t *stateTable) room() bool {
	if t.opt.rows > 0 && t.shown == t.opt.rows {
		t.left++
		return false
	}
	t.shown++
	return true
}

func u10(v uint64) string { return strconv.FormatUint(v, 10) }

// pipe adds a pipe's row.
func (t *stateTable) pipe(p *pipemodel.Pipe) {
	if !t.room() {
		return
	}
	s, opt := t.s, t.opt
	fill := u10(p.Bytes) + "/" + u10(p.Capacity)
	if p.BadRing {
		fill = "?/" + u10(p.Capacity) + " (ring unreadable)"
	}
	cols := make([]string, 0, t.width)
	cols = append(cols, u10(p.Ino), p.Kind, fill)
	if opt.bar {
		cols = append(cols, fillBar(p.Bytes, p.Capacity, 10))
	}
	if opt.rates != nil {
		in, out := "-", "-"
		if f, ok := opt.rates[p.Ino]; ok && opt.dt > 0 {
			in, out = rate(float64(f.Written)/opt.dt, f.Exact), rate(float64(f.Read)/opt.dt, f.Exact)
		}
		cols = append(cols, in, out)
	}
	wait := "-"
	if d, ok := p.LongestWait(); ok {
		wait = diagnose.Duration(d)
	}
	cols = append(cols, u10(uint64(p.Readers)), u10(uint64(p.Writers)), wait, holderStates(s, p), containersText(s, p))
	if t.pods {
		cols = append(cols, podsText(s, p))
	}
	cols = append(cols, holdersText(s, p))
	t.tb.Add(withPath(cols, termsafe.String(p.Path))...)
}

// write adds the open waits' rows and writes the table and its notes.
func (t *stateTable) write(w io.Writer) error {
	s, opt := t.s, t.opt
	for _, ow := range s.OpenWaits {
		if !t.room() {
			continue
		}
		cols := []string{u10(ow.Ino), "fifo", "-"}
		if opt.bar {
			cols = append(cols, "")
		}
		if opt.rates != nil {
			cols = append(cols, "-", "-")
		}
		cols = append(cols, u10(uint64(ow.Readers)), u10(uint64(ow.Writers)), diagnose.Duration(ow.Wait), ow.State.Name(), "-")
		if t.pods {
			cols = append(cols, "-")
		}
		cols = append(cols, fmt.Sprintf("%d(%s):-:%s:opening", ow.PID, termsafe.String(ow.Comm), ow.End))
		t.tb.Add(withPath(cols, termsafe.String(ow.Path))...)
	}
	bw := bufio.NewWriter(w)
	if _, err := t.tb.WriteTo(bw); err != nil {
		return err
	}
	if t.left > 0 {
		fmt.Fprintf(bw, "... %s more\n", count(t.left, "pipe", "pipes"))
	}
	for _, pid := range s.Gone {
		fmt.Fprintf(bw, "note: pid %d exited\n", pid)
	}
	return bw.Flush()
}

// withPath adds a FIFO's path as the last cell. Rows without one end at
// HOLDERS, so that column is padded only where a path follows it, and a
// long path widens no other column.
func withPath(cols []string, path string) []string {
	if path == "" {
		return cols
	}
	return append(cols, path)
}

// holderStates lists the states of the processes holding a pipe, the
// ones that stop a pipeline first: "stopped,sleeping".
func holderStates(s *pipemodel.Sample, p *pipemodel.Pipe) string {
	var seen [len(stateOrder)]bool
	found := false
	for _, h := range p.Holders {
		if pr := s.Procs[h.PID]; pr != nil {
			if i := slices.Index(stateOrder[:], pr.State); i >= 0 {
				seen[i], found = true, true
			}
		}
	}
	if !found {
		return "-"
	}
	out := ""
	for i, st := range stateOrder {
		if seen[i] {
			if out != "" {
				out += ","
			}
			out += st.Name()
		}
	}
	return out
}

// stateOrder is holderStates': the states that stop a pipeline first.
var stateOrder = [...]pipemodel.State{"T", "t", "D", "Z", "X", "R", "S", "I", "P"}

// holdersText shows each holder as pid(comm):fd:end, with :blocked
// (asleep in read or write on the pipe), :waiting (in poll, select or
// epoll_wait for it), or :polling (in poll/select with it, waiting for
// something else), and :stopped, :zombie or :uninterruptible for such a
// process; then the tasks blocked on the pipe outside the walk.
func holdersText(s *pipemodel.Sample, p *pipemodel.Pipe) string {
	var parts []string
	for _, h := range p.Holders {
		pr := s.Procs[h.PID]
		pid := ""
		if pr != nil {
			pid = pr.PIDText()
		} else {
			pid = strconv.FormatUint(uint64(h.PID), 10)
		}
		str := pid + "(" + termsafe.String(h.Comm) + "):" + strconv.FormatInt(int64(h.FD), 10) + ":" + string(h.End)
		switch {
		case h.Blocked != "":
			str += ":blocked"
			if h.End == pipemodel.EndRdwr {
				str += "-" + h.Blocked
			}
		case h.Waiting != "":
			str += ":waiting"
			if h.End == pipemodel.EndRdwr {
				str += "-" + h.Waiting
			}
		case h.Polling:
			str += ":polling"
		}
		if pr != nil {
			switch pr.State {
			case "T", "t":
				str += ":stopped"
			case "Z":
				str += ":zombie"
			case "D":
				str += ":uninterruptible"
			}
		}
		parts = append(parts, str)
	}
	for _, wt := range p.Waiters {
		switch {
		case wt.Kind == pipemodel.WaiterBlocked && wt.PID == 0:
			// Asleep on the pipe, but in no pid of pipesnap's namespace.
			parts = append(parts, fmt.Sprintf("?(outside the pid namespace):-:%s:blocked", wt.Queue))
		case wt.Kind == pipemodel.WaiterBlocked && wt.Outside && !p.Holds(wt.PID):
			parts = append(parts, fmt.Sprintf("%d(%s):-:%s:blocked", wt.PID, termsafe.String(wt.Comm), wt.Queue))
		}
	}
	if len(parts) == 0 {
		return "-"
	}
	return strings.Join(parts, " ")
}

func fillBar(n, capacity uint64, width int) string {
	full := 0
	if capacity > 0 {
		full = int((n*uint64(width) + capacity - 1) / capacity)
	}
	full = min(full, width)
	return "[" + strings.Repeat("#", full) + strings.Repeat(".", width-full) + "]"
}

// rate prints bytes per second with binary prefixes: 512B/s,
// 1.5KiB/s (1 KiB = 1024 bytes), 3.2MiB/s, 1.1GiB/s.
func rate(bps float64, exact bool) string {
	s := ""
	switch {
	case bps >= 1<<30:
		s = fmt.Sprintf("%.1fGiB/s", bps/(1<<30))
	case bps >= 1<<20:
		s = fmt.Sprintf("%.1fMiB/s", bps/(1<<20))
	case bps >= 1<<10:
		s = fmt.Sprintf("%.1fKiB/s", bps/(1<<10))
	default:
		s = fmt.Sprintf("%.0fB/s", bps)
	}
	if !exact {
		s = "~" + s
	}
	return s
}
