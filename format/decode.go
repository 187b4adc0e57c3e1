package format

import (
	"bytes"
	"errors"
	"fmt"
	"hash/crc32"
	"io"
	"slices"
)

// Decoder reads a stream and checks all of FORMAT.md: framing, lengths,
// padding, grammar, objrefs, counts and the trailer. It holds at most one
// record and one chunk of input (up to 1 MiB) in memory, besides the
// objref table (a byte per objref) and the fd numbers of the open task
// section (4 bytes each in the ascending order a capture writes them,
// a map entry each out of order), and never allocates more than a
// length field allows after that field has been checked against its
// cap, nor more than about twice what the input backs. Each record
// costs it a constant amount of work (a lookup among the section's fd
// numbers for an FD_ENT), so decoding is linear in the stream. A Buffer's Data is a slice of the chunk it was read into, which
// the decoder never writes again: it is the caller's to keep.
type Decoder struct {
	r       reader
	hdr     Header
	off     int64  // offset of the next record
	crc     uint32 // CRC-32C of every byte before off
	records uint64 // records before off
	refs    objrefs
	st      state
	err     error // sticky; io.EOF once TAIL has been checked

	peeked bool // ph was read ahead (a FIFO's PS_PIPE may be followed by STRING)
	ph     recHead

	fileRef   int32  // stFile: the objref the FILE defines
	pipeRef   int32  // stPipe: the objref the pipe defines
	pipeOff   int64  // stBufs: offset of the PS_PIPE, for messages
	bufsLeft  uint32 // stBufs: buffers still due
	bytesLeft uint64 // stBufs: bytes they must carry

	taskOff int64  // offset of the open task section's PS_TASK, for messages
	fds     fdNums // fd numbers of the open task section

	containers uint32              // PS_CONTAINERs read
	procs      map[uint32]struct{} // pids with a PS_PROC

	buf [MaxString]byte // fixed payloads and strings
}

// recHead is a record's pre-header and where it starts.
type recHead struct {
	off int64
	typ uint32
	len uint32
	raw [preHeader]byte
}

// NewDecoder reads and checks the HEADER and its three BUFFERs.
func NewDecoder(r io.Reader) (*Decoder, error) {
	d := &Decoder{r: reader{src: r}}
	if err := d.header(); err != nil {
		return nil, err
	}
	return d, nil
}

// Header returns the stream's header.
func (d *Decoder) Header() Header { return d.hdr }

// Offset returns the offset of the next record.
func (d *Decoder) Offset() int64 { return d.off }

// Next returns the next item: *Task, *FDEnt, *File, *Pipe, *Buffer,
// *Note, from revision 2 *TaskState, *Waiter or *OpenWait, and from
// revision 3 *Container or *Proc.
// After the trailer and TAIL have been checked it returns
// (nil, io.EOF). Errors are *Error and stick: later calls repeat them.
func (d *Decoder) Next() (any, error) {
	if d.err != nil {
		return nil, d.err
	}
	v, err := d.next()
	if err != nil {
		d.err = err
		return nil, err
	}
	return v, nil
}

func (d *Decoder) next() (any, error) {
	h, err := d.head()
	if err != nil {
		return nil, err
	}
	switch d.st {
	case stFile:
		if h.typ != TypeFile {
			return nil, d.unexpected(h, fmt.Sprintf("FILE defining objref %d", d.fileRef))
		}
		return d.file(h)
	case stPipe:
		if h.typ != TypeFilePipe {
			return nil, d.unexpected(h, fmt.Sprintf("FILE_PIPE defining pipe objref %d", d.pipeRef))
		}
		return d.pipe(h)
	case stBufs:
		if h.typ != TypeBuf {
			return nil, d.unexpected(h, fmt.Sprintf("PS_BUF: %d more buffers of the pipe at offset %d", d.bufsLeft, d.pipeOff))
		}
		return d.buffer(h)
	}
	switch h.typ {
	case TypeTask, TypeFDEnt:
		if d.st == stWait {
			return nil, d.bad(h, "after the wait records (PS_TASK_STATE, PS_WAITER, PS_OPEN_WAIT, PS_CONTAINER, PS_PROC): every task section must come before them")
		}
		if h.typ == TypeTask {
			return d.task(h)
		}
		if d.st == stTop {
			return nil, d.bad(h, "FD_ENT before the first PS_TASK")
		}
		return d.fdent(h)
	case TypeNote:
		return d.note(h)
	case TypeTrailer:
		return nil, d.trailer(h)
	case TypeTaskState, TypeWaiter, TypeOpenWait:
		if d.hdr.Revision < 2 {
			return nil, d.bad(h, "not in a revision %d stream (new in revision 2)", d.hdr.Revision)
		}
		switch h.typ {
		case TypeTaskState:
			return d.taskState(h)
		case TypeWaiter:
			return d.waiter(h)
		}
		return d.openWait(h)
	case TypeContainer, TypeProc:
		if d.hdr.Revision < 3 {
			return nil, d.bad(h, "not in a revision %d stream (new in revision 3)", d.hdr.Revision)
		}
		if h.typ == TypeContainer {
			return d.container(h)
		}
		return d.proc(h)
	}
	waits := ""
	if d.hdr.Revision >= 2 {
		waits = "PS_TASK_STATE, PS_WAITER, PS_OPEN_WAIT, "
	}
	if d.hdr.Revision >= 3 {
		waits += "PS_CONTAINER, PS_PROC, "
	}
	switch d.st {
	case stTop:
		return nil, d.unexpected(h, "PS_TASK, "+waits+"PS_NOTE or PS_TRAILER")
	case stWait:
		return nil, d.unexpected(h, waits+"PS_NOTE or PS_TRAILER")
	}
	return nil, d.unexpected(h, "PS_TASK, FD_ENT, "+waits+"PS_NOTE or PS_TRAILER")
}

func (d *Decoder) header() error {
	h, err := d.rawHead()
	if err != nil {
		return err
	}
	if h.typ != TypeHeader {
		return d.fail(h, ErrMagic, "not a pipesnap stream: first record is %s, want HEADER", RecordName(h.typ))
	}
	// Read a little more than rev 1 needs, so that a later revision with
	// a longer HEADER is reported as such rather than as malformed.
	if h.len < preHeader+18 || h.len > preHeader+MaxString {
		return d.bad(h, "len %d, want %d", h.len, preHeader+sizeHeader)
	}
	p := d.buf[:h.len-preHeader]
	if err := d.read(h, p); err != nil {
		return err
	}
	if m := le.Uint64(p[0:]); m != HeadMagic {
		return d.fail(h, ErrMagic, "magic %#016x, want %#016x", m, HeadMagic)
	}
	rev := le.Uint16(p[16:])
	if rev < MinRevision || rev > Revision {
		return d.fail(h, ErrRevision, "revision %d, this reader knows %d to %d", rev, MinRevision, Revision)
	}
	if len(p) != sizeHeader {
		return d.bad(h, "len %d, want %d", h.len, preHeader+sizeHeader)
	}
	if !zero(p[18:24]) {
		return d.bad(h, "padding not zero")
	}
	d.hdr = Header{
		Arch:     le.Uint16(p[8:]),
		Major:    le.Uint16(p[10:]),
		Minor:    le.Uint16(p[12:]),
		Patch:    le.Uint16(p[14:]),
		Revision: rev,
		Time:     nsTime(le.Uint64(p[24:])),
		Flags:    le.Uint64(p[32:]),
	}
	if d.hdr.Flags&^HeaderFrozen != 0 {
		return d.bad(h, "flags %#x: unknown bits", d.hdr.Flags)
	}
	for i, dst := range []*string{&d.hdr.Release, &d.hdr.Version, &d.hdr.Machine} {
		h, err := d.head()
		if err != nil {
			return err
		}
		what := [...]string{"release", "version", "machine"}[i]
		if h.typ != TypeBuffer {
			return d.unexpected(h, "BUFFER with the uts "+what)
		}
		if h.len-preHeader > MaxUTSBuffer {
			return d.bad(h, "uts %s of %d bytes: at most %d", what, h.len-preHeader, MaxUTSBuffer)
		}
		p := d.buf[:h.len-preHeader]
		if err := d.read(h, p); err != nil {
			return err
		}
		*dst = string(p)
	}
	return nil
}

func (d *Decoder) task(h recHead) (any, error) {
	p, err := d.fixed(h, sizeTask)
	if err != nil {
		return nil, err
	}
	if !zero(p[20:24]) {
		return nil, d.bad(h, "padding not zero")
	}
	comm, err := d.comm(h, p[24:24+commLen])
	if err != nil {
		return nil, err
	}
	d.st = stTask
	d.taskOff = h.off
	d.fds.reset()
	return &Task{
		PID:     le.Uint32(p[0:]),
		TID:     le.Uint32(p[4:]),
		StartNS: le.Uint64(p[8:]),
		UID:     le.Uint32(p[16:]),
		Comm:    comm,
	}, nil
}

// comm reads a comm field: NUL-terminated, zero after the first NUL.
func (d *Decoder) comm(h recHead, c []byte) (string, error) {
	n := bytes.IndexByte(c, 0)
	switch {
	case n < 0:
		return "", d.bad(h, "comm has no NUL")
	case !zero(c[n:]):
		return "", d.bad(h, "comm padding after the NUL not zero")
	}
	return string(c[:n]), nil
}

// state checks a state letter.
func (d *Decoder) state(h recHead, s byte) error {
	if !ValidState(s) {
		return d.bad(h, "state %q: want one of %s or 0", s, stateLetters)
	}
	return nil
}

// taskState reads a PS_TASK_STATE and its wchan STRING.
func (d *Decoder) taskState(h recHead) (any, error) {
	p, err := d.fixed(h, sizeTaskState)
	if err != nil {
		return nil, err
	}
	ts := &TaskState{PID: le.Uint32(p[0:]), TID: le.Uint32(p[4:]), State: p[8]}
	flags := le.Uint32(p[24:])
	switch {
	case !zero(p[9:16]) || !zero(p[28:32]):
		return nil, d.bad(h, "padding not zero")
	case flags&^waitKnownFlag != 0:
		return nil, d.bad(h, "flags %#x: unknown bits", flags)
	}
	if err := d.state(h, ts.State); err != nil {
		return nil, err
	}
	if ts.Wait, err = nsWait(le.Uint64(p[16:]), flags); err != nil {
		return nil, d.bad(h, "%v", err)
	}
	ts.WaitKnown = flags&waitKnownFlag != 0
	if ts.Wchan, _, err = d.nextString("the task's wchan"); err != nil {
		return nil, err
	}
	d.st = stWait
	return ts, nil
}

// waiter reads a PS_WAITER.
func (d *Decoder) waiter(h recHead) (any, error) {
	p, err := d.fixed(h, sizeWaiter)
	if err != nil {
		return nil, err
	}
	w := &Waiter{
		PipeRef: int32(le.Uint32(p[0:])),
		PID:     le.Uint32(p[4:]),
		TID:     le.Uint32(p[8:]),
		Queue:   Queue(p[12]),
		Via:     Via(p[13]),
		State:   p[14],
		EpollFD: int32(le.Uint32(p[16:])),
		Events:  le.Uint32(p[20:]),
	}
	flags := le.Uint32(p[32:])
	switch k := d.refs.kind(w.PipeRef); {
	case k == 0:
		return nil, d.bad(h, "pipe_ref: objref %d is not defined", w.PipeRef)
	case k != refPipe:
		return nil, d.bad(h, "pipe_ref: objref %d is a %s, not a pipe", w.PipeRef, kindName(k))
	case p[15] != 0 || !zero(p[52:56]):
		return nil, d.bad(h, "padding not zero")
	case flags&^(waitKnownFlag|outsideFlag) != 0:
		return nil, d.bad(h, "flags %#x: unknown bits", flags)
	}
	if err := checkWaiter(w.Queue, w.Via, w.EpollFD, w.Events); err != nil {
		return nil, d.bad(h, "%v", err)
	}
	if err := d.state(h, w.State); err != nil {
		return nil, err
	}
	if w.Wait, err = nsWait(le.Uint64(p[24:]), flags); err != nil {
		return nil, d.bad(h, "%v", err)
	}
	w.WaitKnown = flags&waitKnownFlag != 0
	w.Outside = flags&outsideFlag != 0
	if w.Comm, err = d.comm(h, p[36:36+commLen]); err != nil {
		return nil, err
	}
	d.st = stWait
	return w, nil
}

// openWait reads a PS_OPEN_WAIT and its path STRING.
func (d *Decoder) openWait(h recHead) (any, error) {
	p, err := d.fixed(h, sizeOpenWait)
	if err != nil {
		return nil, err
	}
	o := &OpenWait{PID: le.Uint32(p[0:]), TID: le.Uint32(p[4:]), End: p[8], State: p[9], Ino: le.Uint64(p[16:])}
	flags := le.Uint32(p[32:])
	switch {
	case o.End != OpenRead && o.End != OpenWrite:
		return nil, d.bad(h, "end %d: want %d (read) or %d (write)", o.End, OpenRead, OpenWrite)
	case !zero(p[10:16]) || !zero(p[52:56]):
		return nil, d.bad(h, "padding not zero")
	case flags&^waitKnownFlag != 0:
		return nil, d.bad(h, "flags %#x: unknown bits", flags)
	}
	if err := d.state(h, o.State); err != nil {
		return nil, err
	}
	if o.Wait, err = nsWait(le.Uint64(p[24:]), flags); err != nil {
		return nil, d.bad(h, "%v", err)
	}
	o.WaitKnown = flags&waitKnownFlag != 0
	if o.Comm, err = d.comm(h, p[36:36+commLen]); err != nil {
		return nil, err
	}
	if o.Path, _, err = d.nextString("the FIFO's path"); err != nil {
		return nil, err
	}
	d.st = stWait
	return o, nil
}

// container reads a PS_CONTAINER and its six STRINGs.
func (d *Decoder) container(h recHead) (any, error) {
	p, err := d.fixed(h, sizeContainer)
	if err != nil {
		return nil, err
	}
	c := &Container{Ref: le.Uint32(p[0:])}
	switch {
	case !zero(p[4:8]):
		return nil, d.bad(h, "padding not zero")
	case c.Ref != d.containers+1:
		return nil, d.bad(h, "ref %d: want the next container number %d", c.Ref, d.containers+1)
	}
	for i, sp := range c.strings() {
		if *sp, h, err = d.nextString("the container's " + containerStrings[i]); err != nil {
			return nil, err
		}
		if i == 1 && c.ID == "" {
			return nil, d.bad(h, "empty container id")
		}
	}
	d.containers++
	d.st = stWait
	return c, nil
}

// proc reads a PS_PROC and its cgroup STRING.
func (d *Decoder) proc(h recHead) (any, error) {
	p, err := d.fixed(h, sizeProc)
	if err != nil {
		return nil, err
	}
	pr := &Proc{PID: le.Uint32(p[0:]), NSPID: le.Uint32(p[4:]), CgroupID: le.Uint64(p[8:]), Container: le.Uint32(p[16:])}
	flags := le.Uint32(p[20:])
	pr.Monitor, pr.CgroupTruncated = flags&monitorFlag != 0, flags&truncFlag != 0
	switch _, dup := d.procs[pr.PID]; {
	case flags&^(monitorFlag|truncFlag) != 0:
		return nil, d.bad(h, "flags %#x: unknown bits", flags)
	case pr.Container > d.containers:
		return nil, d.bad(h, "container %d is not defined (%d are so far)", pr.Container, d.containers)
	case dup:
		return nil, d.bad(h, "pid %d has a PS_PROC already", pr.PID)
	}
	if pr.Comm, err = d.comm(h, p[24:24+commLen]); err != nil {
		return nil, err
	}
	if err := checkProc(*pr); err != nil {
		return nil, d.bad(h, "%v", err)
	}
	if pr.Cgroup, _, err = d.nextString("the process's cgroup"); err != nil {
		return nil, err
	}
	if d.procs == nil {
		d.procs = map[uint32]struct{}{}
	}
	d.procs[pr.PID] = struct{}{}
	d.st = stWait
	return pr, nil
}

func (d *Decoder) fdent(h recHead) (any, error) {
	p, err := d.fixed(h, sizeFDEnt)
	if err != nil {
		return nil, err
	}
	fd := &FDEnt{FileRef: int32(le.Uint32(p[0:])), FD: int32(le.Uint32(p[4:]))}
	cloexec := le.Uint32(p[8:])
	switch {
	case fd.FD < 0:
		return nil, d.bad(h, "fd_descriptor %d is negative", fd.FD)
	case cloexec > 1:
		return nil, d.bad(h, "fd_close_on_exec %d, want 0 or 1", cloexec)
	case !zero(p[12:16]):
		return nil, d.bad(h, "padding not zero")
	}
	fd.Cloexec = cloexec == 1
	isNew, err := d.refs.checkRef(fd.FileRef, refFile)
	if err != nil {
		return nil, d.bad(h, "fd_objref: %v", err)
	}
	if !d.fds.add(fd.FD) {
		return nil, d.bad(h, "fd_descriptor %d a second time in the task section at offset %d (an fd table holds each number once)", fd.FD, d.taskOff)
	}
	d.st = stTask
	if isNew {
		d.refs = append(d.refs, refFile)
		d.fileRef = fd.FileRef
		d.st = stFile
	}
	return fd, nil
}

func (d *Decoder) file(h recHead) (any, error) {
	p, err := d.fixed(h, sizeFile)
	if err != nil {
		return nil, err
	}
	f := &File{
		Ref:     d.fileRef,
		Type:    le.Uint32(p[0:]),
		Mode:    le.Uint32(p[4:]),
		Flags:   le.Uint32(p[8:]),
		Pos:     le.Uint64(p[16:]),
		Version: le.Uint64(p[24:]),
		PipeRef: int32(le.Uint32(p[32:])),
	}
	switch {
	case f.Type != FileTypePipe:
		return nil, d.bad(h, "f_type %d, want %d (pipe)", f.Type, FileTypePipe)
	case f.Mode&^(ModeRead|ModeWrite) != 0:
		return nil, d.bad(h, "f_mode %#x: unknown bits", f.Mode)
	case !zero(p[12:16]) || !zero(p[36:40]):
		return nil, d.bad(h, "padding not zero")
	}
	isNew, err := d.refs.checkRef(f.PipeRef, refPipe)
	if err != nil {
		return nil, d.bad(h, "pipe_objref: %v", err)
	}
	d.st = stTask
	if isNew {
		d.refs = append(d.refs, refPipe)
		d.pipeRef = f.PipeRef
		d.st = stPipe
	}
	return f, nil
}

// pipe reads FILE_PIPE, PS_PIPE and a FIFO's optional path STRING.
func (d *Decoder) pipe(h recHead) (any, error) {
	p, err := d.fixed(h, sizeFilePipe)
	if err != nil {
		return nil, err
	}
	nrbufs := int32(le.Uint32(p[0:]))
	switch {
	case nrbufs < 0:
		return nil, d.bad(h, "pipe_nrbufs %d is negative", nrbufs)
	case !zero(p[4:8]):
		return nil, d.bad(h, "padding not zero")
	}

	h, err = d.head()
	if err != nil {
		return nil, err
	}
	if h.typ != TypePipe {
		return nil, d.unexpected(h, "PS_PIPE")
	}
	if p, err = d.fixed(h, sizePipe); err != nil {
		return nil, err
	}
	pp := &Pipe{
		Ref:      d.pipeRef,
		Ino:      le.Uint64(p[0:]),
		Kind:     Kind(le.Uint32(p[8:])),
		Status:   Status(le.Uint32(p[12:])),
		Reason:   Reason(le.Uint32(p[16:])),
		Attempts: le.Uint32(p[20:]),
		RingSize: le.Uint32(p[24:]),
		MaxUsage: le.Uint32(p[28:]),
		Capacity: le.Uint32(p[32:]),
		PageSize: le.Uint32(p[36:]),
		Head:     le.Uint32(p[40:]),
		Tail:     le.Uint32(p[44:]),
		Readers:  le.Uint32(p[48:]),
		Writers:  le.Uint32(p[52:]),
		NrBufs:   le.Uint32(p[56:]),
		Bytes:    le.Uint64(p[64:]),
	}
	switch {
	case pp.Kind != KindPipe && pp.Kind != KindFIFO:
		return nil, d.bad(h, "kind %d, want 1 (pipe) or 2 (fifo)", uint32(pp.Kind))
	case pp.Status&^statusKnown != 0:
		return nil, d.bad(h, "status %#x: unknown bits", uint32(pp.Status))
	case !zero(p[60:64]):
		return nil, d.bad(h, "padding not zero")
	case pp.NrBufs != uint32(nrbufs):
		return nil, d.bad(h, "nrbufs %d, but FILE_PIPE.pipe_nrbufs is %d", pp.NrBufs, nrbufs)
	case pp.Bytes > uint64(pp.NrBufs)*MaxBuffer:
		return nil, d.bad(h, "bytes %d cannot fit in %d buffers", pp.Bytes, pp.NrBufs)
	}
	d.pipeOff = h.off

	if pp.Kind == KindFIFO {
		h, err := d.head()
		if err != nil {
			return nil, err
		}
		if h.typ == TypeString {
			if pp.Path, err = d.str(h); err != nil {
				return nil, err
			}
			if pp.Path == "" {
				return nil, d.bad(h, "empty FIFO path (a FIFO without a path has no STRING)")
			}
		} else {
			d.peeked, d.ph = true, h
		}
	}
	d.st = stTask
	if pp.NrBufs > 0 {
		d.st = stBufs
		d.bufsLeft, d.bytesLeft = pp.NrBufs, pp.Bytes
	}
	return pp, nil
}

// buffer reads a PS_BUF and its BUFFER.
func (d *Decoder) buffer(h recHead) (any, error) {
	p, err := d.fixed(h, sizeBuf)
	if err != nil {
		return nil, err
	}
	b := &Buffer{
		Index:  le.Uint32(p[0:]),
		Offset: le.Uint32(p[4:]),
		Len:    le.Uint32(p[8:]),
		Flags:  le.Uint32(p[12:]),
	}
	n := uint64(b.Len)
	switch {
	case n > MaxBuffer:
		return nil, d.bad(h, "len %d: at most %d", n, MaxBuffer)
	case n > d.bytesLeft:
		return nil, d.bad(h, "len %d, but only %d of PS_PIPE.bytes (offset %d) are left", n, d.bytesLeft, d.pipeOff)
	case d.bytesLeft-n > uint64(d.bufsLeft-1)*MaxBuffer:
		return nil, d.bad(h, "len %d leaves %d bytes of PS_PIPE.bytes (offset %d) for the %d buffers left",
			n, d.bytesLeft-n, d.pipeOff, d.bufsLeft-1)
	}
	bh, err := d.head()
	if err != nil {
		return nil, err
	}
	if bh.typ != TypeBuffer {
		return nil, d.unexpected(bh, "BUFFER")
	}
	if uint64(bh.len-preHeader) != n {
		return nil, d.bad(bh, "len %d, but PS_BUF.len is %d", bh.len, n)
	}
	if b.Data, err = d.data(bh); err != nil {
		return nil, err
	}
	d.bufsLeft--
	d.bytesLeft -= n
	if d.bufsLeft == 0 {
		d.st = stTask
	}
	return b, nil
}

func (d *Decoder) note(h recHead) (any, error) {
	p, err := d.fixed(h, sizeNote)
	if err != nil {
		return nil, err
	}
	n := &Note{PID: le.Uint32(p[0:]), Code: le.Uint32(p[4:])}
	if n.Msg, _, err = d.nextString("the note's message"); err != nil {
		return nil, err
	}
	return n, nil
}

// trailer checks PS_TRAILER, TAIL and the end of input. It returns
// io.EOF when all is well.
func (d *Decoder) trailer(h recHead) error {
	crc, records, off := d.crc, d.records, d.off
	p, err := d.fixed(h, sizeTrailer)
	if err != nil {
		return err
	}
	t := Trailer{CRC32C: le.Uint32(p[0:]), Records: le.Uint32(p[4:]), Bytes: le.Uint64(p[8:])}
	switch {
	case t.CRC32C != crc:
		return d.fail(h, ErrChecksum, "crc32c %#08x, but the stream before it has %#08x", t.CRC32C, crc)
	case uint64(t.Records) != records:
		return d.fail(h, ErrChecksum, "records %d, but %d records precede it", t.Records, records)
	case t.Bytes != uint64(off):
		return d.fail(h, ErrChecksum, "bytes %d, but %d bytes precede it", t.Bytes, off)
	}
	if h, err = d.head(); err != nil {
		return err
	}
	if h.typ != TypeTail {
		return d.unexpected(h, "TAIL")
	}
	if p, err = d.fixed(h, sizeTail); err != nil {
		return err
	}
	if m := le.Uint64(p); m != TailMagic {
		return d.fail(h, ErrMagic, "magic %#016x, want %#016x", m, TailMagic)
	}
	switch _, err := d.r.readByte(); {
	case err == nil:
		return &Error{Offset: d.off, Err: fmt.Errorf("%w: data after TAIL", ErrMalformed)}
	case err != io.EOF:
		return &Error{Offset: d.off, Err: err}
	}
	d.st = stDone
	return io.EOF
}

// head returns the next pre-header (the one read ahead, if any).
func (d *Decoder) head() (recHead, error) {
	if d.peeked {
		d.peeked = false
		return d.ph, nil
	}
	h, err := d.rawHead()
	if err != nil {
		return h, err
	}
	if h.len < preHeader {
		return h, d.bad(h, "len %d is less than the %d-byte pre-header", h.len, preHeader)
	}
	return h, nil
}

func (d *Decoder) rawHead() (recHead, error) {
	h := recHead{off: d.off}
	n, err := d.r.readFull(h.raw[:])
	switch {
	case err == io.EOF:
		return h, &Error{Offset: d.off, Err: fmt.Errorf("%w: input ends before TAIL", ErrTruncated)}
	case err == io.ErrUnexpectedEOF:
		return h, &Error{Offset: d.off, Err: fmt.Errorf("%w: input ends inside a record pre-header (%d of %d bytes)", ErrTruncated, n, preHeader)}
	case err != nil:
		return h, &Error{Offset: d.off, Err: err}
	}
	h.typ = le.Uint32(h.raw[0:])
	h.len = le.Uint32(h.raw[4:])
	return h, nil
}

// fixed reads a fixed-size payload, checking len before reading anything.
func (d *Decoder) fixed(h recHead, size int) ([]byte, error) {
	if h.len != uint32(preHeader+size) {
		return nil, d.bad(h, "len %d, want %d", h.len, preHeader+size)
	}
	p := d.buf[:size]
	if err := d.read(h, p); err != nil {
		return nil, err
	}
	return p, nil
}

// nextString reads the STRING that must come next, what it holds named
// for the error when another record comes; h is its head.
func (d *Decoder) nextString(what string) (s string, h recHead, err error) {
	if h, err = d.head(); err != nil {
		return "", h, err
	}
	if h.typ != TypeString {
		return "", h, d.unexpected(h, "STRING with "+what)
	}
	s, err = d.str(h)
	return s, h, err
}

// str reads a STRING: 1 to MaxString bytes, one NUL, at the end.
func (d *Decoder) str(h recHead) (string, error) {
	n := h.len - preHeader
	if n < 1 || n > MaxString {
		return "", d.bad(h, "len %d: a STRING payload is 1 to %d bytes", h.len, MaxString)
	}
	p := d.buf[:n]
	if err := d.read(h, p); err != nil {
		return "", err
	}
	if p[n-1] != 0 {
		return "", d.bad(h, "no NUL at the end")
	}
	if i := bytes.IndexByte(p[:n-1], 0); i >= 0 {
		return "", d.bad(h, "NUL inside the string at byte %d", i)
	}
	return string(p[:n-1]), nil
}

// data reads a BUFFER payload whose length was checked against its cap,
// without copying it: see reader.
func (d *Decoder) data(h recHead) ([]byte, error) {
	p, got, err := d.r.take(int(h.len - preHeader))
	if err != nil {
		return nil, d.readErr(h, got, err)
	}
	d.consumed(h, p)
	return p, nil
}

// read reads exactly len(p) payload bytes of record h.
func (d *Decoder) read(h recHead, p []byte) error {
	n, err := d.r.readFull(p)
	if err != nil {
		return d.readErr(h, n, err)
	}
	d.consumed(h, p)
	return nil
}

func (d *Decoder) consumed(h recHead, p []byte) {
	d.crc = crc32.Update(d.crc, castagnoli(), h.raw[:])
	d.crc = crc32.Update(d.crc, castagnoli(), p)
	d.off += int64(h.len)
	d.records++
}

func (d *Decoder) readErr(h recHead, got int, err error) error {
	if errors.Is(err, io.EOF) || errors.Is(err, io.ErrUnexpectedEOF) {
		return d.fail(h, ErrTruncated, "input ends at offset %d, inside the record (len %d)",
			h.off+preHeader+int64(got), h.len)
	}
	return &Error{Offset: h.off, Record: RecordName(h.typ), Err: err}
}

func (d *Decoder) unexpected(h recHead, want string) error {
	if RecordName(h.typ) == fmt.Sprintf("type %d", h.typ) {
		return d.bad(h, "unknown record type (want %s)", want)
	}
	return d.bad(h, "unexpected here, want %s", want)
}

func (d *Decoder) bad(h recHead, format string, args ...any) error {
	return d.fail(h, ErrMalformed, format, args...)
}

func (d *Decoder) fail(h recHead, sentinel error, format string, args ...any) error {
	return &Error{
		Offset: h.off,
		Record: RecordName(h.typ),
		Err:    fmt.Errorf("%w: %s", sentinel, fmt.Sprintf(format, args...)),
	}
}

func zero(b []byte) bool {
	for _, c := range b {
		if c != 0 {
			return false
		}
	}
	return true
}

// fdNums is a set of fd numbers: those in ascending order (as a kernel
// walk of an fd table writes them) in a sorted slice, 4 bytes each, and
// any other in a map.
type fdNums struct {
	asc  []int32
	more map[int32]struct{}
}

func (s *fdNums) reset() {
	s.asc, s.more = s.asc[:0], nil
}

// add adds fd, or reports false if it is already there.
func (s *fdNums) add(fd int32) bool {
	n := len(s.asc)
	if n > 0 && fd <= s.asc[n-1] {
		if _, found := slices.BinarySearch(s.asc, fd); found {
			return false
		}
	}
	if _, found := s.more[fd]; found {
		return false
	}
	if n == 0 || fd > s.asc[n-1] {
		s.asc = append(s.asc, fd)
		return true
	}
	if s.more == nil {
		s.more = make(map[int32]struct{})
	}
	s.more[fd] = struct{}{}
	return true
}
