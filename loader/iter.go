package loader

import (
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"unsafe"

	"github.com/cilium/ebpf"
	"github.com/cilium/ebpf/btf"
	"github.com/cilium/ebpf/link"

	"github.com/pipesnap/pipesnap/internal/bpfload"
	"github.com/pipesnap/pipesnap/internal/host"
	"github.com/pipesnap/pipesnap/internal/kcgroup"
	"github.com/pipesnap/pipesnap/internal/taskiter"
	"github.com/pipesnap/pipesnap/pipemodel"
)

// Record sizes, fixed by bpf/pipes/pipes.h.
var (
	fdRecSize    = int(unsafe.Sizeof(pipesPsFd{}))
	cgRecSize    = int(unsafe.Sizeof(pipesCgProc{}))
	fdCgroupAt   = int(unsafe.Offsetof(pipesPsFd{}.Cgroup))
	calibRecSize = int(unsafe.Sizeof(pipesPsCalib{}))
	pipeHdrSize  = int(unsafe.Offsetof(pipesPsPipe{}.Path))
	bufHdrSize   = int(unsafe.Offsetof(pipesPsBuf{}.Data))
	maxRecSize   = int(max(unsafe.Sizeof(pipesPsPipe{}), unsafe.Sizeof(pipesPsBuf{})))
)

// arenaStart is the first arena's size: a 64 KiB pipe and then some.
const arenaStart = 256 << 10

// Ring record types, from enum ps_ring_type of bpf/pipes/pipes.h.
const (
	ringPipe = uint32(pipesPsRingTypePS_RING_PIPE)
	ringBuf  = uint32(pipesPsRingTypePS_RING_BUF)
)

// iterConfig is what the BPF programs are loaded with.
type iterConfig struct {
	selfTgid     uint32
	targets      []uint32 // tgids to walk; empty means every task
	pageSize     uint32
	scratchSlots uint32 // most buffers copied from one pipe
	maxAttempts  uint32
	ringBytes    uint32 // power of two, a multiple of the page size
	copyData     bool
	btf          *btf.Cache // the kernel's BTF, shared with another load; nil: one of its own
}

// pipeIter owns everything pipesnap puts in the kernel: the programs and
// maps of bpf/pipes, the two iterator links and the ring buffer reader.
// Nothing is pinned; Close releases all of it.
type pipeIter struct {
	objs  pipesObjects
	dump  *link.Iter
	calib *link.Iter
	ring  recordRing
	seq   []byte
	gen   uint32

	btf *btf.Cache // the kernel's BTF, parsed once per run
	// features are what the loaded programs use of the kernel: which
	// variant of bpf/compat.h runs.
	features bpfload.Features
	// cur is the pipe takePipe returned: its buffers are slices of the
	// mapped ring, valid until the ring's release.
	cur      capturedPipe
	unscoped bool // the kernel cannot scope iterators to a process

	// taken tells which pipes the dump has written (nil: none), and
	// forget makes the program copy a pipe again when an fd of it comes
	// (it deletes the pipe from the seen map).
	taken  func(ino uint64) bool
	forget func(ino uint64) error
}

// recordRing is where the program's ring records come from: the mapped
// ring (ringView), or records of a test's making. peek returns the next
// record not taken (nil: none), take moves past it, and release lets the
// kernel reuse what was taken. A record's slice stays valid until then,
// or until gen changes (a later peek moved the mapping): at gives it
// again from its position (pos, when it was peeked).
type recordRing interface {
	peek() ([]byte, error)
	take()
	release()
	pos() uint64
	gen() uint64
	at(pos uint64, n int) ([]byte, error)
	Close() error
}

func loadIter(cfg iterConfig) (_ *pipeIter, err error) {
	it := &pipeIter{seq: make([]byte, 64<<10), btf: cfg.btf}
	if it.btf == nil {
		it.btf = btf.NewCache()
	}
	spec := func(f bpfload.Features) (*ebpf.CollectionSpec, map[string]any, error) {
		c := cfg
		load := loadPipes
		if !f.Loop {
			load = loadPipesNoLoop
			// Bounded loops copy at most compatSlots buffers of a pipe: a
			// larger one is copied in part and marked incomplete (too large).
			if c.scratchSlots > compatSlots {
				c.scratchSlots = compatSlots
				c.ringBytes = min(c.ringBytes, ringBytes(compatSlots, c.pageSize, c.maxAttempts))
			}
		}
		// The programs' loops make at most this many attempts (a larger
		// value would change nothing with bpf_loop but the ring's size).
		c.maxAttempts = min(c.maxAttempts, attemptsMost)
		cs, err := load()
		if err != nil {
			return nil, nil, err
		}
		cs.Maps[pipesMapSlots].MaxEntries = c.scratchSlots
		cs.Maps[pipesMapRing].MaxEntries = c.ringBytes
		return cs, map[string]any{
			pipesVarSelfTgid:     c.selfTgid,
			pipesVarFilterTgids:  len(c.targets) > 0,
			pipesVarPageSize:     c.pageSize,
			pipesVarScratchSlots: c.scratchSlots,
			pipesVarMaxAttempts:  c.maxAttempts,
			pipesVarCopyData:     c.copyData,
		}, nil
	}
	if it.features, err = bpfload.Load(spec, &it.objs, it.btf); err != nil {
		if missing := explainMissing(it.btf); missing != nil {
			err = missing
		}
		return nil, fmt.Errorf("loading BPF programs: %w", err)
	}
	defer func() {
		if err != nil {
			it.Close()
		}
	}()

	for _, tgid := range cfg.targets {
		if err := it.objs.Targets.Put(tgid, uint8(1)); err != nil {
			return nil, fmt.Errorf("adding pid %d to the target map: %w", tgid, err)
		}
	}
	if it.dump, err = link.AttachIter(link.IterOptions{Program: it.objs.DumpPipes}); err != nil {
		return nil, fmt.Errorf("attaching iterator: %w", host.ExplainPermission(err))
	}
	if it.calib, err = link.AttachIter(link.IterOptions{Program: it.objs.Calibrate}); err != nil {
		return nil, fmt.Errorf("attaching calibration iterator: %w", host.ExplainPermission(err))
	}
	// The ring is only ever read when it already holds what is wanted:
	// never waited on. A window of the largest pipe's copy (and then
	// some) is mapped at a time.
	rv, err := newRingView(it.objs.Ring, uint64(cfg.scratchSlots+2)*uint64(maxRecSize+ringHdr))
	if err != nil {
		return nil, err
	}
	it.ring = rv
	it.forget = func(ino uint64) error {
		if err := it.objs.Seen.Delete(ino); err != nil && !errors.Is(err, ebpf.ErrKeyNotExist) {
			return fmt.Errorf("forgetting pipe %d: %w", ino, err)
		}
		return nil
	}
	return it, nil
}

// Bounds of the programs without bpf_loop (enum ps_compat in
// bpf/pipes/pipes.h).
const (
	compatSlots  = uint32(pipesPsCompatPS_COMPAT_SLOTS)
	calibWindow  = uint32(pipesPsCompatPS_CALIB_WINDOW)
	attemptsMost = uint32(pipesPsCompatPS_MAX_ATTEMPTS)
)

// Close releases programs, maps, links and the ring reader.
func (it *pipeIter) Close() error {
	var errs []error
	if it.ring != nil {
		errs = append(errs, it.ring.Close())
	}
	for _, l := range []*link.Iter{it.dump, it.calib} {
		if l != nil {
			errs = append(errs, l.Close())
		}
	}
	errs = append(errs, it.objs.Close())
	return errors.Join(errs...)
}

// read runs one walk of an iterator, handing fn each fixed-size record of
// the seq_file in order. Ring records that belong to a record are already
// in the ring when fn sees it. (The dump's context is checked by fn.)
func (it *pipeIter) read(l *link.Iter, size int, fn func([]byte) error) error {
	return taskiter.ReadAgain(context.Background(), l, it.seq, size, fn, it.dropOrphans)
}

// readFDs runs one walk of the dump iterator: fn gets each ps_fd, with
// the cg_proc that follows it when its cgroup field says one does.
func (it *pipeIter) readFDs(l *link.Iter, fn func([]byte) error) error {
	size := func(h []byte) int {
		if binary.NativeEndian.Uint32(h[fdCgroupAt:]) != 0 {
			return fdRecSize + cgRecSize
		}
		return fdRecSize
	}
	return taskiter.ReadRecords(context.Background(), l, it.seq, fdRecSize, size, fn, it.dropOrphans)
}

// fdCgroups reads the cg_proc after a ps_fd record whose cgroup field is
// set.
func fdCgroups(b []byte) (pipemodel.Cgroups, error) {
	var c pipesCgProc
	if err := decodeRec(b[fdRecSize:], &c); err != nil {
		return pipemodel.Cgroups{}, fmt.Errorf("cgroup record: %w", err)
	}
	return kcgroup.Decode(c.Id, c.Off, c.Flags, c.V1Ctl, &c.Path), nil
}

// dropOrphans empties the ring of records nobody will ask for. Called
// when a read of the iterator returned nothing because the ring had no
// room: every fd record read so far has been handled, so what is left
// belongs to elements whose fd records never came (their fd closed before
// the kernel showed them again, or a task the dump left out).
func (it *pipeIter) dropOrphans() error {
	for {
		raw, err := it.ring.peek()
		if err != nil || raw == nil {
			return err
		}
		_, ino, err := ringRecord(raw)
		if err != nil {
			return err
		}
		it.ring.take()
		it.ring.release()
		if err := it.orphan(ino); err != nil {
			return err
		}
	}
}

// drain empties the ring of what an earlier dump left (one that stopped
// half-way): a new dump starts from an empty ring.
func (it *pipeIter) drain() error {
	for {
		raw, err := it.ring.peek()
		if err != nil || raw == nil {
			return err
		}
		it.ring.take()
		it.ring.release()
	}
}

// orphan makes a pipe whose copy was dropped unseen, unless it was
// written already: a later fd of it gets it copied again.
func (it *pipeIter) orphan(ino uint64) error {
	if it.taken != nil && it.taken(ino) {
		return nil
	}
	return it.forget(ino)
}

// newRun makes every pipe count as not yet copied.
func (it *pipeIter) newRun() error {
	it.gen++
	return it.objs.RunGen.Set(it.gen)
}

// decodeRec copies a record the kernel wrote into its Go twin, which
// bpf2go generated with the same layout.
func decodeRec[T any](b []byte, v *T) error {
	return decodePrefix(b, v, int(unsafe.Sizeof(*v)))
}

// decodePrefix is decodeRec for records whose tail is variable: at least
// least bytes, at most the size of T.
func decodePrefix[T any](b []byte, v *T, least int) error {
	n := int(unsafe.Sizeof(*v))
	if len(b) < least {
		return fmt.Errorf("record of %d bytes, want %d", len(b), least)
	}
	copy(unsafe.Slice((*byte)(unsafe.Pointer(v)), n), b[:min(len(b), n)])
	return nil
}

// capturedPipe is one pipe's contents as the kernel copied them.
type capturedPipe struct {
	hdr  pipesPsPipe // Path left empty; see path
	path string
	bufs []capturedBuf
	lost bool // buffer records the ring should have carried are missing
}

type capturedBuf struct {
	index, offset, flags, attempt uint32
	data                          []byte
	pos                           uint64 // of data in the ring
}

// takePipe reads pipe ino's records from the ring: the ps_buf records of
// each copy attempt, then the ps_pipe naming the attempt that holds.
// Copies of pipes already taken (the kernel copies a pipe again when its
// seen map is full) are skipped; nil means the ring holds nothing for ino.
// first says the fd record that asks was the one whose show copied the
// pipe: its records are then the newest in the ring, and records of other
// pipes not taken yet ahead of them are orphans (see dropOrphans).
// The result and its bytes, slices of the ring, are valid until the
// next call or release.
func (it *pipeIter) takePipe(ino uint64, first bool, taken func(uint64) bool) (*capturedPipe, error) {
	p := &it.cur
	*p = capturedPipe{bufs: p.bufs[:0]}
	it.ring.release()
	attempt := uint32(0) // of the buffers in p.bufs
	var gen uint64       // of the ring's mapping when p.bufs[0] was kept
	// skip moves past a record not kept, handing it back at once when
	// nothing before it is kept: what is held stays one attempt's copy.
	skip := func() {
		it.ring.take()
		if len(p.bufs) == 0 {
			it.ring.release()
		}
	}
	for {
		raw, err := it.ring.peek()
		if err != nil || raw == nil {
			return nil, err
		}
		typ, recIno, err := ringRecord(raw)
		if err != nil {
			return nil, err
		}
		if recIno != ino && !taken(recIno) {
			if !first {
				return nil, nil // left for its own fd
			}
			skip()
			if err := it.orphan(recIno); err != nil {
				return nil, err
			}
			continue
		}
		if recIno != ino {
			skip() // part of another copy of a pipe already written
			continue
		}
		if typ == ringBuf && binary.NativeEndian.Uint64(raw[bufFaultAt:]) != 0 {
			skip() // a page the program could not read: the ps_pipe says so
			continue
		}
		if typ == ringBuf {
			if a := binary.NativeEndian.Uint32(raw[bufAttemptAt:]); a != attempt {
				// The buffers of an attempt that moved are dropped.
				p.bufs = p.bufs[:0]
				it.ring.release()
				attempt = a
				if raw, err = it.ring.peek(); err != nil {
					return nil, err
				}
				if raw == nil {
					return nil, errors.New("ring record gone after a release")
				}
			}
			b, err := parseBuf(raw)
			if err != nil {
				return nil, err
			}
			if len(p.bufs) == 0 {
				gen = it.ring.gen()
			}
			b.pos = it.ring.pos() + uint64(bufHdrSize)
			it.ring.take()
			p.bufs = append(p.bufs, b)
			continue
		}
		it.ring.take() // the ps_pipe is decoded (copied) below
		if err := decodePrefix(raw, &p.hdr, pipeHdrSize); err != nil {
			return nil, err
		}
		if n := int(p.hdr.PathLen); n > 0 && pipeHdrSize+n <= len(raw) {
			p.path = string(raw[pipeHdrSize : pipeHdrSize+n])
		}
		if attempt != p.hdr.Attempts {
			p.bufs = p.bufs[:0]
		}
		if uint32(len(p.bufs)) != p.hdr.Nbufs {
			p.lost = true
			p.bufs = p.bufs[:min(uint32(len(p.bufs)), p.hdr.Nbufs)]
		}
		if len(p.bufs) > 0 && it.ring.gen() != gen {
			// The mapping moved since: the buffers are in the new one.
			for i := range p.bufs {
				b := &p.bufs[i]
				if b.data, err = it.ring.at(b.pos, len(b.data)); err != nil {
					return nil, err
				}
			}
		}
		return p, nil
	}
}

// Where ring records keep their fields (bpf/pipes/pipes.h).
var (
	pipeInoAt    = int(unsafe.Offsetof(pipesPsPipe{}.Ino))
	bufIndexAt   = int(unsafe.Offsetof(pipesPsBuf{}.Index))
	bufOffsetAt  = int(unsafe.Offsetof(pipesPsBuf{}.Offset))
	bufLenAt     = int(unsafe.Offsetof(pipesPsBuf{}.Len))
	bufFlagsAt   = int(unsafe.Offsetof(pipesPsBuf{}.Flags))
	bufAttemptAt = int(unsafe.Offsetof(pipesPsBuf{}.Attempt))
	bufInoAt     = int(unsafe.Offsetof(pipesPsBuf{}.Ino))
	bufFaultAt   = int(unsafe.Offsetof(pipesPsBuf{}.Fault))
)

// ringRecord checks a ring record's size and returns its type and pipe.
func ringRecord(raw []byte) (typ uint32, ino uint64, err error) {
	if len(raw) >= 4 {
		typ = binary.NativeEndian.Uint32(raw)
	}
	switch {
	case typ == ringPipe && len(raw) >= pipeHdrSize:
		return typ, binary.NativeEndian.Uint64(raw[pipeInoAt:]), nil
	case typ == ringBuf && len(raw) >= bufHdrSize:
		return typ, binary.NativeEndian.Uint64(raw[bufInoAt:]), nil
	}
	return 0, 0, fmt.Errorf("ring record of type %d and %d bytes: not one pipesnap writes", typ, len(raw))
}

// parseBuf reads a ps_buf; its data is a slice of raw.
func parseBuf(raw []byte) (capturedBuf, error) {
	n := binary.NativeEndian.Uint32(raw[bufLenAt:])
	if int(n) > len(raw)-bufHdrSize {
		return capturedBuf{}, fmt.Errorf("ring buffer record says %d bytes and carries %d", n, len(raw)-bufHdrSize)
	}
	return capturedBuf{
		index:   binary.NativeEndian.Uint32(raw[bufIndexAt:]),
		offset:  binary.NativeEndian.Uint32(raw[bufOffsetAt:]),
		flags:   binary.NativeEndian.Uint32(raw[bufFlagsAt:]),
		attempt: binary.NativeEndian.Uint32(raw[bufAttemptAt:]),
		data:    raw[bufHdrSize : bufHdrSize+int(n)],
	}, nil
}
