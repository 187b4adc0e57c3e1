package pipestate

import (
	"context"
	"testing"

	"github.com/pipesnap/pipesnap/internal/pipetest"
)

// BenchmarkWalkOnly1000 is BenchmarkSample1000 without building the
// sample: the kernel's share of the walk.
func BenchmarkWalkOnly1000(b *testing.B) {
	pipetest.RequireBPF(b)
	h := pipetest.StartHolder(b, "many", "PIPESNAP_TEST_PIPES=1000")
	s, err := Open(Options{PIDs: h.Rep.PIDs})
	if err != nil {
		b.Fatal(err)
	}
	defer s.Close()
	n := 0
	for b.Loop() {
		n = 0
		if err := s.walk(context.Background(), func(*fdRec) error { n++; return nil }); err != nil {
			b.Fatal(err)
		}
	}
	b.ReportMetric(float64(n), "fds")
}
