package container_test

import (
	"context"
	"path/filepath"
	"syscall"
	"testing"

	"github.com/pipesnap/pipesnap/container"
	"github.com/pipesnap/pipesnap/container/containertest"
	"github.com/pipesnap/pipesnap/internal/pipetest"
	"github.com/pipesnap/pipesnap/pipestate"
)

// TestPodmanIdentityFromKernel: the cgroups the BPF walk reads for a real
// podman container's processes are what /proc/PID/cgroup and cgroupfs
// say, and they alone give the container: Annotate finds it with nothing
// to read in /proc. Its conmon is known as podman's monitor from the
// kernel's paths too (on a hybrid host, from the v1 one).
func TestPodmanIdentityFromKernel(t *testing.T) {
	pipetest.RequireBPF(t)
	p := containertest.Require(t)
	c := p.Run(t, nil, "sh", "-c", "yes | sleep 600")
	procs := c.WaitProcs(t, "sh", "yes", "sleep")
	conmon := c.Conmon(t)
	s, err := pipestate.Open(pipestate.Options{PIDs: []int{procs["sh"], procs["yes"], procs["sleep"], conmon}})
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	smp, err := s.Sample(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	unified := pipetest.UnifiedMount(t)
	for comm, pid := range procs {
		pr := smp.Procs[uint32(pid)]
		if pr == nil {
			t.Fatalf("%s (pid %d) not in the sample", comm, pid)
		}
		if want := pipetest.ProcCgroup(t, pid, ""); pr.Cgroup != want || pr.CgroupTruncated {
			t.Errorf("%s: the walk read cgroup %q (truncated %v), /proc says %q", comm, pr.Cgroup, pr.CgroupTruncated, want)
		}
		if unified != "" {
			var st syscall.Stat_t
			if err := syscall.Stat(filepath.Join(unified, pr.Cgroup), &st); err != nil {
				t.Fatal(err)
			}
			if pr.CgroupID != st.Ino {
				t.Errorf("%s: the walk read cgroup id %d, cgroupfs has inode %d", comm, pr.CgroupID, st.Ino)
			}
		}
	}
	cm := smp.Procs[uint32(conmon)]
	t.Logf("conmon: cgroup %q, v1 %+v", cm.Cgroup, cm.CgroupV1)
	if id, ok := container.FromKernel(cm); !ok || id.Runtime != container.Podman || !id.Monitor {
		t.Errorf("conmon: %+v, want podman's monitor", id)
	}

	container.Annotate(context.Background(), smp, nil, t.TempDir())
	for comm, pid := range procs {
		got := smp.Procs[uint32(pid)].Container
		if got == nil || got.Runtime != container.Podman || got.ID != c.ID {
			t.Errorf("%s: container %+v from the kernel's cgroup, want podman %s", comm, got, c.ID)
		}
	}
}
