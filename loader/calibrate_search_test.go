package loader

import "testing"

// TestCalibrationSources checks both sources of candidates on their own:
// the search must find a translation that verifies, and where kallsyms
// lists the bases (Debian's kernels), kallsyms must give the very pair
// the search verified. calibrate reads kallsyms only when the search
// fails, so without this test that path would never run.
func TestCalibrationSources(t *testing.T) {
	it := testIter(t)
	pageStruct, err := it.kernelTypeSize("page")
	if err != nil {
		t.Fatal(err)
	}
	l, err := hostLayout(4096, pageStruct)
	if err != nil {
		t.Fatal(err)
	}
	pr, err := newProbe(4096)
	if err != nil {
		t.Fatal(err)
	}
	defer pr.close()
	if err := it.objs.CalibSteps.Set(l.searchSteps()); err != nil {
		t.Fatal(err)
	}

	search, err := it.candidates(pr)
	if err != nil {
		t.Fatal(err)
	}
	probes := 0
	for _, c := range search {
		switch c.Source {
		case sourceProbe:
			probes++
		case sourceSearch:
			if !l.kernelSearch() {
				t.Errorf("the kernel's search (x86_64's layout) ran on %s", l.arch)
			}
		default:
			t.Errorf("candidate from source %d with no kallsyms set", c.Source)
		}
	}
	if probes != 1 {
		t.Errorf("%d records of the probe's pointers, want 1", probes)
	}
	trs := l.translations(search, false)
	var found *translation
	for _, tr := range trs {
		if err := it.setTranslation(tr); err != nil {
			t.Fatal(err)
		}
		ok, err := it.verifyProbe(pr)
		if err != nil {
			t.Fatal(err)
		}
		if ok {
			found = &tr
			break
		}
	}
	if found == nil {
		t.Fatalf("search: %d candidates, none verified", len(trs))
	}
	t.Logf("search verified vmemmap %#x, direct map %#x (%d candidates)", found.vmemmapStart, found.directStart, len(trs))

	vm, po, ok := kallsymsBases()
	if !ok {
		t.Logf("kallsyms gives no bases on this kernel")
		return
	}
	if err := it.setKallsyms(vm, po); err != nil {
		t.Fatal(err)
	}
	cands, err := it.candidates(pr)
	if err != nil {
		t.Fatal(err)
	}
	if !l.kernelSearch() {
		t.Fatalf("kallsyms lists vmemmap_base and page_offset_base on %s", l.arch)
	}
	if len(cands) == 0 || cands[0].Source != sourceKallsyms {
		t.Fatalf("kallsyms lists the bases at %#x, %#x, but gave no candidate that reads the probe", vm, po)
	}
	if cands[0].VmemmapStart != found.vmemmapStart || cands[0].DirectStart != found.directStart {
		t.Errorf("kallsyms gives vmemmap %#x, direct map %#x; the search verified %#x, %#x",
			cands[0].VmemmapStart, cands[0].DirectStart, found.vmemmapStart, found.directStart)
	}
}
