package loader

import (
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"os"
	"time"
	"unsafe"

	"github.com/cilium/ebpf"
	"github.com/cilium/ebpf/btf"
	"github.com/cilium/ebpf/link"
	"github.com/cilium/ebpf/ringbuf"

	"github.com/pipesnap/pipesnap/internal/host"
	"github.com/pipesnap/pipesnap/internal/taskiter"
)

// Record sizes, fixed by bpf/pipes/pipes.h.
var (
	fdRecSize    = int(unsafe.Sizeof(pipesPsFd{}))
	calibRecSize = int(unsafe.Sizeof(pipesPsCalib{}))
	pipeHdrSize  = int(unsafe.Offsetof(pipesPsPipe{}.Path))
	bufHdrSize   = int(unsafe.Offsetof(pipesPsBuf{}.Data))
)

const (
	ringPipe = 1 // PS_RING_PIPE
	ringBuf  = 2 // PS_RING_BUF
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
}

// pipeIter owns everything pipesnap puts in the kernel: the programs and
// maps of bpf/pipes, the two iterator links and the ring buffer reader.
// Nothing is pinned; Close releases all of it.
type pipeIter struct {
	objs  pipesObjects
	dump  *link.Iter
	calib *link.Iter
	ring  *ringbuf.Reader
	rec   ringbuf.Record
	seq   []byte
	gen   uint32

	btf      *btf.Cache // the kernel's BTF, parsed once per run
	unread   []byte     // a ring record looked at but not taken
	cur      capturedPipe
	arena    []byte // bytes of cur's buffers
	unscoped bool   // the kernel cannot scope iterators to a process
}

func loadIter(cfg iterConfig) (_ *pipeIter, err error) {
	spec, err := loadPipes()
	if err != nil {
		return nil, fmt.Errorf("reading BPF object: %w", err)
	}
	spec.Maps[pipesMapScratch].MaxEntries = cfg.scratchSlots
	spec.Maps[pipesMapSlots].MaxEntries = cfg.scratchSlots
	spec.Maps[pipesMapRing].MaxEntries = cfg.ringBytes
	consts := map[string]any{
		pipesVarSelfTgid:     cfg.selfTgid,
		pipesVarFilterTgids:  len(cfg.targets) > 0,
		pipesVarPageSize:     cfg.pageSize,
		pipesVarScratchSlots: cfg.scratchSlots,
		pipesVarMaxAttempts:  cfg.maxAttempts,
		pipesVarCopyData:     cfg.copyData,
	}
	for name, v := range consts {
		if err := spec.Variables[name].Set(v); err != nil {
			return nil, fmt.Errorf("setting %s: %w", name, err)
		}
	}

	it := &pipeIter{seq: make([]byte, 64<<10), btf: btf.NewCache()}
	if err := spec.LoadAndAssign(&it.objs, &ebpf.CollectionOptions{Cache: it.btf}); err != nil {
		if missing := explainMissing(it.btf); missing != nil {
			return nil, fmt.Errorf("loading BPF programs: %w", missing)
		}
		var verr *ebpf.VerifierError
		if errors.As(err, &verr) {
			return nil, fmt.Errorf("loading BPF programs: verifier refused them: %+v", verr)
		}
		return nil, fmt.Errorf("loading BPF programs: %w", host.ExplainPermission(err))
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
	if it.ring, err = ringbuf.NewReader(it.objs.Ring); err != nil {
		return nil, fmt.Errorf("opening ring buffer: %w", err)
	}
	// The ring is only ever read when it already holds what is wanted:
	// never wait on it.
	it.ring.SetDeadline(time.Unix(1, 0))
	return it, nil
}

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
	return taskiter.Read(context.Background(), l, it.seq, size, fn)
}

// nextRing returns the next ring record, or nil when the ring is empty.
// The slice is valid until the next call.
func (it *pipeIter) nextRing() ([]byte, error) {
	err := it.ring.ReadInto(&it.rec)
	if errors.Is(err, os.ErrDeadlineExceeded) {
		return nil, nil
	}
	if err != nil {
		return nil, fmt.Errorf("reading ring buffer: %w", err)
	}
	return it.rec.RawSample, nil
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
	index, offset, flags uint32
	data                 []byte
}

// takePipe reads pipe ino's records from the ring: its ps_pipe, then its
// ps_buf records. Copies of pipes already taken (the kernel copies a pipe
// again when its seen map is full) are skipped; nil means the ring holds
// nothing for ino.
func (it *pipeIter) takePipe(ino uint64, taken func(uint64) bool) (*capturedPipe, error) {
	for {
		raw, err := it.peekRing()
		if err != nil || raw == nil {
			return nil, err
		}
		if len(raw) < 16 || binary.NativeEndian.Uint32(raw) != ringPipe {
			it.unread = nil // a stray buffer of a skipped copy
			continue
		}
		if len(raw) < pipeHdrSize {
			return nil, fmt.Errorf("ring record of %d bytes is too short for a pipe", len(raw))
		}
		recIno := binary.NativeEndian.Uint64(raw[8:])
		if recIno != ino && !taken(recIno) {
			return nil, nil // left for its own fd
		}
		it.unread = nil
		// One capturedPipe and one byte arena serve every pipe of a run:
		// the caller is done with the previous pipe before asking again.
		p := &it.cur
		*p = capturedPipe{bufs: p.bufs[:0]}
		it.arena = it.arena[:0]
		if err := decodePrefix(raw[:pipeHdrSize], &p.hdr, pipeHdrSize); err != nil {
			return nil, err
		}
		if n := int(p.hdr.PathLen); n > 0 && pipeHdrSize+n <= len(raw) {
			p.path = string(raw[pipeHdrSize : pipeHdrSize+n])
		}
		var ends []int
		for i := uint32(0); i < p.hdr.Nbufs; i++ {
			b, err := it.takeBuf(recIno)
			if err != nil {
				return nil, err
			}
			if b == nil {
				p.lost = true
				break
			}
			p.bufs = append(p.bufs, *b)
			ends = append(ends, len(it.arena))
		}
		// The arena may have moved while growing: slice it only now.
		start := 0
		for i, end := range ends {
			p.bufs[i].data = it.arena[start:end]
			start = end
		}
		if recIno == ino {
			return p, nil
		}
	}
}

func (it *pipeIter) takeBuf(ino uint64) (*capturedBuf, error) {
	raw, err := it.peekRing()
	if err != nil || raw == nil {
		return nil, err
	}
	if len(raw) < bufHdrSize || binary.NativeEndian.Uint32(raw) != ringBuf ||
		binary.NativeEndian.Uint64(raw[24:]) != ino {
		return nil, nil // not ours: left in place
	}
	it.unread = nil
	n := binary.NativeEndian.Uint32(raw[12:])
	if int(n) != len(raw)-bufHdrSize {
		return nil, fmt.Errorf("ring buffer record says %d bytes and carries %d", n, len(raw)-bufHdrSize)
	}
	it.arena = append(it.arena, raw[bufHdrSize:]...)
	return &capturedBuf{
		index:  binary.NativeEndian.Uint32(raw[4:]),
		offset: binary.NativeEndian.Uint32(raw[8:]),
		flags:  binary.NativeEndian.Uint32(raw[16:]),
	}, nil
}

// peekRing returns the next ring record without taking it: the caller
// clears it.unread once it keeps the record.
func (it *pipeIter) peekRing() ([]byte, error) {
	if it.unread != nil {
		return it.unread, nil
	}
	raw, err := it.nextRing()
	it.unread = raw
	return raw, err
}
