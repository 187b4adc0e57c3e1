package pipetest

// Scenarios: real processes, real pipes and FIFOs, in the situations the
// diagnose command must judge the way an expert would (stall, idle,
// healthy, leak). Each comes with what that expert concludes (Want).
//
// Every process the test starts itself is this test binary run again: it
// closes the pipes the test process inherited (they would join the
// scenario), then either exec's the real program or runs one of the Go
// programs below (a helper mode). Helpers are dispatched from init, under
// their own env var, so they work in test binaries whose TestMain does
// not call Main.

import (
	"bytes"
	"embed"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"slices"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"golang.org/x/sys/unix"
)

const scenarioEnv = "PIPESNAP_TEST_SCENARIO_HELPER"

//go:embed testdata/scenarios/*.py
var scenarioScripts embed.FS

func init() {
	if mode := os.Getenv(scenarioEnv); mode != "" {
		if err := runScenarioHelper(mode); err != nil {
			fmt.Fprintf(os.Stderr, "scenario helper %s: %v\n", mode, err)
			os.Exit(1)
		}
		os.Exit(0)
	}
}

// Finding is one conclusion about one pipe of a scenario.
type Finding struct {
	Pipe     string // key of Scenario.Inos (and FIFOs for FIFOs) the finding is about
	Stuck    bool   // the pipe's data flow is stalled for good
	Culprit  string // role to blame; "" when no process is to blame or nothing is stuck
	Category string // "stall", "idle", "healthy" or "leak-warning"
	Detail   string // finer kind, free text: "not-reading", "open-blocked", "stopped"...
}

// ScenarioWant is what an expert concludes about a scenario: the main
// finding (embedded), and findings about its other pipes.
type ScenarioWant struct {
	Finding
	// Also are findings about the scenario's other pipes.
	Also []Finding
	// MinWait is how long a diagnosis must watch the scenario before
	// its verdict can be trusted: the scenario's healthy pauses (data
	// left unread, a writer that does not write) last less than that.
	// 0: the state is plain at once and stays so (stuck kinds stay stuck
	// as long as the scenario runs).
	MinWait time.Duration
	// Flow tells where data goes, when that is not obvious.
	Flow string
}

// Proc is one process of a scenario.
type Proc struct {
	Role   string
	PID    int // in the test's pid namespace
	TID    int // the thread that waits (== PID when that is the main thread)
	Comm   string
	NSPID  int    // pid in its own, innermost pid namespace (== PID outside pidns)
	Parent string // role of the parent when another stage started it, else ""

	start uint64 // starttime in /proc/PID/stat: tells a reused pid apart
	pidfd int
	cmd   *exec.Cmd // for the processes the test started itself
}

// Scenario is a running scenario; everything it started goes with the test.
type Scenario struct {
	Kind    string
	Procs   map[string]*Proc  // by role
	Inos    map[string]uint64 // pipes and FIFOs by name
	FIFOs   map[string]string // FIFO paths by name (also in Inos)
	Files   map[string]string // other files the scenario uses, by name
	Want    ScenarioWant
	Settled time.Time // when the scenario was seen in its state

	dir      string
	stderr   string // the file the stages write their errors to
	devnull  *os.File
	deadline time.Time
	order    []*Proc // in start order
	stopFns  []func()
	stopOnce sync.Once
}

// ScenarioKinds are the scenarios StartScenario builds. Roles, pipes
// (Inos keys) and Want of each:
//
//   - go-exec: "reader", a Go program (comm "goreader", this test binary)
//     that starts "writer" (sleep 600) with os/exec, takes its stdout with
//     StdoutPipe and io.Copy's it. Pipe "pipe". The reader's goroutine
//     is parked in the netpoller: thread Procs["reader"].TID sleeps in
//     epoll_wait (the thread doing so may change later). Want: idle, not
//     stuck ("waiting-for-input").
//   - go-exec-full: the same Go reader with "writer" yes; it reads once,
//     then calls cmd.Wait without reading on (the classic os/exec
//     deadlock): the pipe stays in the Go runtime's epoll set (a waiter
//     entry on the pipe), nobody reads, yes is blocked writing the full
//     pipe; the main thread sleeps in waitid. Want: stall, culprit
//     "reader" ("not-reading").
//   - python-asyncio: "reader" python3 (asyncio.create_subprocess_exec,
//     stdout=PIPE, await proc.stdout.read()) of "writer" sleep 600; the
//     main thread waits in epoll_wait. Pipe "pipe". Want: idle.
//   - python-asyncio-full: the same with "writer" yes; the reader reads
//     once then awaits asyncio.sleep(600). asyncio buffers 128 KiB, then
//     stops watching the pipe; yes is blocked on the full pipe. Want:
//     stall, culprit "reader" ("not-reading").
//   - select-reader, poll-reader: `sleep 600 | python3` ("writer",
//     "reader"), the reader waits in select(2) / poll(2) on stdin. Pipe
//     "pipe". Want: idle.
//   - select-full: `yes | python3` ("writer", "reader"); the reader
//     selects only on fd 3, the read end of pipe "other" whose write end
//     "other-writer" (sleep 600) holds: it never reads stdin. Want: stall
//     on "pipe", culprit "reader" ("not-reading"); "other" is idle.
//   - thread-reader-full: `yes | threadreader` ("writer", "reader"): a
//     non-main thread (Procs["reader"].TID) of the Go helper reads stdin
//     once, then blocks on a lock (futex) for good. Want: stall, culprit
//     "reader" ("not-reading").
//   - fifo-writer-open: "writer", `sh -c 'echo hi > FIFO'` with no reader:
//     blocked in open(2) (wait_for_partner). FIFO "fifo". Want: stall,
//     no culprit: nobody holds the read end ("open-blocked").
//   - fifo-reader-open: "reader", `cat FIFO` with no writer, blocked in
//     open(2). Want: stall, no culprit ("open-blocked").
//   - sigstop-middle: `yes | cat | cat >/dev/null` ("writer", "middle",
//     "reader"; pipes "in" and "out") with the middle cat SIGSTOPped
//     (state T). Want: stall on "in", culprit "middle" ("stopped"); "out"
//     is stuck too, same culprit (its only writer is stopped).
//   - leaked-pipe: pipe "leaked": empty, its read end closed, its write
//     end inherited as fd 3 by "holder1".."holder8" (sleep 600 each);
//     next to it a real stall, `yes | sleep 600` ("writer", "reader",
//     pipe "pipe"). Want: stall on "pipe", culprit "reader"; a
//     leak-warning about "leaked", which is not a stall.
//   - busy: `yes | gzip -1 | cat >/dev/null` ("writer", "middle",
//     "reader"; pipes "in", "out"), or `yes | md5sum` ("writer",
//     "reader"; pipe "in") where gzip is missing. yes is often seen
//     blocked on the full pipe: that is back-pressure. Want: healthy.
//   - bursty: "writer" (burstwriter) writes 4 KiB every 100 ms into pipe
//     "pipe"; "reader" (burstreader) sleeps 1 s, drains the pipe, again.
//     Data sits unread for up to a second. Want: healthy; MinWait 1.5 s.
//   - tail-grep: `tail -f FILE | grep ERROR` ("writer", "reader"; pipe
//     "pipe"; Files["log"] is FILE, Files["matches"] grep's output); the
//     test appends a line to FILE every 2 s. grep waits in read; tail
//     waits in poll(2) on its inotify fd and its stdout (GNU tail watches
//     for the reader going away): a waiter on the write side, no stall.
//     Want: idle.
//   - pidns: `unshare -fp --mount-proc sh -c 'yes | sleep 600'`:
//     "unshare", "init" (the sh, pid 1 inside), "writer" (yes), "reader"
//     (sleep); NSPID are their pids inside. Pipe "pipe". Want: stall,
//     culprit "reader" ("not-reading").
//   - shell-subshell: `sh -c '(sleep 600; echo) | cat'`: "shell" (the sh
//     -c), "subshell" (the forked sh) and its child "sleep" both hold the
//     write end of pipe "pipe", "cat" reads it. Want: idle; Flow: data
//     flows subshell+sleep -> cat (echo's newline once sleep ends).
var ScenarioKinds = []string{
	"go-exec", "go-exec-full", "python-asyncio", "python-asyncio-full",
	"select-reader", "poll-reader", "select-full", "thread-reader-full",
	"fifo-writer-open", "fifo-reader-open", "sigstop-middle", "leaked-pipe",
	"busy", "bursty", "tail-grep", "pidns", "shell-subshell",
}

func scenarioWant(kind string) ScenarioWant {
	stall := func(pipe, culprit, detail string) Finding {
		return Finding{Pipe: pipe, Stuck: true, Culprit: culprit, Category: "stall", Detail: detail}
	}
	idle := func(pipe, detail string) Finding {
		return Finding{Pipe: pipe, Category: "idle", Detail: detail}
	}
	healthy := Finding{Pipe: "pipe", Category: "healthy", Detail: "flowing"}
	switch kind {
	case "go-exec", "python-asyncio", "select-reader", "poll-reader", "tail-grep":
		return ScenarioWant{Finding: idle("pipe", "waiting-for-input")}
	case "go-exec-full", "python-asyncio-full", "thread-reader-full", "pidns":
		return ScenarioWant{Finding: stall("pipe", "reader", "not-reading")}
	case "select-full":
		return ScenarioWant{Finding: stall("pipe", "reader", "not-reading"), Also: []Finding{idle("other", "waiting-for-input")}}
	case "fifo-writer-open":
		return ScenarioWant{Finding: stall("fifo", "", "open-blocked: no reader")}
	case "fifo-reader-open":
		return ScenarioWant{Finding: stall("fifo", "", "open-blocked: no writer")}
	case "sigstop-middle":
		return ScenarioWant{Finding: stall("in", "middle", "stopped"), Also: []Finding{stall("out", "middle", "stopped")}}
	case "leaked-pipe":
		return ScenarioWant{Finding: stall("pipe", "reader", "not-reading"),
			Also: []Finding{{Pipe: "leaked", Category: "leak-warning", Detail: "no reader, write end held by 8 idle processes"}}}
	case "busy":
		healthy.Pipe = "in"
		return ScenarioWant{Finding: healthy}
	case "bursty":
		return ScenarioWant{Finding: healthy, MinWait: 1500 * time.Millisecond}
	case "shell-subshell":
		return ScenarioWant{Finding: idle("pipe", "waiting-for-input"), Flow: "subshell+sleep -> cat"}
	}
	return ScenarioWant{}
}

// scenarioReport is what a Go helper writes on fd 3 once set up.
type scenarioReport struct {
	PID   int `json:"pid"`
	TID   int `json:"tid,omitempty"`
	Child int `json:"child,omitempty"`
}

// scCloseStrayPipes closes the pipes and FIFOs from fd 3+keep on: those
// inherited from whoever ran the test.
func scCloseStrayPipes(keep int) {
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

func scenarioChildEnv() []string {
	return slices.DeleteFunc(os.Environ(), func(e string) bool { return strings.HasPrefix(e, scenarioEnv) })
}

func scSleep(d time.Duration) {
	ts := unix.NsecToTimespec(d.Nanoseconds())
	for unix.Nanosleep(&ts, &ts) == unix.EINTR {
	}
}

func runScenarioHelper(mode string) error {
	keep, _ := strconv.Atoi(os.Getenv(scenarioEnv + "_KEEP"))
	scCloseStrayPipes(keep)
	env := scenarioChildEnv()
	if mode == "exec" {
		path, err := exec.LookPath(os.Args[1])
		if err != nil {
			return err
		}
		return unix.Exec(path, os.Args[1:], env)
	}
	// A Go helper: fd 3 is where it reports, and no child gets it.
	unix.CloseOnExec(3)
	report := func(r scenarioReport) error {
		r.PID = os.Getpid()
		f := os.NewFile(3, "report")
		defer f.Close()
		return json.NewEncoder(f).Encode(r)
	}
	switch mode {
	case "go-exec", "go-exec-full":
		cmd := exec.Command(os.Args[1], os.Args[2:]...)
		cmd.Env, cmd.Stderr = env, os.Stderr
		out, err := cmd.StdoutPipe()
		if err != nil {
			return err
		}
		if err := cmd.Start(); err != nil {
			return err
		}
		if mode == "go-exec" {
			if err := report(scenarioReport{Child: cmd.Process.Pid}); err != nil {
				return err
			}
			_, err := io.Copy(io.Discard, out)
			cmd.Wait()
			return err
		}
		if _, err := out.Read(make([]byte, 4096)); err != nil {
			return err
		}
		if err := report(scenarioReport{Child: cmd.Process.Pid}); err != nil {
			return err
		}
		// Waits for the child before reading all it writes: never returns.
		return cmd.Wait()
	case "thread-reader-full":
		runtime.LockOSThread() // the main goroutine keeps the main thread
		if err := unix.SetNonblock(0, false); err != nil {
			return err
		}
		go func() {
			runtime.LockOSThread()
			tid := unix.Gettid()
			err := func() error {
				if tid == os.Getpid() {
					return errors.New("reader goroutine on the main thread")
				}
				if _, err := unix.Read(0, make([]byte, 4096)); err != nil {
					return err
				}
				return report(scenarioReport{TID: tid})
			}()
			if err != nil {
				fmt.Fprintf(os.Stderr, "scenario helper %s: %v\n", mode, err)
				os.Exit(1)
			}
			var mu sync.Mutex // a lock never let go: the thread sleeps in futex
			mu.Lock()
			mu.Lock()
		}()
		for {
			unix.Pause() // a syscall, not a channel: no "all goroutines are asleep"
		}
	case "burst-writer":
		if err := report(scenarioReport{}); err != nil {
			return err
		}
		buf := bytes.Repeat([]byte("burst!\n\n"), 4096/8)
		for {
			for b := buf; len(b) > 0; {
				n, err := unix.Write(1, b)
				if err != nil {
					return err
				}
				b = b[n:]
			}
			scSleep(100 * time.Millisecond)
		}
	case "burst-reader":
		if err := report(scenarioReport{}); err != nil {
			return err
		}
		buf := make([]byte, 1<<20)
		for {
			scSleep(time.Second)
			n, err := unix.IoctlGetInt(0, unix.TIOCINQ)
			if err != nil {
				return err
			}
			for n > 0 {
				m, err := unix.Read(0, buf[:min(n, len(buf))])
				if err != nil {
					return err
				}
				n -= m
			}
		}
	}
	return fmt.Errorf("unknown scenario helper %q", mode)
}

// stdio are the fds of a stage: nil stdin/stdout are /dev/null; extra
// become fds 3, 4...
type stdio struct {
	in, out *os.File
	extra   []*os.File
}

// scenarioNeeds are the programs (in PATH) each kind runs.
var scenarioNeeds = map[string][]string{
	"go-exec":             {"sleep"},
	"go-exec-full":        {"yes"},
	"python-asyncio":      {"python3", "sleep"},
	"python-asyncio-full": {"python3", "yes"},
	"select-reader":       {"python3", "sleep"},
	"poll-reader":         {"python3", "sleep"},
	"select-full":         {"python3", "yes", "sleep"},
	"thread-reader-full":  {"yes"},
	"fifo-writer-open":    {"sh"},
	"fifo-reader-open":    {"cat"},
	"sigstop-middle":      {"yes", "cat"},
	"leaked-pipe":         {"yes", "sleep"},
	"busy":                {"yes"},
	"bursty":              {},
	"tail-grep":           {"tail", "grep"},
	"pidns":               {"unshare", "sh", "yes", "sleep"},
	"shell-subshell":      {"sh", "sleep", "cat"},
}

// skipOrFatal skips, except under CI, where a missing program is an error.
func skipOrFatal(t testing.TB, why string) {
	t.Helper()
	if os.Getenv("CI") != "" {
		t.Fatalf("%s, and CI is set: the scenario must run", why)
	}
	t.Skip(why)
}

var python struct {
	once sync.Once
	path string
	err  error
}

// pythonPath is the python3 interpreter itself: python3 in PATH may be a
// wrapper (pyenv's shim is a shell script) that would stand in the
// scenario for a while under another comm.
func pythonPath(t testing.TB) string {
	t.Helper()
	python.once.Do(func() {
		var p string
		if p, python.err = exec.LookPath("python3"); python.err != nil {
			return
		}
		cmd := exec.Command(p, "-c", "import sys; print(sys.executable)")
		cmd.Env = scenarioChildEnv()
		out, err := cmd.Output()
		python.path = strings.TrimSpace(string(out))
		if err != nil || python.path == "" {
			python.err = fmt.Errorf("%s -c 'print(sys.executable)': %v", p, err)
		}
	})
	if python.err != nil {
		skipOrFatal(t, "python3: "+python.err.Error())
	}
	return python.path
}

// StartScenario starts the scenario of the given kind (one of
// ScenarioKinds) and waits until it has settled in its state; it goes
// away with the test (t.Cleanup): every process it started is killed
// and waited for, its files removed. It skips when a program it needs
// is missing, except under CI.
func StartScenario(t testing.TB, kind string) *Scenario {
	t.Helper()
	needs, ok := scenarioNeeds[kind]
	if !ok {
		t.Fatalf("unknown scenario %q", kind)
	}
	for _, p := range needs {
		if _, err := exec.LookPath(p); err != nil {
			skipOrFatal(t, fmt.Sprintf("scenario %s needs %s: %v", kind, p, err))
		}
	}
	if kind == "pidns" && os.Geteuid() != 0 {
		skipOrFatal(t, "scenario pidns needs root")
	}
	s := &Scenario{
		Kind: kind, Procs: map[string]*Proc{}, Inos: map[string]uint64{},
		FIFOs: map[string]string{}, Files: map[string]string{},
		Want: scenarioWant(kind), dir: t.TempDir(), deadline: time.Now().Add(10 * time.Second),
	}
	t.Cleanup(s.stop)
	var err error
	if s.devnull, err = os.OpenFile(os.DevNull, os.O_RDWR, 0); err != nil {
		t.Fatal(err)
	}
	// A file, not the test's stderr: that may be a pipe (go test reads
	// it), which would join the scenario.
	s.stderr = filepath.Join(s.dir, "stderr")
	stderr, err := os.Create(s.stderr)
	if err != nil {
		t.Fatal(err)
	}
	stderr.Close()

	const stable = 100 * time.Millisecond // how long a state must hold to count
	switch kind {
	case "go-exec", "go-exec-full":
		prog := map[string][]string{"go-exec": {"sleep", "600"}, "go-exec-full": {"yes"}}[kind]
		rep := s.helper(t, "reader", "goreader", kind, stdio{}, prog...)
		s.adopt(t, "writer", "reader", rep.Child, prog[0])
		s.pipeOf(t, "pipe", "writer", 1)
		if kind == "go-exec" {
			s.settle(t, stable, s.wchanIn("writer", "nanosleep"), s.someThreadIn("reader", "epoll", "ep_poll"))
		} else {
			s.settle(t, stable, s.wchanIn("writer", "pipe"), s.someThreadIn("reader", "do_wait"))
		}
	case "python-asyncio", "python-asyncio-full":
		mode, prog := "idle", []string{"sleep", "600"}
		if kind == "python-asyncio-full" {
			mode, prog = "full", []string{"yes"}
		}
		py := pythonPath(t)
		s.prog(t, "reader", stdio{}, append([]string{py, s.script(t, "asyncio_reader.py"), mode}, prog...)...)
		s.waitChild(t, "writer", "reader", prog[0])
		s.pipeOf(t, "pipe", "writer", 1)
		w := "nanosleep"
		if mode == "full" {
			w = "pipe"
		}
		s.settle(t, stable, s.wchanIn("writer", w), s.wchanIn("reader", "epoll", "ep_poll"))
	case "select-reader", "poll-reader":
		py := pythonPath(t)
		mode, calls := "select", selectCalls
		if kind == "poll-reader" {
			mode, calls = "poll", pollCalls
		}
		r, w := s.pipe(t, "pipe")
		s.prog(t, "writer", stdio{out: w}, "sleep", "600")
		s.prog(t, "reader", stdio{in: r}, py, s.script(t, "selector.py"), mode)
		r.Close()
		w.Close()
		s.settle(t, stable, s.wchanIn("writer", "nanosleep"), s.wchanIn("reader", "poll", "select"), s.syscallIn("reader", calls...))
	case "select-full":
		py := pythonPath(t)
		r, w := s.pipe(t, "pipe")
		r2, w2 := s.pipe(t, "other")
		s.prog(t, "writer", stdio{out: w}, "yes")
		s.prog(t, "other-writer", stdio{out: w2}, "sleep", "600")
		s.prog(t, "reader", stdio{in: r, extra: []*os.File{r2}}, py, s.script(t, "selector.py"), "select-other")
		for _, f := range []*os.File{r, w, r2, w2} {
			f.Close()
		}
		s.settle(t, stable, s.wchanIn("writer", "pipe"), s.wchanIn("other-writer", "nanosleep"),
			s.wchanIn("reader", "poll", "select"), s.syscallIn("reader", selectCalls...))
	case "thread-reader-full":
		r, w := s.pipe(t, "pipe")
		s.prog(t, "writer", stdio{out: w}, "yes")
		rep := s.helper(t, "reader", "threadreader", kind, stdio{in: r})
		r.Close()
		w.Close()
		s.Procs["reader"].TID = rep.TID
		s.settle(t, stable, s.wchanIn("writer", "pipe"), s.wchanIn("reader", "futex"))
	case "fifo-writer-open", "fifo-reader-open":
		path := s.fifo(t, "fifo")
		if kind == "fifo-writer-open" {
			s.prog(t, "writer", stdio{}, "sh", "-c", `echo hi > "$1"`, "sh", path)
			s.settle(t, stable, s.wchanIn("writer", "wait_for_partner", "fifo_open"))
		} else {
			s.prog(t, "reader", stdio{}, "cat", path)
			s.settle(t, stable, s.wchanIn("reader", "wait_for_partner", "fifo_open"))
		}
	case "sigstop-middle":
		r1, w1 := s.pipe(t, "in")
		r2, w2 := s.pipe(t, "out")
		s.prog(t, "writer", stdio{out: w1}, "yes")
		s.prog(t, "middle", stdio{in: r1, out: w2}, "cat")
		s.prog(t, "reader", stdio{in: r2}, "cat")
		for _, f := range []*os.File{r1, w1, r2, w2} {
			f.Close()
		}
		s.settle(t, 0) // the middle runs cat (a stop before would stop the helper)
		if err := unix.PidfdSendSignal(s.Procs["middle"].pidfd, unix.SIGSTOP, nil, 0); err != nil {
			t.Fatalf("stopping the middle cat: %v", err)
		}
		s.settle(t, stable, s.stateIs("middle", 'T'), s.wchanIn("writer", "pipe"), s.wchanIn("reader", "pipe"))
	case "leaked-pipe":
		lr, lw := s.pipe(t, "leaked")
		lr.Close()
		var conds []cond
		for i := 1; i <= 8; i++ {
			role := fmt.Sprintf("holder%d", i)
			s.prog(t, role, stdio{extra: []*os.File{lw}}, "sleep", "600")
			conds = append(conds, s.wchanIn(role, "nanosleep"))
		}
		lw.Close()
		r, w := s.pipe(t, "pipe")
		s.prog(t, "writer", stdio{out: w}, "yes")
		s.prog(t, "reader", stdio{in: r}, "sleep", "600")
		r.Close()
		w.Close()
		s.settle(t, stable, append(conds, s.wchanIn("writer", "pipe"), s.wchanIn("reader", "nanosleep"))...)
	case "busy":
		r1, w1 := s.pipe(t, "in")
		s.prog(t, "writer", stdio{out: w1}, "yes")
		if _, err := exec.LookPath("gzip"); err == nil {
			r2, w2 := s.pipe(t, "out")
			s.prog(t, "middle", stdio{in: r1, out: w2}, "gzip", "-1")
			s.prog(t, "reader", stdio{in: r2}, "cat")
			for _, f := range []*os.File{r1, w1, r2, w2} {
				f.Close()
			}
			s.settle(t, stable, s.flowing("middle"), s.flowing("reader"))
		} else if _, err := exec.LookPath("md5sum"); err == nil {
			s.prog(t, "reader", stdio{in: r1}, "md5sum")
			r1.Close()
			w1.Close()
			s.settle(t, stable, s.flowing("reader"))
		} else {
			r1.Close()
			w1.Close()
			skipOrFatal(t, "scenario busy needs gzip or md5sum")
		}
	case "bursty":
		r, w := s.pipe(t, "pipe")
		s.helper(t, "writer", "burstwriter", "burst-writer", stdio{out: w})
		s.helper(t, "reader", "burstreader", "burst-reader", stdio{in: r})
		r.Close()
		w.Close()
		s.settle(t, stable, s.wchanIn("reader", "nanosleep"))
	case "tail-grep":
		log := filepath.Join(s.dir, "log")
		s.Files["log"], s.Files["matches"] = log, filepath.Join(s.dir, "matches")
		if err := os.WriteFile(log, []byte("started\n"), 0o644); err != nil {
			t.Fatal(err)
		}
		out, err := os.Create(s.Files["matches"])
		if err != nil {
			t.Fatal(err)
		}
		r, w := s.pipe(t, "pipe")
		s.prog(t, "writer", stdio{out: w}, "tail", "-f", log)
		s.prog(t, "reader", stdio{in: r, out: out}, "grep", "ERROR")
		r.Close()
		w.Close()
		out.Close()
		s.appendEvery(log, 2*time.Second)
		s.settle(t, stable, s.wchanIn("reader", "pipe"))
	case "pidns":
		s.prog(t, "unshare", stdio{}, "unshare", "-fp", "--mount-proc", "sh", "-c", "yes | sleep 600")
		s.waitChild(t, "init", "unshare", "sh")
		s.waitChild(t, "writer", "init", "yes")
		s.waitChild(t, "reader", "init", "sleep")
		s.pipeOf(t, "pipe", "writer", 1)
		s.settle(t, stable, s.wchanIn("writer", "pipe"), s.wchanIn("reader", "nanosleep"), func() string {
			if n := s.Procs["init"].NSPID; n != 1 {
				return fmt.Sprintf("init has pid %d in its namespace, not 1", n)
			}
			return ""
		})
	case "shell-subshell":
		s.prog(t, "shell", stdio{}, "sh", "-c", "(sleep 600; echo) | cat")
		s.waitChildFunc(t, "subshell", "shell", "sh", "a sh with a sleep child", func(pid int) bool {
			return slices.ContainsFunc(scChildren(pid), func(c int) bool { return scComm(c) == "sleep" })
		})
		s.waitChild(t, "sleep", "subshell", "sleep")
		s.waitChild(t, "cat", "shell", "cat")
		s.pipeOf(t, "pipe", "cat", 0)
		s.settle(t, stable, s.wchanIn("sleep", "nanosleep"), s.wchanIn("subshell", "do_wait"),
			s.wchanIn("shell", "do_wait"), s.wchanIn("cat", "pipe"))
	}
	s.Settled = time.Now()
	return s
}

// PID is the pid of a role.
func (s *Scenario) PID(role string) int { return s.Procs[role].PID }

// PIDs are every process's pid, in start order.
func (s *Scenario) PIDs() []int {
	var out []int
	for _, p := range s.order {
		out = append(out, p.PID)
	}
	return out
}

// Ino is the inode of pipe "pipe".
func (s *Scenario) Ino() uint64 { return s.Inos["pipe"] }

// Stderr is what the stages wrote on their stderr so far.
func (s *Scenario) Stderr() string {
	b, _ := os.ReadFile(s.stderr)
	return string(b)
}

func (s *Scenario) pipe(t testing.TB, name string) (r, w *os.File) {
	t.Helper()
	r, w, err := os.Pipe()
	if err != nil {
		t.Fatal(err)
	}
	var st unix.Stat_t
	if err := unix.Fstat(int(r.Fd()), &st); err != nil {
		t.Fatal(err)
	}
	s.Inos[name] = st.Ino
	return r, w
}

func (s *Scenario) fifo(t testing.TB, name string) string {
	t.Helper()
	path := filepath.Join(s.dir, name)
	if err := unix.Mkfifo(path, 0o600); err != nil {
		t.Fatal(err)
	}
	var st unix.Stat_t
	if err := unix.Stat(path, &st); err != nil {
		t.Fatal(err)
	}
	s.FIFOs[name], s.Inos[name] = path, st.Ino
	return path
}

// script writes an embedded python script into the scenario's directory.
func (s *Scenario) script(t testing.TB, name string) string {
	t.Helper()
	b, err := scenarioScripts.ReadFile("testdata/scenarios/" + name)
	if err != nil {
		t.Fatal(err)
	}
	path := filepath.Join(s.dir, name)
	if err := os.WriteFile(path, b, 0o644); err != nil {
		t.Fatal(err)
	}
	return path
}

// pipeOf names the pipe a role has on fd.
func (s *Scenario) pipeOf(t testing.TB, name, role string, fd int) {
	t.Helper()
	p := s.Procs[role]
	link, err := os.Readlink(fmt.Sprintf("/proc/%d/fd/%d", p.PID, fd))
	var ino uint64
	if err == nil {
		_, err = fmt.Sscanf(link, "pipe:[%d]", &ino)
	}
	if err != nil {
		s.fatal(t, fmt.Sprintf("%s's fd %d is not a pipe (%q): %v", role, fd, link, err))
	}
	s.Inos[name] = ino
}

func truncComm(name string) string {
	name = filepath.Base(name)
	if len(name) > 15 {
		name = name[:15]
	}
	return name
}

// run starts a stage: this test binary with env and args, given comm
// once it runs its program.
func (s *Scenario) run(t testing.TB, role, comm string, fds stdio, env []string, argv ...string) *Proc {
	t.Helper()
	if _, dup := s.Procs[role]; dup {
		t.Fatalf("scenario %s: role %s twice", s.Kind, role)
	}
	cmd := exec.Command(argv[0], argv[1:]...)
	cmd.Env = append(scenarioChildEnv(), env...)
	stderr, err := os.OpenFile(s.stderr, os.O_WRONLY|os.O_APPEND, 0)
	if err != nil {
		t.Fatal(err)
	}
	defer stderr.Close()
	cmd.Stdin, cmd.Stdout, cmd.Stderr, cmd.ExtraFiles = s.devnull, s.devnull, stderr, fds.extra
	if fds.in != nil {
		cmd.Stdin = fds.in
	}
	if fds.out != nil {
		cmd.Stdout = fds.out
	}
	if err := cmd.Start(); err != nil {
		s.fatal(t, fmt.Sprintf("starting %s (%s): %v", role, comm, err))
	}
	p := &Proc{Role: role, PID: cmd.Process.Pid, TID: cmd.Process.Pid, Comm: comm, NSPID: cmd.Process.Pid, cmd: cmd, pidfd: -1}
	// Our unreaped child: the pid is ours until we wait for it.
	if p.pidfd, err = unix.PidfdOpen(p.PID, 0); err != nil {
		p.pidfd = -1
	}
	p.start, _ = scStartTime(p.PID)
	s.Procs[role] = p
	s.order = append(s.order, p)
	return p
}

// prog starts a program (argv[0], looked up in PATH) as role.
func (s *Scenario) prog(t testing.TB, role string, fds stdio, argv ...string) *Proc {
	t.Helper()
	return s.run(t, role, truncComm(argv[0]), fds,
		[]string{scenarioEnv + "=exec", fmt.Sprintf("%s_KEEP=%d", scenarioEnv, len(fds.extra))},
		append([]string{os.Args[0]}, argv...)...)
}

// helper starts a Go helper mode of this binary as role, under comm (a
// symlink to the binary), and returns its report.
func (s *Scenario) helper(t testing.TB, role, comm, mode string, fds stdio, args ...string) scenarioReport {
	t.Helper()
	exe, err := os.Executable()
	if err != nil {
		t.Fatal(err)
	}
	link := filepath.Join(s.dir, comm)
	if err := os.Symlink(exe, link); err != nil && !os.IsExist(err) {
		t.Fatal(err)
	}
	rr, rw, err := os.Pipe()
	if err != nil {
		t.Fatal(err)
	}
	defer rr.Close()
	fds.extra = append([]*os.File{rw}, fds.extra...)
	p := s.run(t, role, truncComm(comm), fds,
		[]string{scenarioEnv + "=" + mode, fmt.Sprintf("%s_KEEP=%d", scenarioEnv, len(fds.extra))},
		append([]string{link}, args...)...)
	rw.Close()
	rr.SetReadDeadline(time.Now().Add(time.Until(s.deadline)))
	var rep scenarioReport
	if err := json.NewDecoder(rr).Decode(&rep); err != nil {
		s.fatal(t, fmt.Sprintf("helper %s (%s) did not report: %v", role, mode, err))
	}
	if rep.PID != p.PID {
		s.fatal(t, fmt.Sprintf("helper %s reports pid %d, started as %d", role, rep.PID, p.PID))
	}
	return rep
}

// adopt records pid, a child of parent's process, as role.
func (s *Scenario) adopt(t testing.TB, role, parent string, pid int, comm string) *Proc {
	t.Helper()
	p, err := s.tryAdopt(role, parent, pid, comm)
	if err != nil {
		s.fatal(t, err.Error())
	}
	return p
}

func (s *Scenario) tryAdopt(role, parent string, pid int, comm string) (*Proc, error) {
	pp := s.Procs[parent]
	fd, err := unix.PidfdOpen(pid, 0)
	if err != nil {
		return nil, fmt.Errorf("pidfd_open %d (%s): %v", pid, role, err)
	}
	// Checked after pidfd_open: the pidfd holds the process that was
	// pp's child then, not a later one with the same pid.
	if ppid, _ := scPPID(pid); ppid != pp.PID {
		unix.Close(fd)
		return nil, fmt.Errorf("%d (%s) is not a child of %s %d", pid, role, parent, pp.PID)
	}
	p := &Proc{Role: role, PID: pid, TID: pid, Comm: truncComm(comm), NSPID: scNSPID(pid), Parent: parent, pidfd: fd}
	p.start, _ = scStartTime(pid)
	s.Procs[role] = p
	s.order = append(s.order, p)
	return p, nil
}

// waitChild waits for a child of parent running comm and records it.
func (s *Scenario) waitChild(t testing.TB, role, parent, comm string) *Proc {
	t.Helper()
	return s.waitChildFunc(t, role, parent, comm, "", nil)
}

// waitChildFunc waits for a child of parent running comm for which ok
// holds (desc tells what ok looks for) and records it.
func (s *Scenario) waitChildFunc(t testing.TB, role, parent, comm, desc string, ok func(pid int) bool) *Proc {
	t.Helper()
	taken := map[int]bool{}
	for _, p := range s.Procs {
		taken[p.PID] = true
	}
	for {
		for _, c := range scChildren(s.Procs[parent].PID) {
			if taken[c] || scComm(c) != truncComm(comm) || (ok != nil && !ok(c)) {
				continue
			}
			if p, err := s.tryAdopt(role, parent, c, comm); err == nil {
				return p
			}
		}
		if time.Now().After(s.deadline) {
			if desc == "" {
				desc = comm
			}
			s.fatal(t, fmt.Sprintf("%s (%s) never showed up as a child of %s", role, desc, parent))
		}
		time.Sleep(2 * time.Millisecond)
	}
}

// appendEvery appends a line to path every d until the scenario stops.
func (s *Scenario) appendEvery(path string, d time.Duration) {
	done := make(chan struct{})
	var wg sync.WaitGroup
	wg.Add(1)
	go func() {
		defer wg.Done()
		tick := time.NewTicker(d)
		defer tick.Stop()
		for n := 1; ; n++ {
			select {
			case <-done:
				return
			case <-tick.C:
			}
			line := fmt.Sprintf("tick %d\n", n)
			if n%2 == 0 {
				line = fmt.Sprintf("ERROR tick %d\n", n)
			}
			if f, err := os.OpenFile(path, os.O_WRONLY|os.O_APPEND, 0); err == nil {
				f.WriteString(line)
				f.Close()
			}
		}
	}()
	s.stopFns = append(s.stopFns, func() { close(done); wg.Wait() })
}

// A cond is "" when it holds, else what is wrong.
type cond func() string

// wchanIn: the role's waiting thread sleeps in a kernel function whose
// name contains one of subs.
func (s *Scenario) wchanIn(role string, subs ...string) cond {
	return func() string {
		p := s.Procs[role]
		w := Wchan(p.PID, p.TID)
		for _, sub := range subs {
			if strings.Contains(w, sub) {
				return ""
			}
		}
		return fmt.Sprintf("%s %d/%d sleeps in %q, not in %s", role, p.PID, p.TID, w, strings.Join(subs, "|"))
	}
}

// someThreadIn: some thread of the role sleeps in a kernel function
// whose name contains one of subs; it becomes the role's TID.
func (s *Scenario) someThreadIn(role string, subs ...string) cond {
	return func() string {
		p := s.Procs[role]
		tids := scTasks(p.PID)
		// The thread seen before first: the TID does not hop around.
		slices.SortStableFunc(tids, func(a, b int) int {
			if a == p.TID {
				return -1
			} else if b == p.TID {
				return 1
			}
			return 0
		})
		for _, tid := range tids {
			w := Wchan(p.PID, tid)
			for _, sub := range subs {
				if strings.Contains(w, sub) {
					p.TID = tid
					return ""
				}
			}
		}
		return fmt.Sprintf("no thread of %s %d sleeps in %s", role, p.PID, strings.Join(subs, "|"))
	}
}

// syscallIn: the role's waiting thread is in one of the syscalls nrs.
func (s *Scenario) syscallIn(role string, nrs ...int) cond {
	return func() string {
		p := s.Procs[role]
		b, _ := os.ReadFile(fmt.Sprintf("/proc/%d/task/%d/syscall", p.PID, p.TID))
		f := strings.Fields(string(b))
		if len(f) > 0 {
			if nr, err := strconv.Atoi(f[0]); err == nil && slices.Contains(nrs, nr) {
				return ""
			}
		}
		return fmt.Sprintf("%s %d/%d is in syscall %q, not one of %v", role, p.PID, p.TID, strings.TrimSpace(string(b)), nrs)
	}
}

func (s *Scenario) stateIs(role string, state byte) cond {
	return func() string {
		p := s.Procs[role]
		if st := scState(p.PID); st != state {
			return fmt.Sprintf("%s %d is in state %c, not %c", role, p.PID, st, state)
		}
		return ""
	}
}

// flowing: the role keeps reading (rchar in /proc/PID/io grows, at
// least once every half second).
func (s *Scenario) flowing(role string) cond {
	var last uint64
	var since time.Time
	return func() string {
		p := s.Procs[role]
		n := scRchar(p.PID)
		now := time.Now()
		switch {
		case since.IsZero():
			last, since = n, now
			return fmt.Sprintf("%s %d: not seen reading yet", role, p.PID)
		case n > last:
			last, since = n, now
			return ""
		case now.Sub(since) < 500*time.Millisecond:
			return ""
		}
		return fmt.Sprintf("%s %d has read nothing for %v", role, p.PID, now.Sub(since).Round(time.Millisecond))
	}
}

// settle waits until every process runs its program, and conds hold
// without a break for stable.
func (s *Scenario) settle(t testing.TB, stable time.Duration, conds ...cond) {
	t.Helper()
	var okSince time.Time
	for {
		var bad []string
		for _, p := range s.order {
			if c := scComm(p.PID); c != p.Comm {
				bad = append(bad, fmt.Sprintf("%s %d runs %q, not %q", p.Role, p.PID, c, p.Comm))
			}
		}
		for _, c := range conds {
			if msg := c(); msg != "" {
				bad = append(bad, msg)
			}
		}
		now := time.Now()
		if len(bad) > 0 {
			okSince = time.Time{}
		} else if okSince.IsZero() {
			okSince = now
		}
		if len(bad) == 0 && now.Sub(okSince) >= stable {
			return
		}
		if now.After(s.deadline) {
			s.fatal(t, "did not settle: "+strings.Join(bad, "; "))
		}
		time.Sleep(5 * time.Millisecond)
	}
}

// fatal fails the test with the state of every process and the stderr
// of the stages.
func (s *Scenario) fatal(t testing.TB, msg string) {
	t.Helper()
	var states []string
	for _, p := range s.order {
		var ths []string
		for _, tid := range scTasks(p.PID) {
			ths = append(ths, fmt.Sprintf("%d:%s", tid, Wchan(p.PID, tid)))
		}
		states = append(states, fmt.Sprintf("%s %d (%s) state %c threads [%s]", p.Role, p.PID, scComm(p.PID), scState(p.PID), strings.Join(ths, " ")))
	}
	t.Fatalf("scenario %s: %s\nprocesses: %s\nstderr of the stages:\n%s", s.Kind, msg, strings.Join(states, "; "), s.Stderr())
}

// stop kills every process of the scenario and what they started, waits
// for them, and removes the scenario's files.
//
// The deepest processes go first, and each level is left to be reaped
// by its parent (a stage of the scenario) before the next is killed: an
// orphan would be reaped by pid 1, which may take its time.
func (s *Scenario) stop() {
	s.stopOnce.Do(func() {
		for _, f := range s.stopFns {
			f()
		}
		type node struct {
			pid, pidfd int
			start      uint64
			depth      int
		}
		var nodes []*node
		seen := map[int]bool{}
		recorded := map[int]*Proc{}
		for _, p := range s.order {
			recorded[p.PID] = p
		}
		// Each process is pinned by a pidfd opened while its parent was
		// seen to be its parent: no other process can be hit.
		var walk func(pid, depth int)
		walk = func(pid, depth int) {
			for _, c := range scChildren(pid) {
				if seen[c] {
					continue
				}
				fd := -1
				if p := recorded[c]; p != nil && p.pidfd >= 0 {
					fd, p.pidfd = p.pidfd, -1
				} else if fd, _ = unix.PidfdOpen(c, 0); fd < 0 {
					continue
				}
				st, err := scStartTime(c)
				if ppid, _ := scPPID(c); ppid != pid || err != nil {
					unix.Close(fd)
					continue
				}
				seen[c] = true
				nodes = append(nodes, &node{pid: c, pidfd: fd, start: st, depth: depth})
				walk(c, depth+1)
			}
		}
		for _, p := range s.order {
			if p.cmd != nil {
				seen[p.PID] = true
				walk(p.PID, 1)
			}
		}
		// Recorded processes no longer below ours (their parent died):
		// killed first.
		for _, p := range s.order {
			if p.pidfd >= 0 && p.cmd == nil {
				nodes = append(nodes, &node{pid: p.PID, pidfd: p.pidfd, start: p.start, depth: 1 << 20})
				p.pidfd = -1
			}
		}
		slices.SortStableFunc(nodes, func(a, b *node) int { return b.depth - a.depth })
		for i := 0; i < len(nodes); {
			j := i
			for j < len(nodes) && nodes[j].depth == nodes[i].depth {
				unix.PidfdSendSignal(nodes[j].pidfd, unix.SIGKILL, nil, 0)
				j++
			}
			deadline := time.Now().Add(time.Second)
			for _, n := range nodes[i:j] {
				for time.Now().Before(deadline) {
					if st, err := scStartTime(n.pid); err != nil || st != n.start {
						break // reaped
					}
					time.Sleep(time.Millisecond)
				}
				unix.Close(n.pidfd)
			}
			i = j
		}
		for _, p := range s.order {
			if p.cmd != nil {
				if p.pidfd >= 0 {
					unix.PidfdSendSignal(p.pidfd, unix.SIGKILL, nil, 0)
					unix.Close(p.pidfd)
					p.pidfd = -1
				} else {
					p.cmd.Process.Kill()
				}
			}
		}
		for _, p := range s.order {
			if p.cmd != nil {
				p.cmd.Wait()
			}
		}
		for _, path := range s.FIFOs {
			os.Remove(path)
		}
		for _, path := range s.Files {
			os.Remove(path)
		}
		if s.devnull != nil {
			s.devnull.Close()
		}
	})
}

// procfs helpers.

func scComm(pid int) string {
	b, _ := os.ReadFile(fmt.Sprintf("/proc/%d/comm", pid))
	return strings.TrimSpace(string(b))
}

// scStat are the fields of /proc/PID/stat after the comm: [0] is the
// state (field 3).
func scStat(pid int) []string {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return nil
	}
	i := bytes.LastIndexByte(b, ')')
	if i < 0 {
		return nil
	}
	return strings.Fields(string(b[i+1:]))
}

func scState(pid int) byte {
	if f := scStat(pid); len(f) > 0 {
		return f[0][0]
	}
	return '?'
}

func scPPID(pid int) (int, error) {
	f := scStat(pid)
	if len(f) < 2 {
		return 0, fmt.Errorf("no process %d", pid)
	}
	return strconv.Atoi(f[1])
}

func scStartTime(pid int) (uint64, error) {
	f := scStat(pid)
	if len(f) < 20 {
		return 0, fmt.Errorf("no process %d", pid)
	}
	return strconv.ParseUint(f[19], 10, 64) // field 22
}

// scChildren are the children of pid (of all its threads).
func scChildren(pid int) []int {
	var out []int
	for _, tid := range scTasks(pid) {
		b, _ := os.ReadFile(fmt.Sprintf("/proc/%d/task/%d/children", pid, tid))
		for _, f := range strings.Fields(string(b)) {
			if c, err := strconv.Atoi(f); err == nil {
				out = append(out, c)
			}
		}
	}
	return out
}

func scTasks(pid int) []int {
	ents, _ := os.ReadDir(fmt.Sprintf("/proc/%d/task", pid))
	var out []int
	for _, e := range ents {
		if tid, err := strconv.Atoi(e.Name()); err == nil {
			out = append(out, tid)
		}
	}
	return out
}

// scNSPID is the pid of pid in its innermost pid namespace.
func scNSPID(pid int) int {
	b, _ := os.ReadFile(fmt.Sprintf("/proc/%d/status", pid))
	for _, line := range strings.Split(string(b), "\n") {
		if rest, ok := strings.CutPrefix(line, "NSpid:"); ok {
			f := strings.Fields(rest)
			if len(f) > 0 {
				n, _ := strconv.Atoi(f[len(f)-1])
				return n
			}
		}
	}
	return pid
}

func scRchar(pid int) uint64 {
	b, _ := os.ReadFile(fmt.Sprintf("/proc/%d/io", pid))
	for _, line := range strings.Split(string(b), "\n") {
		if rest, ok := strings.CutPrefix(line, "rchar:"); ok {
			n, _ := strconv.ParseUint(strings.TrimSpace(rest), 10, 64)
			return n
		}
	}
	return 0
}
