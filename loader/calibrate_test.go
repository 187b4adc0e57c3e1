package loader

import (
	"os"
	"testing"

	"github.com/pipesnap/pipesnap/internal/pipetest"
	"github.com/pipesnap/pipesnap/internal/taskiter"
)

func testIter(t *testing.T) *pipeIter {
	t.Helper()
	pipetest.RequireBPF(t)
	it, err := loadIter(iterConfig{
		selfTgid: uint32(os.Getpid()), pageSize: 4096, scratchSlots: 256,
		maxAttempts: 4, ringBytes: 8 << 20, copyData: true,
	})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { it.Close() })
	return it
}

// TestCalibrationVerifies checks that the verification step tells the
// right translation from ones a GiB off, so a wrong candidate can never
// be used to read pipes.
func TestCalibrationVerifies(t *testing.T) {
	it := testIter(t)
	tr, err := it.calibrate(4096)
	if err != nil {
		t.Fatalf("calibrate: %v", err)
	}
	t.Logf("translation from %s: vmemmap %#x (+%#x), direct map %#x (+%#x)",
		tr.source, tr.vmemmapStart, tr.vmemmapSpan, tr.directStart, tr.directSpan)
	// The probe is read through a walk scoped to this process where the
	// kernel can scope one (Linux 6.1+), else through a walk of every task.
	if it.unscoped && scopable(t, it) {
		t.Error("pid-scoped task iterators unavailable: every walk covers the whole machine")
	}
	pr, err := newProbe(4096)
	if err != nil {
		t.Fatal(err)
	}
	defer pr.close()

	const gib = 1 << 30
	for _, tc := range []struct {
		name string
		tr   translation
		ok   bool
	}{
		{"calibrated", tr, true},
		{"direct map a GiB low", translation{tr.vmemmapStart, tr.vmemmapSpan, tr.directStart - gib, tr.directSpan, ""}, false},
		{"direct map a GiB high", translation{tr.vmemmapStart, tr.vmemmapSpan, tr.directStart + gib, tr.directSpan, ""}, false},
		{"vmemmap a GiB low", translation{tr.vmemmapStart - gib, tr.vmemmapSpan, tr.directStart, tr.directSpan, ""}, false},
		{"vmemmap range too short", translation{tr.vmemmapStart, 64, tr.directStart, tr.directSpan, ""}, false},
		{"none", translation{}, false},
	} {
		if err := it.setTranslation(tc.tr); err != nil {
			t.Fatal(err)
		}
		ok, err := it.verifyProbe(pr)
		if err != nil {
			t.Fatalf("%s: %v", tc.name, err)
		}
		if ok != tc.ok {
			t.Errorf("%s: probe verified = %v, want %v", tc.name, ok, tc.ok)
		}
	}
}

// TestWrongTranslationReadsNothing checks the kernel side refuses pages
// outside the ranges: with no translation, a capture marks the pipe
// incomplete (page out of range) and carries no bytes.
// An exited process has nothing to walk: no records, not an error. On a
// kernel that cannot scope task iterators (before 6.1), the walk falls
// back to every task, which the program filters: no records either.
func TestScopedWalkOfExitedPid(t *testing.T) {
	const gone = 4194305
	it := testIter(t)
	canScope := scopable(t, it)
	if !canScope {
		pipetest.RequireBPF(t)
		var err error
		if it, err = loadIter(iterConfig{
			selfTgid: uint32(os.Getpid()), targets: []uint32{gone}, pageSize: 4096, scratchSlots: 256,
			maxAttempts: 4, ringBytes: 8 << 20, copyData: true,
		}); err != nil {
			t.Fatal(err)
		}
		defer it.Close()
	}
	n := 0
	if err := it.walk([]uint32{gone}, func([]byte) error { n++; return nil }); err != nil {
		t.Errorf("walk of an exited pid: %v", err)
	}
	if n != 0 || it.unscoped == canScope {
		t.Errorf("walk of an exited pid: %d records, unscoped %v (the kernel can scope: %v)", n, it.unscoped, canScope)
	}
}

// scopable tells whether the kernel can scope task iterators to a process.
func scopable(t *testing.T, it *pipeIter) bool {
	t.Helper()
	kernel, err := it.btf.Kernel()
	if err != nil {
		t.Fatal(err)
	}
	return taskiter.Scopable(kernel)
}

func TestWrongTranslationReadsNothing(t *testing.T) {
	it := testIter(t)
	pr, err := newProbe(4096)
	if err != nil {
		t.Fatal(err)
	}
	defer pr.close()
	if err := it.setTranslation(translation{}); err != nil {
		t.Fatal(err)
	}
	if err := it.objs.OnlyIno.Set(pr.ino); err != nil {
		t.Fatal(err)
	}
	if err := it.newRun(); err != nil {
		t.Fatal(err)
	}
	var got *capturedPipe
	err = it.readFDs(it.dump, func([]byte) error {
		if got == nil {
			got, err = it.takePipe(pr.ino, false, func(uint64) bool { return false })
		}
		return err
	})
	if err != nil || got == nil {
		t.Fatalf("capture: %v, %v", got, err)
	}
	if len(got.bufs) != 0 || got.hdr.Bytes != 0 || got.hdr.Reason != 2 || got.hdr.Status&2 == 0 {
		t.Errorf("with no translation: %d buffers, %d bytes, status %#x, reason %d; want none, incomplete, page out of range",
			len(got.bufs), got.hdr.Bytes, got.hdr.Status, got.hdr.Reason)
	}
}
