package container

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"

	"github.com/pipesnap/pipesnap/pipemodel"
)

// Annotate sets, for every process of a sample, its pid in its own pid
// namespace and the container it runs in: its cgroup paths as the kernel
// walk read them (FromKernel), or where it read none its cgroup file
// (procRoot/PID/cgroup, procRoot "" is /proc), parsed, then, once per
// container, named by the runtime (r may be nil: ids only). It reads a
// small file or two per process and asks the runtimes once for all
// containers, in a bounded time.
func Annotate(ctx context.Context, smp *pipemodel.Sample, r *Resolver, procRoot string) {
	var ids []Identity
	byPID := map[uint32]Identity{}
	for pid, pr := range smp.Procs {
		if ns, err := NSPid(procRoot, int(pid)); err == nil && ns != int(pid) {
			pr.NSPID = uint32(ns)
		}
		id, ok := FromKernel(pr)
		if !ok {
			var err error
			if id, err = Of(procRoot, int(pid)); err != nil {
				continue
			}
		}
		if id.ContainerID == "" {
			// conmon's cgroup does not name its container under podman's
			// cgroupfs manager (/libpod_parent/conmon): its command line
			// does.
			if cid := monitored(procRoot, int(pid)); cid != "" {
				id.ContainerID, id.Monitor = cid, true
				if id.Runtime == "" {
					id.Runtime = Podman
				}
			}
		}
		if id.ContainerID == "" {
			continue
		}
		byPID[pid] = id
		ids = append(ids, id)
	}
	var names map[string]Names
	if r != nil && len(ids) > 0 {
		names = r.ResolveAll(ctx, ids)
	}
	for pid, id := range byPID {
		c := &pipemodel.Container{Runtime: id.Runtime, ID: id.ContainerID, Monitor: id.Monitor}
		if n, ok := names[id.ContainerID]; ok {
			c.Name, c.Pod, c.Namespace, c.KubeName = n.Name, n.Pod, n.Namespace, n.Container
		}
		smp.Procs[pid].Container = c
	}
}

// FromKernel is the container identity of the cgroups the kernel walk
// read for p (Proc.Cgroup, Proc.CgroupV1), parsed as ParseProcCgroup
// parses /proc/PID/cgroup: the unified hierarchy's path, or where it says
// nothing (a hybrid host whose runtime names a container, or its monitor,
// only on v1) the v1 hierarchy's. The paths are from each hierarchy's
// root, whatever cgroup namespace pipesnap runs in. ok is false when the
// walk read no cgroup.
func FromKernel(p *pipemodel.Proc) (id Identity, ok bool) {
	var b strings.Builder
	if p.Cgroup != "" {
		b.WriteString("0::" + p.Cgroup + "\n")
	}
	if v1 := p.CgroupV1; v1 != nil && v1.Path != "" {
		b.WriteString("1:" + v1.Controller + ":" + v1.Path + "\n")
	}
	if b.Len() == 0 {
		return Identity{}, false
	}
	return ParseProcCgroup(b.String()), true
}

// Of is the container identity of process pid, from its cgroup file.
func Of(procRoot string, pid int) (Identity, error) {
	if procRoot == "" {
		procRoot = "/proc"
	}
	b, err := os.ReadFile(filepath.Join(procRoot, strconv.Itoa(pid), "cgroup"))
	if err != nil {
		return Identity{}, err
	}
	return ParseProcCgroup(string(b)), nil
}

// Selector picks processes by container: by name or id (a prefix of at
// least 4 hex digits), by Kubernetes pod or namespace, or by cgroup path
// prefix. Empty fields select nothing; set fields must all match.
type Selector struct {
	Container, Pod, Namespace, Cgroup string
}

// Empty tells whether nothing was asked for.
func (s Selector) Empty() bool { return s == Selector{} }

// String says what was asked for: "container web, pod api".
func (s Selector) String() string {
	var parts []string
	for _, kv := range [][2]string{{"container", s.Container}, {"pod", s.Pod}, {"namespace", s.Namespace}, {"cgroup", s.Cgroup}} {
		if kv[1] != "" {
			parts = append(parts, kv[0]+" "+kv[1])
		}
	}
	return strings.Join(parts, ", ")
}

// Select lists the processes (every thread group leader under procRoot)
// that the selector picks. Runtime monitors (conmon) are left out: they
// are not in the container. It is an error when none matches.
func Select(ctx context.Context, procRoot string, r *Resolver, sel Selector) ([]int, error) {
	if procRoot == "" {
		procRoot = "/proc"
	}
	ents, err := os.ReadDir(procRoot)
	if err != nil {
		return nil, err
	}
	type cand struct {
		pid  int
		id   Identity
		path string
	}
	var cands []cand
	var ids []Identity
	for _, e := range ents {
		pid, err := strconv.Atoi(e.Name())
		if err != nil || pid <= 0 {
			continue
		}
		b, err := os.ReadFile(filepath.Join(procRoot, e.Name(), "cgroup"))
		if err != nil {
			continue
		}
		id := ParseProcCgroup(string(b))
		if id.Monitor {
			continue
		}
		if sel.Cgroup != "" && !strings.HasPrefix(id.Path, sel.Cgroup) {
			continue
		}
		if (sel.Container != "" || sel.Pod != "" || sel.Namespace != "") && id.ContainerID == "" {
			continue
		}
		cands = append(cands, cand{pid, id, id.Path})
		ids = append(ids, id)
	}
	var names map[string]Names
	if r != nil && (sel.Container != "" || sel.Pod != "" || sel.Namespace != "") && len(ids) > 0 {
		names = r.ResolveAll(ctx, ids)
	}
	var out []int
	for _, c := range cands {
		n := names[c.id.ContainerID]
		if sel.Container != "" && !(n.Name == sel.Container || n.Container == sel.Container ||
			len(sel.Container) >= 4 && strings.HasPrefix(c.id.ContainerID, sel.Container)) {
			continue
		}
		if sel.Pod != "" && n.Pod != sel.Pod {
			continue
		}
		if sel.Namespace != "" && n.Namespace != sel.Namespace {
			continue
		}
		out = append(out, c.pid)
	}
	if len(out) == 0 {
		return nil, fmt.Errorf("%w: no process in %s", ErrNoMatch, sel)
	}
	return out, nil
}

// ErrNoMatch: a selector picked no process.
var ErrNoMatch = fmt.Errorf("nothing selected")

// monitored is the container a runtime monitor watches, from its command
// line: conmon (podman, CRI-O) takes it as -c ID or --cid ID. "" for
// any other process.
func monitored(procRoot string, pid int) string {
	if procRoot == "" {
		procRoot = "/proc"
	}
	b, err := os.ReadFile(filepath.Join(procRoot, strconv.Itoa(pid), "cmdline"))
	if err != nil || len(b) == 0 {
		return ""
	}
	args := strings.Split(strings.TrimRight(string(b), "\x00"), "\x00")
	if filepath.Base(args[0]) != "conmon" {
		return ""
	}
	for i := 1; i+1 < len(args); i++ {
		if (args[i] == "-c" || args[i] == "--cid") && isID(args[i+1]) {
			return args[i+1]
		}
		if v, ok := strings.CutPrefix(args[i], "--cid="); ok && isID(v) {
			return v
		}
	}
	return ""
}
