package diagnose

import (
	"fmt"
	"slices"
	"strings"
	"time"

	"github.com/pipesnap/pipesnap/pipemodel"
)

// What each finding says, in words. One function per kind; the deciding
// is in classify.go.

func (d *diagnosis) pipeName(p *pipemodel.Pipe) string {
	if p.Kind == "fifo" && p.Path != "" {
		return fmt.Sprintf("FIFO %s (inode %d)", p.Path, p.Ino)
	}
	return fmt.Sprintf("%s %d", p.Kind, p.Ino)
}

// maxNamed bounds the processes a message describes one by one; the
// JSON lists them all.
const maxNamed = 4

func msgFull(name string, p *pipemodel.Pipe, waiting, readers []Task, unseen uint32, scoped bool) string {
	fill := fmt.Sprintf("which is full (%d/%d bytes)", p.Bytes, p.Capacity)
	if !p.Full() {
		fill = fmt.Sprintf("which holds %d/%d bytes", p.Bytes, p.Capacity)
	}
	var s string
	if len(waiting) > 0 {
		s = fmt.Sprintf("%s %s waiting %s to write to %s, %s", who(waiting), be(waiting, "has been", "have been"),
			waitedFor(waiting), name, fill)
	} else {
		s = fmt.Sprintf("%s is full (%d/%d bytes) and nobody waits to write to it", name, p.Bytes, p.Capacity)
	}
	return s + "; " + otherEnd(readers, unseen, "reader", "reading it", scoped)
}

// msgRuntimeReader says it in those words when a container is blocked
// writing its stdout or stderr because the runtime's reader of them (a
// conmon, a containerd-shim) does not read: every writer waiting is in
// one container, every reader is that container's monitor.
func msgRuntimeReader(name string, p *pipemodel.Pipe, waiting, readers []Task) (string, bool) {
	if len(waiting) == 0 || len(readers) == 0 {
		return "", false
	}
	id := waiting[0].ContainerID
	for _, t := range waiting {
		if t.ContainerID == "" || t.ContainerID != id || t.Monitor {
			return "", false
		}
	}
	for _, t := range readers {
		if !t.Monitor || t.ContainerID != id {
			return "", false
		}
	}
	ctr := "container " + waiting[0].Container
	if waiting[0].Pod != "" {
		ctr += " of pod " + waiting[0].Pod
	}
	return fmt.Sprintf("%s is blocked writing its output: %s %s been waiting %s to write to %s, which is full (%d/%d bytes), "+
		"and the container runtime's reader of it, %s", ctr, who(waiting), be(waiting, "has", "have"), waitedFor(waiting),
		name, p.Bytes, p.Capacity, strings.TrimPrefix(otherEnd(readers, 0, "reader", "reading it", false), "its reader ")), true
}

func msgUnread(name string, p *pipemodel.Pipe, waiting, readers []Task, unseen uint32, scoped bool) string {
	s := fmt.Sprintf("%s holds %s that nobody reads", name, count(int(p.Bytes), "byte", "bytes"))
	if p.Writers == 0 {
		s += ", and no writer is left"
	}
	if len(waiting) > 0 {
		s += fmt.Sprintf("; %s %s been waiting %s in %s for more, but %s not read what is there",
			who(waiting), be(waiting, "has", "have"), waitedFor(waiting), waiting[0].Via, be(waiting, "has", "have"))
		return s
	}
	return s + "; " + otherEnd(readers, unseen, "reader", "reading it", scoped)
}

func msgWriterGone(name string, waiting, own []Task) string {
	var fds []string
	for _, t := range own {
		for _, fd := range t.FDs {
			fds = append(fds, fmt.Sprintf("fd %d of %s (pid %d)", fd, t.Comm, t.PID))
		}
	}
	return fmt.Sprintf("%s %s waiting %s to read %s, which is empty, and will wait forever: "+
		"the only write %s left %s its own (%s), so end of file never comes "+
		"(the writer is gone; the reader should close its copy of the write end)",
		who(waiting), be(waiting, "has been", "have been"), waitedFor(waiting), name,
		plural(len(fds), "end", "ends"), plural(len(fds), "is", "are"), strings.Join(fds, ", "))
}

func msgWriterStopped(name string, waiting, stopped []Task) string {
	var parts []string
	for _, t := range stopped {
		s := fmt.Sprintf("%s (pid %d) is ", t.Comm, t.PID)
		if t.State == "D" {
			s += fmt.Sprintf("in uninterruptible sleep%s%s", in(t.Wchan), idleFor(t))
		} else {
			s += fmt.Sprintf("stopped (state %s)%s: it will not write until it is continued (kill -CONT %d)", t.State, idleFor(t), t.PID)
		}
		parts = append(parts, s)
	}
	return fmt.Sprintf("%s %s waiting %s to read %s, which is empty; its %s %s",
		who(waiting), be(waiting, "has been", "have been"), waitedFor(waiting), name,
		plural(len(stopped), "writer", "writers"), strings.Join(parts, "; "))
}

func msgIdle(name string, waiting, writers []Task, unseen uint32, scoped bool) string {
	s := fmt.Sprintf("%s %s waiting %s for input on %s, which is empty (%s)",
		who(waiting), be(waiting, "has been", "have been"), waitedFor(waiting), name, how(waiting))
	if len(writers) == 0 {
		return s + "; " + otherEnd(writers, unseen, "writer", "writing", scoped)
	}
	var parts []string
	for i, t := range writers {
		if i == maxNamed {
			parts = append(parts, fmt.Sprintf("%d more", len(writers)-maxNamed))
			break
		}
		p := fmt.Sprintf("%s (pid %d) is alive and waiting itself: %s", t.Comm, t.PID, t.sleep())
		if len(t.BlockedOn) > 0 {
			p = fmt.Sprintf("%s (pid %d) is itself %s", t.Comm, t.PID, blockedOn(t))
		}
		parts = append(parts, p)
	}
	return s + "; its " + plural(len(writers), "writer", "writers") + " " + strings.Join(parts, "; ")
}

func msgDataNoReader(name string, bytes uint64, writers []Task) string {
	s := fmt.Sprintf("%s holds %s and has no reader left: they can never be read", name, count(int(bytes), "byte", "bytes"))
	if len(writers) > 0 {
		s += fmt.Sprintf("; %s will get SIGPIPE (or EPIPE) on %s next write", names(writers),
			plural(len(writers), "its", "their"))
	}
	return s
}

func msgNoReaders(name string, writers []Task, unseen uint32) string {
	s := fmt.Sprintf("%s is empty and has no reader left: a write to it gets SIGPIPE (or EPIPE)", name)
	if len(writers) == 0 {
		return s
	}
	const show = 3
	var ns []string
	for i, t := range writers {
		if i == show {
			ns = append(ns, fmt.Sprintf("%d more", len(writers)-show))
			break
		}
		ns = append(ns, fmt.Sprintf("%s (pid %d)", t.Comm, t.PID))
	}
	s += fmt.Sprintf("; its write end is held by %s: %s", count(len(writers), "process", "processes"), join(ns))
	if len(writers) > 1 {
		s += " (an fd inherited that nobody closed?)"
	}
	return s
}

func msgOpen(t Task, ow pipemodel.OpenWait) string {
	path := ow.Path
	if path == "" {
		path = fmt.Sprintf("(inode %d)", ow.Ino)
	}
	what, other := "writing", "reader"
	if ow.End == pipemodel.EndRead {
		what, other = "reading", "writer"
	}
	return fmt.Sprintf("%s (pid %d) has been blocked %s opening FIFO %s for %s: no %s has opened it",
		t.Comm, t.PID, duration(t.Wait), path, what, other)
}

// otherEnd says why the other end does not move the pipe: waiting
// elsewhere, stopped, or where it sleeps.
func otherEnd(ts []Task, unseen uint32, one, doing string, scoped bool) string {
	if len(ts) == 0 {
		if unseen == 0 {
			return fmt.Sprintf("no %s holds it", one)
		}
		s := fmt.Sprintf("its %s (%s) no process showed", plural(int(unseen), one, one+"s"),
			count(int(unseen), "open end", "open ends"))
		if scoped {
			return s + ": give their pids, or use --all"
		}
		return s + ": held outside pipesnap's pid namespace, or closed during the walk"
	}
	var parts []string
	for i, t := range ts {
		if i == maxNamed {
			parts = append(parts, fmt.Sprintf("%d more", len(ts)-maxNamed))
			break
		}
		s := t.name()
		if t.Outside {
			s += " [not among the processes asked for]"
		}
		switch {
		case t.State == "T" || t.State == "t":
			s += fmt.Sprintf(" is stopped (state %s)%s: kill -CONT %d", t.State, idleFor(t), t.PID)
		case len(t.BlockedOn) > 0:
			s += " is itself " + blockedOn(t)
		default:
			s += " is not " + doing + ": " + t.sleep()
		}
		parts = append(parts, s)
	}
	out := "its " + plural(len(ts), one, one+"s") + " " + strings.Join(parts, "; ")
	if unseen > 0 {
		out += fmt.Sprintf(" (and %s no process showed)", count(int(unseen), "open end", "open ends"))
	}
	return out
}

func blockedOn(t Task) string {
	var on []string
	for _, b := range t.BlockedOn {
		s := fmt.Sprintf("waiting for data on pipe %d", b.Ino)
		if b.How == "writing" {
			s = fmt.Sprintf("waiting for room in pipe %d", b.Ino)
		}
		if b.Via == "poll" || b.Via == "epoll" {
			s += " (in " + b.Via + ")"
		}
		on = append(on, s)
	}
	return join(on)
}

// name is "gzip (pid 812)", "sh (pid 24524, 1 in its namespace, in
// container web)", "cat (pid 9, thread 11)".
func (t Task) name() string {
	if t.PID == 0 {
		return "a task outside pipesnap's pid namespace"
	}
	var in []string
	in = append(in, fmt.Sprintf("pid %d", t.PID))
	if t.TID != 0 && t.TID != t.PID {
		in = append(in, fmt.Sprintf("thread %d", t.TID))
	}
	if t.NSPID != 0 && t.NSPID != t.PID {
		in = append(in, fmt.Sprintf("%d in its namespace", t.NSPID))
	}
	if t.Container != "" {
		c := "in container " + t.Container
		if t.Monitor {
			c = "the runtime's monitor of container " + t.Container
		}
		if t.Pod != "" {
			c += " of pod " + t.Pod
		}
		in = append(in, c)
	}
	return fmt.Sprintf("%s (%s)", t.Comm, strings.Join(in, ", "))
}

// sleep says what a task is doing: "state S, idle 3m12s, waiting in do_nanosleep".
func (t Task) sleep() string {
	s := "state " + t.State
	if t.State == "" {
		s = "state unknown"
	}
	switch t.State {
	case "T":
		s += " (stopped)"
	case "R":
		s += " (running)"
	case "D":
		s += " (uninterruptible)"
	}
	if t.WaitKnown && t.State != "R" {
		s += ", idle " + duration(t.Wait)
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

func idleFor(t Task) string {
	if !t.WaitKnown {
		return ""
	}
	return ", idle " + duration(t.Wait)
}

func in(wchan string) string {
	if wchan == "" {
		return ""
	}
	return " in " + wchan
}

// who names tasks: "gzip (pid 812)", "gzip (pid 812, thread 815)", "a
// (pid 1) and b (pid 2)".
func who(ts []Task) string {
	var parts []string
	seen := map[uint32]bool{}
	for _, t := range ts {
		if seen[t.PID] {
			continue
		}
		seen[t.PID] = true
		parts = append(parts, t.name())
	}
	return join(parts)
}

// names names processes: "its writer sleep (pid 3)", "its writers a (pid
// 1) and b (pid 2)".
func names(ts []Task) string {
	return plural(len(ts), "its writer ", "its writers ") + who(ts)
}

// be picks the verb for the number of processes in ts.
func be(ts []Task, one, many string) string {
	pids := map[uint32]bool{}
	for _, t := range ts {
		pids[t.PID] = true
	}
	return plural(len(pids), one, many)
}

// waitedFor: "3m12s" for the longest wait; "for a moment" when unknown.
func waitedFor(ts []Task) string {
	return duration(maxWait(ts))
}

// how says how tasks wait: "blocked in read", "in epoll_wait through fd 4".
func how(ts []Task) string {
	var parts []string
	for _, t := range ts {
		var s string
		switch t.Via {
		case "epoll":
			s = "in epoll_wait"
			if t.EpollFD > 0 {
				s += fmt.Sprintf(" on epoll fd %d", t.EpollFD)
			}
		case "poll":
			s = "in poll/select"
		default:
			s = "blocked in " + t.Via
		}
		if !slices.Contains(parts, s) {
			parts = append(parts, s)
		}
	}
	return join(parts)
}

func plural(n int, one, many string) string {
	if n == 1 {
		return one
	}
	return many
}

func count(n int, one, many string) string {
	return fmt.Sprintf("%d %s", n, plural(n, one, many))
}

// join lists: "a", "a and b", "a, b and c".
func join(parts []string) string {
	switch len(parts) {
	case 0:
		return ""
	case 1:
		return parts[0]
	}
	return strings.Join(parts[:len(parts)-1], ", ") + " and " + parts[len(parts)-1]
}

// duration prints a wait the way people say it: 3h12m, 4m05s, 12s, 0.4s.
func duration(d time.Duration) string {
	switch {
	case d >= 24*time.Hour:
		return fmt.Sprintf("%dd%02dh", d/(24*time.Hour), d%(24*time.Hour)/time.Hour)
	case d >= time.Hour:
		return fmt.Sprintf("%dh%02dm", d/time.Hour, d%time.Hour/time.Minute)
	case d >= time.Minute:
		return fmt.Sprintf("%dm%02ds", d/time.Minute, d%time.Minute/time.Second)
	case d >= 10*time.Second:
		return fmt.Sprintf("%ds", d/time.Second)
	}
	return fmt.Sprintf("%.1fs", d.Seconds())
}

// Duration is duration for other packages' views (ls, watch).
func Duration(d time.Duration) string { return duration(d) }
