package container

import (
	"errors"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"
)

func TestParseNSpid(t *testing.T) {
	for _, tt := range []struct {
		status string
		want   int
		err    bool
	}{
		{"Name:\tsleep\nTgid:\t24524\nNSpid:\t24524\t1\nNSpgid:\t24524\t1\n", 1, false},
		{"NSpid:\t4242\n", 4242, false},
		{"NSpid:\t900\t30\t7\n", 7, false}, // nested namespaces: the innermost
		{"Name:\told kernel\nPid:\t12\n", 0, true},
		{"NSpid:\t\n", 0, true},
		{"NSpid:\tx\n", 0, true},
	} {
		got, err := parseNSpid(tt.status)
		if got != tt.want || (err != nil) != tt.err {
			t.Errorf("parseNSpid(%q) = %d, %v; want %d, error %v", tt.status, got, err, tt.want, tt.err)
		}
	}
	if _, err := parseNSpid("Pid:\t1\n"); !errors.Is(err, ErrNoNSpid) {
		t.Errorf("no NSpid line: %v, want ErrNoNSpid", err)
	}
}

func TestNSPidSelfAndRoot(t *testing.T) {
	got, err := NSPid("", os.Getpid())
	if err != nil || got != os.Getpid() {
		t.Fatalf("NSPid(self) = %d, %v; want %d", got, err, os.Getpid())
	}
	// A host /proc mounted elsewhere: procRoot is where it is read.
	root := t.TempDir()
	if err := os.MkdirAll(filepath.Join(root, "24524"), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(root, "24524", "status"), []byte("NSpid:\t24524\t1\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	if got, err := NSPid(root, 24524); err != nil || got != 1 {
		t.Errorf("NSPid(%s, 24524) = %d, %v; want 1", root, got, err)
	}
	if _, err := NSPid(root, 1); err == nil {
		t.Error("a missing process gave no error")
	}
}

// TestNSPidUnshare starts a real process in a new pid namespace
// (util-linux unshare) and reads its pid there: 1.
func TestNSPidUnshare(t *testing.T) {
	if os.Geteuid() != 0 {
		skipOrFail(t, "needs root for unshare -p")
	}
	if _, err := exec.LookPath("unshare"); err != nil {
		skipOrFail(t, "no unshare (util-linux)")
	}
	cmd := exec.Command("unshare", "-fp", "--mount-proc", "--kill-child", "sleep", "600")
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { cmd.Process.Kill(); cmd.Wait() })
	// unshare forks sleep: its only child.
	var child int
	deadline := time.Now().Add(5 * time.Second)
	for child == 0 {
		b, _ := os.ReadFile("/proc/" + strconv.Itoa(cmd.Process.Pid) + "/task/" + strconv.Itoa(cmd.Process.Pid) + "/children")
		if f := strings.Fields(string(b)); len(f) > 0 {
			child, _ = strconv.Atoi(f[0])
			if comm, _ := os.ReadFile("/proc/" + f[0] + "/comm"); strings.TrimSpace(string(comm)) != "sleep" {
				child = 0
			}
		}
		if child == 0 {
			if time.Now().After(deadline) {
				t.Fatal("unshare started no sleep")
			}
			time.Sleep(5 * time.Millisecond)
		}
	}
	got, err := NSPid("/proc", child)
	if err != nil || got != 1 {
		t.Fatalf("NSPid(%d) = %d, %v; want 1", child, got, err)
	}
	if child == 1 {
		t.Fatal("the host pid is 1 too: nothing was tested")
	}
}

// skipOrFail skips a test whose requirement is missing, or fails it in CI.
func skipOrFail(t *testing.T, why string) {
	t.Helper()
	if os.Getenv("CI") != "" {
		t.Fatal(why)
	}
	t.Skip(why)
}
