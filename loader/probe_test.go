package loader

import (
	"testing"

	"github.com/cilium/ebpf/btf"

	"github.com/pipesnap/pipesnap/internal/pipetest"
)

// On a kernel the programs load on, the probes find nothing missing (so
// they cannot blame a feature that is there).
func TestExplainMissingFindsNothingHere(t *testing.T) {
	pipetest.RequireBPF(t)
	if err := explainMissing(btf.NewCache()); err != nil {
		t.Errorf("feature probes on a kernel pipesnap runs on: %v", err)
	}
}
