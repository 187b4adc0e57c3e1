package pipetest

// Stuck pipelines: real processes wired with real pipes, left in the
// states `pipesnap ls` and `diagnose` must tell apart. Most stages are
// coreutils (yes, sleep, cat); the two that need a thread or poll(2) of
// their own are this test binary run again as a helper.
//
// The helpers are dispatched from init, not from Main: they work in test
// binaries whose TestMain does not call Main (cmd/pipesnap builds the
// binary in its own). holders.go's kinds go through Main as before.

import (
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"golang.org/x/sys/unix"
)

const stuckEnv = "PIPESNAP_TEST_STUCK_HELPER"

func init() {
	if kind := os.Getenv(stuckEnv); kind != "" {
		if err := runStuckHelper(kind); err != nil {
			fmt.Fprintf(os.Stderr, "stuck helper %s: %v\n", kind, err)
			os.Exit(1)
		}
		os.Exit(0)
	}
}

// helperReport is what a helper prints on stdout once it is set up.
type helperReport struct {
	PID int `json:"pid"`
	TID int `json:"tid"` // the thread that blocks
}

// closeStrayPipes closes the pipes and FIFOs from fd 3 + keep on: those
// the test process inherited from whoever ran it (exec passes on every fd
// not marked close-on-exec). They would join the pipelines under test.
func closeStrayPipes(keep int) {
	ents, _ := os.ReadDir("/proc/self/fd")
	for _, e := range ents {
		fd, err := strconv.Atoi(e.Name())
		if err != nil || fd < 3+keep {
			continue
		}
		var st unix.Stat_t
		if unix.Fstat(fd, &st) == nil && st.Mode&unix.S_IFMT == unix.S_IFIFO {
			unix.Close(fd)
		}
	}
}

// runStuckHelper runs a helper on its stdin, the pipe under test.
func runStuckHelper(kind string) error {
	if kind == "exec" {
		// A coreutils stage: only the fds the test gave it, then the
		// program (same pid).
		keep, _ := strconv.Atoi(os.Getenv(stuckEnv + "_KEEP"))
		closeStrayPipes(keep)
		path, err := exec.LookPath(os.Args[1])
		if err != nil {
			return err
		}
		env := slices.DeleteFunc(os.Environ(), func(e string) bool { return strings.HasPrefix(e, stuckEnv) })
		return unix.Exec(path, os.Args[1:], env)
	}
	closeStrayPipes(0)
	// The main goroutine keeps the main thread: any other goroutine runs
	// on another thread, so a blocked one is not the thread group leader.
	runtime.LockOSThread()
	if err := unix.SetNonblock(0, false); err != nil {
		return err
	}
	report := func(tid int) error {
		err := json.NewEncoder(os.Stdout).Encode(helperReport{PID: os.Getpid(), TID: tid})
		unix.Close(1) // nothing more to say: no pipe left behind
		return err
	}
	switch kind {
	case "thread-reader":
		// A non-leader thread blocks reading stdin (a plain read(2), so
		// the thread sleeps in pipe_read); the main thread waits.
		errs := make(chan error, 1)
		go func() {
			runtime.LockOSThread()
			tid := unix.Gettid()
			if tid == os.Getpid() {
				errs <- fmt.Errorf("reader goroutine on the main thread")
				return
			}
			if err := report(tid); err != nil {
				errs <- err
				return
			}
			_, err := unix.Read(0, make([]byte, 1))
			errs <- err
		}()
		return <-errs
	case "poller":
		// Waits for stdin to be readable with poll(2), and watches it
		// with epoll too: waiters, but nobody blocked reading.
		ep, err := unix.EpollCreate1(unix.EPOLL_CLOEXEC)
		if err != nil {
			return err
		}
		if err := unix.EpollCtl(ep, unix.EPOLL_CTL_ADD, 0, &unix.EpollEvent{Events: unix.EPOLLIN, Fd: 0}); err != nil {
			return err
		}
		if err := report(unix.Gettid()); err != nil {
			return err
		}
		for {
			_, err := unix.Poll([]unix.PollFd{{Fd: 0, Events: unix.POLLIN}}, -1)
			if err != unix.EINTR {
				return err
			}
		}
	}
	return fmt.Errorf("unknown helper %q", kind)
}

// Stage is one process of a pipeline.
type Stage struct {
	Role string // "writer", "middle", "reader"
	Comm string
	PID  int
	TID  int // the helper thread that blocks (thread-reader, poller)
	cmd  *exec.Cmd
}

// Pipeline is a set of processes connected by pipes, started by the test
// and killed when it ends. Nothing else holds the pipes.
type Pipeline struct {
	Kind   string
	Stages map[string]*Stage
	Inos   map[string]uint64 // "pipe"; for "chain", "in" and "out"
	stderr string            // where the stages write their errors
}

// StuckKinds are the pipelines StartStuck builds:
//   - full: `yes | sleep`: the writer is blocked on a full pipe, the reader sleeps.
//   - empty: `sleep | cat`: the reader is blocked on an empty pipe, the writer sleeps.
//   - no-readers: sleep holds the write end of a pipe holding 5 bytes; no reader is left.
//   - unread: sleep holds the read end of a pipe holding 12 bytes; no writer is left.
//   - own-writer: cat is blocked reading a pipe whose only write end it holds itself (fd 3).
//   - chain: `yes | sleep | cat`: the middle stage stopped reading.
//   - thread-reader: `sleep | helper`: a non-leader thread of the reader is blocked.
//   - poller: `sleep | helper`: the reader polls the pipe (poll and epoll).
//   - flowing: `yes | cat >/dev/null`: moving as fast as it can.
var StuckKinds = []string{"full", "empty", "no-readers", "unread", "own-writer", "chain", "thread-reader", "poller", "flowing"}

// StartStuck builds a pipeline of the given kind and waits until it has
// settled in its state.
func StartStuck(t testing.TB, kind string) *Pipeline {
	t.Helper()
	p := &Pipeline{Kind: kind, Stages: map[string]*Stage{}, Inos: map[string]uint64{}}
	t.Cleanup(p.stop)
	devnull, err := os.OpenFile(os.DevNull, os.O_WRONLY, 0)
	if err != nil {
		t.Fatal(err)
	}
	defer devnull.Close()
	// The stages' stderr is a file, not the test's stderr: that may be a
	// pipe (go test reads it), which would join the pipeline.
	stderr, err := os.Create(filepath.Join(t.TempDir(), "stderr"))
	if err != nil {
		t.Fatal(err)
	}
	defer stderr.Close()
	p.stderr = stderr.Name()
	pipe := func(name string) (r, w *os.File) {
		t.Helper()
		r, w, err := os.Pipe()
		if err != nil {
			t.Fatal(err)
		}
		p.Inos[name] = inoOf(int(r.Fd()))
		return r, w
	}
	start := func(role, comm string, stdin, stdout *os.File, extra []*os.File, args ...string) *Stage {
		t.Helper()
		// Every stage starts as this binary, which closes the pipes the
		// test process inherited, then becomes the stage's program.
		var cmd *exec.Cmd
		if comm == "helper" {
			cmd = exec.Command(os.Args[0])
			cmd.Env = append(os.Environ(), stuckEnv+"="+args[0])
		} else {
			cmd = exec.Command(os.Args[0], append([]string{comm}, args...)...)
			cmd.Env = append(os.Environ(), stuckEnv+"=exec", fmt.Sprintf("%s_KEEP=%d", stuckEnv, len(extra)))
		}
		cmd.Stdin, cmd.Stderr, cmd.ExtraFiles = stdin, stderr, extra
		var out *os.File
		if stdout != nil {
			cmd.Stdout = stdout
		} else if comm == "helper" {
			r, w, err := os.Pipe()
			if err != nil {
				t.Fatal(err)
			}
			defer r.Close()
			defer w.Close()
			cmd.Stdout, out = w, r
		}
		if err := cmd.Start(); err != nil {
			t.Fatalf("starting %s: %v", comm, err)
		}
		s := &Stage{Role: role, Comm: comm, PID: cmd.Process.Pid, cmd: cmd}
		p.Stages[role] = s
		if out != nil {
			cmd.Stdout.(*os.File).Close()
			var rep helperReport
			if err := json.NewDecoder(out).Decode(&rep); err != nil {
				msg, _ := os.ReadFile(p.stderr)
				t.Fatalf("helper %s did not report: %v; stderr: %s", args[0], err, msg)
			}
			s.TID = rep.TID
			s.Comm = readComm(s.PID)
		}
		return s
	}

	var blocked []*Stage // stages that must be seen sleeping on a pipe
	switch kind {
	case "full":
		r, w := pipe("pipe")
		blocked = append(blocked, start("writer", "yes", nil, w, nil))
		start("reader", "sleep", r, devnull, nil, "600")
		r.Close()
		w.Close()
	case "empty":
		r, w := pipe("pipe")
		start("writer", "sleep", nil, w, nil, "600")
		blocked = append(blocked, start("reader", "cat", r, devnull, nil))
		r.Close()
		w.Close()
	case "no-readers":
		r, w := pipe("pipe")
		if _, err := w.WriteString("hello"); err != nil {
			t.Fatal(err)
		}
		r.Close()
		start("writer", "sleep", nil, w, nil, "600")
		w.Close()
	case "unread":
		r, w := pipe("pipe")
		if _, err := w.WriteString("left behind\n"); err != nil {
			t.Fatal(err)
		}
		w.Close()
		start("reader", "sleep", r, devnull, nil, "600")
		r.Close()
	case "own-writer":
		r, w := pipe("pipe")
		blocked = append(blocked, start("reader", "cat", r, devnull, []*os.File{w}))
		r.Close()
		w.Close()
	case "chain":
		r1, w1 := pipe("in")
		r2, w2 := pipe("out")
		blocked = append(blocked, start("writer", "yes", nil, w1, nil))
		start("middle", "sleep", r1, w2, nil, "600")
		blocked = append(blocked, start("reader", "cat", r2, devnull, nil))
		for _, f := range []*os.File{r1, w1, r2, w2} {
			f.Close()
		}
	case "thread-reader", "poller":
		r, w := pipe("pipe")
		start("writer", "sleep", nil, w, nil, "600")
		s := start("reader", "helper", r, nil, nil, kind)
		if kind == "thread-reader" {
			blocked = append(blocked, s)
		}
		r.Close()
		w.Close()
	case "flowing":
		r, w := pipe("pipe")
		start("writer", "yes", nil, w, nil)
		start("reader", "cat", r, devnull, nil)
		r.Close()
		w.Close()
	default:
		t.Fatalf("unknown stuck pipeline %q", kind)
	}
	p.settle(t, blocked)
	return p
}

// settle waits until every stage runs its program and the blocked ones
// sleep in the kernel's pipe code (pipe_read/pipe_write, anon_pipe_* on
// newer kernels), and the poller in poll.
func (p *Pipeline) settle(t testing.TB, blocked []*Stage) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for {
		ok := true
		for _, s := range p.Stages {
			if s.Comm != "helper" && !strings.HasPrefix(readComm(s.PID), s.Comm) {
				ok = false
			}
		}
		for _, s := range blocked {
			if !strings.Contains(Wchan(s.PID, s.TID), "pipe") {
				ok = false
			}
		}
		if s := p.Stages["reader"]; p.Kind == "poller" && !strings.Contains(Wchan(s.PID, s.TID), "poll") {
			ok = false
		}
		if ok {
			return
		}
		if time.Now().After(deadline) {
			var states []string
			for _, s := range p.Stages {
				states = append(states, fmt.Sprintf("%s %d (%s) in %q", s.Role, s.PID, readComm(s.PID), Wchan(s.PID, s.TID)))
			}
			msg, _ := os.ReadFile(p.stderr)
			t.Fatalf("pipeline %s did not settle: %s; stderr: %s", p.Kind, strings.Join(states, "; "), msg)
		}
		time.Sleep(5 * time.Millisecond)
	}
}

// PID is the pid of a stage.
func (p *Pipeline) PID(role string) int { return p.Stages[role].PID }

// PIDs are every stage's pid.
func (p *Pipeline) PIDs() []int {
	var out []int
	for _, s := range p.Stages {
		out = append(out, s.PID)
	}
	return out
}

// Ino is the inode of the pipe of single-pipe kinds.
func (p *Pipeline) Ino() uint64 { return p.Inos["pipe"] }

// Kill kills one stage and waits for it: it is gone, not a zombie.
func (p *Pipeline) Kill(role string) {
	s := p.Stages[role]
	s.cmd.Process.Kill()
	s.cmd.Wait()
}

func (p *Pipeline) stop() {
	for _, s := range p.Stages {
		s.cmd.Process.Kill()
		s.cmd.Wait()
	}
}

// Wchan is where thread tid of process pid sleeps (tid 0: the main thread).
// Where the kernel's wchan cannot unwind (x86_64 kernels before 5.16 with
// the ORC unwinder, Debian 11's 5.10: "0" for every task), it is the first
// frame of the sleeping task's kernel stack, which leaves the scheduler's
// functions out as wchan does.
func Wchan(pid, tid int) string {
	if tid == 0 {
		tid = pid
	}
	b, _ := os.ReadFile(fmt.Sprintf("/proc/%d/task/%d/wchan", pid, tid))
	if string(b) != "0" {
		return string(b)
	}
	stat, _ := os.ReadFile(fmt.Sprintf("/proc/%d/task/%d/stat", pid, tid))
	if i := strings.LastIndexByte(string(stat), ')'); i < 0 || i+2 >= len(stat) || (stat[i+2] != 'S' && stat[i+2] != 'D') {
		return string(b)
	}
	stack, _ := os.ReadFile(fmt.Sprintf("/proc/%d/task/%d/stack", pid, tid))
	first, _, _ := strings.Cut(string(stack), "\n")
	if _, frame, ok := strings.Cut(first, "] "); ok {
		fn, _, _ := strings.Cut(frame, "+")
		return fn
	}
	return string(b)
}

func readComm(pid int) string {
	b, _ := os.ReadFile(fmt.Sprintf("/proc/%d/comm", pid))
	return strings.TrimSpace(string(b))
}
