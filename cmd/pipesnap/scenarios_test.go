package main

// diagnose on the scenarios an on-call engineer meets
// (internal/pipetest/scenarios.go), through the built binary: each gives
// the verdict, the culprit and a wait of the right order of magnitude.

import (
	"fmt"
	"os"
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

// fromTests tells whether a finding is about processes of the tests
// (other packages' tests run their stuck pipelines at the same time, and
// may leave orphans): every task it names started after `go test` did,
// the parent of this test binary. The machine's own processes are older.
func fromTests(f diagFinding) bool {
	tasks := slices.Concat(f.Waiting, f.OtherEnd, f.Culprits)
	if len(tasks) == 0 {
		return false
	}
	since := startTicks(os.Getppid())
	for _, t := range tasks {
		if st := startTicks(t.PID); st != 0 && st < since {
			return false
		}
	}
	return true
}

// startTicks is when process pid started (clock ticks since boot); 0
// when it is gone.
func startTicks(pid int) uint64 {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return 0
	}
	s := string(b)
	end := strings.LastIndexByte(s, ')')
	if end < 0 {
		return 0
	}
	f := strings.Fields(s[end+1:]) // from the state on: starttime is the 20th
	if len(f) < 20 {
		return 0
	}
	n, _ := strconv.ParseUint(f[19], 10, 64)
	return n
}
