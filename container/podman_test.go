package container

import (
	"context"
	"os"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/pipesnap/pipesnap/container/containertest"
)

func readCgroup(t *testing.T, pid int) Identity {
	t.Helper()
	b, err := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/cgroup")
	if err != nil {
		t.Fatal(err)
	}
	return ParseProcCgroup(string(b))
}

// TestPodmanContainer: a real container's processes parse to podman and
// its id, their NSpid is their pid inside, and the Resolver names it from
// podman's API service and from podman's storage.
func TestPodmanContainer(t *testing.T) {
	p := containertest.Require(t)
	c := p.Run(t, nil, "sh", "-c", "yes | sleep 600")
	if got := p.Output(t, "inspect", "--format", "{{.Id}}", c.Name); got != c.ID || !isID(got) {
		t.Fatalf("podman inspect id %q", got)
	}
	procs := c.WaitProcs(t, "sh", "yes", "sleep")

	for comm, pid := range procs {
		id := readCgroup(t, pid)
		if id.Runtime != Podman || id.ContainerID != c.ID || id.Monitor {
			t.Errorf("%s (pid %d): %+v, want podman %s", comm, pid, id, c.ID)
		}
		ns, err := NSPid("/proc", pid)
		if err != nil {
			t.Fatal(err)
		}
		// The container's first process is 1 in it, the others small
		// (runc's own setup takes a few pids first).
		if comm == "sh" && ns != 1 || ns < 1 || ns > 20 || ns == pid {
			t.Errorf("%s: host pid %d, NSpid %d", comm, pid, ns)
		}
	}
	if procs["sh"] != c.PID {
		t.Errorf("podman's pid %d is not sh's %d", c.PID, procs["sh"])
	}

	// conmon, its monitor, holds its stdout and stderr: outside the
	// container, known as podman's.
	conmon := c.Conmon(t)
	if id := readCgroup(t, conmon); id.Runtime != Podman || !id.Monitor || id.IsContainer() {
		t.Errorf("conmon: %+v, want podman's monitor", id)
	}

	id := readCgroup(t, procs["yes"])
	t.Run("api", func(t *testing.T) {
		sock := p.Service(t)
		r := NewResolver(Options{CRISockets: none, DockerSockets: none, PodmanSockets: []string{sock}, Storage: none})
		defer r.Close()
		got := r.Resolve(context.Background(), id)
		if want := (Names{Name: c.Name, Source: "podman " + sock}); got != want {
			t.Errorf("Resolve = %+v, want %+v", got, want)
		}
	})
	t.Run("storage", func(t *testing.T) {
		// The defaults: no podman service runs at its usual socket, and
		// podman's storage names the container.
		if _, err := os.Stat("/run/podman/podman.sock"); err == nil {
			t.Skip("a podman service runs at /run/podman/podman.sock")
		}
		r := NewResolver(Options{CRISockets: none, DockerSockets: none})
		defer r.Close()
		got := r.Resolve(context.Background(), id)
		if want := (Names{Name: c.Name, Source: "storage /var/lib/containers/storage"}); got != want {
			t.Errorf("Resolve = %+v, want %+v", got, want)
		}
	})
	t.Run("absent socket", func(t *testing.T) {
		r := NewResolver(Options{Timeout: 200 * time.Millisecond, CRISockets: none, DockerSockets: none,
			PodmanSockets: []string{"/nonexistent/podman.sock"}, Storage: none})
		defer r.Close()
		start := time.Now()
		got := r.ResolveAll(context.Background(), []Identity{id})
		if d := time.Since(start); d > 250*time.Millisecond {
			t.Errorf("took %v, bound 200ms", d)
		}
		n, ok := got[c.ID]
		if !ok || n.Known() || !strings.Contains(n.Note, "podman /nonexistent/podman.sock: not present") {
			t.Errorf("ResolveAll = %+v", got)
		}
	})
}
