package main

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/pipesnap/pipesnap/internal/pipetest"
	"github.com/pipesnap/pipesnap/resident"
)

var pipesnapBin string

// TestMain builds the pipesnap the tests run, or takes the one
// PIPESNAP_TEST_BIN names (the kernel matrix's VMs have no Go: it builds
// it for them, scripts/test-kernels.sh).
func TestMain(m *testing.M) {
	if bin := os.Getenv("PIPESNAP_TEST_BIN"); bin != "" {
		pipesnapBin = bin
		os.Exit(m.Run())
	}
	dir, err := os.MkdirTemp("", "pipesnap-cli")
	if err != nil {
		panic(err)
	}
	pipesnapBin = filepath.Join(dir, "pipesnap")
	// No test meets a resident serve it did not start (another test's, or
	// one running on the machine): the ones that want it name theirs.
	os.Setenv(resident.EnvSocket, resident.Off)
	out, err := exec.Command("go", "build", "-o", pipesnapBin, ".").CombinedOutput()
	if err != nil {
		os.Stderr.Write(out)
		panic(err)
	}
	code := m.Run()
	os.RemoveAll(dir)
	os.Exit(code)
}

// run runs the built pipesnap and returns stdout, stderr and exit status.
func run(t *testing.T, args ...string) (string, string, int) {
	t.Helper()
	cmd := exec.Command(pipesnapBin, args...)
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	err := cmd.Run()
	code := 0
	var ee *exec.ExitError
	if errors.As(err, &ee) {
		code = ee.ExitCode()
	} else if err != nil {
		t.Fatal(err)
	}
	return stdout.String(), stderr.String(), code
}

func requireBPF(t *testing.T) { t.Helper(); pipetest.RequireBPF(t) }

// stuckReader starts a process whose stdin is a pipe holding data that
// it never reads.
func stuckReader(t *testing.T, data string) (pid int, ino uint64) {
	t.Helper()
	r, w, err := os.Pipe()
	if err != nil {
		t.Fatal(err)
	}
	if _, err := w.WriteString(data); err != nil {
		t.Fatal(err)
	}
	w.Close()
	cmd := exec.Command("sleep", "60")
	cmd.Stdin = r
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	st, err := r.Stat()
	if err != nil {
		t.Fatal(err)
	}
	r.Close()
	t.Cleanup(func() { cmd.Process.Kill(); cmd.Wait() })
	ino = statIno(st)
	return cmd.Process.Pid, ino
}

func TestDumpInspectCat(t *testing.T) {
	requireBPF(t)
	const data = "stuck bytes\x00\x01 waiting for a reader\n"
	pid, ino := stuckReader(t, data)
	dir := t.TempDir()
	snap := filepath.Join(dir, "s.snap")

	_, stderr, code := run(t, "dump", "--pid", strconv.Itoa(pid), "-o", snap)
	if code != 0 {
		t.Fatalf("dump exit %d: %s", code, stderr)
	}
	if !strings.Contains(stderr, "1 process, ") {
		t.Errorf("dump summary: %q", stderr)
	}
	st, err := os.Stat(snap)
	if err != nil {
		t.Fatal(err)
	}
	if st.Mode().Perm() != 0o600 {
		t.Errorf("snapshot mode %v, want 0600", st.Mode().Perm())
	}
	if left, _ := filepath.Glob(filepath.Join(dir, ".*tmp")); len(left) > 0 {
		t.Errorf("temporary files left: %v", left)
	}

	// Flags after FILE work as well as before it.
	out, stderr, code := run(t, "inspect", snap, "--json")
	if code != 0 {
		t.Fatalf("inspect exit %d: %s", code, stderr)
	}
	var js struct {
		Tasks []struct {
			PID  int    `json:"pid"`
			Comm string `json:"comm"`
			FDs  []struct {
				FD  int    `json:"fd"`
				Ino uint64 `json:"ino"`
				End string `json:"end"`
			} `json:"fds"`
		} `json:"tasks"`
		Pipes []struct {
			Ino      uint64 `json:"ino"`
			Kind     string `json:"kind"`
			Bytes    int    `json:"bytes"`
			Capacity int    `json:"capacity"`
			Complete bool   `json:"complete"`
			Writers  int    `json:"writers"`
			Holders  []struct {
				PID int    `json:"pid"`
				FD  int    `json:"fd"`
				End string `json:"end"`
			} `json:"holders"`
		} `json:"pipes"`
	}
	if err := json.Unmarshal([]byte(out), &js); err != nil {
		t.Fatalf("inspect --json: %v\n%s", err, out)
	}
	// The child may inherit pipes from whoever runs the tests: look at ours.
	found := false
	for _, p := range js.Pipes {
		if p.Ino != ino {
			continue
		}
		found = true
		if p.Bytes != len(data) || p.Kind != "pipe" || !p.Complete || p.Writers != 0 || p.Capacity != 65536 {
			t.Errorf("pipe: %+v", p)
		}
		if len(p.Holders) != 1 || p.Holders[0].PID != pid || p.Holders[0].FD != 0 || p.Holders[0].End != "read" {
			t.Errorf("holders: %+v", p.Holders)
		}
	}
	if !found {
		t.Errorf("pipe %d not in the snapshot: %+v", ino, js.Pipes)
	}
	if len(js.Tasks) != 1 || js.Tasks[0].PID != pid || js.Tasks[0].Comm != "sleep" {
		t.Errorf("tasks: %+v", js.Tasks)
	}

	out, _, code = run(t, "inspect", snap)
	if code != 0 || !strings.Contains(out, strconv.FormatUint(ino, 10)) || !strings.Contains(out, "(sleep):0:read") {
		t.Errorf("inspect table (exit %d):\n%s", code, out)
	}

	out, stderr, code = run(t, "cat", snap, "--ino", strconv.FormatUint(ino, 10))
	if code != 0 || out != data {
		t.Errorf("cat: exit %d, %q, stderr %q", code, out, stderr)
	}

	// An existing file is not replaced without --force.
	if _, stderr, code := run(t, "dump", "--pid", strconv.Itoa(pid), "-o", snap); code != 2 || !strings.Contains(stderr, "--force") {
		t.Errorf("dump over an existing file: exit %d, %q", code, stderr)
	}
	if _, stderr, code := run(t, "dump", "--pid", strconv.Itoa(pid), "-o", snap, "--force"); code != 0 {
		t.Errorf("dump --force: exit %d, %q", code, stderr)
	}

	// -o - writes the same stream to stdout.
	out, _, code = run(t, "dump", "-o", "-", "--pid", strconv.Itoa(pid))
	if code != 0 || !strings.HasPrefix(out, "\x01\x00\x00\x00") {
		t.Errorf("dump -o -: exit %d, %d bytes", code, len(out))
	}
}

func TestUsageErrors(t *testing.T) {
	dir := t.TempDir()
	garbage := filepath.Join(dir, "garbage")
	os.WriteFile(garbage, []byte("this is not a snapshot at all"), 0o600)
	for _, tc := range []struct {
		args []string
		code int
		msg  string
	}{
		{[]string{"dump", "-o", "x"}, 2, "--pid PID"},
		{[]string{"dump", "--all", "--pid", "1", "-o", "x"}, 2, "--pid and --all exclude each other"},
		{[]string{"dump", "--all"}, 2, "-o FILE"},
		{[]string{"dump", "--nope"}, 2, "nope"},
		{[]string{"inspect"}, 2, "FILE"},
		{[]string{"cat", garbage}, 2, "--ino"},
		{[]string{"inspect", filepath.Join(dir, "missing")}, 1, "no such file"},
		{[]string{"inspect", garbage}, 1, "offset 0"},
	} {
		_, stderr, code := run(t, tc.args...)
		if code != tc.code || !strings.Contains(stderr, tc.msg) {
			t.Errorf("pipesnap %v: exit %d, stderr %q; want exit %d mentioning %q", tc.args, code, stderr, tc.code, tc.msg)
		}
		if n := strings.Count(strings.TrimSpace(stderr), "\n"); n > 0 && tc.code == 1 {
			t.Errorf("pipesnap %v: error on %d lines, want one: %q", tc.args, n+1, stderr)
		}
	}
}

func TestDumpNoSuchProcess(t *testing.T) {
	requireBPF(t)
	// pid_max is at most 4194304: this pid cannot exist. No usage
	// error: exit 1.
	_, stderr, code := run(t, "dump", "--pid", "4194305", "-o", filepath.Join(t.TempDir(), "x"))
	if code != 1 || !strings.Contains(stderr, "no such process") {
		t.Errorf("exit %d, %q", code, stderr)
	}
}

func TestReorderArgs(t *testing.T) {
	app := newApp()
	for _, tc := range []struct{ in, want []string }{
		{[]string{"p", "inspect", "f", "--json"}, []string{"p", "inspect", "--json", "--", "f"}},
		{[]string{"p", "cat", "f", "--ino", "5"}, []string{"p", "cat", "--ino", "5", "--", "f"}},
		{[]string{"p", "cat", "--ino=5", "f"}, []string{"p", "cat", "--ino=5", "--", "f"}},
		{[]string{"p", "dump", "-o", "-", "--all"}, []string{"p", "dump", "-o", "-", "--all"}},
		{[]string{"p", "cat", "f", "--", "--ino"}, []string{"p", "cat", "--", "f", "--", "--ino"}},
		{[]string{"p", "--help"}, []string{"p", "--help"}},
	} {
		if got := reorderArgs(app, tc.in); !slices.Equal(got, tc.want) {
			t.Errorf("reorderArgs(%q) = %q, want %q", tc.in, got, tc.want)
		}
	}
}

func statIno(st os.FileInfo) uint64 {
	return st.Sys().(*syscall.Stat_t).Ino
}

// TestDumpPrivileges: CAP_BPF and CAP_PERFMON are enough, as any user;
// without them, one line saying what is missing and what to do, and no
// file.
func TestDumpPrivileges(t *testing.T) {
	requireBPF(t)
	pid, _ := stuckReader(t, "x")
	dir := t.TempDir()
	for _, d := range []string{dir, filepath.Dir(dir), filepath.Dir(pipesnapBin)} {
		if err := os.Chmod(d, 0o777); err != nil {
			t.Fatal(err)
		}
	}
	const capBPF, capPerfmon = 39, 38 // linux/capability.h
	for _, tc := range []struct {
		name string
		caps []uintptr
		ok   bool
	}{
		{"CAP_BPF+CAP_PERFMON", []uintptr{capBPF, capPerfmon}, true},
		{"CAP_BPF only", []uintptr{capBPF}, false},
		{"no capabilities", nil, false},
	} {
		out := filepath.Join(dir, strings.ReplaceAll(tc.name, "+", "-")+".snap")
		cmd := exec.Command(pipesnapBin, "dump", "--pid", strconv.Itoa(pid), "-o", out)
		cmd.SysProcAttr = &syscall.SysProcAttr{
			Credential:  &syscall.Credential{Uid: 65534, Gid: 65534},
			AmbientCaps: tc.caps,
		}
		var stderr bytes.Buffer
		cmd.Stderr = &stderr
		err := cmd.Run()
		_, statErr := os.Stat(out)
		if tc.ok {
			if err != nil || statErr != nil {
				t.Errorf("%s: %v, %q", tc.name, err, stderr.String())
			}
			continue
		}
		var ee *exec.ExitError
		if !errors.As(err, &ee) || ee.ExitCode() != 1 {
			t.Errorf("%s: %v, want exit 1; %q", tc.name, err, stderr.String())
		}
		if msg := stderr.String(); !strings.Contains(msg, "CAP_BPF and CAP_PERFMON") || strings.Count(msg, "\n") != 1 {
			t.Errorf("%s: message %q, want one line naming the capabilities", tc.name, msg)
		}
		if statErr == nil {
			t.Errorf("%s: a snapshot was written", tc.name)
		}
		if ents, _ := filepath.Glob(filepath.Join(dir, ".*")); len(ents) > 0 {
			t.Errorf("%s: temporary files left: %v", tc.name, ents)
		}
	}
}

// TestDumpIntoDumpedPipe: when stdout is a pipe that is itself being
// dumped, that pipe is recorded without its bytes, with a note, rather
// than snapshotting a stream that grows as it is written.
func TestDumpIntoDumpedPipe(t *testing.T) {
	requireBPF(t)
	r, w, err := os.Pipe()
	if err != nil {
		t.Fatal(err)
	}
	defer r.Close()
	holder := exec.Command("sleep", "60")
	holder.Stdout = w // the holder keeps a write end of our output pipe
	if err := holder.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { holder.Process.Kill(); holder.Wait() })
	st, _ := r.Stat()

	cmd := exec.Command(pipesnapBin, "dump", "--strict", "--pid", strconv.Itoa(holder.Process.Pid), "-o", "-")
	cmd.Stdout = w
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	w.Close()
	snap := filepath.Join(t.TempDir(), "s.snap")
	done := make(chan error, 1)
	go func() {
		f, err := os.Create(snap)
		if err == nil {
			_, err = f.ReadFrom(r)
			f.Close()
		}
		done <- err
	}()
	err = cmd.Wait()
	var ee *exec.ExitError
	if !errors.As(err, &ee) || ee.ExitCode() != 1 {
		t.Errorf("--strict dump with a left-out pipe: %v, want exit 1; stderr %q", err, stderr.String())
	}
	if !strings.Contains(stderr.String(), "own output") {
		t.Errorf("no note about the left-out pipe: %q", stderr.String())
	}
	holder.Process.Kill()
	holder.Wait()
	if err := <-done; err != nil {
		t.Fatal(err)
	}
	out, errOut, code := run(t, "inspect", "--json", snap)
	if code != 0 {
		t.Fatalf("inspect: %s", errOut)
	}
	var js struct {
		Pipes []struct {
			Ino      uint64 `json:"ino"`
			Complete bool   `json:"complete"`
			Reason   string `json:"reason"`
			Bytes    int    `json:"bytes"`
		} `json:"pipes"`
	}
	if err := json.Unmarshal([]byte(out), &js); err != nil {
		t.Fatal(err)
	}
	found := false
	for _, p := range js.Pipes {
		if p.Ino == statIno(st) {
			found = true
			if p.Complete || p.Reason != "excluded" || p.Bytes != 0 {
				t.Errorf("output pipe recorded as %+v, want incomplete, excluded, no bytes", p)
			}
		}
	}
	if !found {
		t.Errorf("output pipe %d not in the snapshot", statIno(st))
	}
}

// TestDumpInterrupted: SIGINT or SIGTERM during a dump leaves no file,
// temporary or final, and resumes frozen processes.
func TestDumpInterrupted(t *testing.T) {
	requireBPF(t)
	for _, sig := range []syscall.Signal{syscall.SIGINT, syscall.SIGTERM} {
		pid, _ := stuckReader(t, "data")
		dir := t.TempDir()
		cmd := exec.Command(pipesnapBin, "dump", "--freeze", "--pid", strconv.Itoa(pid), "-o", filepath.Join(dir, "s.snap"))
		var stderr bytes.Buffer
		cmd.Stderr = &stderr
		if err := cmd.Start(); err != nil {
			t.Fatal(err)
		}
		// The output file is open once the signal handler is in place
		// and before the programs are loaded: interrupt right then.
		for deadline := time.Now().Add(5 * time.Second); ; time.Sleep(500 * time.Microsecond) {
			if outputOpen(cmd.Process.Pid, dir) {
				break
			}
			if time.Now().After(deadline) {
				t.Fatal("no temporary file appeared")
			}
		}
		cmd.Process.Signal(sig)
		err := cmd.Wait()
		var ee *exec.ExitError
		if !errors.As(err, &ee) || ee.ExitCode() != 1 || !strings.Contains(stderr.String(), "interrupted") {
			t.Errorf("%v: %v, stderr %q; want exit 1, interrupted", sig, err, stderr.String())
		}
		if ents, _ := os.ReadDir(dir); len(ents) > 0 {
			t.Errorf("%v: files left: %v", sig, ents)
		}
		b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
		if err != nil {
			t.Fatal(err)
		}
		if i := bytes.LastIndexByte(b, ')'); b[i+2] == 'T' {
			t.Errorf("%v: process %d left stopped", sig, pid)
		}
	}
}

// TestDumpMethods: --method tee takes the same bytes from user space, and
// auto falls back to it, saying so, where BPF is not allowed (here: a
// user without capabilities dumping a process of its own).
func TestDumpMethods(t *testing.T) {
	requireBPF(t)
	const data = "bytes for the tee method\n"
	pid, ino := stuckReader(t, data)
	snap := filepath.Join(t.TempDir(), "tee.snap")
	if _, stderr, code := run(t, "dump", "--method", "tee", "--pid", strconv.Itoa(pid), "-o", snap); code != 0 {
		t.Fatalf("dump --method tee: exit %d, %q", code, stderr)
	}
	out, stderr, code := run(t, "cat", "--ino", strconv.FormatUint(ino, 10), snap)
	if code != 0 || out != data {
		t.Errorf("cat of a tee snapshot: exit %d, %q, %q", code, out, stderr)
	}
	if _, stderr, code := run(t, "dump", "--method", "nope", "--all", "-o", snap); code != 2 || !strings.Contains(stderr, "bpf, tee or auto") {
		t.Errorf("--method nope: exit %d, %q", code, stderr)
	}

	// A process of uid 65534, dumped by uid 65534 without capabilities.
	dir := t.TempDir()
	for _, d := range []string{dir, filepath.Dir(dir), filepath.Dir(pipesnapBin)} {
		if err := os.Chmod(d, 0o777); err != nil {
			t.Fatal(err)
		}
	}
	nobody := &syscall.SysProcAttr{Credential: &syscall.Credential{Uid: 65534, Gid: 65534}}
	r, w, err := os.Pipe()
	if err != nil {
		t.Fatal(err)
	}
	w.WriteString(data)
	w.Close()
	sleeper := exec.Command("sleep", "60")
	sleeper.Stdin, sleeper.SysProcAttr = r, nobody
	if err := sleeper.Start(); err != nil {
		t.Fatal(err)
	}
	r.Close()
	t.Cleanup(func() { sleeper.Process.Kill(); sleeper.Wait() })
	own := filepath.Join(dir, "own.snap")
	cmd := exec.Command(pipesnapBin, "dump", "--pid", strconv.Itoa(sleeper.Process.Pid), "-o", own)
	cmd.SysProcAttr = nobody
	var errb bytes.Buffer
	cmd.Stderr = &errb
	if err := cmd.Run(); err != nil || !strings.Contains(errb.String(), "using the tee method") {
		t.Fatalf("auto without BPF: %v, %q", err, errb.String())
	}
	out, _, _ = run(t, "inspect", "--json", own)
	if !strings.Contains(out, fmt.Sprintf(`"bytes": %d`, len(data))) {
		t.Errorf("auto fallback snapshot lacks the %d bytes:\n%s", len(data), out)
	}
}

// TestDumpToSpecialFiles: -o naming a device or a FIFO writes into it in
// place. A temporary renamed over /dev/null would replace the device with
// a regular file for everybody.
func TestDumpToSpecialFiles(t *testing.T) {
	pid, ino := stuckReader(t, "bytes for a fifo\n")
	for _, force := range []bool{false, true} {
		args := []string{"dump", "--method", "tee", "--pid", strconv.Itoa(pid), "-o", os.DevNull}
		if force {
			args = append(args, "--force")
		}
		if _, stderr, code := run(t, args...); code != 0 {
			t.Fatalf("dump -o %s (force %v): exit %d: %s", os.DevNull, force, code, stderr)
		}
		st, err := os.Stat(os.DevNull)
		if err != nil || st.Mode()&os.ModeCharDevice == 0 {
			t.Fatalf("%s after dump: %v, %v: no longer a character device", os.DevNull, st.Mode(), err)
		}
	}
	if left, _ := filepath.Glob(filepath.Join(filepath.Dir(os.DevNull), ".null.*")); len(left) > 0 {
		t.Errorf("temporary files left: %v", left)
	}

	fifo := filepath.Join(t.TempDir(), "out.fifo")
	if err := syscall.Mkfifo(fifo, 0o600); err != nil {
		t.Fatal(err)
	}
	got := readFIFO(t, fifo) // the reader is there before the dump opens the FIFO
	if _, stderr, code := run(t, "dump", "--method", "tee", "--pid", strconv.Itoa(pid), "-o", fifo); code != 0 {
		t.Fatalf("dump -o FIFO: exit %d: %s", code, stderr)
	}
	snap := filepath.Join(t.TempDir(), "s.snap")
	if err := os.WriteFile(snap, <-got, 0o600); err != nil {
		t.Fatal(err)
	}
	out, stderr, code := run(t, "cat", "--ino", strconv.FormatUint(ino, 10), snap)
	if code != 0 || out != "bytes for a fifo\n" {
		t.Errorf("stream read from the FIFO: cat gave %q, exit %d: %s", out, code, stderr)
	}
	if _, stderr, code := run(t, "dump", "--pid", strconv.Itoa(pid), "-o", t.TempDir()); code != 2 || !strings.Contains(stderr, "directory") {
		t.Errorf("dump -o DIR: exit %d, %q; want 2 and a word about the directory", code, stderr)
	}
}
