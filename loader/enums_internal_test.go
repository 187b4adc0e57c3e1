package loader

import (
	"testing"

	"github.com/pipesnap/pipesnap/format"
	"github.com/pipesnap/pipesnap/internal/kcgroup"
)

// TestEnumsMatchFormat: the kernel side's status bits and reasons go into
// the stream as they are (format.Status(h.Status)): one definition in C
// (bpf/pipes/pipes.h, through bpf2go), checked against the format's.
func TestEnumsMatchFormat(t *testing.T) {
	for _, c := range []struct {
		name      string
		bpf, fmtv uint32
	}{
		{"torn", uint32(pipesPsStatusPS_STATUS_TORN), uint32(format.StatusTorn)},
		{"incomplete", uint32(pipesPsStatusPS_STATUS_INCOMPLETE), uint32(format.StatusIncomplete)},
		{"packet", uint32(pipesPsStatusPS_STATUS_PACKET), uint32(format.StatusPacket)},
		{"none", uint32(pipesPsReasonPS_REASON_NONE), uint32(format.ReasonNone)},
		{"moved", uint32(pipesPsReasonPS_REASON_MOVED), uint32(format.ReasonMoved)},
		{"page range", uint32(pipesPsReasonPS_REASON_PAGE_RANGE), uint32(format.ReasonPageRange)},
		{"bounds", uint32(pipesPsReasonPS_REASON_BOUNDS), uint32(format.ReasonBounds)},
		{"fault", uint32(pipesPsReasonPS_REASON_FAULT), uint32(format.ReasonFault)},
		{"too large", uint32(pipesPsReasonPS_REASON_TOO_LARGE), uint32(format.ReasonTooLarge)},
		{"channel", uint32(pipesPsReasonPS_REASON_CHANNEL), uint32(format.ReasonChannel)},
		{"excluded", uint32(pipesPsReasonPS_REASON_EXCLUDED), uint32(format.ReasonExcluded)},
		{"not captured", uint32(pipesPsReasonPS_REASON_NOT_CAPTURED), uint32(format.ReasonNotCaptured)},
	} {
		if c.bpf != c.fmtv {
			t.Errorf("%s: the BPF program says %d, the format %d", c.name, c.bpf, c.fmtv)
		}
	}
}

// TestCgroupEnums: bpf/cgroup.h's flags and controllers are
// internal/kcgroup's.
func TestCgroupEnums(t *testing.T) {
	if err := kcgroup.Check(uint32(pipesCgFlagsCG_READ_V2), uint32(pipesCgFlagsCG_READ_V1),
		uint32(pipesCgFlagsCG_TRUNC_V2), uint32(pipesCgFlagsCG_TRUNC_V1),
		uint32(pipesCgCtlCG_CTL_CPU), uint32(pipesCgCtlCG_CTL_MEMORY), uint32(pipesCgCtlCG_CTL_PIDS)); err != nil {
		t.Error(err)
	}
}
