package pipestate

import (
	"context"
	"os"
	"runtime"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/cilium/ebpf"
	"golang.org/x/sys/unix"
)

// TestWalkCost measures walks of the processes of PIPESNAP_WALK_PIDS
// (a tool, not a check): the kernel's run time of the fd walk per fd,
// a Sample's wall time, allocations and the heap it keeps.
func TestWalkCost(t *testing.T) {
	env := os.Getenv("PIPESNAP_WALK_PIDS")
	if env == "" {
		t.Skip("set PIPESNAP_WALK_PIDS=pid,pid... to measure walks of those processes")
	}
	var pids []int
	for _, f := range strings.Split(env, ",") {
		n, err := strconv.Atoi(f)
		if err != nil {
			t.Fatal(err)
		}
		pids = append(pids, n)
	}
	s, err := Open(Options{PIDs: pids})
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	stats, err := ebpf.EnableStats(uint32(unix.BPF_STATS_RUN_TIME))
	if err != nil {
		t.Fatal(err)
	}
	defer stats.Close()
	ctx := context.Background()
	smp, err := s.Sample(ctx) // the wake functions, if a walk wants them
	if err != nil {
		t.Fatal(err)
	}
	const runs = 10
	before, _ := s.objs.PipeState.Stats()
	start := time.Now()
	var m0, m1 runtime.MemStats
	runtime.ReadMemStats(&m0)
	for range runs {
		if smp, err = s.Sample(ctx); err != nil {
			t.Fatal(err)
		}
	}
	runtime.ReadMemStats(&m1)
	took := time.Since(start) / runs
	after, _ := s.objs.PipeState.Stats()
	fds := 0
	for _, p := range smp.Pipes {
		fds += len(p.Holders)
	}
	kern := (after.Runtime - before.Runtime) / runs
	calls := (after.RunCount - before.RunCount) / runs
	t.Logf("%d pipes, %d fds, %d program runs a walk: kernel %v a walk (%v an fd), Sample %v (%v an fd), %d allocs and %d KiB allocated a Sample",
		len(smp.Pipes), fds, calls, kern, kern/time.Duration(max(fds, 1)), took, took/time.Duration(max(fds, 1)),
		(m1.Mallocs-m0.Mallocs)/runs, (m1.TotalAlloc-m0.TotalAlloc)/runs>>10)
	smp = nil
	runtime.GC()
	runtime.ReadMemStats(&m0)
	if smp, err = s.Sample(ctx); err != nil {
		t.Fatal(err)
	}
	runtime.GC()
	runtime.ReadMemStats(&m1)
	t.Logf("a Sample of %d pipes keeps %d KiB of heap (%d bytes a pipe)", len(smp.Pipes),
		(int64(m1.HeapAlloc)-int64(m0.HeapAlloc))>>10, (int64(m1.HeapAlloc)-int64(m0.HeapAlloc))/int64(max(len(smp.Pipes), 1)))
	runtime.KeepAlive(smp)
}
