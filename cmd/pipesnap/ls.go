package main

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"os/signal"
	"slices"
	"strconv"
	"strings"
	"syscall"

	"github.com/pipesnap/pipesnap/diagnose"
	"github.com/pipesnap/pipesnap/internal/table"
	"github.com/pipesnap/pipesnap/internal/termsafe"
	"github.com/pipesnap/pipesnap/pipemodel"

	"github.com/urfave/cli/v2"
	"golang.org/x/sys/unix"

	"github.com/pipesnap/pipesnap/pipestate"
)

func stateError(what string, err error) error {
	switch {
	case errors.Is(err, pipestate.ErrNoProcess):
		return err // a process that does not exist: exit 1, not a usage error
	case errors.Is(err, pipestate.ErrPermission):
		return err
	case errors.Is(err, context.Canceled):
		return fmt.Errorf("%s interrupted", what)
	}
	return fmt.Errorf("%s: %w", what, err)
}

// signalContext is cancelled by SIGINT or SIGTERM.
func signalContext() (context.Context, context.CancelFunc) {
	return signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
}

func lsCommand() *cli.Command {
	return &cli.Command{
		Name:      "ls",
		Usage:     "list pipes and FIFOs: fill, holders, and who is blocked on them right now",
		ArgsUsage: " ",
		Description: `Prints one row per pipe or FIFO: inode, kind, bytes queued / capacity
(with a fill bar on a terminal), the kernel's count of open read and
write ends (R, W), WAIT: how long the task waiting longest on it has
waited (since it last ran, from the kernel's scheduler timestamps), STATE:
the holders' process states (stopped, zombie, uninterruptible, running,
sleeping), CONTAINER: the containers of the holders (and POD,
namespace/pod, when one runs in a Kubernetes pod), the holders as
pid(comm):fd:end (pid as 24524/1 when its own pid namespace calls it
1), and a FIFO's path last.

A holder marked :blocked has a thread asleep in read or write on this
pipe right now; :waiting, a thread asleep in poll, select or epoll_wait
waiting for it to become readable (when it is empty) or writable (when
it is full): as good as blocked for a Go, Node or asyncio program;
:polling, a thread in poll/select with it for something else. :stopped,
:zombie and :uninterruptible mark a holder in that state. Blocked and
waiting come from the kernel: the pipe's wait queues are walked, a sleeper
compared with the holders' threads (any thread, not only the main one),
and an epoll entry followed to the epoll instance and to the thread
asleep in epoll_wait on it. A task blocked on the pipe in a process that
was not walked is shown as pid(comm):-:end:blocked. A task asleep in
open(2) of a FIFO, waiting for the other end to be opened, holds no fd
yet: it gets a row of its own, pid(comm):-:end:opening.

` + scopeHelp + `

--json prints one object: pipes (ino, kind, path, bytes, capacity, bufs,
readers, writers, unseen_readers, unseen_writers, moving, holders [pid,
comm, fd, end, blocked ("reading", "writing" or ""), blocked_tids,
waiting, via ("poll" or "epoll"), epoll_fd, waiting_tids, polling,
wait_ns, outside], waiters [queue, kind (blocked, poll, epoll, other),
pid, tid, comm, state, sleeping, events, epoll_fd, target_fd, wait_ns,
outside]), procs (pid, comm, state, threads, idle_ns, idle_known, tasks
[tid, state, idle_ns]), gone (requested pids that exited) and open_waits
(pid, tid, comm, state, end, ino, path, wait_ns, readers, writers).

` + residentHelp,
		Flags: append(scopeFlags(),
			&cli.BoolFlag{Name: "json", Usage: "print one JSON object instead of the table"},
			directFlag(),
		),
		OnUsageError: onUsageError,
		Action: func(c *cli.Context) error {
			s, err := openSampler(c, "ls", false, true)
			if err != nil {
				return err
			}
			defer s.Close()
			ctx, stop := signalContext()
			defer stop()
			// Laid out as the pipes come: a resident serve's sample is
			// never held whole.
			var j *stateJSONWriter
			var t *stateTable
			err = s.SampleEach(ctx, func(head *pipemodel.Sample) error {
				if c.Bool("json") {
					j = newStateJSON(os.Stdout, head)
				} else {
					t = newStateTable(head, tableOptions{bar: isTerminal(os.Stdout)})
				}
				return nil
			}, func(p *pipemodel.Pipe) error {
				if j != nil {
					return j.pipe(p)
				}
				t.pipe(p)
				return nil
			})
			if err != nil {
				return stateError("ls", err)
			}
			if j != nil {
				return j.finish()
			}
			return t.write(os.Stdout)
		},
	}
}

type jsonState struct {
	Pipes     []jsonStatePipe      `json:"pipes"`
	Procs     []pipemodel.Proc     `json:"procs"`
	Gone      []uint32             `json:"gone"`
	OpenWaits []pipemodel.OpenWait `json:"open_waits"`
	// TookUS is how long the kernel walk took, in microseconds.
	TookUS int64 `json:"took_us"`
}

type jsonStatePipe struct {
	Ino           uint64             `json:"ino"`
	Kind          string             `json:"kind"`
	Path          string             `json:"path"`
	Bytes         uint64             `json:"bytes"`
	Capacity      uint64             `json:"capacity"`
	Bufs          uint32             `json:"bufs"`
	Readers       uint32             `json:"readers"`
	Writers       uint32             `json:"writers"`
	UnseenReaders uint32             `json:"unseen_readers"`
	UnseenWriters uint32             `json:"unseen_writers"`
	Moving        bool               `json:"moving"`
	BadRing       bool               `json:"bad_ring"`
	Holders       []pipemodel.Holder `json:"holders"`
	Waiters       []pipemodel.Waiter `json:"waiters"`
}

func stateJSON(s *pipemodel.Sample) jsonState {
	out := jsonState{Pipes: []jsonStatePipe{}, Procs: []pipemodel.Proc{}, Gone: []uint32{}, TookUS: s.Took.Microseconds(),
		OpenWaits: append([]pipemodel.OpenWait{}, s.OpenWaits...)}
	for _, p := range s.Pipes {
		out.Pipes = append(out.Pipes, statePipeJSON(p))
	}
	for _, pr := range sortedProcs(s) {
		out.Procs = append(out.Procs, *pr)
	}
	out.Gone = append(out.Gone, s.Gone...)
	return out
}

func statePipeJSON(p *pipemodel.Pipe) jsonStatePipe {
	jp := jsonStatePipe{
		Ino: p.Ino, Kind: p.Kind, Path: p.Path, Bytes: p.Bytes, Capacity: p.Capacity, Bufs: p.Bufs,
		Readers: p.Readers, Writers: p.Writers, UnseenReaders: p.UnseenReaders, UnseenWriters: p.UnseenWriters,
		Moving: p.Moving, BadRing: p.BadRing, Holders: p.Holders, Waiters: p.Waiters,
	}
	if jp.Holders == nil {
		jp.Holders = []pipemodel.Holder{}
	}
	if jp.Waiters == nil {
		jp.Waiters = []pipemodel.Waiter{}
	}
	return jp
}

func sortedProcs(s *pipemodel.Sample) []*pipemodel.Proc {
	procs := make([]*pipemodel.Proc, 0, len(s.Procs))
	for _, pr := range s.Procs {
		procs = append(procs, pr)
	}
	slices.SortFunc(procs, func(a, b *pipemodel.Proc) int { return int(a.PID) - int(b.PID) })
	return procs
}

// writeStateJSON writes jsonState indented by two spaces, as
// json.Encoder with SetIndent("", "  ") would, one element at a time: the
// document of 100,000 pipes is never held in memory whole.
func writeStateJSON(w io.Writer, s *pipemodel.Sample) error {
	j := newStateJSON(w, s)
	for _, p := range s.Pipes {
		if err := j.pipe(p); err != nil {
			return err
		}
	}
	return j.finish()
}

// stateJSONWriter writes ls --json a pipe at a time: given the sample's head
// (its processes, gone pids and open waits), then each pipe.
type stateJSONWriter struct {
	bw    *bufio.Writer
	s     *pipemodel.Sample
	pipes int
}

func newStateJSON(w io.Writer, head *pipemodel.Sample) *stateJSONWriter {
	j := &stateJSONWriter{bw: bufio.NewWriterSize(w, 64<<10), s: head}
	j.bw.WriteString("{\n  \"pipes\": [")
	return j
}

func (j *stateJSONWriter) elem(i int, v any) error {
	b, err := json.MarshalIndent(v, "    ", "  ")
	if err != nil {
		return err
	}
	if i > 0 {
		j.bw.WriteByte(',')
	}
	j.bw.WriteString("\n    ")
	_, err = j.bw.Write(b)
	return err
}

func (j *stateJSONWriter) pipe(p *pipemodel.Pipe) error {
	j.pipes++
	return j.elem(j.pipes-1, statePipeJSON(p))
}

// closeArray ends an array of n elements.
func (j *stateJSONWriter) closeArray(n int) {
	if n > 0 {
		j.bw.WriteString("\n  ")
	}
	j.bw.WriteString("],")
}

func (j *stateJSONWriter) finish() error {
	s := j.s
	j.closeArray(j.pipes)
	procs := sortedProcs(s)
	arrays := []struct {
		key  string
		n    int
		elem func(i int) any
	}{
		{"procs", len(procs), func(i int) any { return procs[i] }},
		{"gone", len(s.Gone), func(i int) any { return s.Gone[i] }},
		{"open_waits", len(s.OpenWaits), func(i int) any { return &s.OpenWaits[i] }},
	}
	for _, a := range arrays {
		j.bw.WriteString("\n  \"" + a.key + "\": [")
		for i := range a.n {
			if err := j.elem(i, a.elem(i)); err != nil {
				return err
			}
		}
		j.closeArray(a.n)
	}
	j.bw.WriteString("\n  \"took_us\": " + strconv.FormatInt(s.Took.Microseconds(), 10) + "\n}\n")
	return j.bw.Flush()
}

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

func isTerminal(f *os.File) bool {
	_, err := unix.IoctlGetTermios(int(f.Fd()), unix.TCGETS)
	return err == nil
}
