// Package container tells which container, pod and systemd unit a process
// belongs to, from its cgroup path alone (Parse, ParseProcCgroup), names
// those containers by asking their runtime (Resolver: its doc says which
// clients it uses and why), and reads a process's pid as its own pid
// namespace sees it (NSPid).
//
// Parsing needs nothing but the path: the BPF walk reads each task's cgroup
// path, and /proc/PID/cgroup gives the same. The shapes recognised are the
// ones the runtimes write:
//
//	docker      /docker/<id>                                  (cgroupfs driver)
//	            /system.slice/docker-<id>.scope               (systemd driver)
//	containerd  /default/<id>, /k8s.io/<id>                   (ctr, nerdctl; namespace as parent)
//	            /kubepods/burstable/pod<uid>/<id>             (kubelet, cgroupfs driver)
//	            /kubepods.slice/kubepods-burstable.slice/kubepods-burstable-pod<u_i_d>.slice/cri-containerd-<id>.scope
//	            .../kubepods-besteffort-pod<u_i_d>.slice:cri-containerd:<id>  (systemd kubelet, cgroupfs containerd)
//	            /system.slice/nerdctl-<id>.scope
//	cri-o       .../crio-<id>.scope, .../crio-<id>; its monitor in crio-conmon-<id>.scope
//	podman      /machine.slice/libpod-<id>.scope
//	            /user.slice/user-1000.slice/user@1000.service/user.slice/libpod-<id>.scope/container (rootless)
//	            /libpod_parent/libpod-<id>                     (cgroupfs manager); conmon in /libpod_parent/conmon
//	            its monitor in libpod-conmon-<id>.scope
//	systemd     /system.slice/ssh.service, /user.slice/user-1000.slice/session-2.scope, /init.scope
//
// where <id> is the container's full id, 64 hex digits. The innermost
// container in a path wins (a Kubernetes node in a docker container, as
// kind runs them, names the pod's container). Components ".." (a cgroup
// outside the reader's cgroup namespace, /../../docker-<id>.scope) are
// skipped; a process inside a container with its own cgroup namespace
// reads "/" and nothing can be said from that path alone.
package container

import (
	"slices"
	"strings"
)

// Runtimes, as Identity.Runtime names them.
const (
	Docker     = "docker"
	Containerd = "containerd"
	CRIO       = "cri-o"
	Podman     = "podman"
	Systemd    = "systemd"
)

// Identity is what a cgroup path says about the processes in it.
type Identity struct {
	// Runtime is "docker", "containerd", "cri-o", "podman" for a
	// container (or a runtime's monitor, see Monitor), "systemd" for a
	// systemd service, scope or slice outside any container, "" when
	// the path says nothing (/, or a cgroup of no known shape).
	Runtime string
	// ContainerID is the container's full id (64 hex digits), "" outside
	// a container. It is set, with Runtime "", for a bare 64-hex
	// component under a parent of no known runtime (docker with a
	// --cgroup-parent of its own, or a path relative to a cgroup
	// namespace root: /../<id>).
	ContainerID string
	// PodUID is the Kubernetes pod's UID (dashes restored) from kubepods
	// cgroups, "" outside Kubernetes.
	PodUID string
	// QoS is the pod's QoS class: "guaranteed", "burstable" or
	// "besteffort" ("" outside Kubernetes).
	QoS string
	// Path is the cgroup path parsed.
	Path string
	// Unit is the innermost systemd unit or slice in the path
	// ("docker-<id>.scope", "ssh.service", "user-1000.slice"), "" where
	// the path has none (the cgroupfs drivers).
	Unit string
	// Monitor is set for the runtime's per-container monitor, outside
	// the container itself but named after it: conmon's
	// libpod-conmon-<id>.scope and crio-conmon-<id>.scope (ContainerID
	// is the container it watches), podman's /libpod_parent/conmon
	// (no id). The monitor holds the container's stdout and stderr.
	Monitor bool
}

// IsContainer reports whether the path is a container's (not its monitor's).
func (id Identity) IsContainer() bool { return id.ContainerID != "" && !id.Monitor }

// ShortID is the first 12 hex digits of the container id, as docker and
// podman show it.
func (id Identity) ShortID() string {
	if len(id.ContainerID) > 12 {
		return id.ContainerID[:12]
	}
	return id.ContainerID
}

// isID reports whether s is a full container id: 64 lower-case hex digits.
func isID(s string) bool {
	if len(s) != 64 {
		return false
	}
	for i := 0; i < len(s); i++ {
		c := s[i]
		if !('0' <= c && c <= '9' || 'a' <= c && c <= 'f') {
			return false
		}
	}
	return true
}

// unitSuffixes are the systemd unit types a cgroup can be named after.
var unitSuffixes = []string{".scope", ".service", ".slice", ".socket", ".mount", ".swap"}

func isUnit(c string) bool {
	for _, s := range unitSuffixes {
		if strings.HasSuffix(c, s) && len(c) > len(s) {
			return true
		}
	}
	return false
}

// prefixed are the components <prefix><id><suffix> of each runtime,
// the monitors' prefixes before their containers' (crio-conmon- before
// crio-).
var prefixed = []struct {
	prefix, runtime string
	monitor         bool
}{
	{"docker-", Docker, false},
	{"cri-containerd-", Containerd, false},
	{"nerdctl-", Containerd, false},
	{"crio-conmon-", CRIO, true},
	{"crio-", CRIO, false},
	{"libpod-conmon-", Podman, true},
	{"libpod-payload-", Podman, false}, // podman's split cgroup mode
	{"libpod-", Podman, false},
}

// parentRuntime is the runtime of a bare <id> component under parent.
func parentRuntime(parent string) string {
	switch parent {
	case "docker", "ecs": // ECS runs docker
		return Docker
	case "default", "k8s.io", "moby":
		// containerd's namespaces: ctr and nerdctl use default, the CRI
		// plugin k8s.io.
		return Containerd
	case "libpod_parent":
		return Podman
	}
	return ""
}

// matchComponent says which runtime's container the component c names.
func matchComponent(c string) (runtime, id string, monitor, ok bool) {
	// Systemd-driver kubelet with cgroupfs containerd (SystemdCgroup =
	// false): <pod slice>:cri-containerd:<id>, likewise :crio: and :docker:.
	if i := strings.IndexByte(c, ':'); i >= 0 {
		parts := strings.Split(c, ":")
		if len(parts) == 3 && isID(parts[2]) {
			switch parts[1] {
			case "cri-containerd", "containerd":
				return Containerd, parts[2], false, true
			case "crio":
				return CRIO, parts[2], false, true
			case "docker":
				return Docker, parts[2], false, true
			}
		}
		return "", "", false, false
	}
	for _, p := range prefixed {
		rest, found := strings.CutPrefix(c, p.prefix)
		if !found {
			continue
		}
		rest = strings.TrimSuffix(rest, ".scope")
		if isID(rest) {
			return p.runtime, rest, p.monitor, true
		}
	}
	return "", "", false, false
}

// Parse reads a cgroup path: a v2 path, one v1 hierarchy's path, or the
// path the BPF walk read. See the package comment for the shapes.
func Parse(cgroupPath string) Identity {
	id := Identity{Path: cgroupPath}
	comps := strings.Split(cgroupPath, "/")
	// Clean: drop "", "." and ".." (a path relative to a cgroup
	// namespace root climbs above it first).
	cs := comps[:0]
	for _, c := range comps {
		if c != "" && c != "." && c != ".." {
			cs = append(cs, c)
		}
	}
	comps = cs

	// The innermost container, and the index of its component.
	at := -1
	for i := len(comps) - 1; i >= 0 && at < 0; i-- {
		c := comps[i]
		if rt, cid, mon, ok := matchComponent(c); ok {
			id.Runtime, id.ContainerID, id.Monitor, at = rt, cid, mon, i
			break
		}
		if isID(c) {
			id.ContainerID, at = c, i
			switch {
			case i > 0 && parentRuntime(comps[i-1]) != "":
				id.Runtime = parentRuntime(comps[i-1])
			case i > 1 && comps[0] == "ecs":
				id.Runtime = Docker // /ecs/<cluster>/<task>/<id>, /ecs/<task>/<id>
			case i > 0 && strings.HasPrefix(comps[i-1], "pod") && underKubepods(comps[:i]):
				// The cgroupfs kubelet driver with containerd: CRI-O
				// names its cgroups crio-<id> and dockershim is gone.
				id.Runtime = Containerd
			}
			break
		}
		if c == "conmon" && i > 0 && comps[i-1] == "libpod_parent" {
			id.Runtime, id.Monitor, at = Podman, true, i
			break
		}
	}

	// The innermost systemd unit, at or above the container's component.
	end := len(comps) - 1
	if at >= 0 {
		end = at
	}
	for i := end; i >= 0; i-- {
		if isUnit(comps[i]) {
			id.Unit = comps[i]
			break
		}
	}
	if id.Runtime == "" && id.ContainerID == "" && id.Unit != "" {
		id.Runtime = Systemd
	}

	// The pod: the innermost kubepods pod cgroup above the container,
	// or in its component (<pod slice>:cri-containerd:<id>).
	if at >= 0 {
		if slice, _, found := strings.Cut(comps[at], ":"); found {
			if uid, qos, ok := podComponent(append(slices.Clone(comps[:at]), slice)); ok {
				id.PodUID, id.QoS = uid, qos
				return id
			}
		}
	}
	for i := end; i >= 0; i-- {
		if uid, qos, ok := podComponent(comps[:i+1]); ok {
			id.PodUID, id.QoS = uid, qos
			break
		}
	}
	return id
}

// underKubepods reports whether the components lie under a kubepods root.
func underKubepods(comps []string) bool {
	for _, c := range comps {
		if c == "kubepods" || c == "kubepods.slice" {
			return true
		}
	}
	return false
}

var qosClasses = []string{"burstable", "besteffort"}

// podComponent reads the last of comps as a pod's cgroup:
//
//	cgroupfs: kubepods/pod<uid>, kubepods/burstable/pod<uid>
//	systemd:  kubepods-pod<u_i_d>.slice, kubepods-burstable-pod<u_i_d>.slice
//
// A pod directly under kubepods is of the guaranteed class.
func podComponent(comps []string) (uid, qos string, ok bool) {
	n := len(comps)
	c := comps[n-1]
	// The systemd driver's slices name their whole ancestry.
	if s, found := strings.CutSuffix(c, ".slice"); found {
		rest, found := strings.CutPrefix(s, "kubepods-")
		if !found {
			return "", "", false
		}
		qos = "guaranteed"
		for _, q := range qosClasses {
			if r, found := strings.CutPrefix(rest, q+"-"); found {
				rest, qos = r, q
				break
			}
		}
		u, found := strings.CutPrefix(rest, "pod")
		if !found || !isUID(strings.ReplaceAll(u, "_", "-")) {
			return "", "", false
		}
		return strings.ReplaceAll(u, "_", "-"), qos, true
	}
	u, found := strings.CutPrefix(c, "pod")
	if !found || !isUID(u) || n < 2 {
		return "", "", false
	}
	switch parent := comps[n-2]; {
	case parent == "kubepods":
		return u, "guaranteed", true
	case n >= 3 && comps[n-3] == "kubepods" && (parent == "burstable" || parent == "besteffort"):
		return u, parent, true
	}
	return "", "", false
}

// isUID reports whether s is a pod UID: a UUID, 8-4-4-4-12 hex digits.
func isUID(s string) bool {
	if len(s) != 36 {
		return false
	}
	for i := 0; i < len(s); i++ {
		c := s[i]
		switch i {
		case 8, 13, 18, 23:
			if c != '-' {
				return false
			}
		default:
			if !('0' <= c && c <= '9' || 'a' <= c && c <= 'f') {
				return false
			}
		}
	}
	return true
}

// v1Preferred are the v1 hierarchies read, in this order, when the v2
// line says nothing: every runtime places its containers in these.
var v1Preferred = []string{"name=systemd", "cpu", "memory", "pids"}

// ParseProcCgroup reads the content of /proc/PID/cgroup: the cgroup v2
// line (0::/path) is preferred; where it says nothing (hybrid hosts, where
// runtimes may leave the unified hierarchy at /), the v1 hierarchies
// name=systemd, cpu, memory and pids in that order, then any other; where
// none says anything, the v2 line's (or the first line's) Identity with
// its Path.
func ParseProcCgroup(content string) Identity {
	var v2 *Identity
	v1 := map[string]Identity{}
	var others []Identity
	var first *Identity
	for line := range strings.SplitSeq(content, "\n") {
		line = strings.TrimSpace(line)
		if line == "" {
			continue
		}
		// hierarchy-ID:controller-list:path; the path may hold ':'.
		parts := strings.SplitN(line, ":", 3)
		if len(parts) != 3 {
			continue
		}
		id := Parse(parts[2])
		if first == nil {
			first = &id
		}
		if parts[0] == "0" && parts[1] == "" {
			v2 = &id
			continue
		}
		others = append(others, id)
		for _, ctl := range strings.Split(parts[1], ",") {
			if _, seen := v1[ctl]; !seen {
				v1[ctl] = id
			}
		}
	}
	says := func(id Identity) bool { return id.Runtime != "" || id.ContainerID != "" || id.PodUID != "" }
	if v2 != nil && says(*v2) {
		return *v2
	}
	for _, ctl := range v1Preferred {
		if id, ok := v1[ctl]; ok && says(id) {
			return id
		}
	}
	for _, id := range others {
		if says(id) {
			return id
		}
	}
	if v2 != nil {
		return *v2
	}
	if first != nil {
		return *first
	}
	return Identity{}
}
