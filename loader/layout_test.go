package loader

import "testing"

// pageAddr is page_to_addr of bpf/pipes/pipes.bpf.c.
func (tr translation) pageAddr(page, sz, ps uint64) (uint64, bool) {
	if tr.vmemmapSpan == 0 || tr.directSpan == 0 || page < tr.vmemmapStart || page-tr.vmemmapStart >= tr.vmemmapSpan {
		return 0, false
	}
	off := page - tr.vmemmapStart
	if off%sz != 0 || off/sz*ps >= tr.directSpan {
		return 0, false
	}
	return tr.directStart + off/sz*ps, true
}

// TestArm64Translations checks the arm64 search against the kernel's own
// arithmetic (arch/arm64/include/asm/memory.h) for the layouts of 6.1 and
// 6.12, 48- and 52-bit, memstart_addr where RAM starts, randomized by
// KASLR, and lowered for a 52-bit kernel on 48-bit hardware: exactly one
// candidate reads the probe's page where the kernel has it, and it
// translates every page of RAM as the kernel does.
func TestArm64Translations(t *testing.T) {
	const sz, ps = 64, 4096
	neg := func(bits uint) uint64 { return -(uint64(1) << bits) }
	// VMEMMAP_START: up to 6.8, and from 6.9 (VMEMMAP_END - VMEMMAP_SIZE).
	vs61 := func(va uint) uint64 { return neg(va - 6) }
	vs612 := func(va, vaMin uint) uint64 {
		return neg(30) - (neg(vaMin-1)-neg(va))/ps*sz
	}
	for _, tc := range []struct {
		name           string
		pageOffset, vs uint64
		memstart       int64
		minPFN, maxPFN uint64
	}{
		{"6.1 48-bit", neg(48), vs61(48), 0x40000000, 0x40000, 0x80000},
		{"6.12 48-bit", neg(48), vs612(48, 48), 0x40000000, 0x40000, 0x80000},
		{"6.12 48-bit, linear map randomized", neg(48), vs612(48, 48), 0x40000000 - 0x3a5c0000000, 0x40000, 0x80000},
		{"6.12 52-bit", neg(52), vs612(52, 48), 0x40000000, 0x40000, 0x80000},
		{"6.12 52-bit on 48-bit hardware", neg(52), vs612(52, 48), 0x40000000 - (1<<52 - 1<<48), 0x40000, 0x80000},
		{"6.12 48-bit, 64 GiB from 2 GiB, randomized", neg(48), vs612(48, 48), 0x80000000 - 0x1230000000, 0x80000, 0x80000 + 64<<18},
	} {
		t.Run(tc.name, func(t *testing.T) {
			pageOf := func(pfn uint64) uint64 { return tc.vs + (pfn-uint64(tc.memstart)/ps)*sz }
			virtOf := func(pfn uint64) uint64 { return tc.pageOffset + pfn*ps - uint64(tc.memstart) }
			// page_to_virt is the same map as virtOf.
			for _, pfn := range []uint64{tc.minPFN, tc.maxPFN - 1} {
				if got := tc.pageOffset + (pageOf(pfn)-tc.vs)/sz*ps; got != virtOf(pfn) {
					t.Fatalf("model: page_to_virt %#x, __va %#x", got, virtOf(pfn))
				}
			}
			l := layout{arch: "arm64", pageSize: ps, pageStruct: sz, minPFN: tc.minPFN, maxPFN: tc.maxPFN}
			for _, probe := range []struct{ page, pipe uint64 }{
				{tc.minPFN + 3, tc.maxPFN - 2},
				{tc.maxPFN - 1, tc.minPFN},
				{(tc.minPFN + tc.maxPFN) / 2, (tc.minPFN+tc.maxPFN)/2 + 1},
			} {
				page, pipe := pageOf(probe.page), virtOf(probe.pipe)+0x7c0
				trs := l.translations([]pipesPsCalib{{Page: page, Pipe: pipe, Source: sourceProbe}}, false)
				var right []translation
				for _, tr := range trs {
					if a, ok := tr.pageAddr(page, sz, ps); ok && a == virtOf(probe.page) {
						right = append(right, tr)
					}
				}
				if len(right) != 1 {
					t.Fatalf("probe at pfn %#x, pipe at pfn %#x: %d of %d candidates read the probe's page, want 1", probe.page, probe.pipe, len(right), len(trs))
				}
				for _, pfn := range []uint64{tc.minPFN, tc.minPFN + 1, probe.page, tc.maxPFN - 1} {
					if a, ok := right[0].pageAddr(pageOf(pfn), sz, ps); !ok || a != virtOf(pfn) {
						t.Errorf("pfn %#x: translated to %#x (in range %v), the kernel has it at %#x", pfn, a, ok, virtOf(pfn))
					}
				}
				if len(trs) > 4 {
					t.Errorf("%d candidates for %d MiB of RAM", len(trs), (tc.maxPFN-tc.minPFN)*ps>>20)
				}
			}
		})
	}
	// x86_64's layout goes to the kernel's search: no candidates here.
	x86 := layout{arch: "amd64", pageSize: ps, pageStruct: sz, minPFN: 0, maxPFN: 0x40000}
	if trs := x86.translations([]pipesPsCalib{{Page: 1, Pipe: 2, Source: sourceProbe}}, false); len(trs) != 0 {
		t.Errorf("x86_64: %d candidates from the probe's pointers", len(trs))
	}
}
