package loader

import (
	"errors"
	"fmt"

	"github.com/cilium/ebpf"
	"github.com/cilium/ebpf/asm"
	"github.com/cilium/ebpf/btf"
	"github.com/cilium/ebpf/features"
)

// explainMissing names the kernel feature the programs need and the
// running kernel lacks, after a load failed: a verifier log is no answer
// to "why does pipesnap not work here". nil when everything is present.
// (What later kernels added, bpf_loop and bpf_d_path in iterators, the
// programs do without: internal/bpfload.Features.)
func explainMissing(cache *btf.Cache) error {
	for _, f := range []struct {
		what string
		have func() error
	}{
		{"BPF ring buffers (Linux 5.8)", func() error { return features.HaveMapType(ebpf.RingBuf) }},
		{"bpf_probe_read_kernel (Linux 5.5)", func() error { return features.HaveProgramHelper(ebpf.Kprobe, asm.FnProbeReadKernel) }},
		{"task_file iterators (Linux 5.8)", func() error {
			spec, err := cache.Kernel()
			if err != nil {
				return err
			}
			var s *btf.Struct
			return spec.TypeByName("bpf_iter__task_file", &s)
		}},
	} {
		if err := f.have(); errors.Is(err, ebpf.ErrNotSupported) || errors.Is(err, btf.ErrNotFound) {
			return fmt.Errorf("this kernel lacks %s: %w", f.what, ErrNotSupported)
		}
	}
	return nil
}
