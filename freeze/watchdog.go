package freeze

import (
	"bufio"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"os/signal"
	"strconv"
	"strings"
	"syscall"
	"time"

	"golang.org/x/sys/unix"

	"github.com/pipesnap/pipesnap/internal/host"
)

// The watchdog: nothing catches SIGKILL, so the process that thaws when
// pipesnap cannot is another one. Stop re-executes pipesnap's own binary
// (/proc/self/exe) in watchdog mode before it stops anything:
//
//   - fd 0 is a socket (SOCK_SEQPACKET) from pipesnap, one message per
//     step, each sent before the step is taken: the lock file it is about
//     to take, the cgroup it freezes in, each process it moves there and
//     where from, each process it sends SIGSTOP (pid and start time: the
//     watchdog takes a pidfd at once, so a pid given out again is never
//     resumed). A message sent is in the kernel's socket buffer, so
//     whatever instant pipesnap dies at, the watchdog knows every step
//     taken;
//   - "resumed" says pipesnap has thawed: nothing left to rescue;
//     "thawed" that it has let everything go: the watchdog exits;
//   - end of file without it means pipesnap died: the watchdog does what
//     Thaw does (moves every member of the cgroup back where it came
//     from, thaws, removes the cgroup; SIGCONT to the stopped), says so
//     on stderr, removes the lock files and exits;
//   - each freeze lock, once taken, is sent along (SCM_RIGHTS): the
//     processes stay locked until the watchdog is done, so no other
//     freeze comes in between (lock.go); a lock file pipesnap died
//     creating is removed if nobody holds it;
//   - it runs in a session of its own, ignoring the signals of a
//     terminal or of kill to a process group; it is in pipesnap's cgroup,
//     and no target's child, so it is never frozen itself.

const (
	watchdogArg = "__pipesnap-freeze-watchdog"
	watchdogEnv = "PIPESNAP_FREEZE_WATCHDOG"
)

// errWatchdog means the watchdog could not be told a step: the step was
// not taken.
var errWatchdog = errors.New("the freeze watchdog is gone")

// WatchdogStart bounds how long Stop waits for the watchdog to be ready.
var WatchdogStart = 5 * time.Second

func init() {
	// Any binary that links this package can be the watchdog: pipesnap,
	// and the test binaries (a re-exec of /proc/self/exe).
	if len(os.Args) == 2 && os.Args[1] == watchdogArg && os.Getenv(watchdogEnv) == "1" {
		os.Exit(watchdogMain(0, os.Stderr))
	}
}

// watchdog is pipesnap's side of it.
type watchdog struct {
	cmd  *exec.Cmd
	sock int // its fd 0: a SOCK_SEQPACKET socket, one message a step
}

// startWatchdog starts the watchdog and waits until it is ready (its
// signals ignored).
func startWatchdog() (*watchdog, error) {
	pair, err := unix.Socketpair(unix.AF_UNIX, unix.SOCK_SEQPACKET|unix.SOCK_CLOEXEC, 0)
	if err != nil {
		return nil, err
	}
	child := os.NewFile(uintptr(pair[1]), "watchdog")
	readyR, readyW, err := os.Pipe()
	if err != nil {
		unix.Close(pair[0])
		child.Close()
		return nil, err
	}
	defer readyR.Close()
	cmd := exec.Command("/proc/self/exe", watchdogArg)
	cmd.Env = []string{watchdogEnv + "=1"}
	cmd.Stdin, cmd.Stdout, cmd.Stderr = child, readyW, os.Stderr
	cmd.SysProcAttr = &syscall.SysProcAttr{Setsid: true}
	err = cmd.Start()
	child.Close()
	readyW.Close()
	if err != nil {
		unix.Close(pair[0])
		return nil, err
	}
	wd := &watchdog{cmd: cmd, sock: pair[0]}
	readyR.SetReadDeadline(time.Now().Add(WatchdogStart))
	line, err := bufio.NewReader(readyR).ReadString('\n')
	if err == nil && line != "ready\n" {
		err = fmt.Errorf("it said %q", line)
	}
	if err == nil {
		err = wd.send("parent", strconv.Itoa(os.Getpid()))
	}
	if err != nil {
		cmd.Process.Kill()
		wd.finish()
		return nil, err
	}
	return wd, nil
}

// send writes one step. Fields are quoted (paths can hold anything).
func (wd *watchdog) send(verb string, args ...string) error {
	return wd.sendFD(-1, verb, args...)
}

// sendFD writes one step with an fd for the watchdog to hold (fd >= 0).
func (wd *watchdog) sendFD(fd int, verb string, args ...string) error {
	if wd == nil {
		return nil
	}
	var b strings.Builder
	b.WriteString(verb)
	for _, a := range args {
		b.WriteByte(' ')
		b.WriteString(strconv.Quote(a))
	}
	var oob []byte
	if fd >= 0 {
		oob = unix.UnixRights(fd)
	}
	for {
		err := unix.Sendmsg(wd.sock, []byte(b.String()), oob, nil, unix.MSG_NOSIGNAL)
		if err == unix.EINTR {
			continue
		}
		if err != nil {
			return fmt.Errorf("%w: %v", errWatchdog, err)
		}
		return nil
	}
}

func (wd *watchdog) pid() int {
	if wd == nil || wd.cmd.Process == nil {
		return 0
	}
	return wd.cmd.Process.Pid
}

// finish tells the watchdog all is thawed and waits until it is gone,
// however long that takes: it is never killed here. Told "thawed", it
// exits at once; if that could not be told (the socket broke), it takes
// the end of file for pipesnap's death and does its rescue, every step
// of which is bounded (cgroupFreeze.thaw, removeStale), and killing it
// then could leave a cgroup or a lock file behind. So when Thaw returns,
// and pipesnap exits, nothing of the freeze is left.
func (wd *watchdog) finish() {
	wd.send("thawed")
	unix.Close(wd.sock)
	wd.cmd.Wait()
}

// watchdogMain is the watchdog process; sock is its fd 0.
func watchdogMain(sock int, stderr io.Writer) int {
	signal.Ignore(unix.SIGINT, unix.SIGTERM, unix.SIGHUP, unix.SIGQUIT, unix.SIGPIPE,
		unix.SIGTSTP, unix.SIGTTIN, unix.SIGTTOU, unix.SIGUSR1, unix.SIGUSR2)
	os.Stdout.WriteString("ready\n")
	os.Stdout.Close()
	st := &wdState{set: &Set{}}
	buf := make([]byte, 64<<10)
	oob := make([]byte, unix.CmsgSpace(4*4))
	for {
		n, oobn, _, _, err := unix.Recvmsg(sock, buf, oob, unix.MSG_CMSG_CLOEXEC)
		if err == unix.EINTR {
			continue
		}
		if err != nil || n == 0 {
			break // pipesnap is gone
		}
		fd := -1
		if msgs, err := unix.ParseSocketControlMessage(oob[:oobn]); err == nil {
			for _, m := range msgs {
				if fds, err := unix.ParseUnixRights(&m); err == nil {
					for _, f := range fds {
						if fd < 0 {
							fd = f
						} else {
							unix.Close(f)
						}
					}
				}
			}
		}
		line := string(buf[:n])
		if line == "thawed" {
			return 0
		}
		st.apply(line, fd)
	}
	// pipesnap is gone before it thawed.
	what := st.what()
	err := st.set.resume()
	for _, l := range st.locks {
		l.unlock()
	}
	for path := range st.lockPaths {
		removeStale(path)
	}
	if what != "" {
		fmt.Fprintf(stderr, "pipesnap: watchdog: pipesnap (pid %d) died during its freeze: %s resumed\n", st.parent, what)
	}
	if err != nil {
		fmt.Fprintf(stderr, "pipesnap: watchdog: %v\n", err)
		return 1
	}
	return 0
}

// wdState is what the watchdog was told.
type wdState struct {
	set       *Set
	parent    int
	locks     []*procLock     // held: removed after the rescue
	lockPaths map[string]bool // being locked: removed if nobody holds them
	bad       int             // lines it could not use
}

func (st *wdState) apply(line string, fd int) {
	f, err := splitQuoted(line)
	if err != nil || len(f) == 0 {
		st.bad++
		if fd >= 0 {
			unix.Close(fd)
		}
		return
	}
	if fd >= 0 && !(f[0] == "lock" && len(f) == 2) {
		unix.Close(fd)
		fd = -1
	}
	atoi := func(s string) int { n, _ := strconv.Atoi(s); return n }
	switch {
	case f[0] == "parent" && len(f) == 2:
		st.parent = atoi(f[1])
	case f[0] == "lockpath" && len(f) == 2:
		if st.lockPaths == nil {
			st.lockPaths = map[string]bool{}
		}
		st.lockPaths[f[1]] = true
	case f[0] == "lock" && len(f) == 2 && fd >= 0:
		delete(st.lockPaths, f[1])
		st.locks = append(st.locks, &procLock{path: f[1], f: os.NewFile(uintptr(fd), f[1])})
	case f[0] == "cgroup" && len(f) == 4:
		st.set.cg = &cgroupFreeze{root: f[1], dir: f[2], created: f[3] == "1", origin: map[int]string{}}
	case f[0] == "nocgroup":
		st.set.cg = nil
	case f[0] == "resumed":
		st.set.cg = nil
		for _, p := range st.set.procs {
			unix.Close(p.pidfd)
		}
		st.set.procs = nil
	case f[0] == "origin" && len(f) == 3 && st.set.cg != nil:
		st.set.cg.addOrigin(atoi(f[1]), f[2])
	case f[0] == "stopped" && len(f) == 3:
		pid := atoi(f[1])
		start, _ := strconv.ParseUint(f[2], 10, 64)
		fd, err := unix.PidfdOpen(pid, 0)
		if err != nil {
			return // gone: nothing to resume
		}
		if now, ok := host.StartTicks(uint32(pid)); !ok || now != start {
			unix.Close(fd) // another process has the pid now
			return
		}
		st.set.procs = append(st.set.procs, proc{pid, fd})
	default:
		st.bad++
	}
}

// what says what the watchdog is about to resume, "" if nothing.
func (st *wdState) what() string {
	var parts []string
	if cg := st.set.cg; cg != nil && cg.dir != "" {
		if _, err := os.Stat(cg.dir); err == nil {
			parts = append(parts, "the processes in "+cg.dir)
		}
	}
	if n := len(st.set.procs); n > 0 {
		pids := make([]string, n)
		for i, p := range st.set.procs {
			pids[i] = strconv.Itoa(p.pid)
		}
		parts = append(parts, "pids "+strings.Join(pids, ", ")+" (SIGCONT)")
	}
	return strings.Join(parts, " and ")
}

// splitQuoted splits `verb "a" "b"`.
func splitQuoted(line string) ([]string, error) {
	verb, rest, _ := strings.Cut(line, " ")
	out := []string{verb}
	for rest != "" {
		q, err := strconv.QuotedPrefix(rest)
		if err != nil {
			return nil, err
		}
		s, err := strconv.Unquote(q)
		if err != nil {
			return nil, err
		}
		out = append(out, s)
		rest = strings.TrimPrefix(rest[len(q):], " ")
	}
	return out, nil
}
