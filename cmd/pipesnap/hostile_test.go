package main

// Names from other processes are shown terminal-safe: a command name or
// a FIFO path with ESC, CR or a newline cannot move the cursor or forge
// a line of the table.

import (
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/pipesnap/pipesnap/internal/pipetest"
)

func TestHostileNames(t *testing.T) {
	requireBPF(t)
	dir := t.TempDir()
	fifo := filepath.Join(dir, "f\x1b[2J\nFORGED ROW\r")
	if err := exec.Command("mkfifo", fifo).Run(); err != nil {
		t.Fatal(err)
	}
	// A shell renames itself (comm with ESC and a newline), holds the
	// FIFO and waits reading a pipe whose writer sleeps.
	sh := exec.Command("sh", "-c", `printf 'x\033[31m\nFORGED' > /proc/$$/comm; exec 3<>"$1"; read -r line`, "sh", fifo)
	r, w, err := os.Pipe()
	if err != nil {
		t.Fatal(err)
	}
	sh.Stdin = r
	if err := sh.Start(); err != nil {
		t.Fatal(err)
	}
	r.Close()
	t.Cleanup(func() { sh.Process.Kill(); sh.Wait(); w.Close() })
	pid := sh.Process.Pid
	for deadline := time.Now().Add(5 * time.Second); ; time.Sleep(10 * time.Millisecond) {
		comm, _ := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/comm")
		if strings.Contains(pipetest.Wchan(pid, 0), "pipe") && strings.HasPrefix(string(comm), "x\x1b") {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("the renamed shell did not settle: comm %q, wchan %q", comm, pipetest.Wchan(pid, 0))
		}
	}
	snap := filepath.Join(dir, "s.snap")
	if _, stderr, code := run(t, "dump", "--pid", strconv.Itoa(pid), "-o", snap); code != 0 {
		t.Fatalf("dump: exit %d: %s", code, stderr)
	}
	for _, args := range [][]string{
		{"ls", "--pid", strconv.Itoa(pid)},
		{"diagnose", "--verbose", "--settle", "0", "--pid", strconv.Itoa(pid)},
		{"watch", "-n", "1", "--pid", strconv.Itoa(pid)},
		{"inspect", snap},
	} {
		out, stderr, _ := run(t, args...)
		all := out + stderr
		if strings.ContainsAny(all, "\x1b\r") || strings.Contains(all, "\nFORGED") {
			t.Errorf("%v prints raw control bytes:\n%q", args, all)
		}
		if args[0] != "diagnose" && !strings.Contains(all, `x\x1b[31m\nFORGED`) {
			t.Errorf("%v does not show the escaped name:\n%s", args, all)
		}
		if (args[0] == "ls" || args[0] == "inspect") && !strings.Contains(all, `f\x1b[2J\nFORGED ROW\r`) {
			t.Errorf("%v does not show the escaped FIFO path:\n%s", args, all)
		}
	}
}
