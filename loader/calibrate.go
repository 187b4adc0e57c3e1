package loader

import (
	"bufio"
	"bytes"
	"crypto/rand"
	"crypto/sha256"
	"encoding/binary"
	"errors"
	"fmt"
	"os"
	"strconv"
	"strings"

	"github.com/cilium/ebpf/btf"
	"golang.org/x/sys/unix"

	"github.com/pipesnap/pipesnap/internal/taskiter"
)

// ErrCalibration means no page-to-address translation could be verified:
// pipesnap then reads no pipe bytes at all.
var ErrCalibration = errors.New("page-to-address translation could not be verified")

// translation maps a struct page pointer to its direct-map address:
// addr = directStart + (page-vmemmapStart)/sizeof(struct page)*pageSize
// (layout.go says how each architecture's is found).
type translation struct {
	vmemmapStart, vmemmapSpan uint64
	directStart, directSpan   uint64
	source                    string // "kallsyms" or "search"
}

// calibrate finds the translation and verifies it before any pipe is read.
// It fills a probe pipe of its own with random bytes and lets the kernel
// report the probe's pointers and, on x86_64, candidate bases that read
// back the first 32 of them: first a search over 1 GiB steps below the
// probe's own pointers (the bases are randomized at 1 GiB granularity),
// then, only if no candidate verifies, the values of vmemmap_base and
// page_offset_base where /proc/kallsyms lists them (reading kallsyms
// costs more than the rest of a dump). On arm64 the candidates come from
// the probe's pointers (layout.go). Each candidate is verified by
// capturing the probe through the real dump path: the first whose every
// byte matches is kept.
func (it *pipeIter) calibrate(pageSize uint32) (translation, error) {
	pageStruct, err := it.kernelTypeSize("page")
	if err != nil {
		return translation{}, fmt.Errorf("%w: size of struct page: %w", ErrCalibration, err)
	}
	l, err := hostLayout(uint64(pageSize), pageStruct)
	if err != nil {
		return translation{}, fmt.Errorf("%w: %w", ErrCalibration, err)
	}
	pr, err := newProbe(pageSize)
	if err != nil {
		return translation{}, fmt.Errorf("%w: %w", ErrCalibration, err)
	}
	defer pr.close()
	if err := it.objs.CalibSteps.Set(l.searchSteps()); err != nil {
		return translation{}, err
	}

	tried := 0
	for _, useKallsyms := range []bool{false, true} {
		if useKallsyms {
			vm, po, ok := kallsymsBases()
			if !ok || !l.kernelSearch() {
				break
			}
			if err := it.setKallsyms(vm, po); err != nil {
				return translation{}, err
			}
		}
		cands, err := it.candidates(pr)
		if err != nil {
			return translation{}, fmt.Errorf("%w: %w", ErrCalibration, err)
		}
		for _, tr := range l.translations(cands, useKallsyms) {
			tried++
			if err := it.setTranslation(tr); err != nil {
				return translation{}, err
			}
			ok, err := it.verifyProbe(pr)
			if err != nil {
				return translation{}, fmt.Errorf("%w: %w", ErrCalibration, err)
			}
			if ok {
				return tr, nil
			}
		}
	}
	// Leave nothing usable behind: with zero spans the program reads nothing.
	if err := it.setTranslation(translation{}); err != nil {
		return translation{}, err
	}
	return translation{}, fmt.Errorf("%w: %d candidate bases, none read back the probe pipe", ErrCalibration, tried)
}

// Where a candidate came from (ps_calib.source), from enum
// ps_calib_source of bpf/pipes/pipes.h.
const (
	sourceKallsyms = uint32(pipesPsCalibSourcePS_CALIB_KALLSYMS)
	sourceSearch   = uint32(pipesPsCalibSourcePS_CALIB_SEARCH)
	sourceProbe    = uint32(pipesPsCalibSourcePS_CALIB_PROBE)
)

var sourceName = map[uint32]string{sourceKallsyms: "kallsyms", sourceSearch: "search"}

// candidates runs the calibration program over the probe: the base pairs
// that read back its first 32 bytes, kallsyms' first when it was set, at
// most maxSearched of the search's, and the probe's pointers (source
// sourceProbe) once. With bpf_loop one run tries every
// candidate; without, each run tries a window of calibWindow, and runs
// go on until the search found maxSearched or tried them all.
func (it *pipeIter) candidates(pr *probe) ([]pipesPsCalib, error) {
	if err := it.objs.CalibIno.Set(pr.ino); err != nil {
		return nil, err
	}
	defer it.objs.CalibIno.Set(uint64(0))
	if err := it.objs.CalibPattern.Set(pr.head); err != nil {
		return nil, err
	}
	var steps uint32
	if err := it.objs.CalibSteps.Get(&steps); err != nil {
		return nil, err
	}
	defer it.objs.CalibFirst.Set(uint32(0))
	var cands []pipesPsCalib
	searched := 0
	for first := uint32(0); ; first += calibWindow {
		if err := it.objs.CalibFirst.Set(first); err != nil {
			return nil, err
		}
		err := it.readCalib(func(b []byte) error {
			var c pipesPsCalib
			if err := decodeRec(b, &c); err != nil {
				return err
			}
			for _, o := range cands {
				if o.Source == c.Source && o.VmemmapStart == c.VmemmapStart && o.DirectStart == c.DirectStart {
					return nil
				}
			}
			if c.Source == sourceSearch {
				if searched == maxSearched {
					return nil
				}
				searched++
			}
			cands = append(cands, c)
			return nil
		})
		if err != nil || it.features.Loop || searched == maxSearched || first+calibWindow >= 2*steps {
			return cands, err
		}
	}
}

// readCalib runs the calibration program over pipesnap's own files
// where the kernel can scope the walk (the probe is one of them): the
// cost then does not grow with the machine's fds.
func (it *pipeIter) readCalib(fn func([]byte) error) error {
	if it.unscoped {
		return it.read(it.calib, calibRecSize, fn)
	}
	l, err := taskiter.AttachProcess(it.objs.Calibrate, uint32(os.Getpid()))
	if errors.Is(err, taskiter.ErrNoScope) {
		it.unscoped = true
		return it.read(it.calib, calibRecSize, fn)
	}
	if err != nil {
		return fmt.Errorf("attaching calibration iterator: %w", err)
	}
	defer l.Close()
	return it.read(l, calibRecSize, fn)
}

// maxSearched is how many of the search's candidates are kept, as the
// program's search stops after that many.
const maxSearched = 8

func (it *pipeIter) setKallsyms(vmemmapBase, pageOffsetBase uint64) error {
	if err := it.objs.KsymVmemmapBase.Set(vmemmapBase); err != nil {
		return err
	}
	return it.objs.KsymPageOffsetBase.Set(pageOffsetBase)
}

// kallsymsBases returns the addresses of the kernel variables vmemmap_base
// and page_offset_base, where /proc/kallsyms lists them (most distribution
// kernels; not kernels without data symbols, and not with kptr_restrict
// hiding addresses).
func kallsymsBases() (vmemmapBase, pageOffsetBase uint64, ok bool) {
	f, err := os.Open("/proc/kallsyms")
	if err != nil {
		return 0, 0, false
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	for sc.Scan() && (vmemmapBase == 0 || pageOffsetBase == 0) {
		// "ffffffff82a0f6a8 D vmemmap_base"
		line := sc.Bytes()
		sp := bytes.LastIndexByte(line, ' ')
		if sp < 0 {
			continue
		}
		name := string(line[sp+1:])
		if name != "vmemmap_base" && name != "page_offset_base" {
			continue
		}
		addr, err := strconv.ParseUint(string(line[:bytes.IndexByte(line, ' ')]), 16, 64)
		if err != nil {
			continue
		}
		if name == "vmemmap_base" {
			vmemmapBase = addr
		} else {
			pageOffsetBase = addr
		}
	}
	return vmemmapBase, pageOffsetBase, vmemmapBase != 0 && pageOffsetBase != 0
}

// probe is a pipe of pipesnap's own holding two pages of fresh random
// bytes, one buffer each. Only their hash is kept, so no copy left in this
// process can pass for the probe's page.
type probe struct {
	fds      [2]int
	ino      uint64
	pageSize uint32
	head     [4]uint64 // the first 32 bytes, for the kernel-side search
	sum      [32]byte
}

func newProbe(pageSize uint32) (*probe, error) {
	pr := &probe{pageSize: pageSize}
	if err := unix.Pipe2(pr.fds[:], unix.O_CLOEXEC|unix.O_NONBLOCK); err != nil {
		return nil, fmt.Errorf("probe pipe: %w", err)
	}
	pattern := make([]byte, 2*pageSize)
	if _, err := rand.Read(pattern); err != nil {
		pr.close()
		return nil, err
	}
	pr.sum = sha256.Sum256(pattern)
	for i := range pr.head {
		pr.head[i] = binary.NativeEndian.Uint64(pattern[8*i:])
	}
	for off := 0; off < len(pattern); off += int(pageSize) {
		if _, err := unix.Write(pr.fds[1], pattern[off:off+int(pageSize)]); err != nil {
			pr.close()
			return nil, fmt.Errorf("filling probe pipe: %w", err)
		}
	}
	clear(pattern)
	var st unix.Stat_t
	if err := unix.Fstat(pr.fds[0], &st); err != nil {
		pr.close()
		return nil, err
	}
	pr.ino = st.Ino
	return pr, nil
}

func (pr *probe) close() {
	unix.Close(pr.fds[0])
	unix.Close(pr.fds[1])
}

// verifyProbe captures the probe pipe through the dump program and checks
// every byte against the hash of what was written.
func (it *pipeIter) verifyProbe(pr *probe) (bool, error) {
	ino, pageSize, want := pr.ino, pr.pageSize, pr.sum
	if err := it.objs.OnlyIno.Set(ino); err != nil {
		return false, err
	}
	defer it.objs.OnlyIno.Set(uint64(0))
	if err := it.newRun(); err != nil {
		return false, err
	}
	var got *capturedPipe
	err := it.walk([]uint32{uint32(os.Getpid())}, func(b []byte) error {
		if got != nil {
			return nil
		}
		p, err := it.takePipe(ino, false, func(uint64) bool { return false })
		got = p
		return err
	})
	defer it.ring.release()
	if err != nil || got == nil {
		return false, err
	}
	if got.hdr.Status != 0 || got.lost || len(got.bufs) != 2 {
		return false, nil
	}
	h := sha256.New()
	for _, b := range got.bufs {
		if len(b.data) != int(pageSize) || b.offset != 0 {
			return false, nil
		}
		h.Write(b.data)
	}
	return bytes.Equal(h.Sum(nil), want[:]), nil
}

func (it *pipeIter) setTranslation(tr translation) error {
	for _, v := range []struct {
		set func(any) error
		val uint64
	}{
		{it.objs.VmemmapStart.Set, tr.vmemmapStart},
		{it.objs.VmemmapSpan.Set, tr.vmemmapSpan},
		{it.objs.DirectStart.Set, tr.directStart},
		{it.objs.DirectSpan.Set, tr.directSpan},
	} {
		if err := v.set(v.val); err != nil {
			return fmt.Errorf("setting translation: %w", err)
		}
	}
	return nil
}

// readPFNRange returns the lowest page frame of any memory zone and one
// past the highest.
func readPFNRange() (minPFN, maxPFN uint64, err error) {
	f, err := os.Open("/proc/zoneinfo")
	if err != nil {
		return 0, 0, err
	}
	defer f.Close()
	var spanned uint64
	minPFN = ^uint64(0)
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		fields := strings.Fields(sc.Text())
		if len(fields) > 0 && fields[0] == "Node" {
			spanned = 0 // a new zone
		}
		if len(fields) != 2 {
			continue
		}
		n, err := strconv.ParseUint(fields[1], 10, 64)
		if err != nil {
			continue
		}
		switch fields[0] {
		case "spanned":
			// "spanned" comes before "start_pfn:" in each zone: keep it.
			spanned = n
		case "start_pfn:":
			if spanned == 0 {
				continue // an empty zone
			}
			minPFN = min(minPFN, n)
			maxPFN = max(maxPFN, n+spanned)
		}
	}
	if err := sc.Err(); err != nil {
		return 0, 0, err
	}
	if maxPFN == 0 {
		return 0, 0, errors.New("no memory zones in /proc/zoneinfo")
	}
	return minPFN, maxPFN, nil
}

// kernelTypeSize is the running kernel's sizeof(struct name), from the
// BTF already parsed to load the programs.
func (it *pipeIter) kernelTypeSize(name string) (uint64, error) {
	spec, err := it.btf.Kernel()
	if err != nil {
		return 0, err
	}
	var s *btf.Struct
	if err := spec.TypeByName(name, &s); err != nil {
		return 0, err
	}
	return uint64(s.Size), nil
}
