// Package bench measures pipesnap against the user-space way of doing the
// same job: a workload of processes holding pipes with a given fill, a
// /proc walk (readlink + fdinfo of every fd) as the metadata reference, a
// plain memcpy of the same bytes as the physical reference, and a runner
// that times commands end to end with their peak RSS. scripts/bench.sh
// drives it through bench/cmd/pipesnap-bench, which writes
// bench/results.md.
package bench

import (
	"bufio"
	"errors"
	"fmt"
	"io"
	"math"
	"os"
	"os/exec"
	"os/signal"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"time"

	"golang.org/x/sys/unix"
)

// Stats sums up repeated measurements.
type Stats struct {
	N                int
	Min, Median, Max float64
	values           []float64
	MaxRSS           int64  // bytes, of the run measured for it (0 if none)
	CPU              *Stats // CPU time (user + system) of the same runs, ms
}

// Add records one measurement.
func (s *Stats) Add(v float64) {
	s.values = append(s.values, v)
	sorted := slices.Clone(s.values)
	slices.Sort(sorted)
	s.N = len(sorted)
	s.Min, s.Max = sorted[0], sorted[len(sorted)-1]
	if n := len(sorted); n%2 == 1 {
		s.Median = sorted[n/2]
	} else {
		s.Median = (sorted[n/2-1] + sorted[n/2]) / 2
	}
}

// Values returns the measurements in the order they were taken.
func (s *Stats) Values() []float64 { return slices.Clone(s.values) }

// Run is one finished command.
type Run struct {
	Wall   time.Duration
	CPU    time.Duration // user + system time of the command
	MaxRSS int64         // bytes; 0 if not measured
	Stderr string
}

// TimeBin is GNU time, used to measure peak RSS (see RunCmd).
const TimeBin = "/usr/bin/time"

// RunCmd starts argv with stdout going to out (nil: /dev/null), waits for
// it, and returns its wall time, from just before fork to just after
// wait4.
//
// With rss, it also returns the command's peak RSS, measured by running
// it under GNU time (which then adds its own fork and exec to the wall
// time). The rusage Go's wait4 returns would not do: Go starts children
// with clone(CLONE_VM|CLONE_VFORK), and the kernel counts the parent's
// resident set at exec in the child's ru_maxrss, so every child would
// seem to use at least what the bench process uses.
func RunCmd(argv []string, out *os.File, rss bool) (Run, error) {
	var rssFile string
	if rss {
		f, err := os.CreateTemp("", "pipesnap-bench-rss")
		if err != nil {
			return Run{}, err
		}
		f.Close()
		rssFile = f.Name()
		defer os.Remove(rssFile)
		argv = append([]string{TimeBin, "-f", "%M", "-o", rssFile}, argv...)
	}
	cmd := exec.Command(argv[0], argv[1:]...)
	if out != nil {
		cmd.Stdout = out
	}
	var stderr strings.Builder
	cmd.Stderr = &stderr
	start := time.Now()
	err := cmd.Run()
	r := Run{Wall: time.Since(start), Stderr: stderr.String()}
	if cmd.ProcessState != nil {
		r.CPU = cmd.ProcessState.UserTime() + cmd.ProcessState.SystemTime()
	}
	if err != nil {
		return r, fmt.Errorf("%s: %w: %s", strings.Join(argv, " "), err, strings.TrimSpace(r.Stderr))
	}
	if rss {
		b, err := os.ReadFile(rssFile)
		if err != nil {
			return r, err
		}
		fields := strings.Fields(string(b))
		if len(fields) == 0 {
			return r, fmt.Errorf("%s wrote no RSS", TimeBin)
		}
		kib, err := strconv.ParseInt(fields[len(fields)-1], 10, 64)
		if err != nil {
			return r, fmt.Errorf("%s: RSS %q: %w", TimeBin, b, err)
		}
		r.MaxRSS = kib << 10
	}
	return r, nil
}

// ProcWalk is the user-space metadata scan: for every fd of every pid,
// readlink /proc/PID/fd/N and read /proc/PID/fdinfo/N. It counts the fds
// and the pipe fds among them. Paths are resolved relative to the fd and
// fdinfo directories, and buffers reused: a fair, not a naive, walk.
func ProcWalk(pids []int) (fds, pipeFDs int, err error) {
	link := make([]byte, unix.PathMax)
	info := make([]byte, 4096)
	for _, pid := range pids {
		dir := "/proc/" + strconv.Itoa(pid)
		fdDir, err := os.Open(dir + "/fd")
		if err != nil {
			return fds, pipeFDs, err
		}
		names, err := fdDir.Readdirnames(-1)
		if err != nil {
			fdDir.Close()
			return fds, pipeFDs, err
		}
		infoDir, err := unix.Open(dir+"/fdinfo", unix.O_RDONLY|unix.O_DIRECTORY|unix.O_CLOEXEC, 0)
		if err != nil {
			fdDir.Close()
			return fds, pipeFDs, err
		}
		dfd := int(fdDir.Fd())
		for _, name := range names {
			n, err := unix.Readlinkat(dfd, name, link)
			if err != nil {
				continue
			}
			fds++
			if strings.HasPrefix(string(link[:n]), "pipe:[") {
				pipeFDs++
			}
			f, err := unix.Openat(infoDir, name, unix.O_RDONLY|unix.O_CLOEXEC, 0)
			if err != nil {
				continue
			}
			unix.Read(f, info)
			unix.Close(f)
		}
		unix.Close(infoDir)
		fdDir.Close()
	}
	return fds, pipeFDs, nil
}

// Memcpy copies total bytes in chunks of chunk bytes between two buffers
// allocated and faulted in beforehand, reps times, and returns the time
// of each pass: the physical reference for moving a dump's bytes once.
func Memcpy(total, chunk, reps int) []time.Duration {
	src := make([]byte, total)
	fill(src, 1)
	dst := make([]byte, total)
	fill(dst, 2)
	var out []time.Duration
	for range reps {
		start := time.Now()
		for off := 0; off < total; off += chunk {
			copy(dst[off:min(off+chunk, total)], src[off:])
		}
		out = append(out, time.Since(start))
	}
	if dst[total/2] != src[total/2] {
		panic("memcpy did not copy")
	}
	return out
}

// fill writes a pseudo-random pattern: no zero pages, nothing to dedup.
// closeInheritedPipes closes the pipes this process inherited beyond
// stdio (a non-close-on-exec fd of whoever started the bench), so that
// the workload holds only its own pipes.
func closeInheritedPipes() {
	names, _ := os.ReadDir("/proc/self/fd")
	for _, e := range names {
		fd, err := strconv.Atoi(e.Name())
		if err != nil || fd < 3 {
			continue
		}
		if l, err := os.Readlink("/proc/self/fd/" + e.Name()); err == nil && strings.HasPrefix(l, "pipe:[") {
			unix.Close(fd)
		}
	}
}

func fill(b []byte, seed uint32) {
	x := seed*2654435761 + 1
	for i := range b {
		x ^= x << 13
		x ^= x >> 17
		x ^= x << 5
		b[i] = byte(x)
	}
}

// Spec is a workload: Procs processes holding Pipes pipes in all (both
// ends of each in the same process), each pipe holding Fill bytes.
type Spec struct {
	Procs, Pipes, Fill int
}

func (s Spec) String() string {
	procs := "processes"
	if s.Procs == 1 {
		procs = "process"
	}
	return fmt.Sprintf("%d pipes x %s in %d %s", s.Pipes, Size(s.Fill), s.Procs, procs)
}

// Size prints a byte count as B, KiB or MiB.
func Size(n int) string {
	switch {
	case n >= 1<<20 && n%(1<<20) == 0:
		return fmt.Sprintf("%d MiB", n>>20)
	case n >= 1<<10 && n%(1<<10) == 0:
		return fmt.Sprintf("%d KiB", n>>10)
	}
	return fmt.Sprintf("%d B", n)
}

// Workload is a running workload.
type Workload struct {
	Spec Spec
	PIDs []int
	cmds []*exec.Cmd
}

const childEnv = "PIPESNAP_BENCH_WORKLOAD"

// MaybeChild runs a workload process and exits when this binary was
// started as one. Call it first thing in main (and in TestMain).
func MaybeChild() {
	v := os.Getenv(childEnv)
	if v == "" {
		return
	}
	var pipes, fill, first int
	if _, err := fmt.Sscanf(v, "%d,%d,%d", &pipes, &fill, &first); err != nil {
		fmt.Printf("error bad %s=%q\n", childEnv, v)
		os.Exit(1)
	}
	if err := holdPipes(pipes, fill, first); err != nil {
		fmt.Printf("error %v\n", err)
		os.Exit(1)
	}
	os.Exit(0)
}

// holdPipes creates the pipes, fills them (pipe first+i with pattern
// first+i), says "ready" on stdout, and holds them until SIGTERM or
// SIGKILL. After "ready" its stdio is /dev/null: the process holds the
// workload's pipes and nothing else.
func holdPipes(n, fillBytes, first int) error {
	closeInheritedPipes()
	var lim unix.Rlimit
	if err := unix.Getrlimit(unix.RLIMIT_NOFILE, &lim); err != nil {
		return err
	}
	if need := uint64(2*n + 64); lim.Cur < need {
		if need > lim.Max {
			return fmt.Errorf("%d pipes need %d fds; the hard limit is %d: use more processes", n, need, lim.Max)
		}
		lim.Cur = need
		if err := unix.Setrlimit(unix.RLIMIT_NOFILE, &lim); err != nil {
			return fmt.Errorf("raising RLIMIT_NOFILE to %d: %w", need, err)
		}
	}
	data := make([]byte, fillBytes)
	size := 0
	if fillBytes > 65536 {
		size = 4096
		for size < fillBytes {
			size <<= 1
		}
	}
	for i := range n {
		var p [2]int
		if err := unix.Pipe2(p[:], unix.O_CLOEXEC); err != nil {
			return fmt.Errorf("pipe %d: %w", i, err)
		}
		if size > 0 {
			if _, err := unix.FcntlInt(uintptr(p[1]), unix.F_SETPIPE_SZ, size); err != nil {
				return fmt.Errorf("F_SETPIPE_SZ %d: %w", size, err)
			}
		}
		if fillBytes > 0 {
			fill(data, uint32(first+i)+3)
			for b := data; len(b) > 0; {
				m, err := unix.Write(p[1], b)
				if err != nil {
					return fmt.Errorf("filling pipe %d: %w", i, err)
				}
				b = b[m:]
			}
		}
	}
	data = nil
	sig := make(chan os.Signal, 1)
	signal.Notify(sig, syscall.SIGTERM, syscall.SIGINT)
	fmt.Println("ready")
	null, err := unix.Open("/dev/null", unix.O_RDWR, 0)
	if err != nil {
		return err
	}
	for _, fd := range []int{0, 1, 2} {
		unix.Dup3(null, fd, 0)
	}
	unix.Close(null)
	<-sig
	return nil
}

// StartWorkload starts the workload's processes (this binary, run again
// through MaybeChild) and returns once every pipe is filled.
func StartWorkload(s Spec) (*Workload, error) {
	w := &Workload{Spec: s}
	self, err := os.Executable()
	if err != nil {
		return nil, err
	}
	first := 0
	for i := range s.Procs {
		n := s.Pipes / s.Procs
		if i < s.Pipes%s.Procs {
			n++
		}
		cmd := exec.Command(self)
		cmd.Env = append(os.Environ(), fmt.Sprintf("%s=%d,%d,%d", childEnv, n, s.Fill, first))
		first += n
		cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
		out, err := cmd.StdoutPipe()
		if err != nil {
			w.Stop()
			return nil, err
		}
		if err := cmd.Start(); err != nil {
			w.Stop()
			return nil, err
		}
		w.cmds = append(w.cmds, cmd)
		w.PIDs = append(w.PIDs, cmd.Process.Pid)
		r := bufio.NewReader(out)
		line, err := r.ReadString('\n')
		if line != "ready\n" {
			w.Stop()
			if err == nil || errors.Is(err, io.EOF) {
				err = errors.New(strings.TrimSpace(line))
			}
			return nil, fmt.Errorf("workload process %d of %v: %v", i, s, err)
		}
		// EOF once the child's stdout is /dev/null: from then on it holds
		// only its workload pipes.
		io.Copy(io.Discard, r)
	}
	return w, nil
}

// Stop ends exactly the processes this workload started.
func (w *Workload) Stop() {
	for _, c := range w.cmds {
		c.Process.Signal(syscall.SIGTERM)
	}
	for _, c := range w.cmds {
		done := make(chan struct{})
		go func() { c.Wait(); close(done) }()
		select {
		case <-done:
		case <-time.After(5 * time.Second):
			c.Process.Kill()
			<-done
		}
	}
	w.cmds = nil
}

// PIDArgs repeats flag before each pid: --pid 1 --pid 2.
func (w *Workload) PIDArgs(flag string) []string {
	var out []string
	for _, p := range w.PIDs {
		out = append(out, flag, strconv.Itoa(p))
	}
	return out
}

// Ratio is a/b, NaN when b is 0.
func Ratio(a, b float64) float64 {
	if b == 0 {
		return math.NaN()
	}
	return a / b
}
