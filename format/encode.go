package format

import (
	"bufio"
	"encoding/binary"
	"errors"
	"fmt"
	"hash/crc32"
	"io"
	"math"
	"sync"
)

// castagnoli is made on first use: making it (the tables of the SSE4.2
// path) costs every pipesnap run 0.2 ms of start-up otherwise.
var castagnoli = sync.OnceValue(func() *crc32.Table { return crc32.MakeTable(crc32.Castagnoli) })

var le = binary.LittleEndian

// Where the grammar is, for the encoder and the decoder alike.
type state uint8

const (
	stTop  state = iota // before the first PS_TASK
	stTask              // in a task section, between fd entries
	stFile              // an FD_ENT named a new objref: FILE must follow
	stPipe              // a FILE named a new pipe objref: FILE_PIPE must follow
	stBufs              // a pipe's PS_BUF+BUFFER pairs are due
	stWait              // after a wait or process record (rev 2, 3): no more task sections
	stDone              // after TAIL (decoder) or Close (encoder)
)

// Encoder writes a stream. Every method checks the call against the
// grammar and objref rules first and writes nothing if it would make a
// stream the Decoder rejects, so a refused call leaves the stream usable.
type Encoder struct {
	w       *bufio.Writer
	err     error // first write error: the stream is broken past it
	crc     uint32
	off     int64
	records uint64
	refs    objrefs
	st      state

	containers uint32              // PS_CONTAINERs written
	procs      map[uint32]struct{} // pids with a PS_PROC

	fileRef   int32  // stFile: the objref the FILE must define
	pipeRef   int32  // stPipe: the objref the pipe must define
	bufsLeft  uint32 // stBufs: buffers still due
	bytesLeft uint64 // stBufs: bytes those buffers must carry

	scratch [maxFixed]byte
}

var errClosed = errors.New("format: encoder is closed")

// NewEncoder writes the HEADER and its three BUFFERs to w.
func NewEncoder(w io.Writer, h Header) (*Encoder, error) {
	if h.Revision == 0 {
		h.Revision = Revision
	}
	if h.Revision != Revision {
		return nil, fmt.Errorf("format: revision %d: only %d is written", h.Revision, Revision)
	}
	if h.Flags&^HeaderFrozen != 0 {
		return nil, fmt.Errorf("format: header flags %#x: unknown bits", h.Flags)
	}
	for _, s := range []string{h.Release, h.Version, h.Machine} {
		if len(s) > MaxUTSBuffer {
			return nil, fmt.Errorf("format: uts string of %d bytes: at most %d", len(s), MaxUTSBuffer)
		}
	}
	e := &Encoder{w: bufio.NewWriterSize(w, 64<<10)}
	p := e.scratch[:sizeHeader]
	clear(p)
	le.PutUint64(p[0:], HeadMagic)
	le.PutUint16(p[8:], h.Arch)
	le.PutUint16(p[10:], h.Major)
	le.PutUint16(p[12:], h.Minor)
	le.PutUint16(p[14:], h.Patch)
	le.PutUint16(p[16:], h.Revision)
	le.PutUint64(p[24:], timeNS(h.Time))
	le.PutUint64(p[32:], h.Flags)
	e.record(TypeHeader, p)
	for _, s := range []string{h.Release, h.Version, h.Machine} {
		e.pre(TypeBuffer, len(s))
		e.str(s)
	}
	if e.err != nil {
		return nil, e.err
	}
	return e, nil
}

// NextRef returns the objref a new object would get now. Objrefs named
// by an FD_ENT or FILE just written count as taken.
func (e *Encoder) NextRef() int32 {
	return int32(min(e.refs.next(), math.MaxInt32))
}

// Offset returns the number of bytes written so far (buffered included).
func (e *Encoder) Offset() int64 { return e.off }

// ready refuses a call that cannot come now (what names it) or that
// would add more records than PS_TRAILER.records can count.
func (e *Encoder) ready(what string, records int) error {
	if e.err != nil {
		return e.err
	}
	if e.st == stDone {
		return errClosed
	}
	if e.records+uint64(records) > math.MaxUint32 {
		return fmt.Errorf("format: %s: more than %d records", what, uint32(math.MaxUint32))
	}
	switch e.st {
	case stFile:
		return fmt.Errorf("format: %s: the FD_ENT for new objref %d needs its FILE first", what, e.fileRef)
	case stPipe:
		return fmt.Errorf("format: %s: the FILE naming new pipe objref %d needs its pipe first", what, e.pipeRef)
	case stBufs:
		return fmt.Errorf("format: %s: the pipe still needs %d buffers (%d bytes)", what, e.bufsLeft, e.bytesLeft)
	}
	return nil
}

// WriteTask opens a task section.
func (e *Encoder) WriteTask(t Task) error {
	if err := e.ready("WriteTask", 1); err != nil {
		return err
	}
	if e.st == stWait {
		return errAfterWaits("WriteTask")
	}
	if err := checkComm(t.Comm); err != nil {
		return fmt.Errorf("format: task %w", err)
	}
	p := e.scratch[:sizeTask]
	clear(p)
	le.PutUint32(p[0:], t.PID)
	le.PutUint32(p[4:], t.TID)
	le.PutUint64(p[8:], t.StartNS)
	le.PutUint32(p[16:], t.UID)
	copy(p[24:], t.Comm)
	e.record(TypeTask, p)
	e.st = stTask
	return e.err
}

// WriteFDEnt writes an fd of the current task. If fd.FileRef is
// NextRef(), WriteFile must follow; otherwise it must name a file.
func (e *Encoder) WriteFDEnt(fd FDEnt) error {
	if err := e.ready("WriteFDEnt", 1); err != nil {
		return err
	}
	if e.st == stTop {
		return errors.New("format: WriteFDEnt: no task section open")
	}
	if e.st == stWait {
		return errAfterWaits("WriteFDEnt")
	}
	if fd.FD < 0 {
		return fmt.Errorf("format: WriteFDEnt: fd %d is negative", fd.FD)
	}
	isNew, err := e.refs.checkRef(fd.FileRef, refFile)
	if err != nil {
		return fmt.Errorf("format: WriteFDEnt: %w", err)
	}
	p := e.scratch[:sizeFDEnt]
	clear(p)
	le.PutUint32(p[0:], uint32(fd.FileRef))
	le.PutUint32(p[4:], uint32(fd.FD))
	if fd.Cloexec {
		p[8] = 1
	}
	e.record(TypeFDEnt, p)
	if isNew {
		e.refs = append(e.refs, refFile)
		e.fileRef = fd.FileRef
		e.st = stFile
	}
	return e.err
}

// WriteFile writes the FILE that defines the objref the last FD_ENT
// named. If f.PipeRef is a new objref, WritePipe must follow.
func (e *Encoder) WriteFile(f File) error {
	if e.err != nil {
		return e.err
	}
	if e.st != stFile {
		return errors.New("format: WriteFile: no FD_ENT awaits its FILE")
	}
	if e.records+1 > math.MaxUint32 {
		return fmt.Errorf("format: WriteFile: more than %d records", uint32(math.MaxUint32))
	}
	if f.Ref != e.fileRef {
		return fmt.Errorf("format: WriteFile: ref %d, but the FD_ENT named %d", f.Ref, e.fileRef)
	}
	if f.Type != FileTypePipe {
		return fmt.Errorf("format: WriteFile: file type %d: only %d (pipe)", f.Type, FileTypePipe)
	}
	if f.Mode&^(ModeRead|ModeWrite) != 0 {
		return fmt.Errorf("format: WriteFile: mode %#x: unknown bits", f.Mode)
	}
	isNew, err := e.refs.checkRef(f.PipeRef, refPipe)
	if err != nil {
		return fmt.Errorf("format: WriteFile: pipe %w", err)
	}
	p := e.scratch[:sizeFile]
	clear(p)
	le.PutUint32(p[0:], f.Type)
	le.PutUint32(p[4:], f.Mode)
	le.PutUint32(p[8:], f.Flags)
	le.PutUint64(p[16:], f.Pos)
	le.PutUint64(p[24:], f.Version)
	le.PutUint32(p[32:], uint32(f.PipeRef))
	e.record(TypeFile, p)
	e.st = stTask
	if isNew {
		e.refs = append(e.refs, refPipe)
		e.pipeRef = f.PipeRef
		e.st = stPipe
	}
	return e.err
}

// WritePipe writes FILE_PIPE, PS_PIPE and, for a FIFO with a path, the
// path STRING. Exactly p.NrBufs WriteBuffer calls carrying p.Bytes bytes
// in all must follow.
func (e *Encoder) WritePipe(p Pipe) error {
	if e.err != nil {
		return e.err
	}
	if e.st != stPipe {
		return errors.New("format: WritePipe: no FILE awaits its pipe")
	}
	if p.Ref != e.pipeRef {
		return fmt.Errorf("format: WritePipe: ref %d, but the FILE named %d", p.Ref, e.pipeRef)
	}
	if p.Kind != KindPipe && p.Kind != KindFIFO {
		return fmt.Errorf("format: WritePipe: %v", p.Kind)
	}
	if p.Status&^statusKnown != 0 {
		return fmt.Errorf("format: WritePipe: status %#x: unknown bits", uint32(p.Status))
	}
	if p.NrBufs > math.MaxInt32 {
		return fmt.Errorf("format: WritePipe: %d buffers: at most %d", p.NrBufs, math.MaxInt32)
	}
	if p.Bytes > uint64(p.NrBufs)*MaxBuffer {
		return fmt.Errorf("format: WritePipe: %d bytes cannot fit in %d buffers", p.Bytes, p.NrBufs)
	}
	records := 2
	if p.Path != "" {
		if p.Kind != KindFIFO {
			return fmt.Errorf("format: WritePipe: path %q on a %v: only FIFOs have one", p.Path, p.Kind)
		}
		if err := checkString(p.Path); err != nil {
			return fmt.Errorf("format: WritePipe: path: %w", err)
		}
		records++
	}
	if e.records+uint64(records) > math.MaxUint32 {
		return fmt.Errorf("format: WritePipe: more than %d records", uint32(math.MaxUint32))
	}

	b := e.scratch[:sizeFilePipe]
	clear(b)
	le.PutUint32(b[0:], p.NrBufs)
	e.record(TypeFilePipe, b)

	b = e.scratch[:sizePipe]
	clear(b)
	le.PutUint64(b[0:], p.Ino)
	le.PutUint32(b[8:], uint32(p.Kind))
	le.PutUint32(b[12:], uint32(p.Status))
	le.PutUint32(b[16:], uint32(p.Reason))
	le.PutUint32(b[20:], p.Attempts)
	le.PutUint32(b[24:], p.RingSize)
	le.PutUint32(b[28:], p.MaxUsage)
	le.PutUint32(b[32:], p.Capacity)
	le.PutUint32(b[36:], p.PageSize)
	le.PutUint32(b[40:], p.Head)
	le.PutUint32(b[44:], p.Tail)
	le.PutUint32(b[48:], p.Readers)
	le.PutUint32(b[52:], p.Writers)
	le.PutUint32(b[56:], p.NrBufs)
	le.PutUint64(b[64:], p.Bytes)
	e.record(TypePipe, b)

	if p.Path != "" {
		e.string(p.Path)
	}
	e.st = stTask
	if p.NrBufs > 0 {
		e.st = stBufs
		e.bufsLeft, e.bytesLeft = p.NrBufs, p.Bytes
	}
	return e.err
}

// WriteBuffer writes the next buffer of the pipe just written.
func (e *Encoder) WriteBuffer(b Buffer) error {
	if e.err != nil {
		return e.err
	}
	if e.st != stBufs {
		return errors.New("format: WriteBuffer: no pipe awaits buffers")
	}
	n := uint64(len(b.Data))
	switch {
	case uint64(b.Len) != n:
		return fmt.Errorf("format: WriteBuffer: len %d but %d bytes of data", b.Len, n)
	case n > MaxBuffer:
		return fmt.Errorf("format: WriteBuffer: %d bytes: at most %d", n, MaxBuffer)
	case n > e.bytesLeft:
		return fmt.Errorf("format: WriteBuffer: %d bytes, but the pipe has only %d left", n, e.bytesLeft)
	case e.bytesLeft-n > uint64(e.bufsLeft-1)*MaxBuffer:
		// Also catches the last buffer not adding up to the pipe's bytes.
		return fmt.Errorf("format: WriteBuffer: %d bytes leave %d for the %d buffers left", n, e.bytesLeft-n, e.bufsLeft-1)
	case e.records+2 > math.MaxUint32:
		return fmt.Errorf("format: WriteBuffer: more than %d records", uint32(math.MaxUint32))
	}
	p := e.scratch[:sizeBuf]
	le.PutUint32(p[0:], b.Index)
	le.PutUint32(p[4:], b.Offset)
	le.PutUint32(p[8:], b.Len)
	le.PutUint32(p[12:], b.Flags)
	e.record(TypeBuf, p)
	e.record(TypeBuffer, b.Data)
	e.bufsLeft--
	e.bytesLeft -= n
	if e.bufsLeft == 0 {
		e.st = stTask
	}
	return e.err
}

func errAfterWaits(what string) error {
	return fmt.Errorf("format: %s: wait or process records were written: task sections must all come before them", what)
}

// WriteTaskState writes a PS_TASK_STATE and its wchan STRING. The wait
// records (WriteTaskState, WriteWaiter, WriteOpenWait, in any order and
// mixed with notes) come after the last task section: no WriteTask or
// WriteFDEnt may follow them.
func (e *Encoder) WriteTaskState(s TaskState) error {
	const what = "WriteTaskState"
	if err := e.ready(what, 2); err != nil {
		return err
	}
	if !ValidState(s.State) {
		return fmt.Errorf("format: %s: state %q: want one of %s or 0", what, s.State, stateLetters)
	}
	if err := checkWait(s.Wait, s.WaitKnown); err != nil {
		return fmt.Errorf("format: %s: %w", what, err)
	}
	if err := checkString(s.Wchan); err != nil {
		return fmt.Errorf("format: %s: wchan: %w", what, err)
	}
	p := e.scratch[:sizeTaskState]
	clear(p)
	le.PutUint32(p[0:], s.PID)
	le.PutUint32(p[4:], s.TID)
	p[8] = s.State
	le.PutUint64(p[16:], waitNS(s.Wait))
	le.PutUint32(p[24:], waitFlag(s.WaitKnown))
	e.record(TypeTaskState, p)
	e.string(s.Wchan)
	e.st = stWait
	return e.err
}

// WriteWaiter writes a PS_WAITER. w.PipeRef must name a pipe already
// written. See WriteTaskState for where it may come.
func (e *Encoder) WriteWaiter(w Waiter) error {
	const what = "WriteWaiter"
	if err := e.ready(what, 1); err != nil {
		return err
	}
	if k := e.refs.kind(w.PipeRef); k != refPipe {
		if k == 0 {
			return fmt.Errorf("format: %s: pipe objref %d is not defined", what, w.PipeRef)
		}
		return fmt.Errorf("format: %s: objref %d is a %s, not a pipe", what, w.PipeRef, kindName(k))
	}
	if err := checkWaiter(w.Queue, w.Via, w.EpollFD, w.Events); err != nil {
		return fmt.Errorf("format: %s: %w", what, err)
	}
	if !ValidState(w.State) {
		return fmt.Errorf("format: %s: state %q: want one of %s or 0", what, w.State, stateLetters)
	}
	if err := checkWait(w.Wait, w.WaitKnown); err != nil {
		return fmt.Errorf("format: %s: %w", what, err)
	}
	if err := checkComm(w.Comm); err != nil {
		return fmt.Errorf("format: %s: %w", what, err)
	}
	flags := waitFlag(w.WaitKnown)
	if w.Outside {
		flags |= outsideFlag
	}
	p := e.scratch[:sizeWaiter]
	clear(p)
	le.PutUint32(p[0:], uint32(w.PipeRef))
	le.PutUint32(p[4:], w.PID)
	le.PutUint32(p[8:], w.TID)
	p[12] = uint8(w.Queue)
	p[13] = uint8(w.Via)
	p[14] = w.State
	le.PutUint32(p[16:], uint32(w.EpollFD))
	le.PutUint32(p[20:], w.Events)
	le.PutUint64(p[24:], waitNS(w.Wait))
	le.PutUint32(p[32:], flags)
	copy(p[36:], w.Comm)
	e.record(TypeWaiter, p)
	e.st = stWait
	return e.err
}

// WriteOpenWait writes a PS_OPEN_WAIT and its path STRING. See
// WriteTaskState for where it may come.
func (e *Encoder) WriteOpenWait(o OpenWait) error {
	const what = "WriteOpenWait"
	if err := e.ready(what, 2); err != nil {
		return err
	}
	if o.End != OpenRead && o.End != OpenWrite {
		return fmt.Errorf("format: %s: end %d: want %d (read) or %d (write)", what, o.End, OpenRead, OpenWrite)
	}
	if !ValidState(o.State) {
		return fmt.Errorf("format: %s: state %q: want one of %s or 0", what, o.State, stateLetters)
	}
	if err := checkWait(o.Wait, o.WaitKnown); err != nil {
		return fmt.Errorf("format: %s: %w", what, err)
	}
	if err := checkComm(o.Comm); err != nil {
		return fmt.Errorf("format: %s: %w", what, err)
	}
	if err := checkString(o.Path); err != nil {
		return fmt.Errorf("format: %s: path: %w", what, err)
	}
	p := e.scratch[:sizeOpenWait]
	clear(p)
	le.PutUint32(p[0:], o.PID)
	le.PutUint32(p[4:], o.TID)
	p[8] = o.End
	p[9] = o.State
	le.PutUint64(p[16:], o.Ino)
	le.PutUint64(p[24:], waitNS(o.Wait))
	le.PutUint32(p[32:], waitFlag(o.WaitKnown))
	copy(p[36:], o.Comm)
	e.record(TypeOpenWait, p)
	e.string(o.Path)
	e.st = stWait
	return e.err
}

// WriteContainer writes a PS_CONTAINER and its six STRINGs. c.Ref must
// be the next container number (1 for the first). See WriteTaskState for
// where it may come.
func (e *Encoder) WriteContainer(c Container) error {
	const what = "WriteContainer"
	if err := e.ready(what, 1+len(containerStrings)); err != nil {
		return err
	}
	if c.Ref != e.containers+1 {
		return fmt.Errorf("format: %s: ref %d: want the next container number %d", what, c.Ref, e.containers+1)
	}
	if c.ID == "" {
		return fmt.Errorf("format: %s: empty id", what)
	}
	strs := c.strings()
	for i, sp := range strs {
		if err := checkString(*sp); err != nil {
			return fmt.Errorf("format: %s: %s: %w", what, containerStrings[i], err)
		}
	}
	p := e.scratch[:sizeContainer]
	clear(p)
	le.PutUint32(p[0:], c.Ref)
	e.record(TypeContainer, p)
	for _, sp := range strs {
		e.string(*sp)
	}
	e.containers++
	e.st = stWait
	return e.err
}

// WriteProc writes a PS_PROC and its cgroup STRING: at most one per pid,
// naming a container already written. See WriteTaskState for where it
// may come.
func (e *Encoder) WriteProc(pr Proc) error {
	const what = "WriteProc"
	if err := e.ready(what, 2); err != nil {
		return err
	}
	if err := checkProc(pr); err != nil {
		return fmt.Errorf("format: %s: %w", what, err)
	}
	if pr.Container > e.containers {
		return fmt.Errorf("format: %s: container %d is not written yet (%d are)", what, pr.Container, e.containers)
	}
	if _, dup := e.procs[pr.PID]; dup {
		return fmt.Errorf("format: %s: pid %d has a PS_PROC already", what, pr.PID)
	}
	if err := checkString(pr.Cgroup); err != nil {
		return fmt.Errorf("format: %s: cgroup: %w", what, err)
	}
	p := e.scratch[:sizeProc]
	clear(p)
	le.PutUint32(p[0:], pr.PID)
	le.PutUint32(p[4:], pr.NSPID)
	le.PutUint64(p[8:], pr.CgroupID)
	le.PutUint32(p[16:], pr.Container)
	var flags uint32
	if pr.Monitor {
		flags |= monitorFlag
	}
	if pr.CgroupTruncated {
		flags |= truncFlag
	}
	le.PutUint32(p[20:], flags)
	copy(p[24:], pr.Comm)
	e.record(TypeProc, p)
	e.string(pr.Cgroup)
	if e.procs == nil {
		e.procs = map[uint32]struct{}{}
	}
	e.procs[pr.PID] = struct{}{}
	e.st = stWait
	return e.err
}

// WriteNote writes a note; notes may come between fd entries and tasks,
// and among the wait records.
func (e *Encoder) WriteNote(n Note) error {
	if err := e.ready("WriteNote", 2); err != nil {
		return err
	}
	if err := checkString(n.Msg); err != nil {
		return fmt.Errorf("format: WriteNote: %w", err)
	}
	p := e.scratch[:sizeNote]
	le.PutUint32(p[0:], n.PID)
	le.PutUint32(p[4:], n.Code)
	e.record(TypeNote, p)
	e.string(n.Msg)
	return e.err
}

// Close writes PS_TRAILER and TAIL and flushes. It does not close the
// underlying writer.
func (e *Encoder) Close() error {
	if err := e.ready("Close", 0); err != nil {
		return err
	}
	p := e.scratch[:sizeTrailer]
	le.PutUint32(p[0:], e.crc)
	le.PutUint32(p[4:], uint32(e.records))
	le.PutUint64(p[8:], uint64(e.off))
	e.record(TypeTrailer, p)
	p = e.scratch[:sizeTail]
	le.PutUint64(p, TailMagic)
	e.record(TypeTail, p)
	e.st = stDone
	if e.err == nil {
		e.err = e.w.Flush()
	}
	return e.err
}

// The writers below keep the offset, record count and CRC in step with
// what goes out, and keep the first write error.

func (e *Encoder) record(typ uint32, payload []byte) {
	e.pre(typ, len(payload))
	e.bytes(payload)
}

func (e *Encoder) string(s string) {
	e.pre(TypeString, len(s)+1)
	e.str(s)
	e.bytes([]byte{0})
}

func (e *Encoder) pre(typ uint32, n int) {
	var h [preHeader]byte
	le.PutUint32(h[0:], typ)
	le.PutUint32(h[4:], uint32(preHeader+n))
	e.records++
	e.bytes(h[:])
}

func (e *Encoder) bytes(b []byte) {
	if e.err != nil {
		return
	}
	_, e.err = e.w.Write(b)
	e.crc = crc32.Update(e.crc, castagnoli(), b)
	e.off += int64(len(b))
}

func (e *Encoder) str(s string) {
	if e.err != nil {
		return
	}
	_, e.err = e.w.WriteString(s)
	e.crc = crc32.Update(e.crc, castagnoli(), []byte(s))
	e.off += int64(len(s))
}
