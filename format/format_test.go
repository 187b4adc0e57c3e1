package format

import (
	"bytes"
	"errors"
	"flag"
	"fmt"
	"hash/crc32"
	"io"
	"math/rand/v2"
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"testing"
	"time"
)

var update = flag.Bool("update", false, "rewrite testdata/golden-v1.bin and the fuzz seed corpus")

const goldenFile = "testdata/golden-v1.bin"

// goldenWire is the golden stream written out field by field: one task
// holding a pipe through three fds (fd 0 defines file 1 and pipe 2, fd 3
// shares file 1, fd 4 opens file 3 on pipe 2) and a FIFO (file 4, pipe
// 5) with a path, then a note.
func goldenWire() *wire {
	w := new(wire)
	w.stdHeader()
	w.task(4242, 4242, 987654321, 1000, "cat")
	w.fdent(1, 0, 0)
	w.file(ModeRead, 0, 0, 0, 2)
	w.filePipe(2)
	w.psPipe(goldenPipe)
	w.psBuf(5, 100, 5, BufCanMerge).buffer("hello")
	w.psBuf(6, 0, 6, BufCanMerge).buffer(" world")
	w.fdent(1, 3, 1)
	w.fdent(3, 4, 0)
	w.file(ModeWrite, 1, 0, 0, 2)
	w.fdent(4, 5, 0)
	w.file(ModeRead, 0x800, 0, 0, 5)
	w.filePipe(0)
	w.psPipe(goldenFIFO)
	w.str("/tmp/ps.fifo")
	w.note(4242, 1, "fifo 4711 not captured")
	w.trailer()
	w.tail()
	return w
}

var goldenHeader = Header{
	Arch: ArchX86_64, Major: 6, Minor: 18, Patch: 0, Revision: Revision,
	Time:  time.Unix(0, 1700000000123456789),
	Flags: HeaderFrozen, Release: "6.18.0", Version: "#1 SMP", Machine: "x86_64",
}

var goldenPipe = Pipe{
	Ref: 2, Ino: 31337, Kind: KindPipe, Attempts: 1,
	RingSize: 16, MaxUsage: 16, Capacity: 65536, PageSize: 4096,
	Head: 7, Tail: 5, Readers: 1, Writers: 1, NrBufs: 2, Bytes: 11,
}

var goldenFIFO = Pipe{
	Ref: 5, Ino: 4711, Kind: KindFIFO, Status: StatusIncomplete, Reason: ReasonNotCaptured,
	RingSize: 16, MaxUsage: 16, Capacity: 65536, PageSize: 4096,
	Head: 3, Tail: 3, Readers: 1, Path: "/tmp/ps.fifo",
}

func goldenItems() []any {
	p, f := goldenPipe, goldenFIFO
	return []any{
		&Task{PID: 4242, TID: 4242, StartNS: 987654321, UID: 1000, Comm: "cat"},
		&FDEnt{FD: 0, FileRef: 1},
		&File{Ref: 1, Type: FileTypePipe, Mode: ModeRead, PipeRef: 2},
		&p,
		&Buffer{Index: 5, Offset: 100, Len: 5, Flags: BufCanMerge, Data: []byte("hello")},
		&Buffer{Index: 6, Offset: 0, Len: 6, Flags: BufCanMerge, Data: []byte(" world")},
		&FDEnt{FD: 3, FileRef: 1, Cloexec: true},
		&FDEnt{FD: 4, FileRef: 3},
		&File{Ref: 3, Type: FileTypePipe, Mode: ModeWrite, Flags: 1, PipeRef: 2},
		&FDEnt{FD: 5, FileRef: 4},
		&File{Ref: 4, Type: FileTypePipe, Mode: ModeRead, Flags: 0x800, PipeRef: 5},
		&f,
		&Note{PID: 4242, Code: 1, Msg: "fifo 4711 not captured"},
	}
}

// encodeAll writes h and items (as Decoder.Next returns them) with the
// encoder.
func encodeAll(h Header, items []any) ([]byte, error) {
	var buf bytes.Buffer
	e, err := NewEncoder(&buf, h)
	if err != nil {
		return nil, err
	}
	for i, it := range items {
		switch v := it.(type) {
		case *Task:
			err = e.WriteTask(*v)
		case *FDEnt:
			err = e.WriteFDEnt(*v)
		case *File:
			err = e.WriteFile(*v)
		case *Pipe:
			err = e.WritePipe(*v)
		case *Buffer:
			err = e.WriteBuffer(*v)
		case *Note:
			err = e.WriteNote(*v)
		default:
			err = fmt.Errorf("unknown item %T", it)
		}
		if err != nil {
			return nil, fmt.Errorf("item %d (%T): %w", i, it, err)
		}
	}
	if err := e.Close(); err != nil {
		return nil, err
	}
	if e.Offset() != int64(buf.Len()) {
		return nil, fmt.Errorf("Offset() %d, wrote %d", e.Offset(), buf.Len())
	}
	return buf.Bytes(), nil
}

// decodeAll decodes a whole stream.
func decodeAll(b []byte) (Header, []any, error) {
	d, err := NewDecoder(bytes.NewReader(b))
	if err != nil {
		return Header{}, nil, err
	}
	var items []any
	for {
		v, err := d.Next()
		if err == io.EOF {
			if d.Offset() != int64(len(b)) {
				return Header{}, nil, fmt.Errorf("Offset() %d at the end of %d bytes", d.Offset(), len(b))
			}
			return d.Header(), items, nil
		}
		if err != nil {
			return d.Header(), items, err
		}
		items = append(items, v)
	}
}

func checkHeader(t *testing.T, got, want Header) {
	t.Helper()
	if !got.Time.Equal(want.Time) {
		t.Errorf("header time %v, want %v", got.Time, want.Time)
	}
	got.Time, want.Time = time.Time{}, time.Time{}
	if got != want {
		t.Errorf("header %+v, want %+v", got, want)
	}
}

func checkItems(t *testing.T, got, want []any) {
	t.Helper()
	if len(got) != len(want) {
		t.Fatalf("%d items, want %d", len(got), len(want))
	}
	for i := range got {
		if !reflect.DeepEqual(got[i], want[i]) {
			t.Fatalf("item %d: %+v, want %+v", i, got[i], want[i])
		}
	}
}

func TestGolden(t *testing.T) {
	want := goldenWire().b

	got, err := encodeAll(goldenHeader, goldenItems())
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(got, want) {
		t.Fatalf("encoder output differs from the golden bytes\n got %x\nwant %x", got, want)
	}

	if *update {
		writeTestdata(t, want)
	}
	file, err := os.ReadFile(goldenFile)
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(file, want) {
		t.Fatalf("%s differs from the golden bytes built in the test: the format changed? (go test -run TestGolden -update rewrites it)", goldenFile)
	}

	h, items, err := decodeAll(want)
	if err != nil {
		t.Fatal(err)
	}
	checkHeader(t, h, goldenHeader)
	checkItems(t, items, goldenItems())
}

// TestGoldenLayout pins facts FORMAT.md states about the golden stream.
func TestGoldenLayout(t *testing.T) {
	w := goldenWire()
	if len(w.b) != 753 || len(w.offs) != 25 {
		t.Errorf("golden stream: %d bytes, %d records; FORMAT.md says 753 and 25", len(w.b), len(w.offs))
	}
}

// writeTestdata rewrites the golden file and the fuzz seed corpus.
func writeTestdata(t *testing.T, golden []byte) {
	t.Helper()
	if err := os.WriteFile(goldenFile, golden, 0o644); err != nil {
		t.Fatal(err)
	}
	dir := filepath.Join("testdata", "fuzz", "FuzzDecode")
	if err := os.MkdirAll(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	for name, b := range fuzzSeeds(golden) {
		content := fmt.Sprintf("go test fuzz v1\n[]byte(%q)\n", b)
		if err := os.WriteFile(filepath.Join(dir, name), []byte(content), 0o644); err != nil {
			t.Fatal(err)
		}
	}
}

// fuzzSeeds are the committed seed inputs of FuzzDecode.
func fuzzSeeds(golden []byte) map[string][]byte {
	w := goldenWire()
	flip := func(off int, x byte) []byte {
		b := bytes.Clone(golden)
		b[off] ^= x
		return b
	}
	// A valid stream that takes the other paths: a note before any
	// task, an empty task, a FIFO without a path (so the decoder reads
	// ahead), a zero-length buffer, a pipe shared across tasks.
	v := new(wire).stdHeader()
	v.note(0, 2, "")
	v.task(1, 1, 0, 0, "")
	v.task(7, 8, 9, 10, "fifteen-bytes-x")
	v.fdent(1, 9, 0).file(ModeRead|ModeWrite, 2, 0, 0, 2).filePipe(1)
	v.psPipe(Pipe{Kind: KindFIFO, Status: StatusPacket, NrBufs: 1})
	v.psBuf(0, 0, 0, BufPacket).buffer("")
	v.task(11, 11, 0, 0, "b").fdent(1, 1, 1)
	return map[string][]byte{
		"golden":        golden,
		"truncated":     golden[:len(golden)/2],
		"variety":       v.end(),
		"data-flipped":  flip(w.at(TypeBuffer, 3)+8, 0x20),
		"objref-skip":   flip(w.at(TypeFDEnt, 2), 0x04),
		"nrbufs":        flip(w.at(TypePipe, 0)+8+56, 0x01),
		"tail-magic":    flip(w.at(TypeTail, 0)+8, 0xff),
		"unknown-type":  flip(w.at(TypeNote, 0)+1, 0x01),
		"trailing-byte": append(bytes.Clone(golden), 0),
	}
}

func TestFuzzSeedsCommitted(t *testing.T) {
	for name, b := range fuzzSeeds(goldenWire().b) {
		got, err := os.ReadFile(filepath.Join("testdata", "fuzz", "FuzzDecode", name))
		if err != nil {
			t.Fatal(err)
		}
		if want := fmt.Sprintf("go test fuzz v1\n[]byte(%q)\n", b); string(got) != want {
			t.Errorf("seed %s is stale (go test -run TestGolden -update rewrites it)", name)
		}
		_, _, err = decodeAll(b)
		if valid := name == "golden" || name == "variety"; valid != (err == nil) {
			t.Errorf("seed %s: decoding gives %v", name, err)
		}
	}
}

// randomStream makes a valid stream's content, objrefs and all.
func randomStream(r *rand.Rand) (Header, []any) {
	h := Header{
		Arch: uint16(r.IntN(3)), Major: uint16(r.Uint32()), Minor: uint16(r.Uint32()), Patch: uint16(r.Uint32()),
		Time: time.Unix(0, r.Int64()), Flags: uint64(r.IntN(2)), Revision: Revision,
		Release: randString(r, 0, MaxUTSBuffer), Version: randString(r, 0, 40), Machine: randString(r, 0, 10),
	}
	if r.IntN(5) == 0 {
		h.Time = time.Time{}
	}
	var items []any
	var files, pipes []int32
	next := int32(1)
	note := func() {
		if r.IntN(4) == 0 {
			items = append(items, &Note{PID: r.Uint32(), Code: r.Uint32(), Msg: randString(r, 0, 100)})
		}
	}
	note()
	for range r.IntN(6) {
		items = append(items, &Task{PID: r.Uint32(), TID: r.Uint32(), StartNS: r.Uint64(), UID: r.Uint32(), Comm: randString(r, 0, 15)})
		note()
		for range r.IntN(6) {
			fd := &FDEnt{FD: r.Int32(), Cloexec: r.IntN(2) == 0}
			items = append(items, fd)
			if len(files) > 0 && r.IntN(3) == 0 {
				fd.FileRef = files[r.IntN(len(files))]
				note()
				continue
			}
			fd.FileRef, next = next, next+1
			files = append(files, fd.FileRef)
			f := &File{Ref: fd.FileRef, Type: FileTypePipe, Mode: uint32(r.IntN(4)), Flags: r.Uint32(), Pos: r.Uint64(), Version: r.Uint64()}
			items = append(items, f)
			if len(pipes) > 0 && r.IntN(3) == 0 {
				f.PipeRef = pipes[r.IntN(len(pipes))]
				note()
				continue
			}
			f.PipeRef, next = next, next+1
			pipes = append(pipes, f.PipeRef)
			p := &Pipe{
				Ref: f.PipeRef, Ino: r.Uint64(), Kind: Kind(1 + r.IntN(2)), Status: Status(r.IntN(8)), Reason: Reason(r.IntN(12)),
				Attempts: r.Uint32(), RingSize: r.Uint32(), MaxUsage: r.Uint32(), Capacity: r.Uint32(), PageSize: r.Uint32(),
				Head: r.Uint32(), Tail: r.Uint32(), Readers: r.Uint32(), Writers: r.Uint32(), NrBufs: uint32(r.IntN(5)),
			}
			if p.Kind == KindFIFO && r.IntN(2) == 0 {
				p.Path = "/" + randString(r, 0, MaxString-2)
			}
			items = append(items, p)
			for range p.NrBufs {
				n := r.IntN(3) * r.IntN(5000) // a third of them empty
				b := &Buffer{Index: r.Uint32(), Offset: r.Uint32(), Len: uint32(n), Flags: r.Uint32(), Data: make([]byte, n)}
				for i := range b.Data {
					b.Data[i] = byte(r.Uint32())
				}
				p.Bytes += uint64(n)
				items = append(items, b)
			}
			note()
		}
	}
	return h, items
}

// randString returns min..max bytes without NUL.
func randString(r *rand.Rand, lo, hi int) string {
	b := make([]byte, lo+r.IntN(hi-lo+1))
	for i := range b {
		b[i] = byte(1 + r.IntN(255))
	}
	return string(b)
}

func TestRoundTrip(t *testing.T) {
	for seed := range uint64(300) {
		r := rand.New(rand.NewPCG(seed, 1))
		h, items := randomStream(r)
		b, err := encodeAll(h, items)
		if err != nil {
			t.Fatalf("seed %d: encode: %v", seed, err)
		}
		gh, got, err := decodeAll(b)
		if err != nil {
			t.Fatalf("seed %d: decode: %v", seed, err)
		}
		checkHeader(t, gh, h)
		checkItems(t, got, items)
		again, err := encodeAll(gh, got)
		if err != nil || !bytes.Equal(again, b) {
			t.Fatalf("seed %d: re-encoding differs (err %v)", seed, err)
		}
	}
}

// TestRoundTripBigPipe: a pipe grown to 1 MiB, full, in 256 page buffers.
func TestRoundTripBigPipe(t *testing.T) {
	r := rand.New(rand.NewPCG(7, 7))
	p := &Pipe{Ref: 2, Ino: 1, Kind: KindPipe, RingSize: 256, MaxUsage: 256, Capacity: 1 << 20, PageSize: 4096,
		Head: 1<<32 - 100, Tail: 1<<32 - 100 - 256, Readers: 1, Writers: 1, NrBufs: 256, Bytes: 1 << 20}
	items := []any{&Task{PID: 1, TID: 1, Comm: "writer"}, &FDEnt{FD: 1, FileRef: 1}, &File{Ref: 1, Type: FileTypePipe, Mode: ModeWrite, PipeRef: 2}, p}
	for i := range 256 {
		b := &Buffer{Index: p.Tail + uint32(i), Len: 4096, Data: make([]byte, 4096)}
		for j := range b.Data {
			b.Data[j] = byte(r.Uint32())
		}
		items = append(items, b)
	}
	b, err := encodeAll(goldenHeader, items)
	if err != nil {
		t.Fatal(err)
	}
	_, got, err := decodeAll(b)
	if err != nil {
		t.Fatal(err)
	}
	checkItems(t, got, items)
}

// TestOneMiBBuffer: the largest buffer a pipe may carry.
func TestOneMiBBuffer(t *testing.T) {
	data := bytes.Repeat([]byte("0123456789abcdef"), MaxBuffer/16)
	items := []any{&Task{PID: 1}, &FDEnt{FileRef: 1}, &File{Ref: 1, Type: FileTypePipe, PipeRef: 2},
		&Pipe{Ref: 2, Kind: KindPipe, NrBufs: 1, Bytes: MaxBuffer},
		&Buffer{Len: MaxBuffer, Data: data}}
	b, err := encodeAll(goldenHeader, items)
	if err != nil {
		t.Fatal(err)
	}
	_, got, err := decodeAll(b)
	if err != nil {
		t.Fatal(err)
	}
	checkItems(t, got, items)
}

func TestStrings(t *testing.T) {
	for r, want := range map[Reason]string{
		ReasonNone: "none", ReasonMoved: "moved during copy", ReasonPageRange: "page out of range",
		ReasonBounds: "buffer out of bounds", ReasonFault: "read fault", ReasonTooLarge: "too large",
		ReasonChannel: "channel lost data", ReasonExcluded: "excluded", ReasonNotCaptured: "not captured",
		99: "reason 99",
	} {
		if r.String() != want {
			t.Errorf("Reason(%d) = %q, want %q", uint32(r), r.String(), want)
		}
	}
	if c := crc32.Checksum([]byte("123456789"), castagnoli); c != 0xe3069283 {
		t.Errorf("CRC-32C check value %#x", c)
	}
	if KindPipe.String() != "pipe" || KindFIFO.String() != "fifo" || Kind(7).String() != "kind 7" {
		t.Error("Kind.String")
	}
	e := &Error{Offset: 1234, Record: "FILE", Err: fmt.Errorf("%w: x", ErrMalformed)}
	if e.Error() != "offset 1234: FILE record: malformed: x" || !errors.Is(e, ErrMalformed) {
		t.Errorf("Error() = %q", e.Error())
	}
	if !strings.HasPrefix((&Error{Offset: 5, Err: ErrTruncated}).Error(), "offset 5: truncated") {
		t.Error("Error() without a record")
	}
}
