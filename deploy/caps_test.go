package deploy

import (
	"bytes"
	"errors"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"testing"

	"github.com/pipesnap/pipesnap/internal/pipetest"
)

// asNobody runs the binary as uid/gid 65534 with only caps (CAP_ names),
// ambient so that they survive the exec: the DaemonSet's privileges
// without root's. util-linux's setpriv sets them.
func asNobody(t *testing.T, caps []string, args ...string) *exec.Cmd {
	t.Helper()
	var set []string
	for _, c := range caps {
		set = append(set, "+"+strings.ToLower(strings.TrimPrefix(c, "CAP_")))
	}
	list := strings.Join(set, ",")
	bounding := "-all"
	if list != "" {
		bounding += "," + list
	}
	sp := []string{"--reuid=65534", "--regid=65534", "--clear-groups", "--bounding-set=" + bounding}
	if list != "" {
		sp = append(sp, "--inh-caps="+list, "--ambient-caps="+list)
	}
	return exec.Command("setpriv", append(append(sp, binary(t)), args...)...)
}

func requireSetpriv(t *testing.T) {
	t.Helper()
	if _, err := exec.LookPath("setpriv"); err != nil {
		if os.Getenv("CI") != "" {
			t.Fatal("no setpriv (util-linux)")
		}
		t.Skip("no setpriv (util-linux)")
	}
}

// TestCapabilities measures the DaemonSet's capability set with the real
// binary: as an unprivileged user holding those capabilities and no
// other, ls, dump and diagnose see root's stuck pipeline whole, and with
// any one of them left out ls is refused.
func TestCapabilities(t *testing.T) {
	pipetest.RequireBPF(t)
	requireSetpriv(t)
	caps := Capabilities(t)
	pl := pipetest.StartStuck(t, "full") // root's processes

	t.Run("ls", func(t *testing.T) {
		var stderr bytes.Buffer
		cmd := asNobody(t, caps, "ls", "--all", "--json")
		cmd.Stderr = &stderr
		out, err := cmd.Output()
		if err != nil {
			t.Fatalf("ls --all with %v: %v: %s", caps, err, stderr.String())
		}
		got := pipelinePipes(t, out, pl)
		checkFull(t, got, pl)
		// The same as root's own view.
		root, err := exec.Command(binary(t), "ls", "--all", "--json").Output()
		if err != nil {
			t.Fatal(err)
		}
		if want := pipelinePipes(t, root, pl); mustJSON(got) != mustJSON(want) {
			t.Errorf("with %v:\n%s\nas root:\n%s", caps, mustJSON(got), mustJSON(want))
		}
	})
	t.Run("dump", func(t *testing.T) {
		// Not t.TempDir: its parent is root's alone.
		dir, err := os.MkdirTemp("", "pipesnap-caps-")
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { os.RemoveAll(dir) })
		os.Chmod(dir, 0o777)
		snap := filepath.Join(dir, "full.snap")
		pid := strconv.Itoa(pl.PID("writer"))
		if out, err := asNobody(t, caps, "dump", "--pid", pid, "-o", snap).CombinedOutput(); err != nil {
			t.Fatalf("dump --pid %s with %v: %v: %s", pid, caps, err, out)
		}
		data, err := exec.Command(binary(t), "cat", "--ino", strconv.FormatUint(pl.Ino(), 10), snap).Output()
		if err != nil {
			t.Fatalf("cat: %v", err)
		}
		if len(data) != 65536 || !bytes.Equal(data[:4], []byte("y\ny\n")) {
			t.Errorf("the dump holds %d bytes (%.8q), want 65536 of yes", len(data), data)
		}
		if out, err := asNobody(t, caps, "dump", "--all", "-o", filepath.Join(dir, "all.snap")).CombinedOutput(); err != nil {
			t.Fatalf("dump --all with %v: %v: %s", caps, err, out)
		}
	})
	t.Run("diagnose", func(t *testing.T) {
		out, err := asNobody(t, caps, "diagnose", "--pid", strconv.Itoa(pl.PID("writer"))+","+strconv.Itoa(pl.PID("reader"))).CombinedOutput()
		var ee *exec.ExitError
		if !errors.As(err, &ee) || ee.ExitCode() != 1 {
			t.Fatalf("diagnose: %v, want exit status 1 (stuck): %s", err, out)
		}
		if !strings.Contains(string(out), strconv.FormatUint(pl.Ino(), 10)) {
			t.Errorf("diagnose does not name pipe %d: %s", pl.Ino(), out)
		}
	})
	// Each capability is needed.
	for i, c := range caps {
		less := append(append([]string{}, caps[:i]...), caps[i+1:]...)
		t.Run("without "+c, func(t *testing.T) {
			out, err := asNobody(t, less, "ls", "--pid", strconv.Itoa(pl.PID("writer"))).CombinedOutput()
			if err == nil {
				t.Errorf("ls with %v alone worked: %s is not needed?", less, c)
			}
			if !strings.Contains(string(out), "CAP_BPF and CAP_PERFMON") {
				t.Errorf("ls with %v: %s", less, out)
			}
		})
	}
}
