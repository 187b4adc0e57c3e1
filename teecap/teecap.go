// Package teecap is pipesnap's user-space capture path, for machines where
// the BPF iterator cannot run (no BTF, no CAP_BPF, an old kernel): it
// finds pipes with a /proc walk, takes one fd of each pipe with
// pidfd_getfd, tee(2)s the pipe into a scratch pipe (which copies page
// references, not bytes, and consumes nothing) and reads the scratch pipe
// out. It writes the same stream as loader.Dump, with the same objrefs,
// notes and report, and marks what user space cannot see as unknown:
//
//   - The ring is not visible: PS_PIPE ring_size, head and tail are 0
//     (a real ring has at least one slot, so ring_size 0 says "not
//     observed"), and one note at the head of the stream says so.
//   - Buffers are read() chunks of the scratch pipe, not the kernel's
//     buffers: offset 0, index k (the k-th chunk). A read of a pipe stops
//     after a packet buffer (PIPE_BUF_FLAG_PACKET, which tee copies), so a
//     read that returns less than was asked while bytes remain proves a
//     packet boundary: that chunk gets PACKET and the pipe the packet
//     status. The last chunk's packet flag cannot be proven this way; it
//     is set when earlier chunks were packets or a write end in the walk
//     is O_DIRECT (a packet writer). Chunks that are not packets may
//     cover several kernel buffers (merged writes, page boundaries).
//   - readers and writers are 0: the counts are not visible from user
//     space (the holders in the stream are the ends the walk saw).
//   - tee copies under both pipes' locks, so a pipe's bytes are one
//     consistent instant: never torn, one attempt.
//
// The tee path needs a read end: it never opens a new end of a pipe
// (that would add a reader, and on a FIFO could complete a writer's
// blocked open). A pipe whose read ends are all outside the walked
// processes is complete if FIONREAD (which works through any end) says
// it is empty, and otherwise recorded without bytes, incomplete, with a
// note.
//
// Tasks: one PS_TASK per process (tid = pid), from /proc/PID: comm, real
// uid, and the start time with /proc's clock-tick precision (the BPF
// path has nanoseconds).
//
// What it costs the pipes: nothing is read out of them, but tee takes
// each pipe's mutex (as read and write do) for the time of one copy of
// page references, and waits for it: a writer stuck inside write() with
// the mutex held (faulting on userfaultfd- or FUSE-backed memory) blocks
// the capture, uninterruptibly. The BPF path takes no lock.
//
// Privileges: pidfd_getfd needs ptrace access to the holder
// (PTRACE_MODE_ATTACH_REALCREDS: root, CAP_SYS_PTRACE, or the same user
// where Yama allows), kcmp ptrace read access. A pipe whose fd cannot be
// taken is recorded without bytes, incomplete, with a note; a process
// whose fds cannot be read (pid 1, even for root) gets a note.
//
// Open-file identity: /proc does not say which fds share one open file.
// teecap groups fds by (inode, f_flags, mnt_id), which every fd of one
// open file shares, and confirms each match with kcmp(KCMP_FILE); where
// kcmp is refused, every fd counts as its own open file (sharing is not
// invented).
package teecap

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"

	"golang.org/x/sys/unix"

	"github.com/pipesnap/pipesnap/format"
	"github.com/pipesnap/pipesnap/internal/dumpstream"
	"github.com/pipesnap/pipesnap/internal/host"
	"github.com/pipesnap/pipesnap/loader"
)

// Note codes of the tee path, next to loader's (loader.NoteNoPipes ...,
// which it also writes with the same meaning).
const (
	NoteTee        = 100 // stream-level: what this capture path cannot see
	NoteUnreadable = 101 // a process whose fds could not be read (pid 1)
	NoteNoReadEnd  = 102 // a pipe whose read ends are all outside the walk
	NoteFailed     = 103 // a pipe the tee path could not copy
)

// Method is what Report.Translation says for a tee capture (there is no
// page translation).
const Method = "tee"

// teeNote is written once, before the first task.
const teeNote = "captured in user space (pidfd_getfd + tee): ring layout not observed " +
	"(ring_size, head, tail 0); buffers are read() chunks at offset 0, a chunk ending " +
	"early proves a packet, the last chunk's packet flag is inferred; readers/writers " +
	"not visible (0); start times have clock-tick precision"

// Preflight checks what a tee dump needs before anything is written:
// something to dump, processes that exist. It returns the processes to
// walk (empty with All).
func Preflight(opts loader.Options) ([]uint32, error) {
	if !opts.All && len(opts.PIDs) == 0 {
		return nil, errors.New("nothing to dump: give pids or all")
	}
	if opts.Freeze && opts.All {
		return nil, loader.ErrFreezeAll
	}
	targets, err := host.Resolve(opts.PIDs)
	if err != nil {
		return nil, err
	}
	// A process asked for by pid must be readable: with --all an
	// unreadable one is a note, here it would be a silent gap.
	for _, tgid := range targets {
		pidfd, err := unix.PidfdOpen(int(tgid), 0)
		if err == nil {
			var fd int
			fd, err = unix.PidfdGetfd(pidfd, 0, 0)
			if err == nil {
				unix.Close(fd)
			} else if errors.Is(err, unix.EBADF) {
				err = nil // fd 0 is closed: the right to take fds is what counts
			}
			unix.Close(pidfd)
		}
		if err != nil {
			return nil, fmt.Errorf("pid %d: taking its fds: %w (%w)", tgid, err, ErrNotPermitted)
		}
	}
	return targets, nil
}

// ErrNotPermitted means a requested process's fds cannot be taken: the
// tee method needs to be that process's user, or CAP_SYS_PTRACE.
var ErrNotPermitted = errors.New("the tee method needs root, CAP_SYS_PTRACE or the same user")

// Dump walks the chosen processes' pipes and FIFOs through /proc and
// writes the pipesnap stream to w, one pipe at a time, as loader.Dump
// does.
func Dump(ctx context.Context, w io.Writer, opts loader.Options) (*loader.Report, error) {
	targets, err := Preflight(opts)
	if err != nil {
		return nil, err
	}
	self := uint32(os.Getpid())
	starts := map[uint32]uint64{}
	for _, tgid := range targets {
		if n, ok := host.StartTicks(tgid); ok {
			starts[tgid] = n
		}
	}
	s, err := dumpstream.New(w, opts.Freeze, Method)
	if err != nil {
		return nil, err
	}
	s.SetWaits(opts.Waits)
	d := &dumper{
		ctx:      ctx,
		s:        s,
		pageSize: uint32(os.Getpagesize()),
		exclude:  opts.ExcludeIno,
		files:    map[fileKey][]fileEnt{},
		scratch:  [2]int{-1, -1},
	}
	defer d.close()
	if err := s.WriteNote(format.Note{Code: NoteTee, Msg: teeNote}); err != nil {
		return nil, err
	}
	if err := s.Walk(targets, func() error { return d.run(targets, opts.All, self, starts) }); err != nil {
		return nil, err
	}
	return s.Finish(targets)
}

// dumper writes the walked tasks as the stream and copies each pipe at
// its first encounter.
type dumper struct {
	ctx      context.Context
	s        *dumpstream.Writer
	pageSize uint32
	exclude  uint64

	tasks   []*task
	readEnd map[uint64][]endRef // inode -> readable fds, in walk order
	direct  map[uint64]bool     // inode -> a write end is O_DIRECT
	files   map[fileKey][]fileEnt

	pidfd    int // of the task being written, -1 if not open
	pidfdFor uint32
	scratch  [2]int // read, write end of the scratch pipe
	scrSize  int    // its capacity
	buf      []byte // a pipe's bytes, read out of the scratch pipe
	noKcmp   bool   // kcmp refused once: every fd is its own file
}

type endRef struct {
	pid uint32
	fd  int32
}

// fileKey groups the fds that may share an open file: one open file has
// one inode, one f_flags and one mount.
type fileKey struct {
	ino   uint64
	flags uint32
	mnt   uint64
}

type fileEnt struct {
	pid uint32
	fd  int32
	ref int32
}

func (d *dumper) close() {
	d.closePidfd()
	for _, fd := range d.scratch {
		if fd >= 0 {
			unix.Close(fd)
		}
	}
}

// run walks the processes, then writes them in pid order. The walk comes
// first so that a pipe met through its write end can be copied through a
// read end another process holds.
func (d *dumper) run(targets []uint32, all bool, self uint32, starts map[uint32]uint64) error {
	pids := targets
	if all {
		var err error
		if pids, err = allPIDs(self); err != nil {
			return err
		}
	} else {
		pids = make([]uint32, 0, len(targets))
		for _, p := range targets {
			if p != self { // as the BPF path: pipesnap never dumps itself
				pids = append(pids, p)
			}
		}
	}
	w := newWalker()
	d.readEnd = map[uint64][]endRef{}
	d.direct = map[uint64]bool{}
	for _, pid := range pids {
		if err := d.ctx.Err(); err != nil {
			return err
		}
		t := w.task(pid)
		if t.err == errExited && all {
			continue // gone: the kernel's walk would not have met it either
		}
		d.tasks = append(d.tasks, t)
		for _, f := range t.fds {
			if f.mode()&format.ModeRead != 0 {
				d.readEnd[f.ino] = append(d.readEnd[f.ino], endRef{t.pid, f.fd})
			}
			if f.mode()&format.ModeWrite != 0 && f.flags&unix.O_DIRECT != 0 {
				d.direct[f.ino] = true
			}
		}
	}
	d.pidfd = -1
	for _, t := range d.tasks {
		if err := d.writeTask(t, starts); err != nil {
			return err
		}
	}
	return nil
}

func (d *dumper) writeTask(t *task, starts map[uint32]uint64) error {
	defer d.closePidfd()
	switch {
	case t.err == errExited:
		return nil // noted after the walk, as the BPF path does
	case t.err != nil:
		return d.s.LeaveOut(t.pid, NoteUnreadable, fmt.Sprintf("pid %d: %v", t.pid, t.err))
	case len(t.fds) == 0:
		return nil
	}
	if want, ok := starts[t.pid]; ok && want != t.ticks {
		return d.s.Reused(t.pid, t.comm)
	}
	if err := d.s.Task(format.Task{PID: t.pid, TID: t.pid, StartNS: t.startNS, UID: t.uid, Comm: t.comm}); err != nil {
		return err
	}
	for i := range t.fds {
		if err := d.ctx.Err(); err != nil {
			return err
		}
		if err := d.writeFD(t, &t.fds[i]); err != nil {
			return err
		}
	}
	return nil
}

func (d *dumper) writeFD(t *task, f *fdInfo) error {
	fileRef, known := d.fileRef(t.pid, f)
	if err := d.s.FD(format.FDEnt{FD: f.fd, FileRef: fileRef, Cloexec: f.cloexec}); err != nil || known {
		return err
	}
	pipeRef, newPipe, err := d.s.File(format.File{Ref: fileRef, Mode: f.mode(), Flags: f.flags, Pos: f.pos}, f.ino)
	if err != nil || !newPipe {
		return err
	}
	return d.writePipe(t, f, pipeRef)
}

// fileRef finds the objref of the open file fd f of pid refers to, or
// makes a new one.
func (d *dumper) fileRef(pid uint32, f *fdInfo) (int32, bool) {
	key := fileKey{f.ino, f.flags, f.mntID}
	for _, e := range d.files[key] {
		if d.sameFile(e.pid, e.fd, pid, f.fd) {
			return e.ref, true
		}
	}
	ref := d.s.NewRef()
	d.files[key] = append(d.files[key], fileEnt{pid, f.fd, ref})
	return ref, false
}

func (d *dumper) sameFile(pid1 uint32, fd1 int32, pid2 uint32, fd2 int32) bool {
	if d.noKcmp {
		return false
	}
	r, _, errno := unix.Syscall6(unix.SYS_KCMP, uintptr(pid1), uintptr(pid2), kcmpFile, uintptr(fd1), uintptr(fd2), 0)
	switch {
	case errno == unix.ENOSYS || errno == unix.EPERM || errno == unix.EACCES:
		d.noKcmp = true
		d.s.Note(0, NoteTee, fmt.Sprintf("kcmp refused (%v): every fd is recorded as its own open file", errno))
		return false
	case errno != 0:
		return false // a process or fd gone since the walk
	}
	return r == 0
}

const kcmpFile = 0 // KCMP_FILE

// writePipe copies pipe f.ino and writes it with its buffers.
func (d *dumper) writePipe(t *task, f *fdInfo, ref int32) error {
	p := format.Pipe{Ref: ref, Ino: f.ino, Kind: f.kind, Path: f.path, PageSize: d.pageSize}
	var c capture
	if f.ino == d.exclude && d.exclude != 0 {
		c = d.capacityOnly(t, f)
		d.s.Exclude(&p, t.pid)
	} else {
		c = d.capture(t, f)
		p.Attempts = c.attempts
		if c.reason != format.ReasonNone {
			p.Status, p.Reason = format.StatusIncomplete, c.reason
			d.s.Note(t.pid, c.noteCode, fmt.Sprintf("pipe %d: %s", f.ino, c.why))
		}
	}
	p.Capacity = c.capacity
	p.MaxUsage = c.capacity / d.pageSize
	p.Bytes = uint64(len(c.data))
	p.NrBufs = uint32(len(c.chunks))
	for _, ch := range c.chunks {
		if ch.packet {
			p.Status |= format.StatusPacket
		}
	}
	if err := d.s.Pipe(p); err != nil {
		return err
	}
	off := 0
	for k, ch := range c.chunks {
		b := format.Buffer{Index: uint32(k), Len: uint32(ch.n), Data: c.data[off : off+ch.n]}
		if ch.packet {
			b.Flags = format.BufPacket
		}
		if err := d.s.Buffer(b); err != nil {
			return err
		}
		off += ch.n
	}
	return d.s.EndPipe(&p, t.pid, t.comm, f.fd)
}

// capture is one pipe's copy.
type capture struct {
	capacity uint32
	attempts uint32
	data     []byte // valid until the next capture
	chunks   []chunk
	reason   format.Reason // ReasonNone: complete
	queued   int           // capacityOnly: FIONREAD, -1 if unknown
	noteCode uint32
	why      string
}

type chunk struct {
	n      int
	packet bool
}

// capture copies the pipe through the first read end the walk found,
// the fd at hand first.
func (d *dumper) capture(t *task, f *fdInfo) capture {
	ends := d.readEnd[f.ino]
	if f.mode()&format.ModeRead != 0 {
		ends = append([]endRef{{t.pid, f.fd}}, ends...)
	}
	var last error
	for _, e := range ends {
		fd, err := d.grab(e.pid, e.fd, f.ino)
		if err != nil {
			last = err
			continue
		}
		c := d.tee(fd, f.ino)
		unix.Close(fd)
		return c
	}
	// No read end: FIONREAD works through any end, so an empty pipe (the
	// common case: a write end whose reader is outside the walk) is still
	// captured whole.
	c := d.capacityOnly(t, f)
	if c.queued == 0 {
		c.attempts = 1
		return c
	}
	c.reason = format.ReasonNotCaptured
	held := "bytes"
	if c.queued > 0 {
		held = fmt.Sprintf("its %d bytes", c.queued)
	}
	if len(ends) == 0 {
		c.noteCode = NoteNoReadEnd
		c.why = fmt.Sprintf("no read end in the walked processes (tee needs one): %s not captured", held)
	} else {
		c.noteCode = NoteFailed
		c.why = fmt.Sprintf("no read end could be taken (%v): %s not captured", last, held)
	}
	return c
}

// capacityOnly reads the capacity and the bytes queued (FIONREAD)
// through any fd of the pipe; queued is -1 if unknown.
func (d *dumper) capacityOnly(t *task, f *fdInfo) capture {
	c := capture{queued: -1}
	if fd, err := d.grab(t.pid, f.fd, f.ino); err == nil {
		if n, err := unix.FcntlInt(uintptr(fd), unix.F_GETPIPE_SZ, 0); err == nil {
			c.capacity = uint32(n)
		}
		if n, err := unix.IoctlGetInt(fd, unix.TIOCINQ); err == nil {
			c.queued = n
		}
		unix.Close(fd)
	}
	return c
}

// grab duplicates fd of pid into this process (pidfd_getfd) and checks it
// still is pipe ino.
func (d *dumper) grab(pid uint32, fd int32, ino uint64) (int, error) {
	pidfd, own, err := d.pidfdOf(pid)
	if err != nil {
		return -1, err
	}
	if own {
		defer unix.Close(pidfd)
	}
	got, err := unix.PidfdGetfd(pidfd, int(fd), 0)
	if err != nil {
		return -1, fmt.Errorf("pidfd_getfd pid %d fd %d: %w", pid, fd, err)
	}
	var st unix.Stat_t
	if err := unix.Fstat(got, &st); err != nil || st.Ino != ino || st.Mode&unix.S_IFMT != unix.S_IFIFO {
		unix.Close(got)
		return -1, fmt.Errorf("pid %d fd %d no longer refers to pipe %d", pid, fd, ino)
	}
	return got, nil
}

// pidfdOf returns a pidfd for pid: the current task's is kept until its
// section ends; others' are the caller's to close (own).
func (d *dumper) pidfdOf(pid uint32) (fd int, own bool, err error) {
	if d.pidfd >= 0 && d.pidfdFor == pid {
		return d.pidfd, false, nil
	}
	fd, err = unix.PidfdOpen(int(pid), 0)
	if err != nil {
		return -1, false, fmt.Errorf("pidfd_open %d: %w", pid, err)
	}
	if d.pidfd < 0 {
		d.pidfd, d.pidfdFor = fd, pid
		return fd, false, nil
	}
	return fd, true, nil
}

func (d *dumper) closePidfd() {
	if d.pidfd >= 0 {
		unix.Close(d.pidfd)
		d.pidfd = -1
	}
}

const maxAttempts = 4

// tee copies the pipe src refers to: tee(2) into the scratch pipe, sized
// to at least the source's capacity so that one call takes every buffer,
// then read() the scratch out chunk by chunk.
func (d *dumper) tee(src int, ino uint64) capture {
	c := capture{}
	fail := func(msg string, args ...any) capture {
		c.reason, c.noteCode, c.why = format.ReasonFault, NoteFailed, fmt.Sprintf(msg, args...)
		c.chunks, c.data = nil, nil
		return c
	}
	for c.attempts = 1; c.attempts <= maxAttempts; c.attempts++ {
		size, err := unix.FcntlInt(uintptr(src), unix.F_GETPIPE_SZ, 0)
		if err != nil {
			return fail("F_GETPIPE_SZ: %v", err)
		}
		c.capacity = uint32(size)
		if err := d.ensureScratch(size); err != nil {
			c.reason, c.noteCode = format.ReasonTooLarge, NoteFailed
			c.why = fmt.Sprintf("scratch pipe of %d bytes: %v", size, err)
			return c
		}
		n, err := teeAll(src, d.scratch[1])
		if err != nil {
			return fail("tee: %v", err)
		}
		if n > len(d.buf) {
			d.buf = make([]byte, max(n, 64<<10))
		}
		if err := d.readScratch(&c, n); err != nil {
			d.resetScratch()
			return fail("reading the scratch pipe: %v", err)
		}
		// A capacity changed under us may have left buffers behind (the
		// scratch pipe had fewer slots): copy again.
		if after, err := unix.FcntlInt(uintptr(src), unix.F_GETPIPE_SZ, 0); err != nil || after <= d.scrSize {
			if n > 0 && !c.chunks[len(c.chunks)-1].packet && (packetsSeen(c.chunks) || d.direct[ino]) {
				c.chunks[len(c.chunks)-1].packet = true
			}
			return c
		}
	}
	c.attempts = maxAttempts
	c.reason, c.noteCode, c.why = format.ReasonMoved, NoteFailed, "capacity changed during every copy"
	c.chunks, c.data = nil, nil
	return c
}

func packetsSeen(chunks []chunk) bool {
	for _, ch := range chunks {
		if ch.packet {
			return true
		}
	}
	return false
}

// teeAll tees everything src holds into dst. An empty pipe gives EAGAIN
// (SPLICE_F_NONBLOCK: without it tee waits for a writer) or 0 (no
// writers left).
func teeAll(src, dst int) (int, error) {
	for {
		n, err := unix.Tee(src, dst, 1<<30, unix.SPLICE_F_NONBLOCK)
		switch {
		case err == unix.EINTR:
			continue
		case err == unix.EAGAIN:
			return 0, nil
		case err != nil:
			return 0, err
		}
		return int(n), nil
	}
}

// readScratch reads the n bytes the scratch pipe holds into d.buf, one
// chunk per read. A read stops after a packet buffer, so one that gives
// less than asked while bytes remain ends at a packet boundary.
func (d *dumper) readScratch(c *capture, n int) error {
	c.chunks = c.chunks[:0]
	off := 0
	for off < n {
		want := min(n-off, format.MaxBuffer)
		m, err := unix.Read(d.scratch[0], d.buf[off:off+want])
		if err == unix.EINTR {
			continue
		}
		if err != nil {
			return err
		}
		if m <= 0 {
			return fmt.Errorf("read %d bytes of %d", off, n)
		}
		off += m
		c.chunks = append(c.chunks, chunk{n: m, packet: m < want})
	}
	c.data = d.buf[:n]
	return nil
}

// ensureScratch makes the scratch pipe hold at least size bytes (as many
// slots as the source has). It only grows.
func (d *dumper) ensureScratch(size int) error {
	if d.scratch[0] < 0 {
		var p [2]int
		if err := unix.Pipe2(p[:], unix.O_CLOEXEC|unix.O_NONBLOCK); err != nil {
			return err
		}
		d.scratch = p
		n, err := unix.FcntlInt(uintptr(p[1]), unix.F_GETPIPE_SZ, 0)
		if err != nil {
			return err
		}
		d.scrSize = n
	}
	if d.scrSize >= size {
		return nil
	}
	n, err := unix.FcntlInt(uintptr(d.scratch[1]), unix.F_SETPIPE_SZ, size)
	if err != nil {
		return err
	}
	d.scrSize = n
	return nil
}

func (d *dumper) resetScratch() {
	for i, fd := range d.scratch {
		if fd >= 0 {
			unix.Close(fd)
		}
		d.scratch[i] = -1
	}
	d.scrSize = 0
}
