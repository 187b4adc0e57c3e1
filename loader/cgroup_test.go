package loader_test

import (
	"context"
	"fmt"
	"io"
	"strings"
	"testing"

	"github.com/pipesnap/pipesnap/internal/bpfload"
	"github.com/pipesnap/pipesnap/internal/kcgroup"
	"github.com/pipesnap/pipesnap/internal/pipetest"
	"github.com/pipesnap/pipesnap/loader"
	"github.com/pipesnap/pipesnap/pipemodel"
)

// TestDumpCgroups: the dump's walk reads a process's cgroups in the
// kernel, the same id and path (from the hierarchy's root) that
// /proc/PID/cgroup and the cgroup's directory say, for a process the test
// moved into cgroups of its own; with both variants of the programs.
func TestDumpCgroups(t *testing.T) {
	pipetest.RequireBPF(t)
	dumpCgroups(t, pipetest.StartInCgroup(t))
}

// TestDumpCgroupsTruncated: a path deeper than the walk reads, or longer
// than it keeps, is marked truncated and keeps its innermost components.
func TestDumpCgroupsTruncated(t *testing.T) {
	pipetest.RequireBPF(t)
	t.Run("deep", func(t *testing.T) {
		var deep []string
		for i := range kcgroup.Depth + 4 {
			deep = append(deep, fmt.Sprintf("level-%d", i))
		}
		dumpCgroups(t, pipetest.StartInCgroup(t, deep...))
	})
	t.Run("long", func(t *testing.T) {
		var long []string
		for i := range 5 {
			long = append(long, fmt.Sprintf("%d-%s", i, strings.Repeat("x", 240)))
		}
		dumpCgroups(t, pipetest.StartInCgroup(t, long...))
	})
}

func dumpCgroups(t *testing.T, c *pipetest.CgroupChild) {
	t.Helper()
	for _, v := range []struct {
		name  string
		force *bpfload.Features
	}{{"newest", nil}, {"without newer helpers", &bpfload.Features{}}} {
		t.Run(v.name, func(t *testing.T) {
			bpfload.Force = v.force
			defer func() { bpfload.Force = nil }()
			rep, err := loader.Dump(context.Background(), io.Discard, loader.Options{PIDs: []int{c.PID}})
			if err != nil {
				t.Fatal(err)
			}
			got, ok := rep.Cgroups[uint32(c.PID)]
			if !ok {
				t.Fatalf("no cgroups for pid %d: %+v", c.PID, rep.Cgroups)
			}
			checkCgroups(t, got, c.Want)
		})
	}
}

func checkCgroups(t *testing.T, got, want pipemodel.Cgroups) {
	t.Helper()
	for _, h := range []struct {
		name      string
		got, want *pipemodel.Cgroup
	}{{"v2", got.V2, want.V2}, {"v1", got.V1, want.V1}} {
		switch {
		case h.got == nil && h.want == nil:
		case h.got == nil || h.want == nil:
			t.Errorf("%s: read %+v, want %+v", h.name, h.got, h.want)
		case *h.got != *h.want:
			t.Errorf("%s: read %+v, want %+v", h.name, *h.got, *h.want)
		default:
			t.Logf("%s %s: id %d, %d levels, %d bytes, truncated %v", h.name, h.got.Controller, h.got.ID,
				strings.Count(h.got.Path, "/"), len(h.got.Path), h.got.Truncated)
		}
	}
}
