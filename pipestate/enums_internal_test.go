package pipestate

import (
	"testing"

	"github.com/pipesnap/pipesnap/internal/kcgroup"
)

// TestCgroupEnums: bpf/cgroup.h's flags and controllers are
// internal/kcgroup's.
func TestCgroupEnums(t *testing.T) {
	if err := kcgroup.Check(uint32(pipestateCgFlagsCG_READ_V2), uint32(pipestateCgFlagsCG_READ_V1),
		uint32(pipestateCgFlagsCG_TRUNC_V2), uint32(pipestateCgFlagsCG_TRUNC_V1),
		uint32(pipestateCgCtlCG_CTL_CPU), uint32(pipestateCgCtlCG_CTL_MEMORY), uint32(pipestateCgCtlCG_CTL_PIDS)); err != nil {
		t.Error(err)
	}
}
