package loader

import "runtime"

// Page to address, per architecture: the one place that knows how each
// lays out its struct pages and the memory they describe. The kernel side
// (page_to_addr in bpf/pipes/pipes.bpf.c) applies one affine map to every
// page pointer, refusing any outside the ranges:
//
//	addr = directStart + (page-vmemmapStart)/sizeof(struct page)*pageSize
//
// x86_64: vmemmap_base and page_offset_base, the struct page of pfn 0 and
// the direct map's address of physical 0, both moved at 1 GiB granularity
// by KASLR. The kernel side searches them (candidate() in pipes.bpf.c: the
// probe page's GiB or the one below; the probe pipe's GiB, stepping down),
// or reads them where /proc/kallsyms lists the variables.
//
// arm64: the vmemmap and the linear map are indexed from one origin,
// memstart_addr (arch/arm64/include/asm/memory.h):
//
//	page_to_virt(p) = PAGE_OFFSET + (p-VMEMMAP_START)/sizeof(struct page)*PAGE_SIZE
//
// KASLR moves memstart_addr in 1 GiB steps (ARM64_MEMSTART_ALIGN, 4K
// pages), and a 52-bit kernel on 48-bit hardware lowers it by
// 2^52-2^48; that moves where RAM sits in both regions but not the map
// between them. The constants differ from version to version
// (VMEMMAP_START is -(1 << (VA_BITS-VMEMMAP_SHIFT)) up to 6.8,
// VMEMMAP_END-VMEMMAP_SIZE from 6.9) and with VA_BITS (48 or 52; Debian's
// 6.12 is built for 52 and runs at 48 where the CPU lacks LPA2), but in
// all of them the map is addr = (p-K)/sizeof(struct page)*PAGE_SIZE
// modulo 2^64, with K = VMEMMAP_START - PAGE_OFFSET/PAGE_SIZE*sizeof(struct page)
// a multiple of 1 GiB (0 up to 6.8). The probe's page and its
// pipe_inode_info (kmalloc'd: linear map) both lie in RAM, so the page's
// address is within RAM's span of the pipe's, and K within that span
// scaled by sizeof(struct page)/PAGE_SIZE of page - pipe*sizeof/PAGE_SIZE:
// a few candidates, each verified through the dump path like x86_64's.
// Where RAM starts in the linear map is memstart_addr's, which nothing
// cheap gives: a candidate's ranges cover RAM's span on either side of the
// probe's page, twice RAM; a read there outside RAM faults, harmlessly.
type layout struct {
	arch           string // runtime.GOARCH
	pageSize       uint64
	pageStruct     uint64 // sizeof(struct page), from the kernel's BTF
	minPFN, maxPFN uint64 // RAM's page frames, from /proc/zoneinfo
}

const gib = 1 << 30

// layoutKnown tells whether pages can be translated here: x86_64 and
// arm64, with 4 KiB pages (a scratch slot of the programs holds one, and
// arm64's 16 and 64 KiB layouts are others).
func layoutKnown(arch string, pageSize int) bool {
	return (arch == "amd64" || arch == "arm64") && pageSize == 4096
}

// kernelSearch tells whether the kernel side's search (x86_64's layout)
// and kallsyms' vmemmap_base and page_offset_base apply.
func (l layout) kernelSearch() bool { return l.arch != "arm64" }

// searchSteps is how many GiB below the probe's pipe_inode_info the
// kernel side tries as direct-map base: the pipe sits at most all of RAM
// above it. 0 where the kernel's search does not apply.
func (l layout) searchSteps() uint32 {
	if !l.kernelSearch() {
		return 0
	}
	return uint32(l.maxPFN*l.pageSize>>30) + 2
}

// translations turns what the calibration program reported into
// translations to verify, in order: on x86_64 its candidates (only
// kallsyms' in the kallsyms pass, the search's having failed already), on
// arm64 those of the probe's pointers.
func (l layout) translations(cands []pipesPsCalib, kallsymsPass bool) []translation {
	var trs []translation
	for _, c := range cands {
		switch {
		case c.Source == sourceProbe:
			if !l.kernelSearch() && !kallsymsPass {
				trs = append(trs, l.arm64Translations(c.Page, c.Pipe)...)
			}
		case !l.kernelSearch():
		case kallsymsPass && c.Source != sourceKallsyms:
		default:
			trs = append(trs, translation{
				vmemmapStart: c.VmemmapStart,
				vmemmapSpan:  l.maxPFN * l.pageStruct,
				directStart:  c.DirectStart,
				directSpan:   l.maxPFN * l.pageSize,
				source:       sourceName[c.Source],
			})
		}
	}
	return trs
}

// arm64Translations are the candidates for K (see layout) around
// page - pipe*sizeof(struct page)/PAGE_SIZE, each as a translation whose
// ranges cover RAM's span of pages on either side of the probe's page.
func (l layout) arm64Translations(page, pipe uint64) []translation {
	sz, ps := l.pageStruct, l.pageSize
	n := l.maxPFN - l.minPFN // RAM's span, in pages
	if sz == 0 || ps == 0 || n == 0 {
		return nil
	}
	// int64: linear-map addresses are negative, their scaled offsets too.
	center := page - uint64(int64(pipe)/int64(ps)*int64(sz))
	spread := n*sz + gib
	var trs []translation
	for k := (center + spread) &^ (gib - 1); center+spread-k <= 2*spread; k -= gib {
		off := int64(page - k)
		if off%int64(sz) != 0 {
			continue
		}
		addr := uint64(off / int64(sz) * int64(ps))
		trs = append(trs, translation{
			vmemmapStart: page - n*sz,
			vmemmapSpan:  2 * n * sz,
			directStart:  addr - n*ps,
			directSpan:   2 * n * ps,
			source:       sourceName[sourceSearch],
		})
	}
	return trs
}

// hostLayout is this machine's, but for the kernel's sizeof(struct page).
func hostLayout(pageSize, pageStruct uint64) (layout, error) {
	minPFN, maxPFN, err := readPFNRange()
	if err != nil {
		return layout{}, err
	}
	return layout{runtime.GOARCH, pageSize, pageStruct, minPFN, maxPFN}, nil
}
