package main

// diagnose on the scenarios an on-call engineer meets
// (internal/pipetest/scenarios.go), through the built binary: each gives
// the verdict, the culprit and a wait of the right order of magnitude.

import (
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/pipesnap/pipesnap/internal/pipetest"
)

// scenarioMinWait is the --min-wait of these tests: longer than the
// healthy pauses of the scenarios (bursty's second), short enough to
// keep each test a few seconds.
const scenarioMinWait = 2 * time.Second

func TestDiagnoseScenarios(t *testing.T) {
	requireBPF(t)
	for _, kind := range pipetest.ScenarioKinds {
		t.Run(kind, func(t *testing.T) {
			if kind != "busy" && kind != "bursty" {
				t.Parallel() // busy and bursty need the CPU to show they move
			}
			sc := pipetest.StartScenario(t, kind)
			start := time.Now()
			v := diagnoseJSON(t, exitFor(sc.Want.Stuck), append([]string{"--min-wait", scenarioMinWait.String()}, pidArgs(sc.PIDs()...)...)...)
			checkScenario(t, sc, v, sc.Want.Finding, time.Since(sc.Settled)+time.Since(start))
			for _, f := range sc.Want.Also {
				checkScenario(t, sc, v, f, time.Since(sc.Settled))
			}
		})
	}
}

func exitFor(stuck bool) int {
	if stuck {
		return 1
	}
	return 0
}

// checkScenario checks diagnose's JSON: it decodes into the report.
func checkScenario(t *testing.T, sc *pipetest.Scenario, v diagOut, want pipetest.Finding, upTo time.Duration) {
	t.Helper()
	pipetest.CheckVerdict(t, sc, v.report(t), want, scenarioMinWait, upTo)
}

// TestDiagnoseShellOrder: `(sleep 600; echo) | cat`: the subshell and
// sleep are one stage, before cat.
func TestDiagnoseShellOrder(t *testing.T) {
	requireBPF(t)
	sc := pipetest.StartScenario(t, "shell-subshell")
	v := diagnoseJSON(t, 0, append([]string{"--min-wait", "100ms"}, pidArgs(sc.PIDs()...)...)...)
	i := slices.IndexFunc(v.Chains, func(c diagChain) bool { return slices.Contains(c.Pipes, sc.Ino()) })
	if i < 0 {
		t.Fatalf("no chain with pipe %d: %+v", sc.Ino(), v.Chains)
	}
	c := v.Chains[i]
	var stages [][]int
	for _, st := range c.Stages {
		var pids []int
		for _, p := range st {
			pids = append(pids, p.PID)
		}
		slices.Sort(pids)
		stages = append(stages, pids)
	}
	writers := []int{sc.PID("subshell"), sc.PID("sleep")}
	slices.Sort(writers)
	if len(stages) != 2 || !slices.Equal(stages[0], writers) || !slices.Equal(stages[1], []int{sc.PID("cat")}) {
		t.Errorf("stages %v, want %v then [%d]: %q", stages, writers, sc.PID("cat"), c.Summary)
	}
}

// TestDiagnoseQuietMachine: with no pipeline of the test's running, a
// walk of every process calls nothing stuck, and says what it left out.
func TestDiagnoseQuietMachine(t *testing.T) {
	requireBPF(t)
	v := diagnoseJSON(t, -1, "--all")
	for _, f := range v.Findings {
		if f.Category == "stall" && !fromTests(f) {
			t.Errorf("a pipe of the machine is called stuck: %s", f.Message)
		}
	}
	if out, _, _ := run(t, "diagnose", "--all", "--settle", "0"); !strings.Contains(out, "waits considered") {
		t.Errorf("diagnose --all says nothing of the waits it considered:\n%s", out)
	}
}

// fromTests tells whether a finding is about processes of test binaries
// (other packages' tests run their stuck pipelines at the same time):
// every task it names descends from a *.test process.
func fromTests(f diagFinding) bool {
	tasks := slices.Concat(f.Waiting, f.OtherEnd, f.Culprits)
	if len(tasks) == 0 {
		return false
	}
	for _, t := range tasks {
		if !underTestBinary(t.PID) {
			return false
		}
	}
	return true
}

func underTestBinary(pid int) bool {
	for i := 0; i < 64 && pid > 1; i++ {
		b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
		if err != nil {
			return true // gone: a test's process that ended
		}
		s := string(b)
		open, end := strings.IndexByte(s, '('), strings.LastIndexByte(s, ')')
		if open < 0 || end < open {
			return false
		}
		if strings.HasSuffix(s[open+1:end], ".test") {
			return true
		}
		f := strings.Fields(s[end+1:]) // state, ppid, ...
		if len(f) < 2 {
			return false
		}
		ppid, err := strconv.Atoi(f[1])
		if err != nil {
			return false
		}
		pid = ppid
	}
	return false
}

// TestDiagnoseOffline: a snapshot diagnoses like the live system: the
// same findings, categories and culprits, and the waits as long as they
// were when it was taken.
func TestDiagnoseOffline(t *testing.T) {
	requireBPF(t)
	for _, kind := range []string{"go-exec", "fifo-writer-open", "sigstop-middle", "leaked-pipe", "select-full", "thread-reader-full"} {
		t.Run(kind, func(t *testing.T) {
			t.Parallel()
			sc := pipetest.StartScenario(t, kind)
			time.Sleep(scenarioMinWait)
			args := append([]string{"--min-wait", scenarioMinWait.String()}, pidArgs(sc.PIDs()...)...)
			live := diagnoseJSON(t, exitFor(sc.Want.Stuck), args...)
			file := filepath.Join(t.TempDir(), "s.snap")
			if _, stderr, code := run(t, append([]string{"dump", "-o", file}, pidArgs(sc.PIDs()...)...)...); code != 0 {
				t.Fatalf("dump exit %d: %s", code, stderr)
			}
			out, stderr, code := run(t, "diagnose", "--json", "--min-wait", scenarioMinWait.String(), file)
			if code != exitFor(sc.Want.Stuck) {
				t.Fatalf("diagnose FILE exit %d, want %d: %s\n%s", code, exitFor(sc.Want.Stuck), stderr, out)
			}
			var off diagOut
			if err := json.Unmarshal([]byte(out), &off); err != nil {
				t.Fatal(err)
			}
			off.raw = []byte(out)
			if a, b := verdicts(live), verdicts(off); !slices.Equal(a, b) {
				t.Errorf("live and offline differ:\n live %v\n file %v", a, b)
			}
			checkScenario(t, sc, off, sc.Want.Finding, time.Since(sc.Settled))
		})
	}
}

// verdicts sums up a diagnosis for comparison: each finding's inode,
// category, kind and culprits, in order.
func verdicts(v diagOut) []string {
	var out []string
	for _, f := range v.Findings {
		s := fmt.Sprintf("%d %s %s", f.Ino, f.Category, f.Kind)
		for _, c := range f.Culprits {
			s += fmt.Sprintf(" %d", c.PID)
		}
		for _, w := range f.Waiting {
			s += fmt.Sprintf(" w%d/%s", w.PID, w.Via)
		}
		out = append(out, s)
	}
	slices.Sort(out)
	return out
}

// TestInspectWaits: inspect shows who was blocked, for how long, in
// which state, and the tasks blocked opening a FIFO.
func TestInspectWaits(t *testing.T) {
	requireBPF(t)
	full := pipetest.StartStuck(t, "full")
	open := pipetest.StartScenario(t, "fifo-writer-open")
	file := filepath.Join(t.TempDir(), "s.snap")
	pids := append(full.PIDs(), open.PIDs()...)
	if _, stderr, code := run(t, append([]string{"dump", "-o", file}, pidArgs(pids...)...)...); code != 0 {
		t.Fatalf("dump exit %d: %s", code, stderr)
	}
	out, stderr, code := run(t, "inspect", file)
	if code != 0 {
		t.Fatalf("inspect exit %d: %s", code, stderr)
	}
	for _, want := range []string{
		fmt.Sprintf("%d(yes):1:write:blocked %d(sleep):0:read", full.PID("writer"), full.PID("reader")),
		fmt.Sprintf("open: sh (pid %d) blocked ", open.PID("writer")),
		fmt.Sprintf("opening FIFO %s (inode %d) for writing: no reader had opened it", open.FIFOs["fifo"], open.Inos["fifo"]),
		"PID", "WCHAN", "hrtimer_nanosleep",
	} {
		if !strings.Contains(out, want) {
			t.Errorf("inspect lacks %q:\n%s", want, out)
		}
	}
	var v struct {
		Pipes []struct {
			Ino     uint64 `json:"ino"`
			Waiters []struct {
				PID    int    `json:"pid"`
				Queue  string `json:"queue"`
				Kind   string `json:"kind"`
				WaitNS int64  `json:"wait_ns"`
			} `json:"waiters"`
		} `json:"pipes"`
		OpenWaits []struct {
			PID  int    `json:"pid"`
			Path string `json:"path"`
			End  string `json:"end"`
		} `json:"open_waits"`
	}
	out, _, _ = run(t, "inspect", "--json", file)
	if err := json.Unmarshal([]byte(out), &v); err != nil {
		t.Fatal(err)
	}
	found := false
	for _, p := range v.Pipes {
		for _, w := range p.Waiters {
			found = found || p.Ino == full.Ino() && w.PID == full.PID("writer") && w.Queue == "write" && w.Kind == "blocked" && w.WaitNS > 0
		}
	}
	if !found || len(v.OpenWaits) != 1 || v.OpenWaits[0].PID != open.PID("writer") || v.OpenWaits[0].End != "write" {
		t.Errorf("inspect --json: waiters %+v, open waits %+v", v.Pipes, v.OpenWaits)
	}
}
