// Package kcgroup reads struct cg_proc of bpf/cgroup.h: a process's
// cgroups as both BPF components' fd walks read them in the kernel (the
// unified hierarchy's and, on hybrid hosts, one v1 hierarchy's), into
// pipemodel.Cgroups.
package kcgroup

import (
	"fmt"

	"github.com/pipesnap/pipesnap/pipemodel"
)

// PathMax is CG_PATH_MAX, the bytes of one hierarchy's path buffer, and
// Depth CG_DEPTH, the levels of a path read at most: a longer or deeper
// path is truncated to its innermost components.
const (
	PathMax = 1024
	Depth   = 16
)

// Flags and controllers, as enum cg_flags and enum cg_ctl have them (the
// components' tests compare them with their bpf2go twins).
const (
	ReadV2  = 1
	ReadV1  = 2
	TruncV2 = 4
	TruncV1 = 8

	CtlNone   = 0
	CtlCPU    = 1
	CtlMemory = 2
	CtlPids   = 3
)

// Controllers names the v1 hierarchies by enum cg_ctl.
var Controllers = map[uint32]string{CtlCPU: "cpu", CtlMemory: "memory", CtlPids: "pids"}

// Decode reads a cg_proc from its fields (a component's bpf2go type of
// it: id, off, flags, v1_ctl, path). A hierarchy the walk could not read
// is nil; a truncated path starts with its first whole component.
func Decode(id [2]uint64, off [2]uint32, flags, ctl uint32, path *[2][PathMax]int8) pipemodel.Cgroups {
	var c pipemodel.Cgroups
	hier := func(h int) *pipemodel.Cgroup {
		if flags&(ReadV2<<h) == 0 || off[h] > PathMax {
			return nil
		}
		p := "/"
		if off[h] < PathMax {
			b := make([]byte, PathMax-off[h])
			for i := range b {
				b[i] = byte(path[h][int(off[h])+i])
			}
			p = string(b)
		}
		return &pipemodel.Cgroup{ID: id[h], Path: p, Truncated: flags&(TruncV2<<h) != 0}
	}
	c.V2 = hier(0)
	if ctl != CtlNone {
		if c.V1 = hier(1); c.V1 != nil {
			c.V1.Controller = Controllers[ctl]
		}
	}
	return c
}

// Check compares a component's bpf2go constants of enum cg_flags and
// enum cg_ctl with this package's, in the order of the declarations
// above: an error names the first that differs.
func Check(readV2, readV1, truncV2, truncV1, cpu, memory, pids uint32) error {
	for _, c := range []struct {
		name      string
		bpf, here uint32
	}{
		{"CG_READ_V2", readV2, ReadV2}, {"CG_READ_V1", readV1, ReadV1},
		{"CG_TRUNC_V2", truncV2, TruncV2}, {"CG_TRUNC_V1", truncV1, TruncV1},
		{"CG_CTL_CPU", cpu, CtlCPU}, {"CG_CTL_MEMORY", memory, CtlMemory}, {"CG_CTL_PIDS", pids, CtlPids},
	} {
		if c.bpf != c.here {
			return fmt.Errorf("%s: the BPF program says %d, internal/kcgroup %d", c.name, c.bpf, c.here)
		}
	}
	return nil
}
