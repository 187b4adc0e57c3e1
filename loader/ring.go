package loader

import (
	"errors"
	"fmt"
	"os"
	"sync/atomic"
	"unsafe"

	"github.com/cilium/ebpf"
	"golang.org/x/sys/unix"
)

// Ring record header bits (BPF_RINGBUF_BUSY_BIT, BPF_RINGBUF_DISCARD_BIT)
// and size (BPF_RINGBUF_HDR_SZ).
const (
	ringBusy    = 1 << 31
	ringDiscard = 1 << 30
	ringHdr     = 8
)

// ringView reads the program's BPF ring buffer in place: a record is a
// slice of the mapped ring, valid until release, so a page's bytes go
// from the ring to the output without a copy of their own. Only a window
// of the data is mapped, not the whole ring twice as cilium/ebpf's
// reader does: the kernel populates a ring mapping whole, so every
// mapped page counts in the RSS, touched or not. The window moves to
// the oldest record held when a record lies past it (the kernel maps
// the data pages twice in a row, so any span of the ring is contiguous
// there): the old one is unmapped first, so only one is ever mapped,
// and gen tells the holder of slices to take them again (at).
type ringView struct {
	fd     int
	page   uint64
	size   uint64 // data bytes: a power of two
	window uint64 // bytes mapped at once, a page multiple
	cons   []byte // the consumer position's page (read-write)
	prod   []byte // the producer position's page
	win    []byte // the mapped window
	base   uint64 // the ring position of win[0]
	moves  uint64 // windows mapped so far
	rd     uint64 // position of the next record not taken
	cur    []byte // the record at rd, once peeked
	next   uint64 // the position after cur
}

// newRingView maps the ring m's positions; window bounds the data
// mapped at once (it grows if a span held needs more).
func newRingView(m *ebpf.Map, window uint64) (*ringView, error) {
	page := uint64(os.Getpagesize())
	size := uint64(m.MaxEntries())
	fd := m.FD()
	cons, err := unix.Mmap(fd, 0, int(page), unix.PROT_READ|unix.PROT_WRITE, unix.MAP_SHARED)
	if err != nil {
		return nil, fmt.Errorf("mapping the ring's consumer page: %w", err)
	}
	prod, err := unix.Mmap(fd, int64(page), int(page), unix.PROT_READ, unix.MAP_SHARED)
	if err != nil {
		unix.Munmap(cons)
		return nil, fmt.Errorf("mapping the ring's producer page: %w", err)
	}
	window = min(max(window, page)+page-1, size) &^ (page - 1)
	r := &ringView{fd: fd, page: page, size: size, window: window, cons: cons, prod: prod}
	r.rd = atomic.LoadUint64(r.consPos())
	return r, nil
}

func (r *ringView) consPos() *uint64 { return (*uint64)(unsafe.Pointer(&r.cons[0])) }
func (r *ringView) prodPos() *uint64 { return (*uint64)(unsafe.Pointer(&r.prod[0])) }

// peek returns the next record not taken, or nil when the ring holds no
// more (or the next is not committed yet).
func (r *ringView) peek() ([]byte, error) {
	if r.cur != nil {
		return r.cur, nil
	}
	for {
		prod := atomic.LoadUint64(r.prodPos())
		if prod == r.rd {
			return nil, nil
		}
		if prod-r.rd < ringHdr {
			return nil, errors.New("reading ring buffer: record header cut short")
		}
		hdr, err := r.view(r.rd, ringHdr)
		if err != nil {
			return nil, err
		}
		// Loaded atomically: the kernel's commit (an xchg) orders the
		// data before the length without the busy bit.
		n := atomic.LoadUint32((*uint32)(unsafe.Pointer(&hdr[0])))
		if n&ringBusy != 0 {
			return nil, nil
		}
		data := uint64(n &^ (ringBusy | ringDiscard))
		total := ringHdr + (data+7)&^7
		if prod-r.rd < total {
			return nil, errors.New("reading ring buffer: record cut short")
		}
		if n&ringDiscard != 0 {
			r.rd += total
			continue
		}
		rec, err := r.view(r.rd+ringHdr, data)
		if err != nil {
			return nil, err
		}
		r.cur, r.next = rec, r.rd+total
		return rec, nil
	}
}

// take moves past the record peek returned; it stays valid until
// release.
func (r *ringView) take() {
	if r.cur != nil {
		r.rd, r.cur = r.next, nil
	}
}

// release hands the records taken back to the kernel: the program can
// write over them. A record peeked and not taken is kept.
func (r *ringView) release() { atomic.StoreUint64(r.consPos(), r.rd) }

// pos is the ring position of the record peek returned.
func (r *ringView) pos() uint64 { return r.rd + ringHdr }

// gen changes when the window moves: slices taken before are gone, and
// at gives them again.
func (r *ringView) gen() uint64 { return r.moves }

// at is n bytes at ring position pos of a record taken and not
// released.
func (r *ringView) at(pos uint64, n int) ([]byte, error) {
	moves := r.moves
	b, err := r.view(pos, uint64(n))
	if err == nil && r.moves != moves {
		err = errors.New("ring window moved while a pipe's records were taken again")
	}
	return b, err
}

// view is n bytes of the ring at position pos (not before the consumer
// position), mapping a new window when the current one does not hold
// them.
func (r *ringView) view(pos, n uint64) ([]byte, error) {
	if r.win != nil && pos >= r.base && pos-r.base+n <= uint64(len(r.win)) {
		return r.win[pos-r.base : pos-r.base+n : pos-r.base+n], nil
	}
	cons := atomic.LoadUint64(r.consPos())
	if pos < cons || pos+n-cons > r.size {
		return nil, fmt.Errorf("reading ring buffer: %d bytes at %d, consumer at %d", n, pos, cons)
	}
	// From the oldest record held: the doubled data area has room for a
	// whole ring's length past any page of its first half.
	start := cons & (r.size - 1) &^ (r.page - 1)
	base := cons - (cons&(r.size-1) - start)
	length := min(max(r.window, (pos+n-base+r.page-1)&^(r.page-1)), 2*r.size-start)
	// Unmapped first: the two would count in the RSS at once.
	if r.win != nil {
		unix.Munmap(r.win)
		r.win = nil
	}
	r.moves++
	w, err := unix.Mmap(r.fd, int64(2*r.page+start), int(length), unix.PROT_READ, unix.MAP_SHARED)
	if err != nil {
		return nil, fmt.Errorf("mapping the ring buffer: %w", err)
	}
	r.win, r.base = w, base
	return r.win[pos-base : pos-base+n : pos-base+n], nil
}

// Close unmaps the ring.
func (r *ringView) Close() error {
	var errs []error
	for _, w := range [][]byte{r.win, r.prod, r.cons} {
		if w != nil {
			errs = append(errs, unix.Munmap(w))
		}
	}
	r.win, r.prod, r.cons, r.cur = nil, nil, nil, nil
	return errors.Join(errs...)
}
