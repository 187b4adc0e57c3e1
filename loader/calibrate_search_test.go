package loader

import "testing"

// TestCalibrationSearch runs the search alone, ignoring kallsyms: it must
// find a translation that verifies, and where kallsyms lists the bases
// (Debian's kernels) the very pair kallsyms gives. calibrate prefers
// kallsyms, so without this test the search would only ever run on
// kernels without those symbols.
func TestCalibrationSearch(t *testing.T) {
	it := testIter(t)
	maxPFN, err := readMaxPFN()
	if err != nil {
		t.Fatal(err)
	}
	pageStruct, err := kernelTypeSize("page")
	if err != nil {
		t.Fatal(err)
	}
	pr, err := newProbe(4096)
	if err != nil {
		t.Fatal(err)
	}
	defer pr.close()
	if err := it.objs.CalibIno.Set(pr.ino); err != nil {
		t.Fatal(err)
	}
	if err := it.objs.CalibPattern.Set(pr.head); err != nil {
		t.Fatal(err)
	}
	var fromKallsyms *pipesPsCalib
	var search []pipesPsCalib
	err = it.read(it.calib, calibRecSize, func(b []byte) error {
		var c pipesPsCalib
		if err := decodeRec(b, &c); err != nil {
			return err
		}
		switch c.Source {
		case 1:
			fromKallsyms = &c
		case 2:
			search = append(search, c)
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	if err := it.objs.CalibIno.Set(uint64(0)); err != nil {
		t.Fatal(err)
	}

	var found *translation
	for _, c := range search {
		tr := translation{c.VmemmapStart, maxPFN * pageStruct, c.DirectStart, maxPFN * 4096, "search"}
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
		t.Fatalf("search: %d candidates read back the first bytes, none verified", len(search))
	}
	t.Logf("search verified vmemmap %#x, direct map %#x (%d candidates)", found.vmemmapStart, found.directStart, len(search))
	if fromKallsyms == nil {
		t.Logf("kallsyms gives no bases on this kernel")
		return
	}
	if fromKallsyms.VmemmapStart != found.vmemmapStart || fromKallsyms.DirectStart != found.directStart {
		t.Errorf("kallsyms gives vmemmap %#x, direct map %#x; the search verified %#x, %#x",
			fromKallsyms.VmemmapStart, fromKallsyms.DirectStart, found.vmemmapStart, found.directStart)
	}
}
