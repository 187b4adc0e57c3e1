package deploy

import (
	"bytes"
	"context"
	"encoding/json"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/pipesnap/pipesnap/container/containertest"
	"github.com/pipesnap/pipesnap/internal/pipetest"
)

// buildImage builds the image with scripts/image.sh under a tag of its
// own, removed when t ends.
func buildImage(t *testing.T, p *containertest.Podman) string {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()
	cmd := exec.CommandContext(ctx, "scripts/image.sh")
	cmd.Dir = ".."
	cmd.Env = append(p.Env(), "IMAGE=localhost/pipesnap-test", "VERSION="+containertest.UniqueName("t"), "IMAGE_BUILDER=podman")
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	out, err := cmd.Output()
	if err != nil {
		t.Fatalf("scripts/image.sh: %v: %s", err, stderr.String())
	}
	lines := strings.Split(strings.TrimSpace(string(out)), "\n")
	img := lines[len(lines)-1]
	if !strings.HasPrefix(img, "localhost/pipesnap-test:") {
		t.Fatalf("scripts/image.sh printed %q", out)
	}
	t.Cleanup(func() { p.Command("rmi", "-f", img).Run() })
	return img
}

// daemonSetRunOptions are the DaemonSet's pod settings as podman run
// options: the host's pid namespace, uid 0 with the manifest's
// capabilities only, no seccomp filter, no privilege escalation, a
// read-only root and the host paths mounted read-only where it mounts them.
func daemonSetRunOptions(t *testing.T) []string {
	t.Helper()
	opts := []string{"--pid=host", "--user=0", "--cap-drop=all", "--cap-add=" + strings.Join(Capabilities(t), ","),
		"--security-opt=seccomp=unconfined", "--security-opt=no-new-privileges", "--read-only"}
	ds := DaemonSet(t)
	c := ds.Spec.Template.Spec.Containers[0]
	for _, m := range c.VolumeMounts {
		for _, v := range ds.Spec.Template.Spec.Volumes {
			if v.Name == m.Name && v.HostPath != nil {
				opts = append(opts, "-v", v.HostPath.Path+":"+m.MountPath+":ro")
			}
		}
	}
	for _, e := range c.Env {
		if e.Value != "" {
			opts = append(opts, "-e", e.Name+"="+e.Value)
		}
	}
	return opts
}

// TestImage builds the image and runs `ls --all --json` in it with the
// host's pid namespace, as the DaemonSet runs it (and privileged): it
// lists a stuck pipeline's pipes as the host binary does.
func TestImage(t *testing.T) {
	p := containertest.Require(t)
	pipetest.RequireBPF(t)
	img := buildImage(t, p)
	pl := pipetest.StartStuck(t, "full")

	host, err := exec.Command(binary(t), "ls", "--all", "--json").Output()
	if err != nil {
		t.Fatalf("host ls: %v", err)
	}
	want := pipelinePipes(t, host, pl)
	checkFull(t, want, pl)

	for _, tt := range []struct {
		name string
		opts []string
	}{
		{"daemonset", daemonSetRunOptions(t)},
		{"privileged", []string{"--pid=host", "--privileged", "-v", "/sys/kernel/btf:/sys/kernel/btf:ro"}},
	} {
		t.Run(tt.name, func(t *testing.T) {
			args := append(append([]string{"run", "--rm"}, tt.opts...), img, "ls", "--all", "--json")
			out := p.Output(t, args...)
			got := pipelinePipes(t, []byte(out), pl)
			if mustJSON(got) != mustJSON(want) {
				t.Errorf("podman %s:\n%s\nthe host binary:\n%s", strings.Join(args, " "), mustJSON(got), mustJSON(want))
			}
		})
	}

	// A stuck pipeline in a container, found from the image by
	// --container NAME as the host binary finds it: same processes, same
	// pids inside, named through the runtime's socket under /host
	// (PIPESNAP_PODMAN_HOST, as a path on the host).
	t.Run("container", func(t *testing.T) {
		c := p.Run(t, nil, "sh", "-c", "yes | sleep 600")
		c.WaitProcs(t, "yes", "sleep")
		sock := p.Service(t)
		host, err := exec.Command(binary(t), "ls", "--json", "--container", c.Name).Output()
		if err != nil {
			t.Fatalf("host ls --container: %v", err)
		}
		want := containerProcs(t, host)
		if len(want) < 2 {
			t.Fatalf("host ls --container %s: %v, want yes and sleep", c.Name, want)
		}
		args := append(append([]string{"run", "--rm"}, daemonSetRunOptions(t)...),
			"-v", filepath.Dir(sock)+":/host/podman:ro", "-e", "PIPESNAP_PODMAN_HOST=unix:///podman/"+filepath.Base(sock), // under PIPESNAP_HOST_ROOT
			img, "ls", "--json", "--container", c.Name)
		got := containerProcs(t, []byte(p.Output(t, args...)))
		if mustJSON(got) != mustJSON(want) {
			t.Errorf("podman %s:\n%s\nthe host binary:\n%s", strings.Join(args, " "), mustJSON(got), mustJSON(want))
		}
		for _, pr := range got {
			if pr.Container != c.Name || pr.NSPID == 0 || pr.NSPID == pr.PID {
				t.Errorf("from the image: %+v, want container %s and a pid inside", pr, c.Name)
			}
		}
	})

	// The default seccomp profile is what refuses bpf(2): the same
	// capabilities under it fail, which is why the DaemonSet sets
	// Unconfined. Only said, not required: a runtime whose default
	// profile allows bpf(2) with CAP_BPF passes too.
	t.Run("runtime default seccomp", func(t *testing.T) {
		args := []string{"run", "--rm", "--pid=host", "--cap-drop=all", "--cap-add=" + strings.Join(Capabilities(t), ","),
			"-v", "/sys/kernel/btf:/sys/kernel/btf:ro", img, "ls", "--pid", "1"}
		out, err := p.Command(args...).CombinedOutput()
		t.Logf("under the runtime's default seccomp profile: %v: %.200s", err, out)
	})
}

// containerProc is what ls --json says of a process in a container.
type containerProc struct {
	PID, NSPID int
	Container  string
}

// containerProcs are the processes of ls --json in a container (not
// the runtime's monitor, which holds the other ends), by pid.
func containerProcs(t *testing.T, out []byte) []containerProc {
	t.Helper()
	var doc struct {
		Procs []struct {
			PID       int `json:"pid"`
			NSPID     int `json:"nspid"`
			Container *struct {
				Name    string `json:"name"`
				Monitor bool   `json:"monitor"`
			} `json:"container"`
		} `json:"procs"`
	}
	if err := json.Unmarshal(out, &doc); err != nil {
		t.Fatalf("ls --json: %v: %s", err, out)
	}
	var procs []containerProc
	for _, pr := range doc.Procs {
		if pr.Container != nil && !pr.Container.Monitor {
			procs = append(procs, containerProc{pr.PID, pr.NSPID, pr.Container.Name})
		}
	}
	slices.SortFunc(procs, func(a, b containerProc) int { return a.PID - b.PID })
	return procs
}
