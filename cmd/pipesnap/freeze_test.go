package main

import (
	"bufio"
	"bytes"
	"errors"
	"fmt"
	"io"
	"math/rand/v2"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"golang.org/x/sys/unix"
)

// The --freeze guarantees, through the built binary: one freeze at a
// time per process, children forked meanwhile frozen and moved back, no
// freeze as long as a stalled output, nothing left behind by a SIGKILL.

// frzCgroupRoot is where cgroup v2 is mounted, "" if nowhere.
func frzCgroupRoot() string {
	b, _ := os.ReadFile("/proc/self/mountinfo")
	for line := range strings.SplitSeq(string(b), "\n") {
		pre, post, ok := strings.Cut(line, " - ")
		f := strings.Fields(pre)
		if ok && strings.HasPrefix(post, "cgroup2 ") && len(f) > 4 && f[3] == "/" {
			return f[4]
		}
	}
	return ""
}

func frzCgroupOf(pid int) string {
	b, _ := os.ReadFile(fmt.Sprintf("/proc/%d/cgroup", pid))
	for line := range strings.SplitSeq(string(b), "\n") {
		if p, ok := strings.CutPrefix(line, "0::"); ok {
			return p
		}
	}
	return ""
}

// The processes of these tests' freezes: the pipesnaps run (a freeze
// cgroup is named "pipesnap-freeze-PID[-N]" by the freezer's pid) and
// their targets (a lock file "freeze-PID-START.lock" by the target's pid
// and start time). "go test ./..." runs other packages' tests at the
// same time (freeze/, whose own freezes make cgroups and lock files by
// the dozen): frzLeft counts only what these tests' freezes make, so it
// sees each of their leftovers and none of another package's.
var frzMine = struct {
	sync.Mutex
	dumps map[int]bool
	locks map[string]bool // lock file names
}{dumps: map[int]bool{}, locks: map[string]bool{}}

// frzOwnDump records the pid of a pipesnap these tests started.
func frzOwnDump(pid int) {
	frzMine.Lock()
	defer frzMine.Unlock()
	frzMine.dumps[pid] = true
}

// frzOwnTarget records a target (running) for its lock file.
func frzOwnTarget(t *testing.T, pid int) {
	t.Helper()
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	i := bytes.LastIndexByte(b, ')')
	if err != nil || i < 0 {
		t.Fatalf("pid %d: no stat: %v", pid, err)
	}
	f := strings.Fields(string(b[i+1:])) // state is field 3, starttime 22
	if len(f) < 20 {
		t.Fatalf("pid %d: stat %q", pid, b)
	}
	frzMine.Lock()
	defer frzMine.Unlock()
	frzMine.locks[fmt.Sprintf("freeze-%d-%s.lock", pid, f[19])] = true
}

// frzLeft lists the pipesnap freeze cgroups and lock files of these
// tests' freezes that exist.
func frzLeft() []string {
	frzMine.Lock()
	defer frzMine.Unlock()
	var out []string
	if root := frzCgroupRoot(); root != "" {
		m, _ := filepath.Glob(filepath.Join(root, "pipesnap-freeze-*"))
		for _, p := range m {
			pid, _, _ := strings.Cut(strings.TrimPrefix(filepath.Base(p), "pipesnap-freeze-"), "-")
			if n, err := strconv.Atoi(pid); err == nil && frzMine.dumps[n] {
				out = append(out, p)
			}
		}
	}
	m, _ := filepath.Glob("/run/pipesnap/freeze-*")
	for _, p := range m {
		if frzMine.locks[filepath.Base(p)] {
			out = append(out, p)
		}
	}
	return out
}

// frzRun runs pipesnap like run, its pid recorded for frzLeft.
func frzRun(t *testing.T, args ...string) (string, string, int) {
	t.Helper()
	cmd := exec.Command(pipesnapBin, args...)
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	frzOwnDump(cmd.Process.Pid)
	err := cmd.Wait()
	code := 0
	var ee *exec.ExitError
	if errors.As(err, &ee) {
		code = ee.ExitCode()
	} else if err != nil {
		t.Fatal(err)
	}
	return stdout.String(), stderr.String(), code
}

// frzInFreeze tells whether pid is stopped (T) or in a pipesnap freeze
// cgroup (a frozen task shows S in ps).
func frzInFreeze(pid int) bool {
	if strings.Contains(frzCgroupOf(pid), "pipesnap-freeze-") {
		return true
	}
	b, _ := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	i := bytes.LastIndexByte(b, ')')
	return i > 0 && i+2 < len(b) && (b[i+2] == 'T' || b[i+2] == 't')
}

// frzRunning checks that pid runs in cgroup want, not frozen, and that
// nothing of a freeze is left.
func frzRunning(pid int, want string) error {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return nil // gone (a short-lived child)
	}
	i := bytes.LastIndexByte(b, ')')
	if i > 0 && i+2 < len(b) && (b[i+2] == 'T' || b[i+2] == 't') {
		return fmt.Errorf("pid %d stopped (%c)", pid, b[i+2])
	}
	if cg := frzCgroupOf(pid); cg != want {
		return fmt.Errorf("pid %d in cgroup %s, was in %s", pid, cg, want)
	}
	if root := frzCgroupRoot(); root != "" {
		if fz, err := os.ReadFile(filepath.Join(root, want, "cgroup.freeze")); err == nil && strings.TrimSpace(string(fz)) == "1" {
			return fmt.Errorf("pid %d: cgroup %s frozen", pid, want)
		}
	}
	return nil
}

// frzAllRunning checks pid and its children.
func frzAllRunning(pid int, want string) error {
	if err := frzRunning(pid, want); err != nil {
		return err
	}
	for _, c := range frzChildren(pid) {
		if err := frzRunning(c, want); err != nil {
			return fmt.Errorf("child of %d: %w", pid, err)
		}
	}
	if l := frzLeft(); len(l) > 0 {
		return fmt.Errorf("left behind: %v", l)
	}
	return nil
}

func frzChildren(pid int) []int {
	files, _ := filepath.Glob(fmt.Sprintf("/proc/%d/task/*/children", pid))
	var out []int
	for _, f := range files {
		b, _ := os.ReadFile(f)
		for w := range strings.FieldsSeq(string(b)) {
			n, _ := strconv.Atoi(w)
			out = append(out, n)
		}
	}
	return out
}

func frzEventually(d time.Duration, check func() error) error {
	deadline := time.Now().Add(d)
	for {
		err := check()
		if err == nil || time.Now().After(deadline) {
			return err
		}
		time.Sleep(5 * time.Millisecond)
	}
}

// frzPipes makes n pipes holding size bytes each (grown past the
// default 64 KiB as needed), closed when the test ends.
func frzPipes(t *testing.T, n, size int) []*os.File {
	t.Helper()
	data := bytes.Repeat([]byte("frozen "), size/7+1)[:size]
	var out []*os.File
	for range n {
		r, w, err := os.Pipe()
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { r.Close(); w.Close() })
		if size > 64<<10 {
			if _, err := unix.FcntlInt(w.Fd(), unix.F_SETPIPE_SZ, size); err != nil {
				t.Fatal(err)
			}
		}
		if size > 0 {
			if _, err := w.Write(data); err != nil {
				t.Fatal(err)
			}
		}
		out = append(out, r, w)
	}
	return out
}

// frzTarget starts `sleep 60` holding n pipes of size bytes each.
func frzTarget(t *testing.T, n, size int) int {
	t.Helper()
	cmd := exec.Command("sleep", "60")
	cmd.ExtraFiles = frzPipes(t, n, size)
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	frzOwnTarget(t, cmd.Process.Pid)
	t.Cleanup(func() { cmd.Process.Kill(); cmd.Wait() })
	return cmd.Process.Pid
}

// frzForker starts a shell forking children (sleep 0.3) about every
// 2 ms, holding n pipes of size bytes each.
func frzForker(t *testing.T, n, size int) int {
	t.Helper()
	cmd := exec.Command("sh", "-c", "while :; do sleep 0.3 & sleep 0.002; done")
	cmd.ExtraFiles = frzPipes(t, n, size)
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	frzOwnTarget(t, cmd.Process.Pid)
	t.Cleanup(func() {
		cmd.Process.Kill()
		cmd.Wait()
	})
	time.Sleep(100 * time.Millisecond)
	return cmd.Process.Pid
}

// frzExited tells whether pid has exited (a zombie not waited for yet).
func frzExited(pid int) bool {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	i := bytes.LastIndexByte(b, ')')
	return err != nil || i < 0 || i+2 >= len(b) || b[i+2] == 'Z' || b[i+2] == 'X'
}

func frzRequire(t *testing.T) {
	t.Helper()
	requireBPF(t)
	if l := frzLeft(); len(l) > 0 {
		t.Fatalf("left behind before the test: %v", l)
	}
}

var frzStopped = regexp.MustCompile(`processes stopped for (\S+), with the`)

// frzStoppedFor is the "processes stopped for X" of dump's stderr.
func frzStoppedFor(t *testing.T, stderr string) time.Duration {
	t.Helper()
	m := frzStopped.FindStringSubmatch(stderr)
	if m == nil {
		t.Fatalf("no \"processes stopped for\" in %q", stderr)
	}
	d, err := time.ParseDuration(m[1])
	if err != nil {
		t.Fatal(err)
	}
	return d
}

// Two dump --freeze of one process at once: the second waits for the
// first; both succeed, and the process ends where it was, running.
// (Before the lock, 5 of 30 rounds left it in a pipesnap cgroup.)
func TestFreezeConcurrentDumps(t *testing.T) {
	frzRequire(t)
	pid := frzTarget(t, 2, 1000)
	before := frzCgroupOf(pid)
	for round := range 20 {
		// The lock is the freeze's, whatever the method: the BPF one
		// for a few rounds, the quicker tee one for the rest.
		method := "tee"
		if round < 2 {
			method = "bpf"
		}
		var wg sync.WaitGroup
		results := make([]string, 2)
		codes := make([]int, 2)
		for i := range 2 {
			wg.Go(func() {
				cmd := exec.Command(pipesnapBin, "dump", "--freeze", "--method", method, "--pid", strconv.Itoa(pid), "-o", "/dev/null")
				var stderr bytes.Buffer
				cmd.Stderr = &stderr
				err := cmd.Start()
				if err == nil {
					frzOwnDump(cmd.Process.Pid)
					err = cmd.Wait()
				}
				var ee *exec.ExitError
				if errors.As(err, &ee) {
					codes[i] = ee.ExitCode()
				} else if err != nil {
					codes[i] = -1
				}
				results[i] = stderr.String()
			})
		}
		wg.Wait()
		for i := range 2 {
			if codes[i] != 0 {
				t.Errorf("round %d: dump %d exit %d: %s", round, i, codes[i], results[i])
			}
		}
		if err := frzAllRunning(pid, before); err != nil {
			t.Fatalf("round %d: %v", round, err)
		}
	}
}

// A target that forks all the time: its children forked during the
// freeze are frozen with it and come back with it; the pipesnap cgroup
// is removed.
func TestFreezeForkingTarget(t *testing.T) {
	frzRequire(t)
	pid := frzForker(t, 1, 100)
	before := frzCgroupOf(pid)
	for round := range 5 {
		_, stderr, code := frzRun(t, "dump", "--freeze", "--pid", strconv.Itoa(pid), "-o", "/dev/null")
		if code != 0 || strings.Contains(stderr, "left behind") {
			t.Fatalf("round %d: exit %d: %s", round, code, stderr)
		}
		if err := frzAllRunning(pid, before); err != nil {
			t.Fatalf("round %d: %v", round, err)
		}
	}
}

// SIGKILL of pipesnap at random moments of dump --freeze, in every
// window (before, while locking, while frozen, after): the watchdog puts
// everything back. In the freezer's case a frozen task shows S in ps,
// not T: the check is the cgroup.
func TestFreezeSIGKILL(t *testing.T) {
	frzRequire(t)
	// 8 MiB in pipes: a walk of some milliseconds, for kills to land in.
	pid := frzForker(t, 8, 1<<20)
	before := frzCgroupOf(pid)

	// How long a whole dump takes here, for the uniform kills.
	whole := map[string]time.Duration{}
	for _, method := range []string{"bpf", "tee"} {
		t0 := time.Now()
		if _, stderr, code := frzRun(t, "dump", "--freeze", "--method", method, "--pid", strconv.Itoa(pid), "-o", "/dev/null"); code != 0 {
			t.Fatalf("dump: %s", stderr)
		}
		whole[method] = time.Since(t0)
	}

	const rounds = 30
	hits := map[string]int{}
	rescues := 0
	var slowest time.Duration // from a kill in the freeze to all running
	for round := range rounds {
		// Each moment with both methods; tee (no BPF to load) is the
		// quicker, so most rounds use it.
		method := "tee"
		if round/3%5 == 0 {
			method = "bpf"
		}
		cmd := exec.Command(pipesnapBin, "dump", "--freeze", "--method", method, "--pid", strconv.Itoa(pid), "-o", "/dev/null")
		stderr, err := cmd.StderrPipe()
		if err != nil {
			t.Fatal(err)
		}
		if err := cmd.Start(); err != nil {
			t.Fatal(err)
		}
		frzOwnDump(cmd.Process.Pid)
		var when string
		switch round % 3 {
		case 0: // anywhere in the run
			time.Sleep(time.Duration(rand.Int64N(int64(whole[method]))))
			when = "uniform"
		case 1: // once the lock file is there (watchdog up, freeze starting)
			when = "locking"
			for !frzExited(cmd.Process.Pid) {
				if m, _ := filepath.Glob(fmt.Sprintf("/run/pipesnap/freeze-%d-*", pid)); len(m) > 0 {
					break
				}
			}
			time.Sleep(time.Duration(rand.IntN(2000)) * time.Microsecond)
		case 2: // once the target is frozen
			when = "frozen"
			for !frzExited(cmd.Process.Pid) && !frzInFreeze(pid) {
			}
			time.Sleep(time.Duration(rand.IntN(1000)) * time.Microsecond)
		}
		inFreeze := frzInFreeze(pid)
		killed := time.Now()
		cmd.Process.Signal(syscall.SIGKILL)
		// Until pipesnap and its watchdog are gone (both hold stderr).
		msg, _ := io.ReadAll(bufio.NewReader(stderr))
		cmd.Wait()
		if inFreeze {
			hits[when]++
		}
		if strings.Contains(string(msg), "pipesnap: watchdog: ") {
			rescues++
		}
		if err := frzEventually(2*time.Second, func() error { return frzAllRunning(pid, before) }); err != nil {
			t.Fatalf("round %d (kill %s, frozen then: %v): %v\n%s", round, when, inFreeze, err, msg)
		}
		if inFreeze {
			slowest = max(slowest, time.Since(killed))
		}
	}
	t.Logf("%d kills; in the freeze, by moment: %v; watchdog rescues %d, all running again at most %v after the kill (a whole dump takes %v)",
		rounds, hits, rescues, slowest.Round(time.Millisecond), whole)
	if hits["frozen"] == 0 {
		t.Error("no kill landed while the target was frozen: the test tests nothing")
	}
}

// dump --freeze into a FIFO whose reader waits: the processes run again
// as soon as the walk is done, not when the reader has read. (Before the
// staging: stopped for as long as the reader waited.)
func TestFreezeSlowFIFO(t *testing.T) {
	frzRequire(t)
	pid := frzTarget(t, 6, 60000) // 360 kB: more than the FIFO and the encoder's buffer hold
	before := frzCgroupOf(pid)
	fifo := filepath.Join(t.TempDir(), "out.fifo")
	if err := syscall.Mkfifo(fifo, 0o600); err != nil {
		t.Fatal(err)
	}
	fd, err := unix.Open(fifo, unix.O_RDONLY|unix.O_NONBLOCK|unix.O_CLOEXEC, 0)
	if err != nil {
		t.Fatal(err)
	}
	const readerWaits = 1500 * time.Millisecond
	got := make(chan []byte, 1)
	go func() {
		defer unix.Close(fd)
		time.Sleep(readerWaits)
		unix.SetNonblock(fd, false)
		var b []byte
		buf := make([]byte, 1<<16)
		for {
			n, err := unix.Read(fd, buf)
			if n > 0 {
				b = append(b, buf[:n]...)
			}
			if n == 0 && err == nil || err != nil && err != unix.EINTR && err != unix.EAGAIN {
				break
			}
		}
		got <- b
	}()

	// Watch the target: how long is it seen frozen?
	stop := make(chan struct{})
	seen := make(chan time.Duration, 1)
	go func() {
		var frozen time.Duration
		last := time.Now()
		for {
			select {
			case <-stop:
				seen <- frozen
				return
			default:
			}
			now := time.Now()
			if frzInFreeze(pid) {
				frozen += now.Sub(last)
			}
			last = now
			time.Sleep(200 * time.Microsecond)
		}
	}()
	t0 := time.Now()
	_, stderr, code := frzRun(t, "dump", "--freeze", "--pid", strconv.Itoa(pid), "-o", fifo)
	took := time.Since(t0)
	close(stop)
	observed := <-seen
	if code != 0 {
		t.Fatalf("dump exit %d: %s", code, stderr)
	}
	snap := <-got
	stopped := frzStoppedFor(t, stderr)
	t.Logf("dump took %v (reader waited %v); processes stopped for %v (stderr), seen frozen %v", took.Round(time.Millisecond), readerWaits, stopped, observed.Round(time.Millisecond))
	if took < readerWaits {
		t.Errorf("dump took %v, less than the reader waited: the output did not stall", took)
	}
	if stopped > 100*time.Millisecond || observed > 200*time.Millisecond {
		t.Errorf("stopped for %v (stderr), seen frozen %v: the freeze lasted as long as the output stalled", stopped, observed)
	}
	path := filepath.Join(t.TempDir(), "got.snap")
	if err := os.WriteFile(path, snap, 0o600); err != nil {
		t.Fatal(err)
	}
	if _, stderr, code := run(t, "inspect", path); code != 0 {
		t.Errorf("the snapshot read from the FIFO (%d bytes): inspect exit %d: %s", len(snap), code, stderr)
	}
	if err := frzAllRunning(pid, before); err != nil {
		t.Error(err)
	}
}
