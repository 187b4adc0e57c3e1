// Package bpfload loads a bpf2go collection the way both of pipesnap's
// BPF components do: the variant the running kernel can run (features.go,
// bpf/compat.h), load-time constants, one load against the kernel's BTF,
// and errors that say what to do.
package bpfload

import (
	"errors"
	"fmt"
	"runtime/debug"
	"sync"

	"github.com/cilium/ebpf"
	"github.com/cilium/ebpf/btf"
	"golang.org/x/sys/unix"

	"github.com/pipesnap/pipesnap/internal/host"
)

// Spec is a component's collection and load-time constants (const
// volatile globals) for the features the kernel offers: the object built
// with or without bpf_loop, map sizes and bounds that depend on it.
type Spec func(Features) (*ebpf.CollectionSpec, map[string]any, error)

// Load finds out what the kernel offers (Detect), sets the constants and
// the switches of bpf/compat.h of the spec for it, and loads it into
// objs, a bpf2go objects struct (both objects of a component fill the
// same one). cache holds the kernel's BTF; nil makes one for this load.
// It returns the features the loaded programs use.
//
// A kernel that charges BPF memory to RLIMIT_MEMLOCK (before Linux 5.11)
// refuses maps with EPERM under a low limit: then the limit is lifted (as
// root may) and the load tried again.
func Load(spec Spec, objs any, cache *btf.Cache) (Features, error) {
	if cache == nil {
		cache = btf.NewCache()
	}
	f, err := Detect(cache)
	if err != nil {
		return f, host.ExplainPermission(err)
	}
	err = load(spec, objs, f, cache)
	if errors.Is(err, unix.EPERM) && raiseMemlock() {
		err = load(spec, objs, f, cache)
	}
	var verr *ebpf.VerifierError
	switch {
	case err == nil:
		return f, nil
	case errors.As(err, &verr):
		return f, fmt.Errorf("verifier refused them (%s): %+v", f, verr)
	default:
		return f, host.ExplainPermission(err)
	}
}

func load(spec Spec, objs any, f Features, cache *btf.Cache) error {
	cs, consts, err := spec(f)
	if err != nil {
		return fmt.Errorf("reading BPF object: %w", err)
	}
	vars := map[string]any{"have_d_path": f.DPath}
	for name, v := range consts {
		vars[name] = v
	}
	for name, v := range vars {
		vs, ok := cs.Variables[name]
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
	defer raiseGC()()
	return cs.LoadAndAssign(objs, &ebpf.CollectionOptions{Cache: cache})
}

// gcRaise counts the loads running (a dump loads pipestate's programs
// and its own at once): GOGC is put back when the last one ends.
var gcRaise struct {
	sync.Mutex
	n    int
	prev int
}

// raiseGC sets GOGC to 400 for a load; the returned func puts it back.
func raiseGC() func() {
	gcRaise.Lock()
	defer gcRaise.Unlock()
	if gcRaise.n == 0 {
		gcRaise.prev = debug.SetGCPercent(400)
	}
	gcRaise.n++
	return func() {
		gcRaise.Lock()
		defer gcRaise.Unlock()
		if gcRaise.n--; gcRaise.n == 0 {
			debug.SetGCPercent(gcRaise.prev)
		}
	}
}

// raiseMemlock lifts RLIMIT_MEMLOCK, which kernels before 5.11 charge BPF
// maps to (the default of 64 KiB or 8 MiB holds no ring buffer). It tells
// whether there was a limit to lift and it could be lifted.
func raiseMemlock() bool {
	var lim unix.Rlimit
	if err := unix.Getrlimit(unix.RLIMIT_MEMLOCK, &lim); err != nil || lim.Cur == unix.RLIM_INFINITY {
		return false
	}
	inf := unix.Rlimit{Cur: unix.RLIM_INFINITY, Max: unix.RLIM_INFINITY}
	return unix.Setrlimit(unix.RLIMIT_MEMLOCK, &inf) == nil
}
