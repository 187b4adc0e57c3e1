package main

import (
	"encoding/json"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"testing"

	"github.com/pipesnap/pipesnap/internal/pipetest"
)

// TestCgroupNamespace: pipesnap in a cgroup namespace of its own (as in a
// DaemonSet's pod) still shows each process's cgroup from the
// hierarchy's root, as the kernel walk reads it, where /proc in that
// namespace shows a path relative to its root.
func TestCgroupNamespace(t *testing.T) {
	requireBPF(t)
	c := pipetest.StartInCgroup(t)
	unified := pipetest.UnifiedMount(t)
	if unified == "" {
		t.Fatal("no cgroup2 mount after StartInCgroup")
	}
	// A shell moves itself into the parent of the child's cgroup, then
	// runs the command in a new cgroup namespace rooted there.
	parent := filepath.Dir(c.Want.V2.Path)
	inNS := func(args ...string) string {
		t.Helper()
		script := "echo $$ > " + filepath.Join(unified, parent, "cgroup.procs") + ` && exec unshare --cgroup "$@"`
		out, err := exec.Command("sh", append([]string{"-c", script, "sh"}, args...)...).Output()
		if err != nil {
			t.Fatalf("%v in a cgroup namespace: %v", args, err)
		}
		return string(out)
	}
	pid := strconv.Itoa(c.PID)
	rel := "0::/" + filepath.Base(c.Want.V2.Path)
	if got := inNS("cat", "/proc/"+pid+"/cgroup"); !strings.Contains(got, rel+"\n") {
		t.Fatalf("/proc/%s/cgroup in the namespace: %q, want the line %q", pid, got, rel)
	}
	checkProcCgroup(t, "ls --json in a cgroup namespace", inNS(pipesnapBin, "ls", "--json", "--pid", pid), c)
}

// checkProcCgroup checks that the JSON out (of ls or inspect) has c's
// process with the cgroup a kernel walk reads for it.
func checkProcCgroup(t *testing.T, what, out string, c *pipetest.CgroupChild) {
	t.Helper()
	var v struct {
		Procs []struct {
			PID      int    `json:"pid"`
			CgroupID uint64 `json:"cgroup_id"`
			Cgroup   string `json:"cgroup"`
		} `json:"procs"`
	}
	if err := json.Unmarshal([]byte(out), &v); err != nil {
		t.Fatal(err)
	}
	for _, p := range v.Procs {
		if p.PID != c.PID {
			continue
		}
		if p.Cgroup != c.Want.V2.Path || p.CgroupID != c.Want.V2.ID {
			t.Errorf("%s: cgroup %q id %d, want %q id %d", what, p.Cgroup, p.CgroupID, c.Want.V2.Path, c.Want.V2.ID)
		}
		return
	}
	t.Errorf("%s: pid %d not in procs: %+v", what, c.PID, v.Procs)
}

// TestDumpRecordsKernelCgroup: a snapshot records each dumped process's
// cgroup as the kernel walk read it, id and path from the hierarchy's
// root, and inspect shows them.
func TestDumpRecordsKernelCgroup(t *testing.T) {
	requireBPF(t)
	c := pipetest.StartInCgroup(t)
	snap := filepath.Join(t.TempDir(), "x.snap")
	if _, stderr, code := run(t, "dump", "--pid", strconv.Itoa(c.PID), "-o", snap); code != 0 {
		t.Fatalf("dump: exit %d: %s", code, stderr)
	}
	out, stderr, code := run(t, "inspect", "--json", snap)
	if code != 0 {
		t.Fatalf("inspect: exit %d: %s", code, stderr)
	}
	checkProcCgroup(t, "inspect --json", out, c)
}
