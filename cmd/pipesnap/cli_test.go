package main

// The conventions of a command-line tool, through the real binary:
// version, help, unknown commands, flag errors and exit statuses,
// completion scripts, the manual page, a release build.

import (
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/pipesnap/pipesnap/internal/pipetest"
)

func TestVersion(t *testing.T) {
	out, _, code := run(t, "--version")
	if code != 0 || !regexp.MustCompile(`^pipesnap version \S+ \(.*go1\.\d+`).MatchString(out) {
		t.Errorf("--version: exit %d, %q", code, out)
	}
}

func TestHelp(t *testing.T) {
	for _, args := range [][]string{{"help"}, {"--help"}, {}} {
		out, stderr, code := run(t, args...)
		if code != 0 || !strings.Contains(out, "COMMANDS:") || !strings.Contains(out, "diagnose") {
			t.Errorf("%v: exit %d, %q %q", args, code, out, stderr)
		}
	}
	out, _, code := run(t, "help", "diagnose")
	if code != 0 || !strings.Contains(out, "pipesnap diagnose - ") || !strings.Contains(out, "--min-wait") {
		t.Errorf("help diagnose: exit %d, %q", code, out)
	}
	for _, args := range [][]string{{"foo"}, {"help", "foo"}} {
		_, stderr, code := run(t, args...)
		if code != 2 || !strings.Contains(stderr, `unknown command "foo": the commands are dump, inspect, cat, restore, ls, diagnose, watch, serve, completion`) {
			t.Errorf("%v: exit %d, %q", args, code, stderr)
		}
	}
}

// TestFlagErrors: each names the flag, the value and what it takes, and
// exits 2; a process that does not exist exits 1.
func TestFlagErrors(t *testing.T) {
	for _, tc := range []struct {
		args []string
		code int
		msg  string
	}{
		{[]string{"ls", "-p", "abc"}, 2, `--pid "abc": "abc" is not a process id (a positive number)`},
		{[]string{"ls", "--pid", "1,x"}, 2, `"x" is not a process id`},
		{[]string{"diagnose", "--settle", "abc"}, 2, `--settle "abc": not a duration: want a number with a unit, e.g. 500ms, 2s or 1m`},
		{[]string{"watch", "--iterations", "x"}, 2, `--iterations "x": not a whole number`},
		{[]string{"ls", "--host-proc", "/tmp"}, 2, `--host-proc /tmp is not a proc filesystem`},
		{[]string{"dump", "--host-proc", "/etc", "--all", "-o", "/dev/null"}, 2, `--host-proc /etc is not a proc filesystem`},
		{[]string{"ls", "--all", "--pid", "1"}, 2, "--pid and --all exclude each other"},
		{[]string{"restore", "A.snap", "wc", "-c"}, 2, "if it is CMD's, put CMD after --"},
		{[]string{"ls", "--nope"}, 2, "pipesnap ls has no flag -nope"},
		{[]string{"ls", "--pid", "2147483647"}, 1, "pid 2147483647: no such process"},
	} {
		_, stderr, code := run(t, tc.args...)
		if code != tc.code || !strings.Contains(stderr, tc.msg) {
			t.Errorf("%v: exit %d, %q; want %d and %q", tc.args, code, stderr, tc.code, tc.msg)
		}
	}
}

// TestPidForms: --pid repeated, with commas and with spaces.
func TestPidForms(t *testing.T) {
	requireBPF(t)
	a, b := pipetest.StartStuck(t, "full"), pipetest.StartStuck(t, "empty")
	pa, pb := a.PID("writer"), b.PID("reader")
	for _, args := range [][]string{
		{"--pid", strconv.Itoa(pa), "--pid", strconv.Itoa(pb)},
		{"--pid", fmt.Sprintf("%d,%d", pa, pb)},
		{"-p", fmt.Sprintf("%d %d", pa, pb)},
	} {
		v := lsJSON(t, args...)
		seen := map[int]bool{}
		for _, p := range v.Pipes {
			for _, h := range p.Holders {
				seen[h.PID] = true
			}
		}
		if !seen[pa] || !seen[pb] {
			t.Errorf("ls %v: holders %v, want %d and %d", args, seen, pa, pb)
		}
	}
}

// TestCompletion: each shell parses its script; bash's asks pipesnap
// for the words that fit.
func TestCompletion(t *testing.T) {
	for _, tc := range []struct{ shell, check string }{
		{"bash", "-n"}, {"zsh", "-n"}, {"fish", "--no-execute"},
	} {
		script, stderr, code := run(t, "completion", tc.shell)
		if code != 0 || script == "" {
			t.Fatalf("completion %s: exit %d, %s", tc.shell, code, stderr)
		}
		sh, err := exec.LookPath(tc.shell)
		if err != nil {
			if os.Getenv("CI") != "" {
				t.Errorf("%s not installed, and CI is set (scripts/deps.sh installs it)", tc.shell)
			}
			continue
		}
		f := filepath.Join(t.TempDir(), "c")
		os.WriteFile(f, []byte(script), 0o644)
		if out, err := exec.Command(sh, tc.check, f).CombinedOutput(); err != nil {
			t.Errorf("%s %s on its completion: %v\n%s", tc.shell, tc.check, err, out)
		}
	}
	// What the scripts ask: the commands, and a command's flags.
	out, _, _ := run(t, "--generate-bash-completion")
	if !strings.Contains(out, "diagnose") || !strings.Contains(out, "completion") {
		t.Errorf("command words: %q", out)
	}
	out, _, _ = run(t, "diagnose", "--m", "--generate-bash-completion")
	if !strings.Contains(out, "--min-wait") {
		t.Errorf("diagnose flags: %q", out)
	}
	if _, stderr, code := run(t, "completion", "tcsh"); code != 2 || !strings.Contains(stderr, "want bash, zsh or fish") {
		t.Errorf("completion tcsh: exit %d, %q", code, stderr)
	}
}

func TestManPage(t *testing.T) {
	// make man builds with the page generator (make's other builds leave
	// it out: GOFLAGS -tags=urfave_cli_no_docs); -tags= here puts it back.
	bin := filepath.Join(t.TempDir(), "pipesnap")
	if out, err := exec.Command("go", "build", "-tags=", "-o", bin, ".").CombinedOutput(); err != nil {
		t.Fatalf("building pipesnap with its man page generator: %v\n%s", err, out)
	}
	cmd := exec.Command(bin, "man")
	var stdout, stderrb strings.Builder
	cmd.Stdout, cmd.Stderr = &stdout, &stderrb
	code := 0
	if err := cmd.Run(); err != nil {
		code = -1
	}
	out, stderr := stdout.String(), stderrb.String()
	if code != 0 || !strings.HasPrefix(strings.TrimSpace(out), ".nh") || !strings.Contains(out, ".TH pipesnap 8") {
		t.Fatalf("man: exit %d, %q", code, stderr)
	}
	for _, cmd := range []string{"dump", "inspect", "cat", "restore", "ls", "diagnose", "watch", "serve", "completion"} {
		if !strings.Contains(out, "\n.SH COMMANDS") || !strings.Contains(out, "\n.SH "+cmd+"\n") {
			t.Errorf("man page lacks command %s", cmd)
		}
	}
}

// TestReleaseBuild: make release stamps the version into a static
// binary and writes its checksum.
func TestReleaseBuild(t *testing.T) {
	if testing.Short() {
		t.Skip("builds pipesnap again")
	}
	dist := t.TempDir()
	cmd := exec.Command("go", "build", "-trimpath", "-ldflags", "-s -w -X main.version=v9.8.7-test", "-o", filepath.Join(dist, "pipesnap"), ".")
	cmd.Env = append(os.Environ(), "CGO_ENABLED=0")
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("release build: %v\n%s", err, out)
	}
	out, err := exec.Command(filepath.Join(dist, "pipesnap"), "--version").Output()
	if err != nil || !strings.HasPrefix(string(out), "pipesnap version v9.8.7-test ") {
		t.Errorf("--version of a release build: %q, %v", out, err)
	}
	if out, _ := exec.Command("file", filepath.Join(dist, "pipesnap")).Output(); len(out) > 0 && !strings.Contains(string(out), "statically linked") {
		t.Errorf("release binary not static: %s", out)
	}
}

// TestWatchJSONLines: one JSON object a line, one line a frame.
func TestWatchJSONLines(t *testing.T) {
	requireBPF(t)
	pl := pipetest.StartStuck(t, "flowing")
	out, stderr, code := run(t, append([]string{"watch", "--json", "-n", "3", "-i", "100ms"}, pidArgs(pl.PIDs()...)...)...)
	if code != 0 {
		t.Fatalf("watch --json: exit %d: %s", code, stderr)
	}
	lines := strings.Split(strings.TrimSpace(out), "\n")
	if len(lines) != 3 {
		t.Fatalf("%d lines, want 3:\n%s", len(lines), out)
	}
	for i, l := range lines {
		var f struct {
			Frame int `json:"frame"`
			Pipes []struct {
				Ino   uint64   `json:"ino"`
				InBps *float64 `json:"in_bytes_per_sec"`
			} `json:"pipes"`
		}
		if err := json.Unmarshal([]byte(l), &f); err != nil {
			t.Fatalf("line %d: %v: %s", i+1, err, l)
		}
		if f.Frame != i+1 || len(f.Pipes) == 0 {
			t.Errorf("line %d: frame %d, %d pipes", i+1, f.Frame, len(f.Pipes))
		}
		for _, p := range f.Pipes {
			if p.Ino == pl.Ino() && (i == 0) != (p.InBps == nil) {
				t.Errorf("frame %d: rate %v (none in the first frame, some after)", i+1, p.InBps)
			}
			if p.Ino == pl.Ino() && i > 0 && *p.InBps <= 0 {
				t.Errorf("frame %d: a flowing pipe at %v bytes/s", i+1, *p.InBps)
			}
		}
	}
}

// TestInspectHexPreview: binary bytes are previewed as xxd prints them,
// text as text.
func TestInspectHexPreview(t *testing.T) {
	requireBPF(t)
	dir := t.TempDir()
	fifo := filepath.Join(dir, "f")
	if err := exec.Command("mkfifo", fifo).Run(); err != nil {
		t.Fatal(err)
	}
	holder := exec.Command("sh", "-c", `exec 3<>"$1"; printf '\177ELF\002\001\001\000binary\n' >&3; exec sleep 600`, "sh", fifo)
	if err := holder.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { holder.Process.Kill(); holder.Wait() })
	snap := filepath.Join(dir, "s.snap")
	for deadline := time.Now().Add(5 * time.Second); ; time.Sleep(20 * time.Millisecond) {
		if strings.Contains(pipetest.Wchan(holder.Process.Pid, 0), "nanosleep") {
			break
		}
		if time.Now().After(deadline) {
			t.Fatal("holder did not settle")
		}
	}
	if _, stderr, code := run(t, "dump", "--pid", strconv.Itoa(holder.Process.Pid), "-o", snap); code != 0 {
		t.Fatalf("dump: %s", stderr)
	}
	out, _, _ := run(t, "inspect", snap)
	if !strings.Contains(out, "00000000: 7f45 4c46 0201 0100 6269 6e61 7279 0a    .ELF....binary.") {
		t.Errorf("no xxd-style preview:\n%s", out)
	}
}
