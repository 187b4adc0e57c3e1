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

// Options says which bytes to keep in memory.
type Options struct {
	Data    bool   // keep every buffer's bytes
	Ino     uint64 // with Data: only this pipe's (0: all)
	Preview int    // keep at most this many leading bytes of every pipe
}

// ErrNoPipe is returned by Find for an inode the snapshot does not have.
var ErrNoPipe = errors.New("no such pipe in the snapshot")

// Read decodes a whole stream. Bytes not asked for are dropped as they
// pass, so memory stays proportional to the metadata.
func Read(r io.Reader, opt Options) (*Snapshot, error) {
	dec, err := format.NewDecoder(r)
	if err != nil {
		return nil, err
	}
	s := &Snapshot{Header: dec.Header()}
	var files byRef[format.File]
	var pipes byRef[Pipe]
	var task *Task
	var fd *format.FDEnt
	var pipe *Pipe
	preview := 0 // bytes of pipe's buffers kept so far
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
			s.Tasks = append(s.Tasks, task)
		case *format.FDEnt:
			fd = v
			if f := files.get(v.FileRef); f != nil {
				addFD(task, v, f, pipes.get(f.PipeRef))
			}
		case *format.File:
			files.set(v.Ref, v)
			if p := pipes.get(v.PipeRef); p != nil {
				addFD(task, fd, v, p)
			}
		case *format.Pipe:
			pipe = &Pipe{Pipe: *v}
			preview = 0
			pipes.set(v.Ref, pipe)
			s.Pipes = append(s.Pipes, pipe)
			addFD(task, fd, files.get(fd.FileRef), pipe)
		case *format.Buffer:
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

func addFD(t *Task, e *format.FDEnt, f *format.File, p *Pipe) {
	if t == nil || e == nil || f == nil || p == nil {
		return // the decoder enforces the grammar: not reached
	}
	end := EndName(f.Mode)
	t.FDs = append(t.FDs, FD{FD: e.FD, Ino: p.Ino, End: end, Cloexec: e.Cloexec, Flags: f.Flags, FileRef: e.FileRef, Pipe: p})
	p.Holders = append(p.Holders, Holder{PID: t.PID, Comm: t.Comm, FD: e.FD, End: end})
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
