package pipestate_test

import (
	"fmt"
	"os"
	"strings"
	"testing"

	"github.com/pipesnap/pipesnap/internal/bpfload"
	"github.com/pipesnap/pipesnap/internal/pipetest"
	"github.com/pipesnap/pipesnap/pipemodel"
	"github.com/pipesnap/pipesnap/pipestate"
)

// TestCgroups: the walk reads a process's cgroups in the kernel, the same
// id and path (from the hierarchy's root) that /proc/PID/cgroup and the
// cgroup's directory say, for a process the test moved into cgroups of
// its own; walked by pid and among all processes, with both variants of
// the program.
func TestCgroups(t *testing.T) {
	pipetest.RequireBPF(t)
	c := pipetest.StartInCgroup(t)
	for _, v := range []struct {
		name  string
		force *bpfload.Features
	}{{"newest", nil}, {"without newer helpers", &bpfload.Features{}}} {
		for _, opts := range []pipestate.Options{{PIDs: []int{c.PID}}, {All: true}} {
			name := v.name + "/pid"
			if opts.All {
				name = v.name + "/all"
			}
			t.Run(name, func(t *testing.T) {
				bpfload.Force = v.force
				defer func() { bpfload.Force = nil }()
				smp := sample(t, opts)
				find(t, smp, c.Ino)
				p := smp.Procs[uint32(c.PID)]
				if p == nil {
					t.Fatalf("pid %d not in the sample", c.PID)
				}
				got := p.Cgroups()
				if got.V2 == nil || *got.V2 != *c.Want.V2 {
					t.Errorf("v2: read %+v, want %+v", got.V2, c.Want.V2)
				}
				if !sameCgroup(got.V1, c.Want.V1) {
					t.Errorf("v1: read %+v, want %+v", got.V1, c.Want.V1)
				}
				t.Logf("all %v: cgroup_id %d cgroup %s, v1 %+v", opts.All, p.CgroupID, p.Cgroup, p.CgroupV1)
				// Every process of the walk has its cgroups read, but one that
				// exited between the fd walk and the task walk, which reads
				// them (go test runs other packages' pipesnaps meanwhile).
				for pid, p := range smp.Procs {
					if p.Cgroup == "" && alive(pid) {
						t.Errorf("pid %d (%s): no cgroup read", pid, p.Comm)
					}
				}
			})
		}
	}
}

// alive: pid is a process that has not exited (a zombie has).
func alive(pid uint32) bool {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return false
	}
	_, rest, _ := strings.Cut(string(b), ") ")
	return rest != "" && rest[0] != 'Z' && rest[0] != 'X'
}

func sameCgroup(a, b *pipemodel.Cgroup) bool {
	return a == nil && b == nil || a != nil && b != nil && *a == *b
}
