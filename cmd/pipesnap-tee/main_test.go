package main

import (
	"bytes"
	"errors"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"testing"

	"github.com/pipesnap/pipesnap/internal/pipetest"
	"github.com/pipesnap/pipesnap/snapshot"
)

// TestMain runs the command itself when asked (this test binary, run
// again), else the holders or the tests.
func TestMain(m *testing.M) {
	if os.Getenv("PIPESNAP_TEE_MAIN") == "1" {
		os.Args = append([]string{"pipesnap-tee"}, os.Args[1:]...)
		main()
		os.Exit(0)
	}
	pipetest.Main(m)
}

func run(t *testing.T, args ...string) (string, int) {
	t.Helper()
	cmd := exec.Command(os.Args[0], args...)
	cmd.Env = append(os.Environ(), "PIPESNAP_TEE_MAIN=1")
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	err := cmd.Run()
	var exit *exec.ExitError
	switch {
	case err == nil:
		return stderr.String(), 0
	case errors.As(err, &exit):
		return stderr.String(), exit.ExitCode()
	}
	t.Fatal(err)
	return "", 0
}

func TestDumpToFile(t *testing.T) {
	h := pipetest.StartHolder(t, "few")
	out := filepath.Join(t.TempDir(), "s.snap")
	if msg, code := run(t, "-pid", strconv.Itoa(h.Rep.PIDs[0]), "-o", out); code != 0 {
		t.Fatalf("exit %d: %s", code, msg)
	}
	f, err := os.Open(out)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	if st, _ := f.Stat(); st.Mode().Perm() != 0o600 {
		t.Errorf("mode %v, want 0600", st.Mode().Perm())
	}
	s, err := snapshot.Read(f, snapshot.Options{Data: true})
	if err != nil {
		t.Fatal(err)
	}
	p, err := s.Find(h.Rep.Ino)
	if err != nil {
		t.Fatal(err)
	}
	if want := pipetest.Expected("few").Data; !bytes.Equal(p.Data(), want) {
		t.Errorf("captured %q, want %q", p.Data(), want)
	}
}

func TestUsage(t *testing.T) {
	for _, args := range [][]string{{}, {"-all", "-pid", "1"}, {"-pid", "x"}, {"-all", "extra"}, {"-pid", "-5"}} {
		if msg, code := run(t, args...); code != 2 {
			t.Errorf("%q: exit %d, want 2: %s", args, code, msg)
		}
	}
}
