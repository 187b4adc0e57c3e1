// Package containertest runs real containers for tests, with podman, on
// machines like the project's: Debian's podman, runc and conmon, a
// busybox-static image made offline, no registry.
//
// Two things the Debian defaults get wrong on such a VM are set here: crun
// refuses the hybrid cgroup layout (podman runs with --runtime runc
// --cgroup-manager cgroupfs), and the default ulimits exceed what the VM
// allows (a containers.conf with default_ulimits = [], passed in
// CONTAINERS_CONF). Where podman is missing the tests skip, or fail when
// CI is set: CI installs it (apt-get install podman runc conmon
// busybox-static).
package containertest

import (
	"bytes"
	"context"
	"debug/elf"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"
)

// Image is the busybox image the tests run, imported once per test process.
const Image = "localhost/pipesnap-test-busybox:1"

// busybox is where Debian's busybox-static puts its static binary.
const busybox = "/bin/busybox"

// Podman runs podman with the settings of this package.
type Podman struct {
	conf string // the containers.conf given in CONTAINERS_CONF
	dir  string // where it and the image's rootfs are made
}

var (
	setupOnce sync.Once
	setup     *Podman
	setupErr  error
	names     atomic.Int64
)

// skipOrFail skips t for a missing requirement, or fails it when CI is set.
func skipOrFail(t testing.TB, format string, args ...any) {
	t.Helper()
	if os.Getenv("CI") != "" {
		t.Fatalf(format+" (CI is set: the machine must have it: apt-get install podman runc conmon busybox-static)", args...)
	}
	t.Skipf(format, args...)
}

// Require returns a Podman ready to run containers of Image, or skips t
// (fails it under CI) where podman, runc, conmon or a static busybox is
// missing, or pipesnap's tests do not run as root.
func Require(t testing.TB) *Podman {
	t.Helper()
	if os.Geteuid() != 0 {
		skipOrFail(t, "podman tests run as root")
	}
	for _, bin := range []string{"podman", "runc", "conmon"} {
		if _, err := exec.LookPath(bin); err != nil {
			skipOrFail(t, "no %s", bin)
		}
	}
	if !isStatic(busybox) {
		skipOrFail(t, "no static %s (busybox-static)", busybox)
	}
	setupOnce.Do(func() { setup, setupErr = newPodman() })
	if setupErr != nil {
		t.Fatalf("setting podman up: %v", setupErr)
	}
	return setup
}

// isStatic reports whether path is an ELF executable without an interpreter.
func isStatic(path string) bool {
	f, err := elf.Open(path)
	if err != nil {
		return false
	}
	defer f.Close()
	for _, p := range f.Progs {
		if p.Type == elf.PT_INTERP {
			return false
		}
	}
	return true
}

// newPodman writes the containers.conf and imports the image unless a
// previous test process did.
func newPodman() (*Podman, error) {
	dir, err := os.MkdirTemp("", "pipesnap-podman-")
	if err != nil {
		return nil, err
	}
	p := &Podman{dir: dir, conf: filepath.Join(dir, "containers.conf")}
	conf := "[containers]\ndefault_ulimits = []\n\n[engine]\nruntime = \"runc\"\ncgroup_manager = \"cgroupfs\"\nevents_logger = \"file\"\n"
	if err := os.WriteFile(p.conf, []byte(conf), 0o644); err != nil {
		return nil, err
	}
	if p.Command("image", "exists", Image).Run() == nil {
		return p, nil
	}
	// A rootfs of busybox and its applets, as a tarball for podman
	// import; only the containers.conf is left after.
	root := filepath.Join(dir, "rootfs")
	tarball := filepath.Join(dir, "rootfs.tar")
	defer os.RemoveAll(root)
	defer os.Remove(tarball)
	for _, d := range []string{"bin", "tmp", "proc", "sys", "dev", "etc"} {
		if err := os.MkdirAll(filepath.Join(root, d), 0o755); err != nil {
			return nil, err
		}
	}
	b, err := os.ReadFile(busybox)
	if err != nil {
		return nil, err
	}
	if err := os.WriteFile(filepath.Join(root, "bin", "busybox"), b, 0o755); err != nil {
		return nil, err
	}
	for _, applet := range []string{"sh", "yes", "sleep", "cat", "ls", "ps", "echo", "true", "kill", "grep", "head", "dd"} {
		if err := os.Symlink("busybox", filepath.Join(root, "bin", applet)); err != nil {
			return nil, err
		}
	}
	if out, err := exec.Command("tar", "-C", root, "-cf", tarball, ".").CombinedOutput(); err != nil {
		return nil, fmt.Errorf("tar: %v: %s", err, out)
	}
	if out, err := p.Command("import", "--change", "CMD [\"sh\"]", tarball, Image).CombinedOutput(); err != nil {
		return nil, fmt.Errorf("podman import: %v: %s", err, out)
	}
	return p, nil
}

// Env is the environment podman runs with: this package's containers.conf.
func (p *Podman) Env() []string {
	return append(os.Environ(), "CONTAINERS_CONF="+p.conf)
}

// Command is podman with the runtime and cgroup manager that work here.
func (p *Podman) Command(args ...string) *exec.Cmd {
	return p.CommandContext(context.Background(), args...)
}

// CommandContext is Command bounded by ctx.
func (p *Podman) CommandContext(ctx context.Context, args ...string) *exec.Cmd {
	cmd := exec.CommandContext(ctx, "podman", append([]string{"--runtime", "runc", "--cgroup-manager", "cgroupfs"}, args...)...)
	cmd.Env = p.Env()
	return cmd
}

// Output runs podman and returns its stdout, trimmed; it fails t on error.
func (p *Podman) Output(t testing.TB, args ...string) string {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	var stderr bytes.Buffer
	cmd := p.CommandContext(ctx, args...)
	cmd.Stderr = &stderr
	out, err := cmd.Output()
	if err != nil {
		t.Fatalf("podman %s: %v: %s", strings.Join(args, " "), err, stderr.String())
	}
	return strings.TrimSpace(string(out))
}

// Container is a container a test started.
type Container struct {
	Name string
	ID   string // the full id, from podman inspect
	PID  int    // its first process, as the host sees it
}

// UniqueName is a container name no other test process uses.
func UniqueName(prefix string) string {
	return fmt.Sprintf("%s-%d-%d-%d", prefix, os.Getpid(), names.Add(1), time.Now().UnixNano()%1e6)
}

// Run starts a container of Image detached, running args (with podman run
// options before them: pass "--" to end the options), and removes it
// (podman rm -f) when t ends. It returns once the container runs.
func (p *Podman) Run(t testing.TB, opts []string, args ...string) *Container {
	t.Helper()
	name := UniqueName("pipesnap-test")
	runArgs := append([]string{"run", "-d", "--name", name}, opts...)
	runArgs = append(runArgs, Image)
	runArgs = append(runArgs, args...)
	t.Cleanup(func() { p.Remove(name) })
	p.Output(t, runArgs...)
	c := &Container{Name: name}
	info := p.Output(t, "inspect", "--format", "{{.Id}} {{.State.Pid}}", name)
	f := strings.Fields(info)
	if len(f) != 2 {
		t.Fatalf("podman inspect %s: %q", name, info)
	}
	c.ID = f[0]
	var err error
	if c.PID, err = strconv.Atoi(f[1]); err != nil || c.PID <= 0 {
		t.Fatalf("podman inspect %s: pid %q", name, f[1])
	}
	return c
}

// Conmon is the pid of c's conmon: its monitor, the parent of its first
// process, which holds the read ends of its stdout and stderr.
func (c *Container) Conmon(t testing.TB) int {
	t.Helper()
	b, err := os.ReadFile("/proc/" + strconv.Itoa(c.PID) + "/stat")
	if err != nil {
		t.Fatal(err)
	}
	// The fields after "(comm)": state, then ppid.
	f := strings.Fields(string(b[bytes.LastIndexByte(b, ')')+1:]))
	ppid, err := strconv.Atoi(f[1])
	if err != nil {
		t.Fatalf("/proc/%d/stat: %q", c.PID, b)
	}
	if comm, _ := os.ReadFile("/proc/" + f[1] + "/comm"); strings.TrimSpace(string(comm)) != "conmon" {
		t.Fatalf("container %s: the parent %d of its pid %d is %q, not conmon", c.Name, ppid, c.PID, comm)
	}
	return ppid
}

// Remove removes the container name, running or not.
func (p *Podman) Remove(name string) {
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	p.CommandContext(ctx, "rm", "-f", "-t", "0", name).Run()
}

// Procs are the pids (as the host sees them) of the processes in c's
// cgroup, from /proc/*/cgroup.
func (c *Container) Procs() []int {
	ents, _ := os.ReadDir("/proc")
	var out []int
	for _, e := range ents {
		pid, err := strconv.Atoi(e.Name())
		if err != nil {
			continue
		}
		b, err := os.ReadFile("/proc/" + e.Name() + "/cgroup")
		if err == nil && bytes.Contains(b, []byte("libpod-"+c.ID)) && !bytes.Contains(b, []byte("conmon")) {
			out = append(out, pid)
		}
	}
	return out
}

// WaitProcs waits (10 s at most) until c's processes include one whose
// comm is each of comms, and returns them by comm.
func (c *Container) WaitProcs(t testing.TB, comms ...string) map[string]int {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for {
		found := map[string]int{}
		for _, pid := range c.Procs() {
			b, _ := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/comm")
			found[strings.TrimSpace(string(b))] = pid
		}
		all := true
		for _, comm := range comms {
			if found[comm] == 0 {
				all = false
			}
		}
		if all {
			return found
		}
		if time.Now().After(deadline) {
			t.Fatalf("container %s: processes %v, want %v", c.Name, found, comms)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// Service starts podman's API service (podman system service) on a unix
// socket of its own and stops it when t ends; it returns the socket's path
// once the service answers.
func (p *Podman) Service(t testing.TB) string {
	t.Helper()
	sock := filepath.Join(t.TempDir(), "podman.sock")
	cmd := p.Command("system", "service", "--time=0", "unix://"+sock)
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	if err := cmd.Start(); err != nil {
		t.Fatalf("podman system service: %v", err)
	}
	t.Cleanup(func() {
		cmd.Process.Signal(os.Interrupt)
		done := make(chan struct{})
		go func() { cmd.Wait(); close(done) }()
		select {
		case <-done:
		case <-time.After(10 * time.Second):
			cmd.Process.Kill()
			<-done
		}
	})
	deadline := time.Now().Add(20 * time.Second)
	for {
		if c, err := net.Dial("unix", sock); err == nil {
			c.Close()
			return sock
		}
		if cmd.ProcessState != nil || time.Now().After(deadline) {
			t.Fatalf("podman system service did not listen on %s: %s", sock, stderr.String())
		}
		time.Sleep(50 * time.Millisecond)
	}
}
