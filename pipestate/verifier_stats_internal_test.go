package pipestate

import (
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/cilium/ebpf"
)

// TestVerifierStats logs the verifier's statistics of each program of
// both variants, loaded alone (PIPESNAP_VERIFIER_STATS=1; a tool, not a
// check: the figures depend on the kernel). PIPESNAP_VERIFIER_LOGS=DIR
// writes each program's log of branches there.
func TestVerifierStats(t *testing.T) {
	if os.Getenv("PIPESNAP_VERIFIER_STATS") == "" {
		t.Skip("set PIPESNAP_VERIFIER_STATS=1 to print the verifier's statistics")
	}
	for _, v := range []struct {
		name string
		load func() (*ebpf.CollectionSpec, error)
	}{{"loop", loadPipestate}, {"noloop", loadPipestateNoLoop}} {
		for _, prog := range []string{"pipe_state", "task_state"} {
			cs, err := v.load()
			if err != nil {
				t.Fatal(err)
			}
			for name := range cs.Programs {
				if name != prog {
					delete(cs.Programs, name)
				}
			}
			coll, err := ebpf.NewCollectionWithOptions(cs, ebpf.CollectionOptions{
				Programs: ebpf.ProgramOptions{LogLevel: ebpf.LogLevelStats | verifierLogExtra, LogSizeStart: 256 << 20},
			})
			if err != nil {
				var verr *ebpf.VerifierError
				if errors.As(err, &verr) {
					t.Fatalf("%s %s: %+v", v.name, prog, verr)
				}
				t.Fatalf("%s %s: %v", v.name, prog, err)
			}
			log := strings.TrimSpace(coll.Programs[prog].VerifierLog)
			if dir := os.Getenv("PIPESNAP_VERIFIER_LOGS"); dir != "" {
				os.WriteFile(filepath.Join(dir, v.name+"-"+prog+".log"), []byte(log), 0o644)
				log = log[strings.LastIndex(log, "verification time"):]
			}
			t.Logf("%s %s: %s", v.name, prog, strings.ReplaceAll(log, "\n", "; "))
			coll.Close()
		}
	}
}

var verifierLogExtra ebpf.LogLevel = func() ebpf.LogLevel {
	if os.Getenv("PIPESNAP_VERIFIER_LOGS") != "" {
		return ebpf.LogLevelInstruction
	}
	return 0
}()
