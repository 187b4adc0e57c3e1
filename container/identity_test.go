package container

import (
	"testing"

	"github.com/pipesnap/pipesnap/pipemodel"
)

const (
	id1 = "3726184226f5d3147c25fdeab5b60097e378e8a720503a5e19ecfdf29f869860"
	id2 = "aa7c39c3020b7f06fd63dbe9f371ff65dd9d05a308213ce0c56dd11a231b97ad"
	uid = "3d274242-8ee0-11e9-a8a6-1e68d864ef1a"
	// uidU is uid as the systemd driver writes it in a slice name.
	uidU = "3d274242_8ee0_11e9_a8a6_1e68d864ef1a"
)

func TestParse(t *testing.T) {
	tests := []struct {
		name string
		path string
		want Identity
	}{
		// docker
		{"docker cgroupfs", "/docker/" + id1, Identity{Runtime: Docker, ContainerID: id1}},
		{"docker systemd", "/system.slice/docker-" + id1 + ".scope",
			Identity{Runtime: Docker, ContainerID: id1, Unit: "docker-" + id1 + ".scope"}},
		{"docker rootless systemd", "/user.slice/user-1000.slice/user@1000.service/user.slice/docker-" + id1 + ".scope",
			Identity{Runtime: Docker, ContainerID: id1, Unit: "docker-" + id1 + ".scope"}},
		{"docker rootless cgroupfs", "/user.slice/user-1000.slice/user@1000.service/docker.service/docker/" + id1,
			Identity{Runtime: Docker, ContainerID: id1, Unit: "docker.service"}},
		{"ecs", "/ecs/haissam-ecs-classic/5a0d5ceddf6c44c1928d367a815d890f/" + id1, Identity{Runtime: Docker, ContainerID: id1}},
		{"docker in docker", "/docker/" + id2 + "/docker/" + id1, Identity{Runtime: Docker, ContainerID: id1}},

		// containerd
		{"containerd ctr", "/default/" + id1, Identity{Runtime: Containerd, ContainerID: id1}},
		{"containerd k8s.io namespace", "/k8s.io/" + id1, Identity{Runtime: Containerd, ContainerID: id1}},
		{"nerdctl systemd", "/system.slice/nerdctl-" + id1 + ".scope",
			Identity{Runtime: Containerd, ContainerID: id1, Unit: "nerdctl-" + id1 + ".scope"}},
		{"kubelet cgroupfs burstable", "/kubepods/burstable/pod" + uid + "/" + id1,
			Identity{Runtime: Containerd, ContainerID: id1, PodUID: uid, QoS: "burstable"}},
		{"kubelet cgroupfs besteffort", "/kubepods/besteffort/pod" + uid + "/" + id1,
			Identity{Runtime: Containerd, ContainerID: id1, PodUID: uid, QoS: "besteffort"}},
		{"kubelet cgroupfs guaranteed", "/kubepods/pod" + uid + "/" + id1,
			Identity{Runtime: Containerd, ContainerID: id1, PodUID: uid, QoS: "guaranteed"}},
		{"kubelet systemd burstable",
			"/kubepods.slice/kubepods-burstable.slice/kubepods-burstable-pod" + uidU + ".slice/cri-containerd-" + id1 + ".scope",
			Identity{Runtime: Containerd, ContainerID: id1, PodUID: uid, QoS: "burstable", Unit: "cri-containerd-" + id1 + ".scope"}},
		{"kubelet systemd guaranteed",
			"/kubepods.slice/kubepods-pod" + uidU + ".slice/cri-containerd-" + id1 + ".scope",
			Identity{Runtime: Containerd, ContainerID: id1, PodUID: uid, QoS: "guaranteed", Unit: "cri-containerd-" + id1 + ".scope"}},
		{"kubelet systemd, containerd cgroupfs",
			"/system.slice/containerd.service/kubepods-besteffort-pod" + uidU + ".slice:cri-containerd:" + id1,
			Identity{Runtime: Containerd, ContainerID: id1, PodUID: uid, QoS: "besteffort", Unit: "containerd.service"}},
		{"kind node (k8s in docker)",
			"/system.slice/docker-" + id2 + ".scope/kubepods/burstable/pod" + uid + "/" + id1,
			Identity{Runtime: Containerd, ContainerID: id1, PodUID: uid, QoS: "burstable", Unit: "docker-" + id2 + ".scope"}},

		// CRI-O
		{"cri-o systemd",
			"/kubepods.slice/kubepods-besteffort.slice/kubepods-besteffort-pod" + uidU + ".slice/crio-" + id1 + ".scope",
			Identity{Runtime: CRIO, ContainerID: id1, PodUID: uid, QoS: "besteffort", Unit: "crio-" + id1 + ".scope"}},
		{"cri-o conmon",
			"/kubepods.slice/kubepods-besteffort.slice/kubepods-besteffort-pod" + uidU + ".slice/crio-conmon-" + id1 + ".scope",
			Identity{Runtime: CRIO, ContainerID: id1, PodUID: uid, QoS: "besteffort", Unit: "crio-conmon-" + id1 + ".scope", Monitor: true}},
		{"cri-o cgroupfs", "/kubepods/burstable/pod" + uid + "/crio-" + id1,
			Identity{Runtime: CRIO, ContainerID: id1, PodUID: uid, QoS: "burstable"}},

		// podman
		{"podman systemd", "/machine.slice/libpod-" + id1 + ".scope",
			Identity{Runtime: Podman, ContainerID: id1, Unit: "libpod-" + id1 + ".scope"}},
		{"podman conmon systemd", "/machine.slice/libpod-conmon-" + id1 + ".scope",
			Identity{Runtime: Podman, ContainerID: id1, Unit: "libpod-conmon-" + id1 + ".scope", Monitor: true}},
		{"podman rootless", "/user.slice/user-1000.slice/user@1000.service/user.slice/libpod-" + id1 + ".scope/container",
			Identity{Runtime: Podman, ContainerID: id1, Unit: "libpod-" + id1 + ".scope"}},
		{"podman cgroupfs (measured)", "/libpod_parent/libpod-" + id2, Identity{Runtime: Podman, ContainerID: id2}},
		{"podman cgroupfs conmon (measured)", "/libpod_parent/conmon", Identity{Runtime: Podman, Monitor: true}},
		{"podman split mode", "/machine.slice/libpod-" + id1 + ".scope/libpod-payload-" + id1,
			Identity{Runtime: Podman, ContainerID: id1, Unit: "libpod-" + id1 + ".scope"}},
		{"podman pod systemd", "/machine.slice/machine-libpod_pod_" + id2 + ".slice/libpod-" + id1 + ".scope",
			Identity{Runtime: Podman, ContainerID: id1, Unit: "libpod-" + id1 + ".scope"}},

		// systemd, nothing
		{"service", "/system.slice/ssh.service", Identity{Runtime: Systemd, Unit: "ssh.service"}},
		{"user session", "/user.slice/user-1000.slice/session-3.scope", Identity{Runtime: Systemd, Unit: "session-3.scope"}},
		{"user service", "/user.slice/user-1000.slice/user@1000.service/app.slice/dbus.service",
			Identity{Runtime: Systemd, Unit: "dbus.service"}},
		{"init", "/init.scope", Identity{Runtime: Systemd, Unit: "init.scope"}},
		{"slice", "/system.slice", Identity{Runtime: Systemd, Unit: "system.slice"}},
		{"containerd shim", "/system.slice/containerd.service", Identity{Runtime: Systemd, Unit: "containerd.service"}},
		{"root", "/", Identity{}},
		{"empty", "", Identity{}},
		{"other (measured)", "/process_api/35bdcdf7d6e2a24372b6065fef9952b2", Identity{}},

		// cgroup namespaces: relative to the reader's namespace root
		{"ns: outside, systemd", "/../../docker-" + id1 + ".scope",
			Identity{Runtime: Docker, ContainerID: id1, Unit: "docker-" + id1 + ".scope"}},
		{"ns: outside, cgroupfs sibling", "/../" + id1, Identity{ContainerID: id1}},
		{"ns: a sub-cgroup inside", "/app", Identity{}},
		{"unknown parent", "/my-parent/" + id1, Identity{ContainerID: id1}},

		// near misses
		{"short id", "/docker/3726184226f5", Identity{}},
		{"upper-case id", "/docker/" + "3726184226F5D3147C25FDEAB5B60097E378E8A720503A5E19ECFDF29F869860", Identity{}},
		{"docker.service itself", "/system.slice/docker.service", Identity{Runtime: Systemd, Unit: "docker.service"}},
		{"pod outside kubepods", "/pod" + uid + "/" + id1, Identity{ContainerID: id1}},
		{"bad pod uid", "/kubepods/burstable/pod1234/" + id1, Identity{Runtime: Containerd, ContainerID: id1}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			tt.want.Path = tt.path
			if got := Parse(tt.path); got != tt.want {
				t.Errorf("Parse(%q)\n got  %+v\n want %+v", tt.path, got, tt.want)
			}
		})
	}
}

func TestParseProcCgroup(t *testing.T) {
	libpod := "/libpod_parent/libpod-" + id2
	tests := []struct {
		name, content string
		want          Identity
	}{
		{"v2 only", "0::/system.slice/docker-" + id1 + ".scope\n",
			Identity{Runtime: Docker, ContainerID: id1, Unit: "docker-" + id1 + ".scope", Path: "/system.slice/docker-" + id1 + ".scope"}},
		// Measured on this kind of VM (hybrid, podman --cgroup-manager cgroupfs).
		{"hybrid podman container", `9:name=systemd:` + libpod + `
8:pids:` + libpod + `
7:blkio:` + libpod + `
4:memory:` + libpod + `
1:cpu:` + libpod + `
0::` + libpod + `
`, Identity{Runtime: Podman, ContainerID: id2, Path: libpod}},
		{"hybrid conmon: v2 at /", `9:name=systemd:/
8:pids:/libpod_parent/conmon
4:memory:/libpod_parent/conmon
1:cpu:/libpod_parent/conmon
0::/
`, Identity{Runtime: Podman, Monitor: true, Path: "/libpod_parent/conmon"}},
		{"hybrid host process", `9:name=systemd:/
4:memory:/process_api/35bdcdf7d6e2a24372b6065fef9952b2
1:cpu:/
0::/
`, Identity{Path: "/"}},
		{"v1 only, docker on CentOS", `10:devices:/system.slice/docker-` + id1 + `.scope
2:cpuacct,cpu:/system.slice/docker-` + id1 + `.scope
1:name=systemd:/system.slice/docker-` + id1 + `.scope
`, Identity{Runtime: Docker, ContainerID: id1, Unit: "docker-" + id1 + ".scope", Path: "/system.slice/docker-" + id1 + ".scope"}},
		{"v1 prefers name=systemd over cpu", `2:cpu:/docker/` + id2 + `
1:name=systemd:/docker/` + id1 + `
`, Identity{Runtime: Docker, ContainerID: id1, Path: "/docker/" + id1}},
		{"v1: cpu in a list", `3:cpu,cpuacct:/kubepods/besteffort/pod` + uid + `/` + id1 + `
1:name=systemd:/
`, Identity{Runtime: Containerd, ContainerID: id1, PodUID: uid, QoS: "besteffort", Path: "/kubepods/besteffort/pod" + uid + "/" + id1}},
		{"v1: another hierarchy only", "5:devices:/docker/" + id1 + "\n1:name=systemd:/\n",
			Identity{Runtime: Docker, ContainerID: id1, Path: "/docker/" + id1}},
		{"inside a cgroup namespace", "0::/\n", Identity{Path: "/"}},
		{"path holding a colon", "0::/system.slice/containerd.service/kubepods-besteffort-pod" + uidU + ".slice:cri-containerd:" + id1 + "\n",
			Identity{Runtime: Containerd, ContainerID: id1, PodUID: uid, QoS: "besteffort", Unit: "containerd.service",
				Path: "/system.slice/containerd.service/kubepods-besteffort-pod" + uidU + ".slice:cri-containerd:" + id1}},
		{"empty", "", Identity{}},
		{"garbage", "not a cgroup file\n", Identity{}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if got := ParseProcCgroup(tt.content); got != tt.want {
				t.Errorf("ParseProcCgroup\n got  %+v\n want %+v", got, tt.want)
			}
		})
	}
}

func TestShortID(t *testing.T) {
	if got := (Identity{ContainerID: id1}).ShortID(); got != "3726184226f5" {
		t.Errorf("ShortID = %q", got)
	}
	if (Identity{Runtime: Podman, ContainerID: id1, Monitor: true}).IsContainer() {
		t.Error("a monitor is no container")
	}
}

// FuzzParse: any path parses without a panic, and what it finds is in it.
func FuzzParse(f *testing.F) {
	f.Add("/kubepods.slice/kubepods-burstable.slice/kubepods-burstable-pod" + uidU + ".slice/cri-containerd-" + id1 + ".scope")
	f.Add("/../../docker-" + id1 + ".scope")
	f.Add("0::/x\n1:name=systemd:/y")
	f.Fuzz(func(t *testing.T, path string) {
		id := Parse(path)
		if id.ContainerID != "" && !isID(id.ContainerID) {
			t.Errorf("bad id %q", id.ContainerID)
		}
		if id.PodUID != "" && !isUID(id.PodUID) {
			t.Errorf("bad pod uid %q", id.PodUID)
		}
		ParseProcCgroup(path)
	})
}

// TestFromKernel: the paths the kernel walk reads (from each hierarchy's
// root) parse as /proc/PID/cgroup's lines do: the unified path first, the
// v1 one where it says nothing.
func TestFromKernel(t *testing.T) {
	cri := "/kubepods.slice/kubepods-burstable.slice/kubepods-burstable-pod" + uidU + ".slice/cri-containerd-" + id1 + ".scope"
	tests := []struct {
		name string
		proc pipemodel.Proc
		want Identity
		ok   bool
	}{
		{"none read", pipemodel.Proc{}, Identity{}, false},
		{"podman cgroupfs, v2", pipemodel.Proc{Cgroup: "/libpod_parent/libpod-" + id1,
			CgroupV1: &pipemodel.Cgroup{Controller: "cpu", Path: "/libpod_parent/libpod-" + id1}},
			Identity{Runtime: Podman, ContainerID: id1, Path: "/libpod_parent/libpod-" + id1}, true},
		{"conmon on a hybrid host: only v1 names it", pipemodel.Proc{Cgroup: "/",
			CgroupV1: &pipemodel.Cgroup{Controller: "cpu", Path: "/libpod_parent/conmon"}},
			Identity{Runtime: Podman, Monitor: true, Path: "/libpod_parent/conmon"}, true},
		{"docker cgroupfs, v1 only", pipemodel.Proc{Cgroup: "/",
			CgroupV1: &pipemodel.Cgroup{Controller: "memory", Path: "/docker/" + id1}},
			Identity{Runtime: Docker, ContainerID: id1, Path: "/docker/" + id1}, true},
		{"kubernetes pod, from a DaemonSet's cgroup namespace (absolute all the same)", pipemodel.Proc{Cgroup: cri},
			Identity{Runtime: Containerd, ContainerID: id1, PodUID: uid, QoS: "burstable", Unit: "cri-containerd-" + id1 + ".scope", Path: cri}, true},
		{"truncated: the innermost components", pipemodel.Proc{Cgroup: "/docker-" + id1 + ".scope", CgroupTruncated: true},
			Identity{Runtime: Docker, ContainerID: id1, Unit: "docker-" + id1 + ".scope", Path: "/docker-" + id1 + ".scope"}, true},
		{"a systemd service", pipemodel.Proc{Cgroup: "/system.slice/ssh.service"},
			Identity{Runtime: Systemd, Unit: "ssh.service", Path: "/system.slice/ssh.service"}, true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, ok := FromKernel(&tt.proc)
			if got != tt.want || ok != tt.ok {
				t.Errorf("FromKernel = %+v, %v; want %+v, %v", got, ok, tt.want, tt.ok)
			}
		})
	}
}
