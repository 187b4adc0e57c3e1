// Package snapshot reads a pipesnap stream back into a model: who held
// which end of which pipe, and what each pipe carried.
package snapshot

import (
	"bytes"
	"errors"
	"fmt"
	"io"

	"github.com/pipesnap/pipesnap/format"
)

// Snapshot is a whole stream, decoded and checked.
type Snapshot struct {
	Header format.Header
	Tasks  []*Task
	Pipes  []*Pipe // in the order they were met
	Notes  []format.Note

	// Revision 2 streams: what the threads of interest were doing, and
	// the tasks blocked opening a FIFO (they hold no fd on it yet).
	// Both in stream order; a pipe's waiters are in its Waiters.
	TaskStates []format.TaskState
	OpenWaits  []format.OpenWait

	// Revision 3 streams: the containers the processes ran in (Ref n is
	// Containers[n-1]) and what each process was outside its fds, in
	// stream order.
	Containers []format.Container
	Procs      []format.Proc
}

// Task is one process and the pipe fds it held.
type Task struct {
	format.Task
	FDs []FD
}

// FD is one file descriptor that referred to a pipe or FIFO.
type FD struct {
	FD      int32
	Ino     uint64
	End     string // "read", "write" or "rdwr"
	Cloexec bool
	Flags   uint32 // file status flags (O_NONBLOCK, O_DIRECT, ...)
	FileRef int32  // fds sharing one open file share this
	Pipe    *Pipe
}

// Pipe is one pipe or FIFO with its buffers and holders.
type Pipe struct {
	format.Pipe
	Buffers []format.Buffer // Data is set only where Options asked for it
	Holders []Holder
	Waiters []format.Waiter // tasks asleep on its wait queues, in stream order (revision 2)

	// HasReadEnd tells whether an open file of the stream reads the pipe
	// (a read or read-write end), and ReadFlags are the status flags
	// (O_NONBLOCK, O_DIRECT, ...) of the first such file in the stream:
	// the end its first reader had. Set whatever Options leave out.
	HasReadEnd bool
	ReadFlags  uint32
}

// Holder is one fd of one task referring to the pipe.
type Holder struct {
	PID  uint32
	Comm string
	FD   int32
	End  string
}

// Complete reports whether every byte was captured consistently.
func (p *Pipe) Complete() bool {
	return p.Status&(format.StatusTorn|format.StatusIncomplete) == 0
}

// Data returns the pipe's bytes, buffers concatenated in ring order.
func (p *Pipe) Data() []byte {
	out := make([]byte, 0, p.Bytes)
	for _, b := range p.Buffers {
		out = append(out, b.Data...)
	}
	return out
}

// Options says which bytes to keep in memory. Whatever they leave out,
// the whole stream is still decoded and checked.
type Options struct {
	Data    bool   // keep every buffer's bytes
	Ino     uint64 // with Data: only this pipe's (0: all)
	Preview int    // keep at most this many leading bytes of every pipe

	// For a reader of one pipe or of one process, which need neither
	// the others' fds nor their buffers:
	//
	// PipeOnly (with Ino) keeps no fds (Task.FDs and Pipe.Holders stay
	// empty: HasReadEnd and ReadFlags say what a reader needs of them)
	// and the Buffers of pipe Ino only (the others' NrBufs says how many
	// they had).
	PipeOnly bool
	// PID, if not 0, keeps only the tasks of process PID and their fds
	// (Task.FDs); Pipe.Holders stay empty.
	PID uint32
}

// ErrNoPipe is returned by Find for an inode the snapshot does not have.
var ErrNoPipe = errors.New("no such pipe in the snapshot")

// Read decodes a whole stream. Bytes not asked for are dropped as they
// pass, so memory stays proportional to the metadata kept; each record
// costs a constant amount of work, so time is linear in the stream.
func Read(r io.Reader, opt Options) (*Snapshot, error) {
	dec, err := format.NewDecoder(r)
	if err != nil {
		return nil, err
	}
	s := &Snapshot{Header: dec.Header()}
	var files byRef[file]
	var pipes byRef[Pipe]
	var task *Task
	var fd format.FDEnt // the last FD_ENT
	var pipe *Pipe
	keepFDs := true  // keep task's fds
	keepBufs := true // keep pipe's buffers
	preview := 0     // bytes of pipe's buffers kept so far
	for {
		rec, err := dec.Next()
		if errors.Is(err, io.EOF) {
			return s, nil
		}
		if err != nil {
			return nil, err
		}
		switch v := rec.(type) {
		case *format.Task:
			task = &Task{Task: *v}
			keepFDs = !opt.PipeOnly && (opt.PID == 0 || opt.PID == v.PID)
			if opt.PID == 0 || opt.PID == v.PID {
				s.Tasks = append(s.Tasks, task)
			}
		case *format.FDEnt:
			fd = *v
			if f := files.get(v.FileRef); f != nil {
				addFD(task, &fd, f, pipes.get(f.PipeRef), keepFDs, opt.PID == 0)
			}
		case *format.File:
			// Only what an fd needs of its file: a FILE holds more.
			f := &file{Mode: v.Mode, Flags: v.Flags, PipeRef: v.PipeRef}
			files.set(v.Ref, f)
			if p := pipes.get(v.PipeRef); p != nil {
				addFD(task, &fd, f, p, keepFDs, opt.PID == 0)
			}
		case *format.Pipe:
			pipe = &Pipe{Pipe: *v}
			preview = 0
			keepBufs = !opt.PipeOnly || opt.Ino == v.Ino
			pipes.set(v.Ref, pipe)
			s.Pipes = append(s.Pipes, pipe)
			addFD(task, &fd, files.get(fd.FileRef), pipe, keepFDs, opt.PID == 0)
		case *format.Buffer:
			if !keepBufs {
				continue
			}
			b := *v
			keep := opt.Data && (opt.Ino == 0 || opt.Ino == pipe.Ino)
			if !keep {
				b.Data = nil
				if preview < opt.Preview {
					// A copy: v.Data would keep the decoder's whole chunk.
					b.Data = bytes.Clone(v.Data[:min(len(v.Data), opt.Preview-preview)])
				}
			}
			preview += len(b.Data)
			if pipe.Buffers == nil && pipe.NrBufs > 0 {
				// As many as PS_PIPE says (up to maxPrealloc), at once:
				// most pipes then need no other allocation.
				pipe.Buffers = make([]format.Buffer, 0, min(pipe.NrBufs, maxPrealloc))
			}
			pipe.Buffers = append(pipe.Buffers, b)
		case *format.Note:
			s.Notes = append(s.Notes, *v)
		case *format.TaskState:
			s.TaskStates = append(s.TaskStates, *v)
		case *format.Waiter:
			p := pipes.get(v.PipeRef)
			if p == nil {
				// The decoder checks that PipeRef names a pipe: not reached.
				return nil, fmt.Errorf("offset %d: waiter on objref %d, not a pipe", dec.Offset(), v.PipeRef)
			}
			p.Waiters = append(p.Waiters, *v)
		case *format.OpenWait:
			s.OpenWaits = append(s.OpenWaits, *v)
		case *format.Container:
			s.Containers = append(s.Containers, *v)
		case *format.Proc:
			s.Procs = append(s.Procs, *v)
		default:
			return nil, fmt.Errorf("offset %d: unexpected record %T", dec.Offset(), rec)
		}
	}
}

// byRef holds objects by objref. The decoder has checked that objrefs
// count up from 1, each new one the next, so a slice indexed by objref
// is as long as the stream has objects.
type byRef[T any] []*T

func (t *byRef[T]) set(ref int32, v *T) {
	if ref < 0 {
		return
	}
	for int(ref) >= len(*t) {
		*t = append(*t, nil)
	}
	(*t)[ref] = v
}

func (t byRef[T]) get(ref int32) *T {
	if ref < 0 || int(ref) >= len(t) {
		return nil
	}
	return t[ref]
}

// file is what an fd needs of its open file's FILE record.
type file struct {
	Mode, Flags uint32
	PipeRef     int32
}

// maxPrealloc bounds the room for buffers Read allocates at a pipe's
// first buffer: as many as a pipe of 1 MiB in pages has, at most.
const maxPrealloc = 256

func addFD(t *Task, e *format.FDEnt, f *file, p *Pipe, keep, holders bool) {
	if t == nil || f == nil || p == nil {
		return // the decoder enforces the grammar: not reached
	}
	if f.Mode&format.ModeRead != 0 && !p.HasReadEnd {
		p.HasReadEnd, p.ReadFlags = true, f.Flags
	}
	if !keep {
		return
	}
	end := EndName(f.Mode)
	t.FDs = append(t.FDs, FD{FD: e.FD, Ino: p.Ino, End: end, Cloexec: e.Cloexec, Flags: f.Flags, FileRef: e.FileRef, Pipe: p})
	if holders {
		p.Holders = append(p.Holders, Holder{PID: t.PID, Comm: t.Comm, FD: e.FD, End: end})
	}
}

// EndName names the end of a pipe an open file mode gives.
func EndName(mode uint32) string {
	switch mode & (format.ModeRead | format.ModeWrite) {
	case format.ModeRead:
		return "read"
	case format.ModeWrite:
		return "write"
	case format.ModeRead | format.ModeWrite:
		return "rdwr"
	}
	return "none"
}

// Find returns the pipe with inode ino.
func (s *Snapshot) Find(ino uint64) (*Pipe, error) {
	for _, p := range s.Pipes {
		if p.Ino == ino {
			return p, nil
		}
	}
	return nil, fmt.Errorf("pipe %d: %w", ino, ErrNoPipe)
}
