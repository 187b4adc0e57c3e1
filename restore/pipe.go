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

// setCapacity gives the pipe its captured capacity (F_SETPIPE_SZ), or
// more if its buffers need more on this machine (another page size).
func (pp *pipe) setCapacity(warn func(string, ...any)) error {
	p := pp.snap
	fd := pp.writeEnd()
	want := int(p.Capacity)
	if want == 0 {
		want = int(p.MaxUsage) * int(p.PageSize)
	}
	page := os.Getpagesize()
	need := 0
	for _, b := range p.Buffers {
		need += (int(b.Len) + page - 1) / page * page
	}
	size := want
	if need > size {
		size = need
		warn("pipe %d: capacity raised from %d to %d bytes so that its %d buffers fit in %d-byte pages", p.Ino, want, need, len(p.Buffers), page)
	}
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
func (pp *pipe) refill(warn func(string, ...any)) error {
	p := pp.snap
	fd := pp.writeEnd()
	var total uint64
	anyPacket := false
	for _, b := range p.Buffers {
		if uint32(len(b.Data)) != b.Len {
			return fmt.Errorf("pipe %d: buffer %d has %d of its %d bytes: read the snapshot with its data", p.Ino, b.Index, len(b.Data), b.Len)
		}
		total += uint64(b.Len)
		anyPacket = anyPacket || b.Flags&format.BufPacket != 0
	}
	// A packet pipe whose buffers carry no flags: each buffer is a packet.
	allPackets := p.Status&format.StatusPacket != 0 && !anyPacket
	base := -1 // the write end's flags, read at the first packet
	page := os.Getpagesize()
	direct, warned := false, false
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
			continue
		}
		if err := flush(); err != nil {
			return err
		}
		if len(b.Data) == 0 {
			if packet {
				warn("pipe %d: buffer %d is an empty packet: a pipe cannot hold one again", p.Ino, b.Index)
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
			warn("pipe %d: packets of up to %d bytes, more than this machine's page size (%d): they will be read in pieces", p.Ino, len(b.Data), page)
		}
		n, err := writeAll(fd, b.Data)
		written += uint64(n)
		if errors.Is(err, unix.EAGAIN) {
			return fmt.Errorf("pipe %d: only %d of its %d bytes fit back in (capacity %d bytes): %w", p.Ino, written, total, pp.size, ErrNotFit)
		}
		if err != nil {
			return fmt.Errorf("pipe %d: refilling it: %w", p.Ino, err)
		}
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

// writevAll writes every byte of bufs, IOV_MAX slices at a time.
func writevAll(fd int, bufs [][]byte) (int, error) {
	const iovMax = 1024
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
