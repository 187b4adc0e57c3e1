// Package bpfload loads a bpf2go collection the way both of pipesnap's
// BPF components do: load-time constants, one load against the kernel's
// BTF, and errors that say what to do.
package bpfload

import (
	"errors"
	"fmt"
	"runtime/debug"

	"github.com/cilium/ebpf"
	"github.com/cilium/ebpf/btf"

	"github.com/pipesnap/pipesnap/internal/host"
)

// Load sets the spec's load-time constants (const volatile globals), then
// loads the collection into objs, a bpf2go objects struct. cache holds the
// kernel's BTF; nil makes one for this load.
func Load(spec *ebpf.CollectionSpec, objs any, consts map[string]any, cache *btf.Cache) error {
	for name, v := range consts {
		vs, ok := spec.Variables[name]
		if !ok {
			return fmt.Errorf("setting %s: no such variable in the BPF object", name)
		}
		if err := vs.Set(v); err != nil {
			return fmt.Errorf("setting %s: %w", name, err)
		}
	}
	// Loading decodes the kernel's BTF: tens of MB of short-lived garbage
	// that the default GOGC collects several times over (measured here: a
	// few of a one-shot dump's ~60 ms CPU). Peak RSS does not move (the
	// mapped BTF and ring buffer dominate it); the setting is put back.
	defer debug.SetGCPercent(debug.SetGCPercent(400))
	if err := spec.LoadAndAssign(objs, &ebpf.CollectionOptions{Cache: cache}); err != nil {
		var verr *ebpf.VerifierError
		if errors.As(err, &verr) {
			return fmt.Errorf("verifier refused them: %+v", verr)
		}
		return host.ExplainPermission(err)
	}
	return nil
}
