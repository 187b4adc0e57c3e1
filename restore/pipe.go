package restore

import (
	"errors"
	"fmt"
	"os"

	"golang.org/x/sys/unix"

	"github.com/pipesnap/pipesnap/format"
	"github.com/pipesnap/pipesnap/snapshot"
)

// pipe is one restored pipe or FIFO and the restorer's ends of it.
type pipe struct {
	snap   *snapshot.Pipe
	fifo   bool
	path   string // a FIFO's path as recreated
	newIno uint64
	size   int // capacity, bytes

	// Anonymous pipe: the two ends pipe2 made; an end is taken when it
	// becomes a file of the command's (later files are reopened).
	r, w           int
	rTaken, wTaken bool
	// FIFO: the O_RDWR open the refill goes through; the command's files
	// are reopened from it, so the path is resolved once.
	rw int

	cmdWrites bool // the command gets a write end
}

func newPipe(p *snapshot.Pipe, asFIFO bool, root string, b *builder) (*pipe, error) {
	pp := &pipe{snap: p, fifo: asFIFO, r: -1, w: -1, rw: -1}
	if asFIFO {
		fd, where, err := makeFIFO(root, p.Path, b)
		if err != nil {
			return nil, fmt.Errorf("fifo %d: %w", p.Ino, err)
		}
		pp.rw, pp.path = fd, where
		b.set.own(fd)
	} else {
		// Non-blocking, as the refill needs; place gives each end the
		// captured flags.
		var fds [2]int
		if err := unix.Pipe2(fds[:], unix.O_CLOEXEC|unix.O_NONBLOCK); err != nil {
			return nil, fmt.Errorf("pipe %d: creating a pipe: %w", p.Ino, err)
		}
		pp.r, pp.w = fds[0], fds[1]
		b.set.own(pp.r)
		b.set.own(pp.w)
	}
	var st unix.Stat_t
	if err := unix.Fstat(pp.writeEnd(), &st); err != nil {
		return nil, fmt.Errorf("pipe %d: %w", p.Ino, err)
	}
	pp.newIno = st.Ino
	return pp, nil
}

// writeEnd is the restorer's fd that writes into the pipe.
func (pp *pipe) writeEnd() int {
	if pp.fifo {
		return pp.rw
	}
	return pp.w
}

// open returns a new open file of the pipe with the given mode for the
// command (close-on-exec in the restorer).
func (pp *pipe) open(mode uint32, set *Set) (int, error) {
	if !pp.fifo {
		switch mode {
		case format.ModeRead:
			if !pp.rTaken {
				pp.rTaken = true
				return pp.r, nil
			}
			return reopen(pp.r, unix.O_RDONLY, set)
		case format.ModeWrite:
			if !pp.wTaken {
				pp.wTaken = true
				return pp.w, nil
			}
			return reopen(pp.w, unix.O_WRONLY, set)
		}
		return reopen(pp.r, accmode(mode), set)
	}
	return reopen(pp.rw, accmode(mode), set)
}

func accmode(mode uint32) int {
	switch mode {
	case format.ModeRead:
		return unix.O_RDONLY
	case format.ModeWrite:
		return unix.O_WRONLY
	case format.ModeRead | format.ModeWrite:
		return unix.O_RDWR
	}
	return unix.O_PATH
}

// reopen opens a new file on the pipe fd is on, through /proc/self/fd:
// this works for anonymous pipes as for FIFOs, and never blocks here
// since the restorer holds both ends while it builds.
func reopen(fd, acc int, set *Set) (int, error) {
	flags := acc | unix.O_CLOEXEC
	if acc != unix.O_PATH {
		flags |= unix.O_NONBLOCK // place sets the captured flags afterwards
	}
	nfd, err := unix.Open(procFD(fd), flags, 0)
	if err != nil {
		return -1, fmt.Errorf("reopening it through %s: %w", procFD(fd), err)
	}
	set.own(nfd)
	return nfd, nil
}

// writer returns a write end for the restorer to keep.
func (pp *pipe) writer(set *Set) (int, error) {
	if !pp.fifo && !pp.wTaken {
		pp.wTaken = true
		return pp.w, nil
	}
	return reopen(pp.writeEnd(), unix.O_WRONLY, set)
}

// closeSpare closes the restorer's ends that no one takes.
func (pp *pipe) closeSpare(set *Set) {
	if pp.fifo {
		set.release(pp.rw)
		return
	}
	if !pp.rTaken {
		set.release(pp.r)
	}
	if !pp.wTaken {
		set.release(pp.w)
	}
}

// plan is what check works out for a pipe before anything is created:
// the capacity to give it and the kernel memory it will pin.
type plan struct {
	want    uint64 // captured capacity, bytes
	need    uint64 // what its buffers need in this machine's pages
	size    uint64 // capacity to set: max(want, need); 0 leaves a new pipe's
	mem     memory
	packets int // non-empty packet buffers
	plain   int // non-empty plain buffers, in a pipe with packets
}

// memory is kernel memory that pipes pin: pages holding their bytes and
// the slots of their rings (a struct pipe_buffer each).
type memory struct {
	pages, slots uint64
}

// slotSize is sizeof(struct pipe_buffer) on 64-bit kernels.
const slotSize = 40

func (m memory) bytes(page uint64) uint64 { return m.pages*page + m.slots*slotSize }

// maxCapacity is the largest capacity Linux gives a pipe (round_pipe_size
// refuses more than 2^31 bytes).
const maxCapacity = 1 << 31

// defSlots is the ring size of a new pipe (PIPE_DEF_BUFFERS).
const defSlots = 16

// planPipe works out p's capacity, in uint64 so that nothing wraps:
// F_SETPIPE_SZ takes an unsigned int, and the kernel would read 2^32 as
// 0 and give the pipe a page.
func planPipe(p *snapshot.Pipe, page uint64) (*plan, error) {
	pl := &plan{want: uint64(p.Capacity)}
	derived := uint64(p.MaxUsage) * uint64(p.PageSize)
	switch {
	case pl.want == 0:
		pl.want = derived
	case derived != 0 && derived != pl.want:
		return nil, fmt.Errorf("pipe %d: capacity %d bytes, but max_usage %d x page_size %d is %d: the snapshot contradicts itself: %w",
			p.Ino, pl.want, p.MaxUsage, p.PageSize, derived, ErrCapacity)
	}
	if pl.want > maxCapacity {
		return nil, fmt.Errorf("pipe %d: a capacity of %d bytes (max_usage %d x page_size %d), more than a Linux pipe can have (%d): %w",
			p.Ino, pl.want, p.MaxUsage, p.PageSize, maxCapacity, ErrCapacity)
	}
	// Each buffer in pages of its own, as the capture had them.
	for _, b := range p.Buffers {
		pl.need += (uint64(b.Len) + page - 1) / page * page
	}
	if pl.need > maxCapacity {
		return nil, fmt.Errorf("pipe %d: its %d buffers need %d bytes of capacity in %d-byte pages, more than a Linux pipe can have (%d): %w",
			p.Ino, len(p.Buffers), pl.need, page, maxCapacity, ErrCapacity)
	}
	pl.size = max(pl.want, pl.need)

	// The kernel rounds a capacity up to a power of two pages.
	pl.mem.slots = defSlots
	if pl.size > 0 {
		pl.mem.slots = 1
		for pl.mem.slots*page < pl.size {
			pl.mem.slots *= 2
		}
	}
	// The pages refill fills, write by write as refill makes them: a
	// write of n bytes takes at most n/page pages rounded up (a packet
	// write one per page it spans, an empty packet none; a plain one may
	// take fewer, topping up the page before).
	allPackets := allPacketBuffers(p)
	var call uint64 // bytes of the writev being gathered
	n := 0          // its buffers
	direct := false // the last write was a packet's
	flush := func() {
		pl.mem.pages += (call + page - 1) / page
		call, n = 0, 0
	}
	for _, b := range p.Buffers {
		l := uint64(b.Len)
		packet := allPackets || b.Flags&format.BufPacket != 0
		switch {
		case l > 0 && packet:
			pl.packets++
		case l > 0:
			pl.plain++
		}
		if !packet && l > 0 && !direct {
			call += l
			if n++; n == iovMax { // writevAll's IOV_MAX slices a call
				flush()
			}
			continue
		}
		flush()
		if l == 0 {
			continue
		}
		direct = packet
		pl.mem.pages += (l + page - 1) / page
	}
	flush()
	if pl.packets == 0 {
		pl.plain = 0
	}
	pl.mem.pages = min(pl.mem.pages, pl.mem.slots) // a page per slot at most
	return pl, nil
}

// allPacketBuffers tells whether every buffer of p is a packet: a packet
// pipe whose buffers carry no flags (the tee capture reads packets
// without them).
func allPacketBuffers(p *snapshot.Pipe) bool {
	if p.Status&format.StatusPacket == 0 {
		return false
	}
	for _, b := range p.Buffers {
		if b.Flags&format.BufPacket != 0 {
			return false
		}
	}
	return true
}

// setCapacity gives the pipe its captured capacity (F_SETPIPE_SZ), or
// more if its buffers need more on this machine (another page size), as
// pl says.
func (pp *pipe) setCapacity(pl *plan, warn func(kind string, ino uint64, format string, args ...any)) error {
	p := pp.snap
	fd := pp.writeEnd()
	page := os.Getpagesize()
	if pl.need > pl.want {
		warn("capacity raised", p.Ino, "pipe %d: capacity raised from %d to %d bytes so that its %d buffers fit in %d-byte pages", p.Ino, pl.want, pl.need, len(p.Buffers), page)
	}
	size := int(pl.size) // at most maxCapacity
	cur, err := unix.FcntlInt(uintptr(fd), unix.F_GETPIPE_SZ, 0)
	if err != nil {
		return fmt.Errorf("pipe %d: reading its capacity: %w", p.Ino, err)
	}
	pp.size = cur
	if size == 0 || size == cur {
		return nil
	}
	got, err := unix.FcntlInt(uintptr(fd), unix.F_SETPIPE_SZ, size)
	switch {
	case err == nil:
		pp.size = got
		return nil
	case errors.Is(err, unix.EPERM):
		if limit := readLimit("/proc/sys/fs/pipe-max-size"); limit > 0 && size > limit {
			return fmt.Errorf("pipe %d: its capacity of %d bytes is above /proc/sys/fs/pipe-max-size (%d): run as root or raise that limit: %w", p.Ino, size, limit, err)
		}
		return fmt.Errorf("pipe %d: a capacity of %d bytes is over this user's pipe buffer limit (/proc/sys/fs/pipe-user-pages-soft): run as root or raise that limit: %w", p.Ino, size, err)
	case errors.Is(err, unix.EBUSY):
		return fmt.Errorf("pipe %d: cannot resize it to %d bytes while it holds more: %w", p.Ino, size, err)
	}
	return fmt.Errorf("pipe %d: setting its capacity to %d bytes: %w", p.Ino, size, err)
}

// refill writes the captured bytes back, buffer by buffer, without ever
// blocking (the restorer's write end is non-blocking from its open): one
// write per packet (O_DIRECT) for packet buffers, so each comes back as
// one read.
func (pp *pipe) refill(warn func(kind string, ino uint64, format string, args ...any)) error {
	p := pp.snap
	fd := pp.writeEnd()
	var total uint64
	for _, b := range p.Buffers {
		if uint32(len(b.Data)) != b.Len {
			return fmt.Errorf("pipe %d: buffer %d has %d of its %d bytes: read the snapshot with its data", p.Ino, b.Index, len(b.Data), b.Len)
		}
		total += uint64(b.Len)
	}
	allPackets := allPacketBuffers(p)
	var empty []uint32 // the empty packets' ring indexes
	defer func() {
		switch len(empty) {
		case 0:
		case 1:
			warn("empty packet", p.Ino, "pipe %d: buffer %d is an empty packet: a pipe cannot hold one again", p.Ino, empty[0])
		default:
			warn("empty packet", p.Ino, "pipe %d: %d buffers are empty packets (%s): a pipe cannot hold one again", p.Ino, len(empty), firstFew(empty, "buffer", "buffers"))
		}
	}()
	base := -1 // the write end's flags, read at the first packet
	page := os.Getpagesize()
	direct, warned := false, false
	// plain: the last bytes written were plain, in a buffer that takes
	// more (CAN_MERGE): a packet written now would be merged into it.
	plain := false
	scratch := [2]int{-1, -1} // a pipe a packet is made in, to be spliced over
	defer func() {
		if scratch[0] >= 0 {
			unix.Close(scratch[0])
			unix.Close(scratch[1])
		}
	}()
	var written uint64
	// Bytes of consecutive plain (non-packet) buffers go in one writev:
	// the kernel lays them into pages the same way separate writes would.
	var batch [][]byte
	flush := func() error {
		n, err := writevAll(fd, batch)
		batch = batch[:0]
		written += uint64(n)
		if errors.Is(err, unix.EAGAIN) {
			return fmt.Errorf("pipe %d: only %d of its %d bytes fit back in (capacity %d bytes): %w", p.Ino, written, total, pp.size, ErrNotFit)
		}
		if err != nil {
			return fmt.Errorf("pipe %d: refilling it: %w", p.Ino, err)
		}
		return nil
	}
	for _, b := range p.Buffers {
		packet := allPackets || b.Flags&format.BufPacket != 0
		if !packet && len(b.Data) > 0 && !direct {
			batch = append(batch, b.Data)
			plain = true
			continue
		}
		if err := flush(); err != nil {
			return err
		}
		if len(b.Data) == 0 {
			if packet {
				empty = append(empty, b.Index)
			}
			continue
		}
		if packet != direct {
			if base < 0 {
				base = getfl(fd)&^unix.O_DIRECT | unix.O_NONBLOCK
			}
			fl := base
			if packet {
				fl |= unix.O_DIRECT
			}
			if err := setfl(fd, fl); err != nil {
				return fmt.Errorf("pipe %d: setting packet mode (O_DIRECT) for the refill: %w", p.Ino, err)
			}
			direct = packet
		}
		if packet && len(b.Data) > page && !warned {
			warned = true
			warn("big packets", p.Ino, "pipe %d: packets of up to %d bytes, more than this machine's page size (%d): they will be read in pieces", p.Ino, len(b.Data), page)
		}
		data := b.Data
		var err error
		if packet && plain {
			// pipe_write merges even an O_DIRECT write into the last
			// buffer when that one takes more: the packet would lose
			// its boundary. Its first page is made a packet buffer in
			// a pipe of its own and spliced over as it is.
			var n int
			n, err = splicePacket(fd, &scratch, data[:min(len(data), page)])
			written += uint64(n)
			data = data[n:]
		}
		if err == nil {
			var n int
			n, err = writeAll(fd, data)
			written += uint64(n)
		}
		if errors.Is(err, unix.EAGAIN) {
			return fmt.Errorf("pipe %d: only %d of its %d bytes fit back in (capacity %d bytes): %w", p.Ino, written, total, pp.size, ErrNotFit)
		}
		if err != nil {
			return fmt.Errorf("pipe %d: refilling it: %w", p.Ino, err)
		}
		plain = !packet
	}
	if err := flush(); err != nil {
		return err
	}
	if direct {
		if err := setfl(fd, base); err != nil {
			return fmt.Errorf("pipe %d: %w", p.Ino, err)
		}
	}
	return nil
}

// splicePacket adds data (at most a page) to the pipe fd writes as one
// packet buffer of its own, however the buffer before it was made: it
// writes data to the scratch pipe with O_DIRECT (made on first use),
// then splices that buffer into fd, which moves it whole, packet flag
// and all. It returns the bytes that reached fd.
func splicePacket(fd int, scratch *[2]int, data []byte) (int, error) {
	if scratch[0] < 0 {
		if err := unix.Pipe2(scratch[:], unix.O_CLOEXEC|unix.O_NONBLOCK|unix.O_DIRECT); err != nil {
			return 0, fmt.Errorf("making a packet to splice: %w", err)
		}
	}
	n, err := writeAll(scratch[1], data)
	if err != nil {
		return 0, fmt.Errorf("making a packet to splice: %w", err)
	}
	for done := 0; done < n; {
		m, err := unix.Splice(scratch[0], nil, fd, nil, n-done, unix.SPLICE_F_NONBLOCK)
		if errors.Is(err, unix.EINTR) {
			continue
		}
		if err != nil {
			// Whatever did not move stays in the scratch pipe, which
			// is closed with it.
			return done, err
		}
		done += int(m)
	}
	return n, nil
}

// iovMax is IOV_MAX: writevAll writes so many slices at a time.
const iovMax = 1024

// writevAll writes every byte of bufs, IOV_MAX slices at a time.
func writevAll(fd int, bufs [][]byte) (int, error) {
	done := 0
	for len(bufs) > 0 {
		chunk := bufs[:min(len(bufs), iovMax)]
		n, err := unix.Writev(fd, chunk)
		if errors.Is(err, unix.EINTR) {
			continue
		}
		if err != nil {
			return done, err
		}
		done += n
		// Drop what was written; trim a slice written in part.
		for n > 0 && len(bufs) > 0 {
			if n >= len(bufs[0]) {
				n -= len(bufs[0])
				bufs = bufs[1:]
			} else {
				bufs[0] = bufs[0][n:]
				n = 0
			}
		}
	}
	return done, nil
}

func writeAll(fd int, b []byte) (int, error) {
	done := 0
	for done < len(b) {
		n, err := unix.Write(fd, b[done:])
		if errors.Is(err, unix.EINTR) {
			continue
		}
		if err != nil {
			return done, err
		}
		done += n
	}
	return done, nil
}
