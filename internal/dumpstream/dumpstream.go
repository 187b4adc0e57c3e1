// Package dumpstream writes the stream of a dump for both capture paths
// (loader's BPF walk, teecap's /proc walk), so that the two agree on all
// but where the records come from: the header, objrefs, notes and where
// they go, the freeze around the walk, the notes for requested processes
// never met, and the report.
package dumpstream

import (
	"fmt"
	"io"
	"os"
	"time"

	"github.com/pipesnap/pipesnap/format"
	"github.com/pipesnap/pipesnap/freeze"
	"github.com/pipesnap/pipesnap/internal/host"
	"github.com/pipesnap/pipesnap/pipemodel"
)

// Note codes both paths write (format.Note.Code).
const (
	NoteNoPipes  = 1 // a requested process holds no pipes
	NoteExcluded = 2 // a pipe left out on purpose
	NoteLost     = 3 // the kernel copied a pipe but its records did not arrive
	NoteExited   = 4 // a requested process exited before the walk reached it
	NoteReused   = 5 // a requested pid now belongs to another process: left out
)

// Problem is a pipe that was not fully and consistently captured.
type Problem struct {
	Ino      uint64
	Status   format.Status
	Reason   format.Reason
	Attempts uint32
	Holder   string // the first holder met: "pid 12 (cat) fd 3"
}

func (p Problem) String() string {
	what := "incomplete"
	if p.Status&format.StatusTorn != 0 {
		what = "torn"
	}
	attempts := "attempts"
	if p.Attempts == 1 {
		attempts = "attempt"
	}
	return fmt.Sprintf("pipe %d, held by %s: %s (%s, %d %s)", p.Ino, p.Holder, what, p.Reason, p.Attempts, attempts)
}

// Report sums up a dump.
type Report struct {
	Tasks, FDs, Pipes int
	Bytes             uint64
	Problems          []Problem
	Notes             []string
	Translation       string        // where the page translation came from
	Frozen            time.Duration // how long the processes were stopped
	FrozenHow         string        // with what (freeze.Set.How)
	// Cgroups are the cgroups of the processes whose tasks were written,
	// by pid, as the kernel walk read them (a process it could not read
	// them for is absent).
	Cgroups map[uint32]pipemodel.Cgroups
}

// Writer writes one dump's stream. A file or pipe met the first time gets
// the next objref and carries its contents; later encounters carry only
// the objref. Errors of the stream come back as "writing snapshot: ...".
type Writer struct {
	enc     *format.Encoder
	out     *sink // where enc writes: the output, or a stage during a frozen walk
	frozen  bool
	pipes   map[uint64]int32 // inode -> objref
	met     map[uint32]bool  // tgids written or left out with a note
	nextRef int32
	report  *Report
	pending []format.Note
	waits   *Waits
}

// New writes the header, flagged frozen when the walk will run frozen.
// translation goes to Report.Translation.
func New(w io.Writer, frozen bool, translation string) (*Writer, error) {
	hdr, err := host.KernelHeader()
	if err != nil {
		return nil, err
	}
	if frozen {
		hdr.Flags |= format.HeaderFrozen
	}
	out := &sink{w: w, real: w}
	enc, err := format.NewEncoder(out, hdr)
	if err != nil {
		return nil, wrap(err)
	}
	return &Writer{
		enc:     enc,
		out:     out,
		frozen:  frozen,
		pipes:   map[uint64]int32{},
		met:     map[uint32]bool{},
		nextRef: 1,
		report:  &Report{Translation: translation},
	}, nil
}

// wrap says the error is the stream's.
func wrap(err error) error { return fmt.Errorf("writing snapshot: %w", err) }

// Walk runs walk, with the processes pids stopped if the dump is frozen:
// stopped as late as possible, resumed as early as possible, and resumed
// on every way out (the deferred Thaw runs on errors and panics; signals
// reach the caller's context). What the walk writes while they are
// stopped is staged (stage.go) and reaches the output only once they run
// again: an output that does not drain (a FIFO whose reader sleeps) never
// holds them stopped. Report.Frozen is the stopped time alone.
func (s *Writer) Walk(pids []uint32, walk func() error) error {
	if !s.frozen {
		return walk()
	}
	set, err := freeze.Stop(host.PIDs(pids), 2*time.Second)
	if err != nil {
		return err
	}
	defer set.Thaw()
	st := &stage{limit: StageMemory}
	defer st.Close()
	s.out.w = st
	defer func() { s.out.w = s.out.real }()
	s.report.FrozenHow = set.How
	err = walk()
	thawErr := set.Thaw()
	s.report.Frozen = set.Frozen()
	s.out.w = s.out.real
	if err != nil {
		return err
	}
	if thawErr != nil {
		return thawErr
	}
	if err := st.writeTo(s.out.real); err != nil {
		return wrap(err)
	}
	return nil
}

// sink is the encoder's writer: the output, or a stage.
type sink struct {
	w    io.Writer
	real io.Writer
}

func (k *sink) Write(p []byte) (int, error) { return k.w.Write(p) }

// NewRef hands out the next objref.
func (s *Writer) NewRef() int32 {
	ref := s.nextRef
	s.nextRef++
	return ref
}

// Task opens a task section.
func (s *Writer) Task(t format.Task) error {
	s.met[t.PID] = true
	s.report.Tasks++
	if err := s.enc.WriteTask(t); err != nil {
		return wrap(err)
	}
	return nil
}

// FD writes an fd entry; a new FileRef must be followed by File.
func (s *Writer) FD(fd format.FDEnt) error {
	s.report.FDs++
	if err := s.enc.WriteFDEnt(fd); err != nil {
		return wrap(err)
	}
	return nil
}

// File writes the pipe file f of pipe ino, giving the pipe its objref
// (pipeRef) the first time it is met (newPipe: Pipe must follow).
func (s *Writer) File(f format.File, ino uint64) (pipeRef int32, newPipe bool, err error) {
	pipeRef, known := s.pipes[ino]
	if !known {
		pipeRef = s.NewRef()
		s.pipes[ino] = pipeRef
	}
	f.Type, f.PipeRef = format.FileTypePipe, pipeRef
	if err := s.enc.WriteFile(f); err != nil {
		return 0, false, wrap(err)
	}
	return pipeRef, !known, nil
}

// HasPipe tells whether pipe ino has its objref.
func (s *Writer) HasPipe(ino uint64) bool {
	_, ok := s.pipes[ino]
	return ok
}

// Pipe writes a pipe's record; its p.NrBufs buffers follow (Buffer), then
// EndPipe.
func (s *Writer) Pipe(p format.Pipe) error {
	if err := s.enc.WritePipe(p); err != nil {
		return wrap(err)
	}
	return nil
}

// Buffer writes one buffer of the pipe being written.
func (s *Writer) Buffer(b format.Buffer) error {
	if err := s.enc.WriteBuffer(b); err != nil {
		return wrap(err)
	}
	return nil
}

// EndPipe writes the notes queued while pipe p was copied and counts it,
// as a problem if torn or incomplete, held by fd of pid (comm).
func (s *Writer) EndPipe(p *format.Pipe, pid uint32, comm string, fd int32) error {
	if err := s.flush(); err != nil {
		return err
	}
	s.report.Pipes++
	s.report.Bytes += p.Bytes
	if p.Status&(format.StatusTorn|format.StatusIncomplete) != 0 {
		s.report.Problems = append(s.report.Problems, Problem{
			Ino: p.Ino, Status: p.Status, Reason: p.Reason, Attempts: p.Attempts,
			Holder: fmt.Sprintf("pid %d (%s) fd %d", pid, comm, fd),
		})
	}
	return nil
}

// Exclude marks pipe p, held by pid, as left out (the snapshot's own
// output), with a note; its bytes are the caller's to drop.
func (s *Writer) Exclude(p *format.Pipe, pid uint32) {
	p.Status = p.Status&^format.StatusTorn | format.StatusIncomplete
	p.Reason = format.ReasonExcluded
	s.Note(pid, NoteExcluded, fmt.Sprintf("pipe %d is the snapshot's own output: left out", p.Ino))
}

// Note queues a note for the report and the stream, which gets it where
// the grammar allows a note (between fd entries).
func (s *Writer) Note(pid uint32, code uint32, msg string) {
	s.report.Notes = append(s.report.Notes, msg)
	s.pending = append(s.pending, format.Note{PID: pid, Code: code, Msg: msg})
}

// WriteNote writes a note about the whole stream now, outside the report.
func (s *Writer) WriteNote(n format.Note) error {
	if err := s.enc.WriteNote(n); err != nil {
		return wrap(err)
	}
	return nil
}

func (s *Writer) flush() error {
	for _, n := range s.pending {
		if err := s.enc.WriteNote(n); err != nil {
			return wrap(err)
		}
	}
	s.pending = s.pending[:0]
	return nil
}

// LeaveOut leaves requested process pid out of the stream with a note, at
// a task boundary.
func (s *Writer) LeaveOut(pid, code uint32, msg string) error {
	s.met[pid] = true
	s.Note(pid, code, msg)
	return s.flush()
}

// Reused leaves out a requested pid that now names another process than
// the one asked for.
func (s *Writer) Reused(pid uint32, comm string) error {
	return s.LeaveOut(pid, NoteReused, fmt.Sprintf("pid %d now belongs to another process (%s, started later): left out", pid, comm))
}

// Finish notes the requested processes the walk never met (exited, or
// without pipes), closes the stream and returns the report.
func (s *Writer) Finish(requested []uint32) (*Report, error) {
	for _, tgid := range requested {
		if s.met[tgid] {
			continue
		}
		if _, err := os.Stat(fmt.Sprintf("/proc/%d", tgid)); err != nil {
			s.Note(tgid, NoteExited, fmt.Sprintf("pid %d exited before its files were walked", tgid))
		} else {
			s.Note(tgid, NoteNoPipes, fmt.Sprintf("pid %d holds no pipes or FIFOs", tgid))
		}
	}
	if err := s.flush(); err != nil {
		return nil, err
	}
	if err := s.writeWaits(); err != nil {
		return nil, err
	}
	if err := s.enc.Close(); err != nil {
		return nil, wrap(err)
	}
	return s.report, nil
}
