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
	"math"
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
	// KeepStdio (with PID) leaves the command's own fds 0, 1 and 2 in
	// place: the task's pipes at those numbers are not restored.
	KeepStdio bool

	// AllowPartial restores pipes marked torn or incomplete, and pipes
	// whose bytes do not all fit back, with a warning.
	AllowPartial bool

	// MaxKernelMemory bounds the kernel memory, in bytes, the restored
	// pipes pin: the pages their bytes take (a page per packet however
	// small) and their rings. Build refuses, before creating anything, a
	// restore that would pin more (ErrKernelMemory). 0: the default,
	// DefaultKernelMemory or twice the bytes restored, whichever is
	// more; negative: no bound.
	MaxKernelMemory int64

	// Warn receives warnings (one line each, no trailing newline), once
	// Build is done (it returns): a warning repeated for many pipes or
	// buffers comes as one line, with a count and the first few.
	Warn func(msg string)
}

// DefaultKernelMemory is the kernel memory a restore may pin by default
// (see Options.MaxKernelMemory) whatever it restores: 64 MiB, what the
// kernel lets an unprivileged user's pipes take before it shrinks them
// (fs.pipe-user-pages-soft, 16384 pages of 4 KiB), a bound root does not
// otherwise have. Beyond it, a restore may pin twice the bytes it
// restores: a snapshot of full pipes is restored, one of 1-byte packets
// (a page each, 4096 times their size) is not.
const DefaultKernelMemory = 64 << 20

// Errors to test with errors.Is.
var (
	ErrNoTask   = errors.New("no such process in the snapshot")
	ErrPartial  = errors.New("its bytes may not be all it held")
	ErrNeedRoot = errors.New("no root directory to recreate it under")
	ErrEscape   = errors.New("could lead out of the root directory")
	ErrNotFit   = errors.New("the bytes do not fit in the new pipe")
	ErrFDLimit  = errors.New("the limit on fd numbers (RLIMIT_NOFILE)")
	ErrCapacity = errors.New("not a capacity a pipe can have")

	// ErrKernelMemory is what a *KernelMemoryError is.
	ErrKernelMemory = errors.New("more kernel memory than allowed")
)

// KernelMemoryError is a restore refused for the kernel memory it would
// pin (see Options.MaxKernelMemory).
type KernelMemoryError struct {
	Need    int64  // bytes of kernel memory the pipes would pin, about
	Limit   int64  // what was allowed
	Default bool   // Limit is the default bound
	Pipes   int    // pipes to restore
	Bytes   uint64 // their bytes
	Pages   uint64 // pages their bytes would take
	Slots   uint64 // slots of their rings
	Most    uint64 // inode of the pipe that would pin the most
	MostKB  int64  // what it would pin, KiB
}

func (e *KernelMemoryError) Error() string {
	s := fmt.Sprintf("%d %s would pin about %s of kernel memory (%d pages for %d bytes, rings of %d slots; the most, pipe %d: %s), more than the %s allowed",
		e.Pipes, plural(e.Pipes, "pipe", "pipes"), mib(e.Need), e.Pages, e.Bytes, e.Slots, e.Most, mib(e.MostKB<<10), mib(e.Limit))
	if e.Default {
		s += " (by default " + mib(DefaultKernelMemory) + " or twice the bytes restored, whichever is more)"
	}
	return s
}

func (e *KernelMemoryError) Is(target error) bool { return target == ErrKernelMemory }

// mib writes n bytes in MiB, rounded up to a tenth.
func mib(n int64) string {
	return strconv.FormatFloat(float64((n*10+(1<<20)-1)>>20)/10, 'f', -1, 64) + " MiB"
}

func plural(n int, one, many string) string {
	if n == 1 {
		return one
	}
	return many
}

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
	fds       []FD
	dropped   []int // close-on-exec fds not handed over
	keptStdio []int // fds 0-2 left as the command's own (KeepStdio)
	keepWrite bool  // KeepWriter: every pipe has a writer
	owned     fdSet // every fd the restorer holds (all close-on-exec)
	keep      fdSet // held until the command exits (KeepWriter)
	started   bool
}

// FDs returns the fds the command gets, in the order the snapshot has
// them.
func (s *Set) FDs() []FD { return slices.Clone(s.fds) }

// Dropped returns the fds that were close-on-exec and are not handed
// over (see Options.KeepCloexec).
func (s *Set) Dropped() []int { return slices.Clone(s.dropped) }

// KeptStdio returns the fds 0-2 the task had pipes at that the command
// keeps as its own (Options.KeepStdio).
func (s *Set) KeptStdio() []int { return slices.Clone(s.keptStdio) }

// Stdio is what one of the command's fds 0-2 leads to when it is a
// restored pipe end that nothing on the other side serves.
type Stdio struct {
	FD
	// NoReader: a write end whose pipe the command does not read: the
	// task's reader was another task; writes get EPIPE (and SIGPIPE).
	// Otherwise a read end with no writer: the captured bytes, then EOF.
	NoReader bool
}

// Nowhere lists the command's fds 0-2 that are pipe ends with nothing on
// the other side: a write end no one reads, a read end no one writes.
func (s *Set) Nowhere() []Stdio {
	reads, writes := map[uint64]bool{}, map[uint64]bool{}
	for _, fd := range s.fds {
		if fd.End == "read" || fd.End == "rdwr" {
			reads[fd.Ino] = true
		}
		if fd.End == "write" || fd.End == "rdwr" {
			writes[fd.Ino] = true
		}
	}
	var out []Stdio
	for _, fd := range s.fds {
		if fd.Num > 2 || fd.Path != "" {
			continue // a FIFO can be opened again by name
		}
		switch {
		case fd.End == "write" && !reads[fd.Ino]:
			out = append(out, Stdio{FD: fd, NoReader: true})
		case fd.End == "read" && !writes[fd.Ino] && !s.keepWrite:
			out = append(out, Stdio{FD: fd})
		}
	}
	return out
}

// Close closes the restorer's fds. FIFOs created under Root stay.
func (s *Set) Close() error {
	s.owned.closeRuns(func(int) bool { return false })
	s.keep = fdSet{}
	return nil
}

// Build rebuilds the pipes opt selects and returns them as fds for
// Start. On error nothing is left behind: no fd, no FIFO.
func Build(snap *snapshot.Snapshot, opt Options) (_ *Set, err error) {
	b := &builder{opt: opt, set: &Set{keepWrite: opt.KeepWriter}, warns: warnings{out: opt.Warn}}
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
		b.warns.flush()
	}()
	if err := b.checkTopFD(snap); err != nil {
		return nil, err
	}
	want, err := b.selectFDs(snap)
	if err != nil {
		return nil, err
	}
	if err := b.checkFDCount(want); err != nil {
		return nil, err
	}
	b.pipes = make(map[*snapshot.Pipe]*pipe, len(want))
	b.files = make(map[int32]openFile, len(want))
	b.plans = make(map[*snapshot.Pipe]*plan, len(want))
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
	plans map[*snapshot.Pipe]*plan // made by check, before any pipe
	files map[int32]openFile       // by file objref
	order []*pipe
	undo  []func() // removes what was created, if Build fails
	after []func() // runs when Build returns
	warns warnings
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

// warn adds a warning about pipe ino; kind tells which warnings are
// the same but for the pipe (repeated, they make one line).
func (b *builder) warn(kind string, ino uint64, format string, args ...any) {
	b.warns.add(kind, strconv.FormatUint(ino, 10), fmt.Sprintf(format, args...))
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
		flags := p.ReadFlags
		if !p.HasReadEnd {
			flags = 0
		find:
			for _, t := range snap.Tasks { // a snapshot not made by snapshot.Read
				for _, fd := range t.FDs {
					if fd.Pipe == p && (fd.End == "read" || fd.End == "rdwr") {
						flags = fd.Flags
						break find
					}
				}
			}
		}
		return []wanted{{num: b.opt.As, p: p, mode: format.ModeRead, flags: flags}}, nil
	}

	var want []wanted
	var seen fdSet
	sections := 0
	for _, t := range snap.Tasks {
		if t.PID == b.opt.PID {
			sections++
		}
	}
	// A process may have several sections (threads), which share one fd
	// table or have tables of their own: an fd number they all have
	// must name the same open file in each.
	var fileOf map[int32]int32
	if sections > 1 {
		fileOf = make(map[int32]int32)
	}
	for _, t := range snap.Tasks {
		if t.PID != b.opt.PID {
			continue
		}
		for _, fd := range t.FDs {
			if fd.FD >= maxFD {
				return nil, fmt.Errorf("pid %d fd %d: fd numbers above %d are not restored", t.PID, fd.FD, maxFD-1)
			}
			if seen.has(int(fd.FD)) {
				if ref, ok := fileOf[fd.FD]; !ok || ref != fd.FileRef {
					return nil, fmt.Errorf("pid %d fd %d: the snapshot gives it twice, as two open files (threads with fd tables of their own?): the command can get only one", t.PID, fd.FD)
				}
				continue
			}
			seen.add(int(fd.FD))
			if fileOf != nil {
				fileOf[fd.FD] = fd.FileRef
			}
			if fd.Cloexec && !b.opt.KeepCloexec {
				b.set.dropped = append(b.set.dropped, int(fd.FD))
				continue
			}
			if b.opt.KeepStdio && fd.FD <= 2 {
				b.set.keptStdio = append(b.set.keptStdio, int(fd.FD))
				continue
			}
			want = append(want, wanted{
				num: int(fd.FD), p: fd.Pipe, mode: modeOf(fd.End), flags: fd.Flags,
				cloexec: fd.Cloexec, fileRef: fd.FileRef,
			})
		}
	}
	if sections == 0 {
		return nil, fmt.Errorf("pid %d: %w", b.opt.PID, ErrNoTask)
	}
	return want, nil
}

// checkTopFD refuses, before anything is made, fd numbers the command
// could not get: at or above RLIMIT_NOFILE once the soft limit is raised
// as far as the hard one lets it (only if a number needs it; the command
// then inherits the raised limit), or so close to it that Start could
// not put them in place (checkRoom).
func (b *builder) checkTopFD(snap *snapshot.Snapshot) error {
	top, who := b.opt.As, fmt.Sprintf("pipe %d", b.opt.Ino)
	if b.opt.PID != 0 {
		top, who = -1, fmt.Sprintf("pid %d", b.opt.PID)
		for _, t := range snap.Tasks {
			if t.PID != b.opt.PID {
				continue
			}
			for _, fd := range t.FDs {
				if int(fd.FD) > top && (!fd.Cloexec || b.opt.KeepCloexec) {
					top = int(fd.FD)
				}
			}
		}
	}
	if top < 0 || top >= maxFD {
		return nil // nothing to hand over; or selectFDs says why not
	}
	lim, err := nofile(uint64(top) + 3)
	switch {
	case err != nil:
		return nil // unknown: the fds are made or fail one by one
	case uint64(top) >= lim.Cur:
		return fmt.Errorf("%s fd %d: at or above %w, %d (hard limit %d): the command could not be given it", who, top, ErrFDLimit, lim.Cur, lim.Max)
	case uint64(top)+2 >= lim.Cur:
		return fmt.Errorf("%s fd %d: within 2 of %w, %d (hard limit %d): putting it in place for the command takes fd numbers above it", who, top, ErrFDLimit, lim.Cur, lim.Max)
	}
	return nil
}

// checkFDCount refuses a restore that would hold more fds at once than
// RLIMIT_NOFILE leaves, before anything is made.
func (b *builder) checkFDCount(want []wanted) error {
	need := uint64(fdsNeeded(want))
	if need < 32 {
		return nil
	}
	lim, err := nofile(need)
	if err != nil {
		return nil
	}
	if n := uint64(openFDs()); n+need > lim.Cur {
		return fmt.Errorf("restoring %d fds holds about %d at once, with the %d open already more than %w allows, %d (hard limit %d)", len(want), need, n, ErrFDLimit, lim.Cur, lim.Max)
	}
	return nil
}

// nofile returns RLIMIT_NOFILE, its soft limit first raised to the hard
// one if it is below need.
func nofile(need uint64) (unix.Rlimit, error) {
	var lim unix.Rlimit
	if err := unix.Getrlimit(unix.RLIMIT_NOFILE, &lim); err != nil {
		return lim, err
	}
	if lim.Cur < need && lim.Cur < lim.Max {
		raised := unix.Rlimit{Cur: lim.Max, Max: lim.Max}
		if unix.Setrlimit(unix.RLIMIT_NOFILE, &raised) == nil {
			lim = raised
		}
	}
	return lim, nil
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

// check refuses, before anything is created, what cannot be restored,
// and plans each pipe's capacity.
func (b *builder) check(want []wanted) error {
	page := uint64(os.Getpagesize())
	var total memory
	var bytes uint64
	var most *snapshot.Pipe
	var mostMem uint64
	for _, w := range want {
		p := w.p
		if b.plans[p] != nil {
			continue
		}
		pl, err := planPipe(p, page)
		if err != nil {
			return err
		}
		b.plans[p] = pl
		if m := pl.mem.bytes(page); most == nil || m > mostMem {
			most, mostMem = p, m
		}
		total.pages += pl.mem.pages
		total.slots += pl.mem.slots
		bytes += p.Bytes
		if !p.Complete() {
			what := partialName(p)
			if !b.opt.AllowPartial {
				return fmt.Errorf("pipe %d is %s: %w", p.Ino, what, ErrPartial)
			}
			b.warn("partial", p.Ino, "pipe %d is %s: restoring the %d bytes captured; they may not be all it held", p.Ino, what, p.Bytes)
		}
		if pl.packets > 0 && pl.plain > 0 {
			b.warn("mixed packets", p.Ino, "pipe %d: packets (O_DIRECT) in %d of its buffers, plain bytes in %d: each packet is restored as one, the plain bytes as plain bytes, which a read(2) reads across as it would have but which may take fewer buffers", p.Ino, pl.packets, pl.plain)
		}
		if p.Kind != format.KindFIFO {
			continue
		}
		switch {
		case p.Path == "":
			b.warn("fifo no path", p.Ino, "fifo %d: its path is unknown: restored as an anonymous pipe", p.Ino)
		case b.opt.Root == "" && b.opt.PID != 0:
			return fmt.Errorf("pipe %d is a fifo at %s: %w", p.Ino, p.Path, ErrNeedRoot)
		case b.opt.Root != "":
			if _, err := splitPath(p.Path); err != nil {
				return fmt.Errorf("fifo %d at %q: %w", p.Ino, p.Path, err)
			}
		}
	}
	limit := b.opt.MaxKernelMemory
	if limit == 0 {
		limit = max(DefaultKernelMemory, int64(min(bytes, math.MaxInt64/2))*2)
	}
	if need := total.bytes(page); limit > 0 && need > uint64(limit) {
		return &KernelMemoryError{
			Need: int64(min(need, math.MaxInt64)), Limit: limit, Default: b.opt.MaxKernelMemory == 0, Pipes: len(b.plans), Bytes: bytes,
			Pages: total.pages, Slots: total.slots, Most: most.Ino, MostKB: int64(min(mostMem>>10, math.MaxInt64>>10)),
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
	if err := pp.setCapacity(b.plans[p], b.warn); err != nil {
		return nil, err
	}
	if err := pp.refill(b.warn); err != nil {
		if !errors.Is(err, ErrNotFit) || !b.opt.AllowPartial {
			return nil, err
		}
		b.warn("not fit", p.Ino, "%v; continuing with what fit", err)
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

// openFDs counts this process's open fds (ReadDir's own included), 0 if
// it cannot.
func openFDs() int {
	ents, _ := os.ReadDir("/proc/self/fd")
	return len(ents)
}

// readLimit reads a number from a /proc/sys file, 0 if it cannot.
func readLimit(path string) int {
	b, err := os.ReadFile(path)
	if err != nil {
		return 0
	}
	n, _ := strconv.Atoi(strings.TrimSpace(string(b)))
	return n
}
