package loader

import (
	"os"
	"testing"

	"github.com/cilium/ebpf"
	"github.com/cilium/ebpf/asm"
	"github.com/cilium/ebpf/features"

	"github.com/pipesnap/pipesnap/internal/bpfload"
)

// TestVariantAgreesWithProbes: the variant the programs were loaded in
// agrees with probes of another kind: bpf_loop with cilium/ebpf's helper
// probe (a program that calls it), bpf_d_path with the iterator that
// Load falls back on when the verifier refuses the programs. On 6.x
// kernels both are there, on 5.10 neither: the matrix checks both ways.
func TestVariantAgreesWithProbes(t *testing.T) {
	if w := os.Getenv(bpfload.Without); w != "" {
		t.Skipf("%s=%s: the variant is not the kernel's", bpfload.Without, w)
	}
	it := testIter(t)
	t.Logf("variant: %s", it.features)
	loop := features.HaveProgramHelper(ebpf.Kprobe, asm.FnLoop)
	if got := loop == nil; got != it.features.Loop {
		t.Errorf("loaded with bpf_loop %v; the helper probe says %v (%v)", it.features.Loop, got, loop)
	}
	dpath, err := bpfload.ProbeIterDPath(it.btf)
	if err != nil {
		t.Fatal(err)
	}
	if dpath != it.features.DPath {
		t.Errorf("loaded with bpf_d_path %v; the iterator probe says %v", it.features.DPath, dpath)
	}
}
