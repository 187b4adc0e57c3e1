package diagnose_test

// diagnose on a live walk (pipestate) of the scenarios an on-call
// engineer meets (internal/pipetest/scenarios.go): the kernel matrix
// runs this too, so each scenario is checked on every kernel.

import (
	"context"
	"os/exec"
	"testing"
	"time"

	"github.com/pipesnap/pipesnap/diagnose"
	"github.com/pipesnap/pipesnap/internal/pipetest"
	"github.com/pipesnap/pipesnap/pipestate"
)

func TestMain(m *testing.M) { pipetest.Main(m) }

// liveMinWait is longer than the scenarios' healthy pauses (bursty's
// second).
const liveMinWait = 1500 * time.Millisecond

func TestScenariosLive(t *testing.T) {
	pipetest.RequireBPF(t)
	for _, kind := range pipetest.ScenarioKinds {
		t.Run(kind, func(t *testing.T) {
			if _, err := exec.LookPath("python3"); err != nil && needsPython[kind] {
				t.Skipf("%s needs python3 (not in the kernel matrix's initramfs)", kind)
			}
			if kind != "busy" && kind != "bursty" {
				t.Parallel()
			}
			sc := pipetest.StartScenario(t, kind)
			start := time.Now()
			s, err := pipestate.Open(pipestate.Options{PIDs: sc.PIDs()})
			if err != nil {
				t.Fatal(err)
			}
			defer s.Close()
			rep, _, err := diagnose.Observe(context.Background(), s, 200*time.Millisecond, diagnose.Options{MinWait: liveMinWait})
			if err != nil {
				t.Fatal(err)
			}
			if rep.Stuck != sc.Want.Stuck {
				t.Errorf("stuck %v, want %v: %+v", rep.Stuck, sc.Want.Stuck, rep.Findings)
			}
			upTo := time.Since(sc.Settled) + time.Since(start)
			pipetest.CheckVerdict(t, sc, rep, sc.Want.Finding, liveMinWait, upTo)
			for _, f := range sc.Want.Also {
				pipetest.CheckVerdict(t, sc, rep, f, liveMinWait, upTo)
			}
		})
	}
}

var needsPython = map[string]bool{
	"python-asyncio": true, "python-asyncio-full": true, "select-reader": true, "poll-reader": true, "select-full": true,
}
