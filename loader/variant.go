package loader

import (
	"fmt"

	"github.com/pipesnap/pipesnap/format"
	"github.com/pipesnap/pipesnap/internal/bpfload"
)

// NoteVariant is the stream-level note of a BPF dump that says which
// variant of the programs ran (bpf/compat.h): what the kernel offered
// them, and so what the capture could do (format/FORMAT.md, PS_NOTE).
const NoteVariant = 200

// variantNote is the note written once, before the first task.
func variantNote(f bpfload.Features) format.Note {
	msg := "BPF variant: " + f.String()
	if !f.Loop {
		msg += fmt.Sprintf("; without bpf_loop at most %d buffers of a pipe are copied (a larger one is marked incomplete, too large)", compatSlots)
	}
	return format.Note{Code: NoteVariant, Msg: msg}
}

// fifoPath is a FIFO's path: what bpf_d_path gave in the kernel, or,
// where the kernel gives iterators no bpf_d_path, the link of the fd the
// record names in /proc, the same d_path() of the same open file.
func (it *pipeIter) fifoPath(path string, r *pipesPsFd) string {
	if path != "" || it.features.DPath || r.Kind != pipeKindFIFO {
		return path
	}
	return bpfload.FDPath(r.Tgid, r.Fd)
}

// pipeKindFIFO is PS_KIND_FIFO (bpf/pipes/pipes.h).
const pipeKindFIFO = 2
