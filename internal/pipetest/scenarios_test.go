package pipetest

import (
	"fmt"
	"os"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"golang.org/x/sys/unix"
)

// descendants are the processes below pid.
func descendants(t *testing.T, pid int) []int {
	t.Helper()
	ents, err := os.ReadDir("/proc")
	if err != nil {
		t.Fatal(err)
	}
	kids := map[int][]int{}
	for _, e := range ents {
		p, err := strconv.Atoi(e.Name())
		if err != nil {
			continue
		}
		if pp, err := scPPID(p); err == nil {
			kids[pp] = append(kids[pp], p)
		}
	}
	var out []int
	var walk func(int)
	walk = func(p int) {
		for _, c := range kids[p] {
			out = append(out, c)
			walk(c)
		}
	}
	walk(pid)
	slices.Sort(out)
	return out
}

// pipeFDs are the pipes (by inode) process pid holds, with the fds.
func pipeFDs(pid int) map[uint64][]int {
	out := map[uint64][]int{}
	ents, _ := os.ReadDir(fmt.Sprintf("/proc/%d/fd", pid))
	for _, e := range ents {
		link, err := os.Readlink(fmt.Sprintf("/proc/%d/fd/%s", pid, e.Name()))
		if err != nil {
			continue
		}
		var ino uint64
		if _, err := fmt.Sscanf(link, "pipe:[%d]", &ino); err != nil {
			var st unix.Stat_t
			if unix.Stat(fmt.Sprintf("/proc/%d/fd/%s", pid, e.Name()), &st) != nil || st.Mode&unix.S_IFMT != unix.S_IFIFO {
				continue
			}
			ino = st.Ino
		}
		fd, _ := strconv.Atoi(e.Name())
		out[ino] = append(out[ino], fd)
	}
	return out
}

// accMode is the access mode of fd of pid (O_RDONLY, O_WRONLY, O_RDWR).
func accMode(t *testing.T, pid, fd int) int {
	t.Helper()
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/fdinfo/%d", pid, fd))
	if err != nil {
		t.Fatal(err)
	}
	for _, line := range strings.Split(string(b), "\n") {
		if rest, ok := strings.CutPrefix(line, "flags:"); ok {
			n, _ := strconv.ParseUint(strings.TrimSpace(rest), 8, 64)
			return int(n) & unix.O_ACCMODE
		}
	}
	t.Fatalf("no flags in fdinfo of %d/%d", pid, fd)
	return 0
}

// scenarioWchans are where the waiting thread of a role must still sleep
// after StartScenario returned.
var scenarioWchans = map[string]map[string][]string{
	"go-exec":             {"writer": {"nanosleep"}},
	"go-exec-full":        {"writer": {"pipe"}},
	"python-asyncio":      {"writer": {"nanosleep"}, "reader": {"epoll", "ep_poll"}},
	"python-asyncio-full": {"writer": {"pipe"}, "reader": {"epoll", "ep_poll"}},
	"select-reader":       {"writer": {"nanosleep"}, "reader": {"poll", "select"}},
	"poll-reader":         {"writer": {"nanosleep"}, "reader": {"poll", "select"}},
	"select-full":         {"writer": {"pipe"}, "reader": {"poll", "select"}, "other-writer": {"nanosleep"}},
	"thread-reader-full":  {"writer": {"pipe"}, "reader": {"futex"}},
	"fifo-writer-open":    {"writer": {"wait_for_partner", "fifo_open"}},
	"fifo-reader-open":    {"reader": {"wait_for_partner", "fifo_open"}},
	"sigstop-middle":      {"writer": {"pipe"}, "reader": {"pipe"}},
	"leaked-pipe":         {"writer": {"pipe"}, "reader": {"nanosleep"}, "holder1": {"nanosleep"}, "holder8": {"nanosleep"}},
	"tail-grep":           {"reader": {"pipe"}},
	"pidns":               {"writer": {"pipe"}, "reader": {"nanosleep"}},
	"shell-subshell":      {"sleep": {"nanosleep"}, "cat": {"pipe"}, "subshell": {"do_wait"}},
}

// scenarioQueued are the bytes pipes hold once a scenario settled.
var scenarioQueued = map[string]map[string]int{
	"go-exec":             {"pipe": 0},
	"go-exec-full":        {"pipe": 65536},
	"python-asyncio":      {"pipe": 0},
	"python-asyncio-full": {"pipe": 65536},
	"select-reader":       {"pipe": 0},
	"poll-reader":         {"pipe": 0},
	"select-full":         {"pipe": 65536, "other": 0},
	"thread-reader-full":  {"pipe": 65536},
	"sigstop-middle":      {"in": 65536, "out": 0},
	"leaked-pipe":         {"pipe": 65536, "leaked": 0},
	"tail-grep":           {"pipe": 0},
	"pidns":               {"pipe": 65536},
	"shell-subshell":      {"pipe": 0},
}

// queuedIn is FIONREAD on fd of process pid (through pidfd_getfd).
func queuedIn(t *testing.T, pid, fd int) int {
	t.Helper()
	pidfd, err := unix.PidfdOpen(pid, 0)
	if err != nil {
		t.Fatal(err)
	}
	defer unix.Close(pidfd)
	dup, err := unix.PidfdGetfd(pidfd, fd, 0)
	if err != nil {
		t.Fatalf("pidfd_getfd %d/%d: %v", pid, fd, err)
	}
	defer unix.Close(dup)
	return Queued(t, dup)
}

// threads renders the wchan of every thread of p.
func threads(p *Proc) string {
	var out []string
	for _, tid := range scTasks(p.PID) {
		out = append(out, fmt.Sprintf("%d:%s", tid, Wchan(p.PID, tid)))
	}
	return strings.Join(out, ",")
}

// scenarioRoles are the roles each kind must have.
var scenarioRoles = map[string][]string{
	"select-full":      {"writer", "reader", "other-writer"},
	"fifo-writer-open": {"writer"},
	"fifo-reader-open": {"reader"},
	"sigstop-middle":   {"writer", "middle", "reader"},
	"pidns":            {"unshare", "init", "writer", "reader"},
	"shell-subshell":   {"shell", "subshell", "sleep", "cat"},
}

func TestScenarios(t *testing.T) {
	// A pipe the test process has without close-on-exec, as if inherited
	// from whoever ran it: no process of a scenario may hold it.
	var stray [2]int
	if err := syscall.Pipe(stray[:]); err != nil {
		t.Fatal(err)
	}
	defer syscall.Close(stray[0])
	defer syscall.Close(stray[1])
	strayIno := inoOf(stray[0])
	if _, err := os.Stat("/proc/self/task/" + strconv.Itoa(os.Getpid()) + "/children"); err != nil {
		t.Fatalf("scenarios find their processes in /proc/PID/task/TID/children: %v", err)
	}

	for _, kind := range ScenarioKinds {
		t.Run(kind, func(t *testing.T) {
			before := descendants(t, os.Getpid())
			fds := OpenFDs(t)
			var s *Scenario
			ok := t.Run("run", func(t *testing.T) {
				begin := time.Now()
				s = StartScenario(t, kind)
				took := time.Since(begin)
				t.Logf("settled in %v: %s", took.Round(time.Millisecond), describe(s))
				if took > 3*time.Second {
					t.Errorf("took %v to start, want under 3s", took)
				}
				checkScenario(t, s, strayIno)
			})
			if s == nil {
				return
			}
			checkGone(t, s)
			if after := descendants(t, os.Getpid()); !slices.Equal(before, after) {
				t.Errorf("processes below the test before %v, after %v", before, after)
			}
			if n := OpenFDs(t); n != fds {
				t.Errorf("%d fds open before, %d after", fds, n)
			}
			_ = ok
		})
	}
}

func describe(s *Scenario) string {
	var parts []string
	for _, p := range s.order {
		d := fmt.Sprintf("%s=%d", p.Role, p.PID)
		if p.TID != p.PID {
			d += fmt.Sprintf("/%d", p.TID)
		}
		if p.NSPID != p.PID {
			d += fmt.Sprintf("(ns %d)", p.NSPID)
		}
		parts = append(parts, d+"("+p.Comm+" "+string(scState(p.PID))+" "+threads(p)+")")
	}
	return fmt.Sprintf("%s pipes %v want %+v", strings.Join(parts, " "), s.Inos, s.Want)
}

func checkScenario(t *testing.T, s *Scenario, strayIno uint64) {
	t.Helper()
	pids := map[int]*Proc{}
	for role, p := range s.Procs {
		pids[p.PID] = p
		if p.Role != role {
			t.Errorf("role %s recorded as %s", role, p.Role)
		}
		if st, err := scStartTime(p.PID); err != nil || st != p.start {
			t.Errorf("%s %d gone or replaced (%v)", role, p.PID, err)
		}
		if c := scComm(p.PID); c != p.Comm {
			t.Errorf("%s %d runs %q, recorded %q", role, p.PID, c, p.Comm)
		}
		if !slices.Contains(scTasks(p.PID), p.TID) {
			t.Errorf("%s %d has no thread %d", role, p.PID, p.TID)
		}
		if p.Parent != "" {
			if pp, ok := s.Procs[p.Parent]; !ok {
				t.Errorf("%s's parent role %s unknown", role, p.Parent)
			} else if ppid, _ := scPPID(p.PID); ppid != pp.PID {
				t.Errorf("%s's parent is %d, not %s %d", role, ppid, p.Parent, pp.PID)
			}
		}
		if st := scState(p.PID); st != 'S' && st != 'R' && !(s.Kind == "sigstop-middle" && role == "middle" && st == 'T') {
			t.Errorf("%s %d in state %c", role, p.PID, st)
		}
	}
	for _, role := range scenarioRoles[s.Kind] {
		if s.Procs[role] == nil {
			t.Errorf("no role %s", role)
		}
	}
	for role, subs := range scenarioWchans[s.Kind] {
		p := s.Procs[role]
		if p == nil {
			t.Errorf("no role %s", role)
			continue
		}
		w := Wchan(p.PID, p.TID)
		if !slices.ContainsFunc(subs, func(sub string) bool { return strings.Contains(w, sub) }) {
			t.Errorf("%s %d/%d sleeps in %q, want one of %v", role, p.PID, p.TID, w, subs)
		}
	}

	// Want names the scenario's roles and pipes.
	w := s.Want
	for _, f := range append([]Finding{w.Finding}, w.Also...) {
		if f.Category == "" {
			t.Errorf("finding %+v without a category", f)
		}
		if _, ok := s.Inos[f.Pipe]; !ok {
			t.Errorf("finding %+v about an unknown pipe", f)
		}
		if f.Culprit != "" && s.Procs[f.Culprit] == nil {
			t.Errorf("finding %+v blames an unknown role", f)
		}
		if f.Stuck != (f.Category == "stall") {
			t.Errorf("finding %+v: stuck and category disagree", f)
		}
	}

	// Who holds what: the scenario's processes hold its pipes and no
	// others, the stray pipe in particular; the test holds none.
	holders := map[uint64]map[int][]int{} // ino -> pid -> fds
	for pid := range pids {
		for ino, fds := range pipeFDs(pid) {
			if ino == strayIno {
				t.Errorf("%s %d holds the test's stray pipe", pids[pid].Role, pid)
			}
			if !slices.Contains(mapValues(s.Inos), ino) {
				t.Errorf("%s %d (%s) holds pipe %d (fds %v), not one of the scenario's %v", pids[pid].Role, pid, scComm(pid), ino, fds, s.Inos)
			}
			if holders[ino] == nil {
				holders[ino] = map[int][]int{}
			}
			holders[ino][pid] = fds
		}
	}
	for ino := range pipeFDs(os.Getpid()) {
		if slices.Contains(mapValues(s.Inos), ino) {
			t.Errorf("the test process still holds pipe %d", ino)
		}
	}
	for name, ino := range s.Inos {
		if ino == 0 {
			t.Errorf("pipe %s has no inode", name)
		}
		if path, ok := s.FIFOs[name]; ok {
			var st unix.Stat_t
			if err := unix.Stat(path, &st); err != nil || st.Mode&unix.S_IFMT != unix.S_IFIFO || st.Ino != ino {
				t.Errorf("FIFO %s at %s: %v, mode %o ino %d, want %d", name, path, err, st.Mode, st.Ino, ino)
			}
			if len(holders[ino]) != 0 {
				t.Errorf("FIFO %s is open (%v): the open must not have completed", name, holders[ino])
			}
			continue
		}
		if len(holders[ino]) == 0 {
			t.Errorf("pipe %s (%d) held by none of the scenario's processes", name, ino)
		}
	}
	ends := func(ino uint64) (readers, writers []string) {
		for pid, fds := range holders[ino] {
			for _, fd := range fds {
				switch accMode(t, pid, fd) {
				case unix.O_RDONLY:
					readers = append(readers, pids[pid].Role)
				case unix.O_WRONLY:
					writers = append(writers, pids[pid].Role)
				}
			}
		}
		slices.Sort(readers)
		slices.Sort(writers)
		return readers, writers
	}

	// How much the pipes hold: full where a writer is blocked for good,
	// empty where a reader waits.
	for name, want := range scenarioQueued[s.Kind] {
		var got = -1
		for pid, fds := range holders[s.Inos[name]] {
			got = queuedIn(t, pid, fds[0])
			break
		}
		if got != want {
			t.Errorf("pipe %s holds %d bytes, want %d", name, got, want)
		}
	}

	switch s.Kind {
	case "leaked-pipe":
		r, w := ends(s.Inos["leaked"])
		if len(r) != 0 || len(w) != 8 {
			t.Errorf("leaked pipe: readers %v, writers %v; want none and 8 holders", r, w)
		}
	case "shell-subshell":
		r, w := ends(s.Inos["pipe"])
		if !slices.Equal(r, []string{"cat"}) || !slices.Equal(w, []string{"sleep", "subshell"}) {
			t.Errorf("pipe: readers %v, writers %v; want [cat] and [sleep subshell]", r, w)
		}
	case "pidns":
		for role, want := range map[string]int{"init": 1, "writer": 2, "reader": 3} {
			if p := s.Procs[role]; p.NSPID == p.PID || p.NSPID < 1 {
				t.Errorf("%s: pid %d, %d in its namespace", role, p.PID, p.NSPID)
			} else if p.NSPID != want {
				t.Logf("%s has pid %d in its namespace (expected %d, not required)", role, p.NSPID, want)
			}
		}
	case "select-full":
		r, _ := ends(s.Inos["other"])
		if !slices.Equal(r, []string{"reader"}) {
			t.Errorf("other pipe: readers %v, want [reader]", r)
		}
	case "busy", "bursty":
		// Progress over a while. gzip -1 squeezes yes's output about a
		// thousand to one, and on a loaded machine it may take seconds
		// to hand cat a block: wait up to 10 s for some.
		p := s.Procs["reader"]
		n := scRchar(p.PID)
		m := n
		for deadline := time.Now().Add(10 * time.Second); m <= n && time.Now().Before(deadline); {
			time.Sleep(200 * time.Millisecond)
			m = scRchar(p.PID)
		}
		if m <= n {
			t.Errorf("reader read nothing in 10 s (rchar %d then %d)", n, m)
		}
	case "tail-grep":
		time.Sleep(2500 * time.Millisecond)
		if w := Wchan(s.PID("reader"), 0); !strings.Contains(w, "pipe") {
			t.Errorf("grep in %q after a line came", w)
		}
	}
}

func mapValues(m map[string]uint64) []uint64 {
	var out []uint64
	for _, v := range m {
		out = append(out, v)
	}
	return out
}

// checkGone checks that the processes of a stopped scenario are gone and
// its files removed.
func checkGone(t *testing.T, s *Scenario) {
	t.Helper()
	deadline := time.Now().Add(2 * time.Second)
	for _, p := range s.order {
		for {
			st, err := scStartTime(p.PID)
			if err != nil || st != p.start {
				break
			}
			if time.Now().After(deadline) {
				t.Errorf("%s %d (%s) still there after the scenario stopped, state %c", p.Role, p.PID, scComm(p.PID), scState(p.PID))
				break
			}
			time.Sleep(5 * time.Millisecond)
		}
	}
	for name, path := range s.FIFOs {
		if _, err := os.Lstat(path); err == nil {
			t.Errorf("FIFO %s left at %s", name, path)
		}
	}
	for name, path := range s.Files {
		if _, err := os.Lstat(path); err == nil {
			t.Errorf("file %s left at %s", name, path)
		}
	}
}
