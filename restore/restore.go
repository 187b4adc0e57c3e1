// Package restore rebuilds the pipes and FIFOs of a pipesnap snapshot and
// hands them to a command: the fds one task held, at the same numbers, or
// the read end of one pipe. It needs no BPF, and no root unless the
// snapshot does (a pipe larger than /proc/sys/fs/pipe-max-size).
//
// Build creates every pipe once, as the Linux-CR restart did with the
// objref table: the first fd that names a pipe creates it, sets its
// capacity and refills it; the other end waits in the table for the fd
// that names it. Fds that shared one open file in the task share one in
// the command. Set.Start then runs the command with the fds in place.
package restore

import (
	"errors"
	"fmt"
	"os"
	"slices"
	"strconv"
	"strings"

	"golang.org/x/sys/unix"

	"github.com/pipesnap/pipesnap/format"
	"github.com/pipesnap/pipesnap/snapshot"
)

// Options says what to restore and how.
type Options struct {
	// Exactly one of PID and Ino.
	PID uint32 // every pipe fd task PID held, at the same fd numbers
	Ino uint64 // one pipe: its read end only, at fd As
	As  int    // with Ino: the command's fd number for the read end (0: stdin)

	// Root is the directory FIFOs are recreated under, at their captured
	// path. With PID it is required when the task held a FIFO; with Ino a
	// FIFO without Root is replayed through an anonymous pipe.
	Root string

	// KeepWriter keeps a write end of every pipe whose write end the
	// command does not get open in the restorer until the command exits,
	// so that its reader does not see EOF after the bytes.
	KeepWriter bool

	// KeepCloexec (with PID) also hands over the fds that were
	// close-on-exec. By default they are dropped, as the exec of a task
	// would drop them; handed over, they arrive without the flag.
	KeepCloexec bool

	// AllowPartial restores pipes marked torn or incomplete, and pipes
	// whose bytes do not all fit back, with a warning.
	AllowPartial bool

	// Warn receives warnings (one line each, no trailing newline).
	Warn func(msg string)
}

// Errors to test with errors.Is.
var (
	ErrNoTask   = errors.New("no such process in the snapshot")
	ErrPartial  = errors.New("its bytes may not be all it held")
	ErrNeedRoot = errors.New("no root directory to recreate it under")
	ErrEscape   = errors.New("could lead out of the root directory")
	ErrNotFit   = errors.New("the bytes do not fit in the new pipe")
)

// maxFD bounds the fd numbers the command gets: the plan is a table
// indexed by fd number.
const maxFD = 1 << 20

// Status flags restored with F_SETFL; the others (O_LARGEFILE, ...) come
// from how the file is opened.
const settable = unix.O_NONBLOCK | unix.O_DIRECT | unix.O_APPEND

// FD is one fd the command gets.
type FD struct {
	Num     int    // fd number in the command
	Ino     uint64 // inode of the captured pipe
	NewIno  uint64 // inode of the restored pipe
	End     string // "read", "write", "rdwr" or "none" (O_PATH)
	Flags   int    // access mode and status flags of the open file
	Cloexec bool   // the fd was close-on-exec in the task
	Path    string // a FIFO's path as recreated (under Root), else ""

	src  int // the restorer's fd for it (close-on-exec)
	file int // identifies the open file: fds that shared one share this
}

// Set is a restored fd table, ready for Start.
type Set struct {
	fds     []FD
	dropped []int // close-on-exec fds not handed over
	owned   fdSet // every fd the restorer holds (all close-on-exec)
	keep    fdSet // held until the command exits (KeepWriter)
	started bool
}

// FDs returns the fds the command gets, in the order the snapshot has
// them.
func (s *Set) FDs() []FD { return slices.Clone(s.fds) }

// Dropped returns the fds that were close-on-exec and are not handed
// over (see Options.KeepCloexec).
func (s *Set) Dropped() []int { return slices.Clone(s.dropped) }

// Close closes the restorer's fds. FIFOs created under Root stay.
func (s *Set) Close() error {
	s.owned.closeRuns(func(int) bool { return false })
	s.keep = fdSet{}
	return nil
}

// Build rebuilds the pipes opt selects and returns them as fds for
// Start. On error nothing is left behind: no fd, no FIFO.
func Build(snap *snapshot.Snapshot, opt Options) (_ *Set, err error) {
	b := &builder{opt: opt, set: &Set{}}
	defer func() {
		if err != nil {
			for i := len(b.undo) - 1; i >= 0; i-- {
				b.undo[i]()
			}
			b.set.Close()
		}
		for _, f := range b.after {
			f()
		}
	}()
	want, err := b.selectFDs(snap)
	if err != nil {
		return nil, err
	}
	b.pipes = make(map[*snapshot.Pipe]*pipe, len(want))
	b.files = make(map[int32]openFile, len(want))
	if err := b.check(want); err != nil {
		return nil, err
	}
	reserveFDs(fdsNeeded(want))
	for _, w := range want {
		if err := b.place(w); err != nil {
			return nil, err
		}
	}
	if err := b.finish(); err != nil {
		return nil, err
	}
	return b.set, nil
}

// wanted is one fd to hand over, as the snapshot describes it.
type wanted struct {
	num     int
	p       *snapshot.Pipe
	mode    uint32 // format.ModeRead | format.ModeWrite
	flags   uint32
	cloexec bool
	fileRef int32 // 0: an open file of its own
}

// openFile is an open file made for the command.
type openFile struct {
	src   int // the restorer's fd
	flags int // its F_GETFL
}

type builder struct {
	opt   Options
	set   *Set
	pipes map[*snapshot.Pipe]*pipe
	files map[int32]openFile // by file objref
	order []*pipe
	undo  []func() // removes what was created, if Build fails
	after []func() // runs when Build returns
}

// undoAt arranges for dir/name to be removed if Build fails.
func (b *builder) undoAt(dir int, name string, flags int) {
	d, err := unix.FcntlInt(uintptr(dir), unix.F_DUPFD_CLOEXEC, 0)
	if err != nil {
		return
	}
	b.undo = append(b.undo, func() { unix.Unlinkat(d, name, flags) })
	b.after = append(b.after, func() { unix.Close(d) })
}

func (b *builder) warn(format string, args ...any) {
	if b.opt.Warn != nil {
		b.opt.Warn(fmt.Sprintf(format, args...))
	}
}

func (b *builder) selectFDs(snap *snapshot.Snapshot) ([]wanted, error) {
	switch {
	case (b.opt.PID == 0) == (b.opt.Ino == 0):
		return nil, errors.New("restore: give either a pid or a pipe inode")
	case b.opt.As < 0 || b.opt.As >= maxFD:
		return nil, fmt.Errorf("restore: fd %d: out of range (0 to %d)", b.opt.As, maxFD-1)
	}
	if b.opt.Ino != 0 {
		p, err := snap.Find(b.opt.Ino)
		if err != nil {
			return nil, err
		}
		// The read end, with the status flags of the first read end the
		// snapshot has (O_NONBLOCK, O_DIRECT), or none.
		var flags uint32
	find:
		for _, t := range snap.Tasks {
			for _, fd := range t.FDs {
				if fd.Pipe == p && (fd.End == "read" || fd.End == "rdwr") {
					flags = fd.Flags
					break find
				}
			}
		}
		return []wanted{{num: b.opt.As, p: p, mode: format.ModeRead, flags: flags}}, nil
	}

	var want []wanted
	var seen fdSet
	found := false
	for _, t := range snap.Tasks {
		if t.PID != b.opt.PID {
			continue
		}
		found = true // a process may have several sections (threads): one fd table
		for _, fd := range t.FDs {
			if fd.FD >= maxFD {
				return nil, fmt.Errorf("pid %d fd %d: fd numbers above %d are not restored", t.PID, fd.FD, maxFD-1)
			}
			if seen.has(int(fd.FD)) {
				continue
			}
			seen.add(int(fd.FD))
			if fd.Cloexec && !b.opt.KeepCloexec {
				b.set.dropped = append(b.set.dropped, int(fd.FD))
				continue
			}
			want = append(want, wanted{
				num: int(fd.FD), p: fd.Pipe, mode: modeOf(fd.End), flags: fd.Flags,
				cloexec: fd.Cloexec, fileRef: fd.FileRef,
			})
		}
	}
	if !found {
		return nil, fmt.Errorf("pid %d: %w", b.opt.PID, ErrNoTask)
	}
	return want, nil
}

func modeOf(end string) uint32 {
	switch end {
	case "read":
		return format.ModeRead
	case "write":
		return format.ModeWrite
	case "rdwr":
		return format.ModeRead | format.ModeWrite
	}
	return 0
}

// check refuses, before anything is created, what cannot be restored.
func (b *builder) check(want []wanted) error {
	done := make(map[*snapshot.Pipe]bool, len(want))
	for _, w := range want {
		p := w.p
		if done[p] {
			continue
		}
		done[p] = true
		if !p.Complete() {
			what := partialName(p)
			if !b.opt.AllowPartial {
				return fmt.Errorf("pipe %d is %s: %w", p.Ino, what, ErrPartial)
			}
			b.warn("pipe %d is %s: restoring the %d bytes captured; they may not be all it held", p.Ino, what, p.Bytes)
		}
		if p.Kind != format.KindFIFO {
			continue
		}
		switch {
		case p.Path == "":
			b.warn("fifo %d: its path is unknown: restored as an anonymous pipe", p.Ino)
		case b.opt.Root == "" && b.opt.PID != 0:
			return fmt.Errorf("pipe %d is a fifo at %s: %w", p.Ino, p.Path, ErrNeedRoot)
		case b.opt.Root != "":
			if _, err := splitPath(p.Path); err != nil {
				return fmt.Errorf("fifo %d at %q: %w", p.Ino, p.Path, err)
			}
		}
	}
	return nil
}

// fdsNeeded is about how many fds Build holds for want: one per open
// file (fds sharing one count once), plus the ends of each pipe that no
// read-only or write-only file takes over.
func fdsNeeded(want []wanted) int {
	n := 0
	files := make(map[int32]bool, len(want))
	taken := make(map[*snapshot.Pipe]uint32, len(want)) // modes whose end pipe2 made is taken
	for _, w := range want {
		if w.fileRef != 0 && files[w.fileRef] {
			continue
		}
		files[w.fileRef] = true
		n++
		t, ok := taken[w.p]
		if !ok {
			n += 2
		}
		if (w.mode == format.ModeRead || w.mode == format.ModeWrite) && t&w.mode == 0 {
			t |= w.mode
			n--
		}
		taken[w.p] = t
	}
	return n
}

func partialName(p *snapshot.Pipe) string {
	var what []string
	if p.Status&format.StatusTorn != 0 {
		what = append(what, "torn")
	}
	if p.Status&format.StatusIncomplete != 0 {
		what = append(what, "incomplete")
	}
	s := strings.Join(what, " and ")
	if p.Reason != format.ReasonNone {
		s += " (" + p.Reason.String() + ")"
	}
	return s
}

// place creates (or finds) the open file w names and adds it to the set.
func (b *builder) place(w wanted) error {
	pp, err := b.pipe(w.p)
	if err != nil {
		return err
	}
	fd := FD{Num: w.num, Ino: w.p.Ino, NewIno: pp.newIno, End: snapshot.EndName(w.mode), Cloexec: w.cloexec, Path: pp.path}
	if f, ok := b.files[w.fileRef]; ok && w.fileRef != 0 {
		fd.src, fd.file, fd.Flags = f.src, f.src, f.flags
		b.set.fds = append(b.set.fds, fd)
		return nil
	}
	src, err := pp.open(w.mode, b.set)
	if err != nil {
		return fmt.Errorf("pipe %d: opening the %s end for fd %d: %w", w.p.Ino, fd.End, w.num, err)
	}
	flags := getfl(src)
	if fl := flags&^settable | int(w.flags)&settable; w.mode != 0 && fl != flags {
		if err := setfl(src, fl); err != nil {
			return fmt.Errorf("pipe %d: setting the flags %#x of fd %d: %w", w.p.Ino, w.flags, w.num, err)
		}
		// F_SETFL sets exactly the bits of its mask (settable is part of
		// it) and leaves the others: F_GETFL would now return fl.
		flags = fl
	}
	if w.fileRef != 0 {
		b.files[w.fileRef] = openFile{src, flags}
	}
	fd.src, fd.file, fd.Flags = src, src, flags
	b.set.fds = append(b.set.fds, fd)
	if w.mode&format.ModeWrite != 0 {
		pp.cmdWrites = true
	}
	return nil
}

// pipe returns the restored pipe for p, creating it on first use.
func (b *builder) pipe(p *snapshot.Pipe) (*pipe, error) {
	if pp, ok := b.pipes[p]; ok {
		return pp, nil
	}
	asFIFO := p.Kind == format.KindFIFO && p.Path != "" && b.opt.Root != ""
	pp, err := newPipe(p, asFIFO, b.opt.Root, b)
	if err != nil {
		return nil, err
	}
	b.pipes[p] = pp
	b.order = append(b.order, pp)
	if err := pp.setCapacity(b.warn); err != nil {
		return nil, err
	}
	if err := pp.refill(b.warn); err != nil {
		if !errors.Is(err, ErrNotFit) || !b.opt.AllowPartial {
			return nil, err
		}
		b.warn("%v; continuing with what fit", err)
	}
	return pp, nil
}

// finish keeps the write ends KeepWriter asks for and closes the ends
// nobody takes, so that the command sees EOF (no writer) or EPIPE (no
// reader) where the task would have.
func (b *builder) finish() error {
	for _, pp := range b.order {
		if b.opt.KeepWriter && !pp.cmdWrites {
			fd, err := pp.writer(b.set)
			if err != nil {
				return fmt.Errorf("pipe %d: keeping a write end: %w", pp.snap.Ino, err)
			}
			b.set.keep.add(fd)
		}
		pp.closeSpare(b.set)
	}
	return nil
}

func getfl(fd int) int {
	fl, err := unix.FcntlInt(uintptr(fd), unix.F_GETFL, 0)
	if err != nil {
		return 0
	}
	return fl
}

func setfl(fd, flags int) error {
	_, err := unix.FcntlInt(uintptr(fd), unix.F_SETFL, flags)
	return err
}

// own records an fd of the restorer's.
func (s *Set) own(fd int) { s.owned.add(fd) }

// release closes one of the restorer's fds.
func (s *Set) release(fd int) {
	if s.owned.remove(fd) {
		unix.Close(fd)
	}
}

// procFD is the /proc path that reopens fd as a new open file.
func procFD(fd int) string { return "/proc/self/fd/" + strconv.Itoa(fd) }

// readLimit reads a number from a /proc/sys file, 0 if it cannot.
func readLimit(path string) int {
	b, err := os.ReadFile(path)
	if err != nil {
		return 0
	}
	n, _ := strconv.Atoi(strings.TrimSpace(string(b)))
	return n
}
