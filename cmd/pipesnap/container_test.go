package main

// A stuck pipeline inside a real podman container: found by
// --container NAME, shown with its container and in-container pids,
// diagnosed.

import (
	"encoding/json"
	"fmt"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/prometheus/common/model"

	"github.com/pipesnap/pipesnap/container/containertest"
	"github.com/pipesnap/pipesnap/internal/pipetest"
)

func TestContainerPipeline(t *testing.T) {
	requireBPF(t)
	pm := containertest.Require(t)
	c := pm.Run(t, nil, "sh", "-c", "yes | sleep 600")
	procs := c.WaitProcs(t, "yes", "sleep")
	yes, slp := procs["yes"], procs["sleep"]

	// ls --container NAME: exactly the container's processes, with their
	// container and pids as the container sees them.
	out, stderr, code := run(t, "ls", "--json", "--container", c.Name)
	if code != 0 {
		t.Fatalf("ls --container: exit %d: %s", code, stderr)
	}
	var v struct {
		Procs []struct {
			PID       int  `json:"pid"`
			NSPID     int  `json:"nspid"`
			Outside   bool `json:"outside"` // a holder of the other end (conmon)
			Container *struct {
				Runtime, ID, Name string
			} `json:"container"`
		} `json:"procs"`
	}
	if err := json.Unmarshal([]byte(out), &v); err != nil {
		t.Fatal(err)
	}
	var pids []int
	for _, p := range v.Procs {
		if p.Outside {
			continue
		}
		if p.Container == nil || p.Container.Name != c.Name || p.Container.ID != c.ID || p.Container.Runtime != "podman" {
			t.Errorf("proc %+v: want container %s (%s, podman)", p, c.Name, c.ID)
		}
		if p.NSPID == 0 || p.NSPID > 10 {
			t.Errorf("proc %d: nspid %d, want a small pid inside", p.PID, p.NSPID)
		}
		pids = append(pids, p.PID)
	}
	if !slices.Contains(pids, yes) || !slices.Contains(pids, slp) || slices.ContainsFunc(pids, func(p int) bool { return !slices.Contains(c.Procs(), p) }) {
		t.Errorf("--container listed %v, want the container's %v", pids, c.Procs())
	}
	text, _, _ := run(t, "ls", "--container", c.Name)
	if !strings.Contains(text, c.Name) || !strings.Contains(text, fmt.Sprintf("%d/", yes)) {
		t.Errorf("ls table lacks the container or the in-container pid:\n%s", text)
	}
	// By id prefix, and diagnose names the culprit.
	v2 := diagnoseJSON(t, 1, "--min-wait", "100ms", "--container", c.ID[:12])
	if len(v2.Chains) == 0 || !slices.ContainsFunc(v2.Chains, func(ch diagChain) bool { return slices.Contains(ch.StuckAt, slp) }) {
		t.Errorf("diagnose --container: chains %+v, want stuck at sleep %d", v2.Chains, slp)
	}
	text, _, _ = run(t, "diagnose", "--min-wait", "100ms", "--settle", "150ms", "--container", c.Name)
	if !strings.Contains(text, fmt.Sprintf("sleep (pid %d/", slp)) || !strings.Contains(text, "container "+c.Name) {
		t.Errorf("diagnose text lacks sleep's in-container pid or its container:\n%s", text)
	}
	if _, stderr, code := run(t, "ls", "--container", "no-such-container-here"); code != 1 || !strings.Contains(stderr, "no process in container no-such-container-here") {
		t.Errorf("ls --container of nothing: exit %d, %q", code, stderr)
	}

	// dump --container NAME records who the processes are: inspect and
	// diagnose FILE show the container and the pids inside.
	snap := filepath.Join(t.TempDir(), "c.snap")
	if _, stderr, code := run(t, "dump", "--container", c.Name, "-o", snap); code != 0 {
		t.Fatalf("dump --container: exit %d: %s", code, stderr)
	}
	out, stderr, code = run(t, "inspect", "--json", snap)
	if code != 0 {
		t.Fatalf("inspect: exit %d: %s", code, stderr)
	}
	var iv struct {
		Tasks []struct {
			PID       int `json:"pid"`
			NSPID     int `json:"nspid"`
			Container *struct {
				Runtime, ID, Name string
			} `json:"container"`
		} `json:"tasks"`
	}
	if err := json.Unmarshal([]byte(out), &iv); err != nil {
		t.Fatal(err)
	}
	var dumped []int
	for _, tk := range iv.Tasks {
		dumped = append(dumped, tk.PID)
		if tk.Container == nil || tk.Container.Name != c.Name || tk.Container.ID != c.ID || tk.Container.Runtime != "podman" || tk.NSPID == 0 || tk.NSPID > 10 {
			t.Errorf("snapshot task %d: nspid %d, container %+v; want %s (%s) and a small pid inside", tk.PID, tk.NSPID, tk.Container, c.Name, c.ID)
		}
	}
	if !slices.Contains(dumped, yes) || !slices.Contains(dumped, slp) {
		t.Errorf("snapshot has tasks %v, want yes %d and sleep %d", dumped, yes, slp)
	}
	text, _, _ = run(t, "inspect", snap)
	if !strings.Contains(text, "CONTAINER") || !strings.Contains(text, c.Name) || !strings.Contains(text, fmt.Sprintf("%d/", slp)) {
		t.Errorf("inspect table lacks the container or the in-container pid:\n%s", text)
	}
	offline := diagnoseJSON(t, 1, "--min-wait", "100ms", snap)
	if !slices.ContainsFunc(offline.Chains, func(ch diagChain) bool { return slices.Contains(ch.StuckAt, slp) }) {
		t.Errorf("diagnose FILE: chains %+v, want stuck at sleep %d", offline.Chains, slp)
	}

	// serve --container NAME: the stuck pipeline's series and the pipe's
	// carry the container (no pod: plain podman).
	m := serveScrape(t, serveStart(t, "--min-wait", "100ms", "--container", c.Name))
	stuck := serveSeries(m, "pipesnap_stuck_pipeline_seconds", map[string]string{"culprit_pid": fmt.Sprint(slp)})
	if len(stuck) != 1 || stuck[0].Metric["container"] != model.LabelValue(c.Name) || stuck[0].Metric["pod"] != "" {
		t.Errorf("serve: stuck series %v, want one of sleep %d labelled container=%s", stuck, slp, c.Name)
	}
	if ss := serveSeries(m, "pipesnap_pipe_blocked_writers", map[string]string{"writers": "yes"}); len(ss) != 1 || ss[0].Metric["container"] != model.LabelValue(c.Name) {
		t.Errorf("serve: pipe series %v, want yes's pipe labelled container=%s", ss, c.Name)
	}
}

// TestContainerRuntimeReader: a container writing its stdout while the
// runtime's reader of it (conmon) is stopped: diagnose says so in those
// words, naming the container and conmon.
func TestContainerRuntimeReader(t *testing.T) {
	requireBPF(t)
	pm := containertest.Require(t)
	c := pm.Run(t, nil, "yes")
	conmon := c.Conmon(t)
	if err := syscall.Kill(conmon, syscall.SIGSTOP); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { syscall.Kill(conmon, syscall.SIGCONT) }) // before podman rm (cleanups run last first)
	yes := c.WaitProcs(t, "yes")["yes"]
	for deadline := time.Now().Add(10 * time.Second); !strings.Contains(pipetest.Wchan(yes, 0), "pipe"); time.Sleep(20 * time.Millisecond) {
		if time.Now().After(deadline) {
			t.Fatalf("yes does not block on its stdout: wchan %q", pipetest.Wchan(yes, 0))
		}
	}
	v := diagnoseJSON(t, 1, "--min-wait", "100ms", "--container", c.Name)
	found := false
	for _, f := range v.Findings {
		if f.Category != "stall" || len(f.Culprits) == 0 || f.Culprits[0].PID != conmon {
			continue
		}
		found = true
		for _, want := range []string{
			"container " + c.Name + " is blocked writing its output",
			fmt.Sprintf("the container runtime's reader of it, conmon (pid %d, the runtime's monitor of container %s", conmon, c.Name),
			"is stopped",
		} {
			if !strings.Contains(f.Message, want) {
				t.Errorf("message %q\nlacks %q", f.Message, want)
			}
		}
	}
	if !found {
		t.Errorf("no stall blaming conmon %d: %+v", conmon, v.Findings)
	}

	// The same from a snapshot of the container's process and its
	// monitor: the snapshot says which is which.
	snap := filepath.Join(t.TempDir(), "r.snap")
	if _, stderr, code := run(t, "dump", "--pid", fmt.Sprintf("%d,%d", yes, conmon), "-o", snap); code != 0 {
		t.Fatalf("dump: exit %d: %s", code, stderr)
	}
	v = diagnoseJSON(t, 1, "--min-wait", "100ms", snap)
	if !slices.ContainsFunc(v.Findings, func(f diagFinding) bool {
		return strings.Contains(f.Message, "container "+c.Name+" is blocked writing its output") && strings.Contains(f.Message, "the runtime's monitor of container "+c.Name)
	}) {
		t.Errorf("diagnose FILE: no runtime-reader stall naming %s: %+v", c.Name, v.Findings)
	}
}

// TestContainerFollowed: watch --container follows the container: a
// pipeline started in it after watch began (podman exec) is walked
// too.
func TestContainerFollowed(t *testing.T) {
	requireBPF(t)
	pm := containertest.Require(t)
	c := pm.Run(t, nil, "sleep", "600")
	c.WaitProcs(t, "sleep")
	cmd := exec.Command(pipesnapBin, "watch", "--json", "-n", "16", "-i", "500ms", "--container", c.Name)
	var out, stderr strings.Builder
	cmd.Stdout, cmd.Stderr = &out, &stderr
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	time.Sleep(1500 * time.Millisecond)
	pm.Output(t, "exec", "-d", c.Name, "sh", "-c", "yes | sleep 600")
	if err := cmd.Wait(); err != nil {
		t.Fatalf("watch: %v: %s", err, stderr.String())
	}
	lines := strings.Split(strings.TrimSpace(out.String()), "\n")
	if len(lines) != 16 {
		t.Fatalf("%d frames, want 16: %s", len(lines), stderr.String())
	}
	if strings.Contains(lines[0], `"comm":"yes"`) {
		t.Errorf("frame 1 already has yes: %s", lines[0])
	}
	if !strings.Contains(lines[len(lines)-1], `"comm":"yes"`) {
		t.Errorf("the last frame lacks the pipeline started in the container:\n%s", lines[len(lines)-1])
	}
}
