package pipetest

import (
	"bufio"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/pipesnap/pipesnap/internal/kcgroup"
	"github.com/pipesnap/pipesnap/pipemodel"
)

// CgroupChild is a child process (sleep, its stdin a pipe) that a test
// moved into cgroups of its own.
type CgroupChild struct {
	PID int
	Ino uint64 // the pipe it holds (its fd 0)
	// Want is what a kernel walk must read for it: its cgroup on the
	// unified hierarchy and, where the host mounts cpu, memory or pids on
	// a v1 hierarchy of its own, the first of those.
	Want pipemodel.Cgroups
}

// v1Order is the v1 hierarchies the walk reads, in its order (bpf/cgroup.h).
var v1Order = []string{"cpu", "memory", "pids"}

// StartInCgroup starts a child in a fresh cgroup on the unified hierarchy
// (mounted for the test where nothing mounts it, as in the kernel test
// VMs) and on the first v1 hierarchy the walk reads, when the host has
// one: the cgroup's path is a component of the test's own, then below
// (components of path below it; none: "inner"). Everything it makes is removed when t ends: the child killed, the
// cgroups removed, a mount undone. Want comes from what the kernel says
// outside BPF: the child's /proc/PID/cgroup and the inode numbers of its
// cgroup directories (a cgroup's id is its kernfs node's).
func StartInCgroup(t testing.TB, below ...string) *CgroupChild {
	t.Helper()
	if len(below) == 0 {
		below = []string{"inner"}
	}
	name := fmt.Sprintf("pipesnap-test-%d-%d", os.Getpid(), time.Now().UnixNano()%1e9)
	v2, v1 := cgroupMounts(t)
	if v2 == "" {
		dir := t.TempDir()
		if err := syscall.Mount("none", dir, "cgroup2", 0, ""); err != nil {
			t.Fatalf("mounting cgroup2 at %s: %v", dir, err)
		}
		t.Cleanup(func() { syscall.Unmount(dir, syscall.MNT_DETACH) })
		v2 = dir
	}
	r, w, err := os.Pipe()
	if err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command("sleep", "600")
	cmd.Stdin = r
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	r.Close()
	dirs := []string{}
	t.Cleanup(func() {
		cmd.Process.Kill()
		cmd.Wait()
		w.Close()
		for i := len(dirs) - 1; i >= 0; i-- {
			// The cgroup may count the reaped child a moment longer.
			err := os.Remove(dirs[i])
			for try := 0; err != nil && try < 50; try++ {
				time.Sleep(20 * time.Millisecond)
				err = os.Remove(dirs[i])
			}
			if err != nil {
				t.Errorf("removing the test's cgroup: %v", err)
			}
		}
	})
	c := &CgroupChild{PID: cmd.Process.Pid}
	var st syscall.Stat_t
	if err := syscall.Fstat(int(w.Fd()), &st); err != nil {
		t.Fatal(err)
	}
	c.Ino = st.Ino

	// A cgroup of its own on each hierarchy, parent and child: a path of
	// two components below wherever the child starts.
	move := func(mount, ctl string) *pipemodel.Cgroup {
		start := procCgroup(t, c.PID, ctl)
		path := filepath.Join(start, name)
		dir := filepath.Join(mount, path)
		if err := os.Mkdir(dir, 0o755); err != nil {
			t.Fatalf("making cgroup %s: %v", dir, err)
		}
		dirs = append(dirs, dir)
		for _, b := range below {
			path = filepath.Join(path, b)
			dir = filepath.Join(dir, b)
			if err := os.Mkdir(dir, 0o755); err != nil {
				t.Fatalf("making cgroup %s: %v", dir, err)
			}
			dirs = append(dirs, dir)
		}
		if err := os.WriteFile(filepath.Join(dir, "cgroup.procs"), []byte(strconv.Itoa(c.PID)), 0o644); err != nil {
			t.Fatalf("moving pid %d into %s: %v", c.PID, dir, err)
		}
		if got := procCgroup(t, c.PID, ctl); got != path {
			t.Fatalf("pid %d: /proc says cgroup %q, want %q", c.PID, got, path)
		}
		if err := syscall.Stat(dir, &st); err != nil {
			t.Fatal(err)
		}
		kept, cut := kernelBound(path)
		return &pipemodel.Cgroup{Controller: ctl, ID: st.Ino, Path: kept, Truncated: cut}
	}
	c.Want.V2 = move(v2, "")
	for _, ctl := range v1Order {
		if m, ok := v1[ctl]; ok {
			c.Want.V1 = move(m, ctl)
			break
		}
		if procCgroup(t, c.PID, ctl) != "" {
			t.Fatalf("a v1 %s hierarchy that is not mounted here: the test cannot make a cgroup in it", ctl)
		}
	}
	return c
}

// UnifiedMount is where this mount namespace has the unified (v2)
// hierarchy; "" where nowhere.
func UnifiedMount(t testing.TB) string {
	v2, _ := cgroupMounts(t)
	return v2
}

// ProcCgroup is pid's cgroup path on the hierarchy of controller ctl
// ("": the unified one) as /proc/PID/cgroup has it; "" when it has none.
func ProcCgroup(t testing.TB, pid int, ctl string) string { return procCgroup(t, pid, ctl) }

// cgroupMounts finds where this mount namespace has the unified hierarchy
// ("" where nowhere) and each v1 controller's hierarchy.
func cgroupMounts(t testing.TB) (v2 string, v1 map[string]string) {
	f, err := os.Open("/proc/self/mountinfo")
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	v1 = map[string]string{}
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		// id parent dev root mountpoint opts [optional...] - fstype source superopts
		f := strings.Fields(sc.Text())
		sep := -1
		for i, s := range f {
			if s == "-" {
				sep = i
				break
			}
		}
		if sep < 0 || sep+3 >= len(f) || f[3] != "/" {
			continue
		}
		switch f[sep+1] {
		case "cgroup2":
			if v2 == "" {
				v2 = f[4]
			}
		case "cgroup":
			for _, o := range strings.Split(f[sep+3], ",") {
				if _, seen := v1[o]; !seen {
					v1[o] = f[4]
				}
			}
		}
	}
	return v2, v1
}

// procCgroup is pid's cgroup path on the hierarchy of controller ctl
// ("": the unified one) as /proc/PID/cgroup has it; "" when it has none.
func procCgroup(t testing.TB, pid int, ctl string) string {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/cgroup", pid))
	if err != nil {
		t.Fatal(err)
	}
	for _, line := range strings.Split(strings.TrimSpace(string(b)), "\n") {
		parts := strings.SplitN(line, ":", 3)
		if len(parts) != 3 {
			continue
		}
		if ctl == "" && parts[0] == "0" && parts[1] == "" {
			return parts[2]
		}
		for _, c := range strings.Split(parts[1], ",") {
			if ctl != "" && c == ctl && parts[0] != "0" {
				return parts[2]
			}
		}
	}
	return ""
}

// kernelBound is what of path the walk keeps (bpf/cgroup.h): its
// innermost components, as many as fit CG_DEPTH levels and CG_PATH_MAX
// bytes, and whether that is not all of it.
func kernelBound(path string) (string, bool) {
	comps := strings.Split(strings.Trim(path, "/"), "/")
	kept, n := "", 0
	for i := len(comps) - 1; i >= 0; i-- {
		if n == kcgroup.Depth || len(kept)+1+len(comps[i]) > kcgroup.PathMax {
			return kept, true
		}
		kept = "/" + comps[i] + kept
		n++
	}
	return kept, false
}
