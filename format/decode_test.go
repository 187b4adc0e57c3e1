package format

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"runtime"
	"strings"
	"testing"
	"testing/iotest"
)

// wantErr decodes b and requires an *Error wrapping sentinel at offset off
// whose message mentions all of words.
func wantErr(t *testing.T, b []byte, sentinel error, off int, words ...string) {
	t.Helper()
	_, _, err := decodeAll(b)
	if err == nil {
		t.Fatalf("decoded fine, want %v at offset %d", sentinel, off)
	}
	var e *Error
	if !errors.As(err, &e) {
		t.Fatalf("error %q is %T, not *Error", err, err)
	}
	if !errors.Is(err, sentinel) {
		t.Errorf("error %q is not %v", err, sentinel)
	}
	if e.Offset != int64(off) || !strings.Contains(err.Error(), fmt.Sprintf("offset %d:", off)) {
		t.Errorf("error %q: want offset %d", err, off)
	}
	for _, w := range words {
		if !strings.Contains(err.Error(), w) {
			t.Errorf("error %q does not mention %q", err, w)
		}
	}
}

// patch returns a copy of b with bytes at off replaced.
func patch(b []byte, off int, with []byte) []byte {
	b = bytes.Clone(b)
	copy(b[off:], with)
	return b
}

func TestTruncatedEverywhere(t *testing.T) {
	for _, w := range []*wire{goldenWire(), goldenWireV2(), goldenWireV3()} {
		truncatedEverywhere(t, w)
	}
}

func truncatedEverywhere(t *testing.T, w *wire) {
	for n := range len(w.b) {
		off := w.recordAt(n)
		if n == off && n > 0 {
			// Cut between records: the error is at the cut.
			off = n
		}
		_, _, err := decodeAll(w.b[:n])
		if err == nil {
			t.Fatalf("%d bytes: decoded fine", n)
		}
		var e *Error
		if !errors.As(err, &e) || !errors.Is(err, ErrTruncated) || e.Offset != int64(off) {
			t.Fatalf("%d bytes: %v; want truncated at offset %d", n, err, off)
		}
	}
}

func TestHeadMagic(t *testing.T) {
	b := patch(goldenWire().b, 8, u64(HeadMagic+1))
	wantErr(t, b, ErrMagic, 0, "HEADER record", "magic")
}

func TestNotAStream(t *testing.T) {
	wantErr(t, []byte("#!/bin/sh\necho this is not a snapshot\n"), ErrMagic, 0, "not a pipesnap stream")
	wantErr(t, nil, ErrTruncated, 0)
	wantErr(t, []byte{1, 0, 0}, ErrTruncated, 0)
}

func TestTailMagic(t *testing.T) {
	w := goldenWire()
	off := w.at(TypeTail, 0)
	wantErr(t, patch(w.b, off+8, u64(TailMagic^1<<40)), ErrMagic, off, "TAIL record", "magic")
}

func TestRevision(t *testing.T) {
	for _, rev := range []uint16{0, 4, 0xffff} {
		wantErr(t, patch(goldenWire().b, 8+16, u16(rev)), ErrRevision, 0, "HEADER record", "revision", "knows 1 to 3")
		wantErr(t, patch(goldenWireV2().b, 8+16, u16(rev)), ErrRevision, 0, "HEADER record", "revision")
		wantErr(t, patch(goldenWireV3().b, 8+16, u16(rev)), ErrRevision, 0, "HEADER record", "revision")
	}
	// A later revision with a longer HEADER is still reported as such.
	w := new(wire).rec(TypeHeader, u64(HeadMagic), u16(1), pad(6), u16(4), pad(100))
	wantErr(t, w.b, ErrRevision, 0)
	// Revisions 2 and 3 have rev 1's HEADER: a longer one is malformed.
	for _, rev := range []uint16{2, 3} {
		w = new(wire).rec(TypeHeader, u64(HeadMagic), u16(1), pad(6), u16(rev), pad(100))
		wantErr(t, w.b, ErrMalformed, 0, "len 126, want 48")
	}
	// Every revision decodes, and the header says which.
	for _, b := range [][]byte{goldenWire().b, goldenWireV2().b, goldenWireV3().b} {
		h, _, err := decodeAll(b)
		if err != nil || h.Revision != uint16(b[8+16]) {
			t.Errorf("revision %d: %v, header revision %d", b[8+16], err, h.Revision)
		}
	}
}

func TestFlippedByte(t *testing.T) {
	for _, w := range []*wire{goldenWire(), goldenWireV2(), goldenWireV3()} {
		flippedByte(t, w)
	}
}

func flippedByte(t *testing.T, w *wire) {
	trailer := w.at(TypeTrailer, 0)
	data := map[int]bool{} // bytes only the checksum covers: buffer data
	for _, k := range []int{3, 4} {
		off := w.at(TypeBuffer, k)
		for i := off + 8; i < off+8+5; i++ {
			data[i] = true
		}
	}
	for i := range w.b {
		for _, x := range []byte{0x01, 0x80, 0xff} {
			b := bytes.Clone(w.b)
			b[i] ^= x
			_, _, err := decodeAll(b)
			var e *Error
			switch {
			case err == nil:
				t.Fatalf("byte %d ^ %#x: decoded fine", i, x)
			case !errors.As(err, &e):
				t.Fatalf("byte %d ^ %#x: %v is not *Error", i, x, err)
			case !(errors.Is(err, ErrChecksum) || errors.Is(err, ErrMalformed) || errors.Is(err, ErrMagic) ||
				errors.Is(err, ErrRevision) || errors.Is(err, ErrTruncated)):
				t.Fatalf("byte %d ^ %#x: %v wraps no sentinel", i, x, err)
			case data[i] && (!errors.Is(err, ErrChecksum) || e.Offset != int64(trailer)):
				t.Fatalf("byte %d ^ %#x (buffer data): %v, want checksum at %d", i, x, err, trailer)
			}
		}
	}
}

func TestShortLen(t *testing.T) {
	w := goldenWire()
	for _, typ := range []uint32{TypeFDEnt, TypeBuffer, TypeString, TypeTrailer} {
		off := w.at(typ, 0)
		for _, n := range []uint32{0, 1, 7} {
			wantErr(t, patch(w.b, off+4, u32(n)), ErrMalformed, off, fmt.Sprintf("len %d", n))
		}
	}
}

// TestHugeLen: a length the input does not back fails fast and cheaply.
func TestHugeLen(t *testing.T) {
	w := goldenWire()
	base := w.at(TypeFDEnt, 1) // a record boundary inside a task, between fd entries
	cases := []struct {
		name     string
		b        []byte
		sentinel error
	}{
		{"fixed", append(bytes.Clone(w.b[:base]), append(u32(TypeFDEnt), u32(0xfffffff0)...)...), ErrMalformed},
		{"note", append(bytes.Clone(w.b[:base]), append(u32(TypeNote), u32(0xfffffff0)...)...), ErrMalformed},
		{"unknown", append(bytes.Clone(w.b[:base]), append(u32(999), u32(0xfffffff0)...)...), ErrMalformed},
		{"uts", patch(w.b[:60], w.at(TypeBuffer, 0)+4, u32(0xfffffff0)), ErrMalformed},
		{"string", patch(w.b[:w.at(TypeString, 0)+12], w.at(TypeString, 0)+4, u32(0xfffffff0)), ErrMalformed},
		{"ps_buf", patch(w.b[:w.at(TypeBuf, 0)+24], w.at(TypeBuf, 0)+16, u32(0xfffffff0)), ErrMalformed},
		{"buffer", patch(w.b[:w.at(TypeBuffer, 3)+10], w.at(TypeBuffer, 3)+4, u32(0xfffffff0)), ErrMalformed},
	}
	// A 1 MiB buffer, within every cap, with 3 bytes behind it.
	big := new(wire).stdHeader().task(1, 1, 0, 0, "").fdent(1, 0, 0).file(ModeRead, 0, 0, 0, 2).
		filePipe(1).psPipe(Pipe{Kind: KindPipe, NrBufs: 1, Bytes: MaxBuffer}).psBuf(0, 0, MaxBuffer, 0)
	big.rec(TypeBuffer, []byte("abc"))
	bb := patch(big.b, big.offs[len(big.offs)-1]+4, u32(8+MaxBuffer))
	cases = append(cases, struct {
		name     string
		b        []byte
		sentinel error
	}{"1mib", bb, ErrTruncated})

	for _, c := range cases {
		var before, after runtime.MemStats
		runtime.GC()
		runtime.ReadMemStats(&before)
		_, _, err := decodeAll(c.b)
		runtime.ReadMemStats(&after)
		if !errors.Is(err, c.sentinel) {
			t.Errorf("%s: %v, want %v", c.name, err, c.sentinel)
		}
		if n := after.TotalAlloc - before.TotalAlloc; n > 256<<10 {
			t.Errorf("%s: decoding allocated %d bytes", c.name, n)
		}
	}
}

// streams built around one defect each; off is where the error must be.
func TestMalformed(t *testing.T) {
	hdr := func() *wire { return new(wire).stdHeader() }
	task := func() *wire { return hdr().task(1, 1, 0, 0, "sh") }
	// One pipe, defined by fd 0: file 1, pipe 2.
	onePipe := func() *wire {
		return task().fdent(1, 0, 0).file(ModeRead, 0, 0, 0, 2).filePipe(0).psPipe(Pipe{Kind: KindPipe})
	}
	last := func(w *wire) int { return w.offs[len(w.offs)-1] }
	type tc struct {
		name  string
		w     *wire
		off   func(w *wire) int
		words []string
	}
	at := func(typ uint32, k int) func(w *wire) int { return func(w *wire) int { return w.at(typ, k) } }
	cases := []tc{
		{"dangling fd objref 0", task().fdent(0, 0, 0), last, []string{"FD_ENT", "objref 0 is not defined"}},
		{"dangling fd objref negative", task().fdent(-3, 0, 0), last, []string{"objref -3 is not defined"}},
		{"dangling pipe objref", task().fdent(1, 0, 0).file(ModeRead, 0, 0, 0, -1), last, []string{"FILE", "pipe_objref", "-1"}},
		{"fd objref skips", onePipe().fdent(4, 1, 0), last, []string{"objref 4 is not defined and is not the next new objref 3"}},
		{"pipe objref skips", task().fdent(1, 0, 0).file(ModeRead, 0, 0, 0, 3), last, []string{"pipe_objref", "objref 3"}},
		{"first objref is not 1", task().fdent(2, 0, 0), last, []string{"objref 2"}},
		{"file objref used as pipe", onePipe().fdent(3, 1, 0).file(ModeWrite, 0, 0, 0, 1), last, []string{"objref 1 is a file, not a pipe"}},
		{"file objref being defined used as pipe", task().fdent(1, 0, 0).file(ModeRead, 0, 0, 0, 1), last, []string{"objref 1 is a file, not a pipe"}},
		{"pipe objref used as file", onePipe().fdent(2, 1, 0), last, []string{"objref 2 is a pipe, not a file"}},
		{"nrbufs mismatch", task().fdent(1, 0, 0).file(ModeRead, 0, 0, 0, 2).filePipe(2).psPipe(Pipe{Kind: KindPipe, NrBufs: 3, Bytes: 3}),
			last, []string{"PS_PIPE", "nrbufs 3", "pipe_nrbufs is 2"}},
		{"missing buffer", task().fdent(1, 0, 0).file(ModeRead, 0, 0, 0, 2).filePipe(2).psPipe(Pipe{Kind: KindPipe, NrBufs: 2, Bytes: 2}).
			psBuf(0, 0, 1, 0).buffer("a").fdent(1, 1, 0), last, []string{"FD_ENT", "unexpected", "1 more buffers"}},
		{"buffer bytes short", task().fdent(1, 0, 0).file(ModeRead, 0, 0, 0, 2).filePipe(2).psPipe(Pipe{Kind: KindPipe, NrBufs: 2, Bytes: 5}).
			psBuf(0, 0, 1, 0).buffer("a").psBuf(0, 0, 1, 0).buffer("b"), at(TypeBuf, 1), []string{"PS_BUF", "leaves 3 bytes"}},
		{"buffer bytes over", task().fdent(1, 0, 0).file(ModeRead, 0, 0, 0, 2).filePipe(1).psPipe(Pipe{Kind: KindPipe, NrBufs: 1, Bytes: 1}).
			psBuf(0, 0, 2, 0).buffer("ab"), at(TypeBuf, 0), []string{"len 2, but only 1"}},
		{"bytes without buffers", task().fdent(1, 0, 0).file(ModeRead, 0, 0, 0, 2).filePipe(0).psPipe(Pipe{Kind: KindPipe, Bytes: 1}),
			last, []string{"bytes 1 cannot fit in 0 buffers"}},
		{"BUFFER len differs from PS_BUF", task().fdent(1, 0, 0).file(ModeRead, 0, 0, 0, 2).filePipe(1).psPipe(Pipe{Kind: KindPipe, NrBufs: 1, Bytes: 2}).
			psBuf(0, 0, 2, 0).buffer("abc"), last, []string{"BUFFER", "PS_BUF.len is 2"}},
		{"buffer over 1 MiB", task().fdent(1, 0, 0).file(ModeRead, 0, 0, 0, 2).filePipe(2).psPipe(Pipe{Kind: KindPipe, NrBufs: 2, Bytes: MaxBuffer + 1}).
			psBuf(0, 0, MaxBuffer+1, 0), last, []string{"at most 1048576"}},
		{"negative pipe_nrbufs", task().fdent(1, 0, 0).file(ModeRead, 0, 0, 0, 2).filePipe(-1), last, []string{"FILE_PIPE", "negative"}},
		{"FILE missing", task().fdent(1, 0, 0).fdent(2, 1, 0), last, []string{"want FILE defining objref 1"}},
		{"FILE_PIPE missing", task().fdent(1, 0, 0).file(ModeRead, 0, 0, 0, 2).note(0, 0, "x"), last2, []string{"PS_NOTE", "want FILE_PIPE"}},
		{"FILE where none is due", onePipe().fdent(1, 1, 0).file(ModeRead, 0, 0, 0, 2), last, []string{"FILE record", "unexpected"}},
		{"FD_ENT before PS_TASK", hdr().fdent(1, 0, 0), last, []string{"before the first PS_TASK"}},
		{"BUFFER after header", hdr().buffer("x"), last, []string{"BUFFER record", "unexpected"}},
		{"STRING after a pipe", onePipe().str("/x"), last, []string{"STRING record", "unexpected"}},
		{"empty FIFO path", task().fdent(1, 0, 0).file(ModeRead, 0, 0, 0, 2).filePipe(0).psPipe(Pipe{Kind: KindFIFO}).str(""), last, []string{"empty FIFO path"}},
		{"unknown type", task().rec(999, pad(8)), last, []string{"type 999 record", "unknown record type"}},
		{"second HEADER", task().rec(TypeHeader, pad(40)), last, []string{"HEADER record", "unexpected"}},
		{"TAIL without trailer", task().tail(), last, []string{"TAIL record"}},
		{"note without STRING", task().rec(TypeNote, pad(8)).task(1, 1, 0, 0, ""), last, []string{"PS_TASK", "want STRING"}},
		{"wrong fixed len", task().rec(TypeFDEnt, pad(24)), last, []string{"len 32, want 24"}},
		{"negative fd", task().fdent(1, -1, 0), last, []string{"fd_descriptor -1"}},
		{"cloexec 2", task().fdent(1, 0, 2), last, []string{"fd_close_on_exec 2"}},
		{"FD_ENT padding", task().rec(TypeFDEnt, i32(1), i32(0), u32(0), u32(1)), last, []string{"padding"}},
		{"file type", task().fdent(1, 0, 0).rec(TypeFile, u32(1), pad(36)), last, []string{"f_type 1"}},
		{"file mode", task().fdent(1, 0, 0).file(4, 0, 0, 0, 2), last, []string{"f_mode 0x4"}},
		{"kind 3", task().fdent(1, 0, 0).file(ModeRead, 0, 0, 0, 2).filePipe(0).psPipe(Pipe{Kind: 3}), last, []string{"kind 3"}},
		{"status bits", task().fdent(1, 0, 0).file(ModeRead, 0, 0, 0, 2).filePipe(0).psPipe(Pipe{Kind: KindPipe, Status: 8}), last, []string{"status 0x8"}},
		{"header flags", new(wire).header(1, 0, 0, 0, 1, 0, 2, "", "", ""), at(TypeHeader, 0), []string{"flags 0x2"}},
		{"header padding", new(wire).rec(TypeHeader, u64(HeadMagic), pad(8), u16(1), u16(1), pad(20)), at(TypeHeader, 0), []string{"padding"}},
		{"uts too long", new(wire).rec(TypeHeader, u64(HeadMagic), pad(8), u16(1), pad(22)).buffer(strings.Repeat("x", 257)), last, []string{"uts release of 257 bytes"}},
		{"comm without NUL", task().rec(TypeTask, pad(24), []byte("0123456789abcdef")), last, []string{"comm has no NUL"}},
		{"comm junk after NUL", task().rec(TypeTask, pad(24), []byte("ab\x00d"), pad(12)), last, []string{"comm padding"}},
		{"string without NUL", task().rec(TypeNote, pad(8)).rec(TypeString, []byte("ab")), last, []string{"no NUL at the end"}},
		{"string with inner NUL", task().rec(TypeNote, pad(8)).rec(TypeString, []byte("a\x00b\x00")), last, []string{"NUL inside"}},
		{"empty STRING payload", task().rec(TypeNote, pad(8)).rec(TypeString), last, []string{"STRING payload is 1 to 4096"}},
		{"string too long", task().rec(TypeNote, pad(8)).str(strings.Repeat("x", 4096)), last, []string{"len 4105"}},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			off := c.off(c.w)
			wantErr(t, c.w.end(), ErrMalformed, off, c.words...)
		})
	}
}

// last2 is the record before the last (a note's PS_NOTE).
func last2(w *wire) int { return w.offs[len(w.offs)-2] }

// Longest legal strings decode.
func TestLimits(t *testing.T) {
	path := "/" + strings.Repeat("p", MaxString-2)
	w := new(wire).header(2, 0, 0, 0, 1, 0, 0, strings.Repeat("r", MaxUTSBuffer), "", "").
		task(1, 1, 0, 0, "123456789012345").fdent(1, 0, 0).file(ModeRead, 0, 0, 0, 2).filePipe(0).
		psPipe(Pipe{Kind: KindFIFO}).str(path).note(0, 0, strings.Repeat("m", MaxString-1))
	h, items, err := decodeAll(w.end())
	if err != nil {
		t.Fatal(err)
	}
	if len(h.Release) != MaxUTSBuffer || items[3].(*Pipe).Path != path || len(items[4].(*Note).Msg) != MaxString-1 {
		t.Error("long strings did not come back whole")
	}
}

func TestTrailer(t *testing.T) {
	w := goldenWire()
	off := w.at(TypeTrailer, 0)
	for field, want := range map[int]string{0: "crc32c", 4: "records", 8: "bytes"} {
		b := bytes.Clone(w.b)
		b[off+8+field]++
		wantErr(t, b, ErrChecksum, off, "PS_TRAILER record", want)
	}
	// A stream with no records between header and trailer is fine.
	if _, _, err := decodeAll(new(wire).stdHeader().end()); err != nil {
		t.Fatal(err)
	}
	// Missing TAIL.
	wantErr(t, w.b[:w.at(TypeTail, 0)], ErrTruncated, w.at(TypeTail, 0), "before TAIL")
}

func TestTrailingGarbage(t *testing.T) {
	w := goldenWire()
	for _, extra := range []string{"\x00", "garbage", string(w.b)} {
		wantErr(t, append(bytes.Clone(w.b), extra...), ErrMalformed, len(w.b), "after TAIL")
	}
}

// TestDecoderSticky: errors repeat and the decoder stays put.
func TestDecoderSticky(t *testing.T) {
	w := goldenWire()
	d, err := NewDecoder(bytes.NewReader(w.b[:w.at(TypeFDEnt, 1)+3]))
	if err != nil {
		t.Fatal(err)
	}
	var first error
	for i := 0; i < 20; i++ {
		if _, err := d.Next(); err != nil {
			if first == nil {
				first = err
			} else if err != first {
				t.Fatalf("second error %v differs from %v", err, first)
			}
		}
	}
	if !errors.Is(first, ErrTruncated) {
		t.Fatal(first)
	}
	// After io.EOF, more io.EOF.
	d, _ = NewDecoder(bytes.NewReader(w.b))
	for range 30 {
		d.Next()
	}
	if _, err := d.Next(); err != io.EOF {
		t.Fatalf("after the end: %v", err)
	}
}

// TestDecoderOffsets: Offset() is the offset of the record Next reads next.
func TestDecoderOffsets(t *testing.T) {
	w := goldenWire()
	d, err := NewDecoder(bytes.NewReader(w.b))
	if err != nil {
		t.Fatal(err)
	}
	// Items start at these records: each returned item consumes a group.
	starts := []uint32{TypeTask, TypeFDEnt, TypeFile, TypeFilePipe, TypeBuf, TypeBuf, TypeFDEnt, TypeFDEnt, TypeFile, TypeFDEnt, TypeFile, TypeFilePipe, TypeNote, TypeTrailer}
	seen := map[uint32]int{}
	for _, typ := range starts {
		if got, want := d.Offset(), w.at(typ, seen[typ]); got != int64(want) {
			t.Fatalf("Offset() %d before %s #%d, want %d", got, RecordName(typ), seen[typ], want)
		}
		seen[typ]++
		d.Next()
	}
}

// errAfter returns the bytes of b, then err.
type errAfter struct {
	b   []byte
	err error
}

func (r *errAfter) Read(p []byte) (int, error) {
	if len(r.b) == 0 {
		return 0, r.err
	}
	n := copy(p, r.b)
	r.b = r.b[n:]
	return n, nil
}

// readers returns readers of b that return it in odd pieces.
func readers(b []byte) map[string]io.Reader {
	return map[string]io.Reader{
		"one byte":  iotest.OneByteReader(bytes.NewReader(b)),
		"data+EOF":  iotest.DataErrReader(bytes.NewReader(b)),
		"half read": iotest.HalfReader(bytes.NewReader(b)),
	}
}

func TestReaders(t *testing.T) {
	for name, r := range readers(goldenWire().b) {
		d, err := NewDecoder(r)
		if err != nil {
			t.Fatalf("%s: %v", name, err)
		}
		n := 0
		for ; ; n++ {
			if _, err := d.Next(); err == io.EOF {
				break
			} else if err != nil {
				t.Fatalf("%s: %v", name, err)
			}
		}
		if n != len(goldenItems()) {
			t.Fatalf("%s: %d items", name, n)
		}
	}
	// A read error is reported with the offset of the record being read.
	errDisk := errors.New("disk on fire")
	w := goldenWire()
	cut := w.at(TypeBuffer, 3) + 10
	d, err := NewDecoder(&errAfter{b: w.b[:cut], err: errDisk})
	if err != nil {
		t.Fatal(err)
	}
	for {
		_, err = d.Next()
		if err != nil {
			break
		}
	}
	var e *Error
	if !errors.Is(err, errDisk) || !errors.As(err, &e) || e.Offset != int64(w.at(TypeBuffer, 3)) {
		t.Fatalf("read error: %v", err)
	}
}
