package format

import (
	"bytes"
	"encoding/hex"
	"errors"
	"flag"
	"fmt"
	"hash/crc32"
	"io"
	"math/rand/v2"
	"os"
	"path/filepath"
	"reflect"
	"regexp"
	"strconv"
	"strings"
	"testing"
	"time"
)

var update = flag.Bool("update", false, "rewrite testdata/golden-v3.bin and the fuzz seed corpus")

// The golden streams. golden-v1.bin and golden-v2.bin are frozen: they
// stand for the streams of revision 1 and 2 writers, which the decoder
// must keep reading; -update does not rewrite them.
const (
	goldenV1File = "testdata/golden-v1.bin"
	goldenV2File = "testdata/golden-v2.bin"
	goldenV3File = "testdata/golden-v3.bin"
)

// goldenWire is the golden stream written out field by field: one task
// holding a pipe through three fds (fd 0 defines file 1 and pipe 2, fd 3
// shares file 1, fd 4 opens file 3 on pipe 2) and a FIFO (file 4, pipe
// 5) with a path, then a note.
func goldenWire() *wire {
	w := new(wire)
	w.stdHeader()
	goldenBody(w)
	w.trailer()
	w.tail()
	return w
}

// goldenWireV2 is the golden v2 stream: the v1 golden's records under a
// rev 2 HEADER, then a wait section with every revision 2 record: cat's
// two threads (one asleep reading pipe 2, one running), cat itself as a
// direct waiter on pipe 2's read queue, a process outside the dump
// waiting through epoll on the FIFO (pipe 5), a note, and a process
// blocked opening another FIFO for writing.
func goldenWireV2() *wire {
	w := new(wire)
	w.stdHeaderV2()
	goldenBody(w)
	goldenWaits(w)
	w.trailer()
	w.tail()
	return w
}

// goldenWireV3 is the golden v3 stream: the v2 golden's records under a
// rev 3 HEADER, then who the processes are: cat runs in a podman
// container (pid 1 inside), nginx, outside the dump, is conmon watching
// it, and producer runs in no container.
func goldenWireV3() *wire {
	w := new(wire)
	w.stdHeaderV3()
	goldenBody(w)
	goldenWaits(w)
	w.container(1, "podman", goldenCID, "web", "", "", "")
	w.proc(4242, 1, 4711, 1, 0, "cat", "/libpod_parent/libpod-"+goldenCID)
	w.proc(5151, 0, 0, 1, 1, "conmon", "/libpod_parent/conmon")
	w.proc(6060, 0, 1, 0, 0, "producer", "/")
	w.trailer()
	w.tail()
	return w
}

const goldenCID = "7a3f0c9e1b2d4f6a8c0e2b4d6f8a0c2e4b6d8f0a2c4e6b8d0f2a4c6e8b0d2f4a"

// goldenWaits is the v2 golden's wait section.
func goldenWaits(w *wire) {
	w.taskState(4242, 4242, 'S', 1500000000, 1, "pipe_read")
	w.taskState(4242, 4243, 'R', 0, 1, "")
	w.waiter(2, 4242, 4242, 0, 0, 'S', -1, 0, 1500000000, 1, "cat")
	w.waiter(5, 5151, 5152, 0, 2, 'S', 7, 0x1, 0, 2, "nginx")
	w.note(5151, 1, "pid 5151 holds no pipe fd")
	w.openWait(6060, 6060, 2, 'S', 4712, 2250000000, 1, "producer", "/tmp/ps.out")
}

// goldenBody is what both golden streams have between HEADER and the
// trailer (the v1 golden's records).
func goldenBody(w *wire) {
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
}

// goldenHeader is the golden v3 stream's header; goldenHeaderV1 and V2
// the older ones'.
var goldenHeader = Header{
	Arch: ArchX86_64, Major: 6, Minor: 18, Patch: 0, Revision: Revision,
	Time:  time.Unix(0, 1700000000123456789),
	Flags: HeaderFrozen, Release: "6.18.0", Version: "#1 SMP", Machine: "x86_64",
}

var (
	goldenHeaderV1 = func() Header { h := goldenHeader; h.Revision = 1; return h }()
	goldenHeaderV2 = func() Header { h := goldenHeader; h.Revision = 2; return h }()
)

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

func goldenItemsV2() []any {
	return append(goldenItems(),
		&TaskState{PID: 4242, TID: 4242, State: 'S', Wait: 1500 * time.Millisecond, WaitKnown: true, Wchan: "pipe_read"},
		&TaskState{PID: 4242, TID: 4243, State: 'R', WaitKnown: true},
		&Waiter{PipeRef: 2, PID: 4242, TID: 4242, Queue: QueueRead, Via: ViaDirect, State: 'S', EpollFD: -1,
			Wait: 1500 * time.Millisecond, WaitKnown: true, Comm: "cat"},
		&Waiter{PipeRef: 5, PID: 5151, TID: 5152, Queue: QueueRead, Via: ViaEpoll, State: 'S', EpollFD: 7, Events: 0x1,
			Outside: true, Comm: "nginx"},
		&Note{PID: 5151, Code: 1, Msg: "pid 5151 holds no pipe fd"},
		&OpenWait{PID: 6060, TID: 6060, End: OpenWrite, State: 'S', Ino: 4712, Wait: 2250 * time.Millisecond, WaitKnown: true,
			Comm: "producer", Path: "/tmp/ps.out"},
	)
}

func goldenItemsV3() []any {
	return append(goldenItemsV2(),
		&Container{Ref: 1, Runtime: "podman", ID: goldenCID, Name: "web"},
		&Proc{PID: 4242, NSPID: 1, CgroupID: 4711, Container: 1, Comm: "cat", Cgroup: "/libpod_parent/libpod-" + goldenCID},
		&Proc{PID: 5151, Container: 1, Monitor: true, Comm: "conmon", Cgroup: "/libpod_parent/conmon"},
		&Proc{PID: 6060, CgroupID: 1, Comm: "producer", Cgroup: "/"},
	)
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
		case *TaskState:
			err = e.WriteTaskState(*v)
		case *Waiter:
			err = e.WriteWaiter(*v)
		case *OpenWait:
			err = e.WriteOpenWait(*v)
		case *Container:
			err = e.WriteContainer(*v)
		case *Proc:
			err = e.WriteProc(*v)
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

// TestGoldenV1: the frozen revision 1 file decodes, and is what the
// encoder writes for the same records but for the revision.
func TestGoldenV1(t *testing.T) {
	want := goldenWire().b
	file, err := os.ReadFile(goldenV1File)
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(file, want) {
		t.Fatalf("%s differs from the v1 golden bytes built in the test: revision 1 streams must not change", goldenV1File)
	}
	h, items, err := decodeAll(file)
	if err != nil {
		t.Fatal(err)
	}
	checkHeader(t, h, goldenHeaderV1)
	checkItems(t, items, goldenItems())

	// Revision 2 only adds records: the encoder writes the same bytes.
	got, err := encodeAll(goldenHeader, goldenItems())
	if err != nil {
		t.Fatal(err)
	}
	if got = asRevision(got, 1); !bytes.Equal(got, want) {
		t.Fatalf("encoder output (as rev 1) differs from the v1 golden bytes\n got %x\nwant %x", got, want)
	}
}

// TestGoldenV2: the frozen revision 2 file decodes, and is what the
// encoder writes for the same records but for the revision.
func TestGoldenV2(t *testing.T) {
	want := goldenWireV2().b
	file, err := os.ReadFile(goldenV2File)
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(file, want) {
		t.Fatalf("%s differs from the v2 golden bytes built in the test: revision 2 streams must not change", goldenV2File)
	}
	h, items, err := decodeAll(file)
	if err != nil {
		t.Fatal(err)
	}
	checkHeader(t, h, goldenHeaderV2)
	checkItems(t, items, goldenItemsV2())

	// Revision 3 only adds records: the encoder writes the same bytes.
	got, err := encodeAll(goldenHeader, goldenItemsV2())
	if err != nil {
		t.Fatal(err)
	}
	if got = asRevision(got, 2); !bytes.Equal(got, want) {
		t.Fatalf("encoder output (as rev 2) differs from the v2 golden bytes\n got %x\nwant %x", got, want)
	}
}

func TestGoldenV3(t *testing.T) {
	want := goldenWireV3().b

	got, err := encodeAll(goldenHeader, goldenItemsV3())
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(got, want) {
		t.Fatalf("encoder output differs from the golden bytes\n got %x\nwant %x", got, want)
	}

	if *update {
		writeTestdata(t, want)
	}
	file, err := os.ReadFile(goldenV3File)
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(file, want) {
		t.Fatalf("%s differs from the golden bytes built in the test: the format changed? (go test -run TestGolden -update rewrites it)", goldenV3File)
	}

	h, items, err := decodeAll(want)
	if err != nil {
		t.Fatal(err)
	}
	checkHeader(t, h, goldenHeader)
	checkItems(t, items, goldenItemsV3())
}

// What FORMAT.md section 11 says of golden-v2.bin.
const (
	goldenV3Len        = 1544
	goldenV3Records    = 48
	goldenV3Containers = 0x43a // offset of its PS_CONTAINER
	goldenV2Len        = 1122
	goldenV2Records    = 35
	goldenV2Waits      = 0x2c9 // offset of its first PS_TASK_STATE
)

// TestGoldenLayout pins facts FORMAT.md states about the golden streams.
func TestGoldenLayout(t *testing.T) {
	w := goldenWire()
	if len(w.b) != 753 || len(w.offs) != 25 {
		t.Errorf("golden v1 stream: %d bytes, %d records; FORMAT.md says 753 and 25", len(w.b), len(w.offs))
	}
	w = goldenWireV2()
	if len(w.b) != goldenV2Len || len(w.offs) != goldenV2Records {
		t.Errorf("golden v2 stream: %d bytes, %d records; FORMAT.md says %d and %d", len(w.b), len(w.offs), goldenV2Len, goldenV2Records)
	}
	if off := w.at(TypeTaskState, 0); off != goldenV2Waits {
		t.Errorf("golden v2 stream: wait section at %#x; FORMAT.md says %#x", off, goldenV2Waits)
	}
	w = goldenWireV3()
	if len(w.b) != goldenV3Len || len(w.offs) != goldenV3Records {
		t.Errorf("golden v3 stream: %d bytes, %d records; FORMAT.md says %d and %d", len(w.b), len(w.offs), goldenV3Len, goldenV3Records)
	}
	if off := w.at(TypeContainer, 0); off != goldenV3Containers {
		t.Errorf("golden v3 stream: PS_CONTAINER at %#x; FORMAT.md says %#x", off, goldenV3Containers)
	}
}

// writeTestdata rewrites the v3 golden file and the fuzz seed corpus.
func writeTestdata(t *testing.T, golden []byte) {
	t.Helper()
	if err := os.WriteFile(goldenV3File, golden, 0o644); err != nil {
		t.Fatal(err)
	}
	dir := filepath.Join("testdata", "fuzz", "FuzzDecode")
	if err := os.MkdirAll(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	for name, b := range fuzzSeeds() {
		content := fmt.Sprintf("go test fuzz v1\n[]byte(%q)\n", b)
		if err := os.WriteFile(filepath.Join(dir, name), []byte(content), 0o644); err != nil {
			t.Fatal(err)
		}
	}
}

// fuzzSeeds are the committed seed inputs of FuzzDecode.
func fuzzSeeds() map[string][]byte {
	w, w2, w3 := goldenWire(), goldenWireV2(), goldenWireV3()
	golden, golden2, golden3 := w.b, w2.b, w3.b
	flip := func(b []byte, off int, x byte) []byte {
		b = bytes.Clone(b)
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
	// The same in revision 2, with a wait section right after a FIFO
	// without a path (read ahead), every queue, via and state, and
	// unknown waits, empty comms, wchan and path.
	v2 := new(wire).stdHeaderV2()
	v2.note(0, 2, "")
	v2.task(7, 8, 9, 10, "fifteen-bytes-x")
	v2.fdent(1, 9, 0).file(ModeRead|ModeWrite, 2, 0, 0, 2).filePipe(0)
	v2.psPipe(Pipe{Kind: KindFIFO})
	for i, st := range []byte("\x00RSDTtXZPI") {
		v2.taskState(uint32(i), uint32(i), st, 0, uint32(i%2), "")
	}
	v2.waiter(2, 1, 1, 0, 0, 'D', -1, 0, 0, 0, "")
	v2.waiter(2, 2, 2, 1, 1, 0, -1, 0x4, 1<<63-1, 3, "fifteen-bytes-x")
	v2.waiter(2, 3, 3, 1, 2, 'S', -1, 0xffffffff, 1, 1, "e")
	v2.waiter(2, 4, 4, 0, 3, 'S', -1, 0x1, 0, 2, "o")
	v2.openWait(5, 5, 1, 0, 0, 0, 0, "", "")
	v2.note(0, 0, "x")
	v2.openWait(6, 7, 2, 'S', 9, 10, 1, "w", "/f")
	// No task at all: wait records right after the HEADER.
	v3 := new(wire).stdHeaderV2()
	v3.openWait(1, 1, 1, 'S', 0, 0, 0, "cat", "/x").taskState(1, 1, 'S', 0, 0, "fifo_open")
	// Revision 3: containers and processes alone, a process in none with
	// every string empty, containers of every runtime.
	procsOnly := new(wire).stdHeaderV3()
	procsOnly.proc(9, 0, 0, 0, 0, "", "")
	procsOnly.container(1, "", "x", "", "", "", "").note(0, 0, "")
	procsOnly.container(2, "containerd", goldenCID, "api", "api-7d9f", "prod", "api")
	procsOnly.proc(10, 7, 1<<63, 2, 0, "", "/kubepods.slice/x").proc(11, 0, 0, 1, 1, "", "/c")
	return map[string][]byte{
		"golden":        golden,
		"truncated":     golden[:len(golden)/2],
		"variety":       v.end(),
		"data-flipped":  flip(golden, w.at(TypeBuffer, 3)+8, 0x20),
		"objref-skip":   flip(golden, w.at(TypeFDEnt, 2), 0x04),
		"nrbufs":        flip(golden, w.at(TypePipe, 0)+8+56, 0x01),
		"tail-magic":    flip(golden, w.at(TypeTail, 0)+8, 0xff),
		"unknown-type":  flip(golden, w.at(TypeNote, 0)+1, 0x01),
		"trailing-byte": append(bytes.Clone(golden), 0),

		"golden-v2":     golden2,
		"variety-v2":    v2.end(),
		"waits-only-v2": v3.end(),
		"truncated-v2":  golden2[:w2.at(TypeWaiter, 1)+30],
		"waits-in-v1":   asRevision(golden2, 1),
		"waiter-ref":    flip(golden2, w2.at(TypeWaiter, 0)+8, 0x04),
		"waiter-via":    flip(golden2, w2.at(TypeWaiter, 1)+8+13, 0x01),
		"waiter-pad":    flip(golden2, w2.at(TypeWaiter, 0)+8+15, 0x01),
		"state-letter":  flip(golden2, w2.at(TypeTaskState, 0)+8+8, 0x20),
		"open-end":      flip(golden2, w2.at(TypeOpenWait, 0)+8+8, 0x01),
		"wait-unknown":  flip(golden2, w2.at(TypeOpenWait, 0)+8+32, 0x01),
		"task-after-wait": append(bytes.Clone(golden2[:w2.at(TypeTrailer, 0)]),
			new(wire).task(1, 1, 0, 0, "late").b...),

		"golden-v3":        golden3,
		"procs-only-v3":    procsOnly.end(),
		"truncated-v3":     golden3[:w3.at(TypeContainer, 0)+40],
		"procs-in-v2":      asRevision(golden3, 2),
		"container-ref":    flip(golden3, w3.at(TypeContainer, 0)+8, 0x02),
		"proc-container":   flip(golden3, w3.at(TypeProc, 2)+8+16, 0x02),
		"proc-flags":       flip(golden3, w3.at(TypeProc, 0)+8+20, 0x02),
		"proc-dup-pid":     append(bytes.Clone(golden3[:w3.at(TypeTrailer, 0)]), new(wire).proc(4242, 0, 0, 0, 0, "", "").b...),
		"task-after-procs": append(bytes.Clone(golden3[:w3.at(TypeTrailer, 0)]), new(wire).task(1, 1, 0, 0, "late").b...),
	}
}

func TestFuzzSeedsCommitted(t *testing.T) {
	valid := map[string]bool{"golden": true, "variety": true, "golden-v2": true, "variety-v2": true, "waits-only-v2": true,
		"golden-v3": true, "procs-only-v3": true}
	for name, b := range fuzzSeeds() {
		got, err := os.ReadFile(filepath.Join("testdata", "fuzz", "FuzzDecode", name))
		if err != nil {
			t.Fatal(err)
		}
		if want := fmt.Sprintf("go test fuzz v1\n[]byte(%q)\n", b); string(got) != want {
			t.Errorf("seed %s is stale (go test -run TestGolden -update rewrites it)", name)
		}
		_, _, err = decodeAll(b)
		if valid[name] != (err == nil) {
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
	// Half the streams end with a wait section.
	if r.IntN(2) == 0 {
		return h, items
	}
	wait := func() (time.Duration, bool) {
		switch r.IntN(3) {
		case 0:
			return 0, false
		case 1:
			return 0, true
		}
		return time.Duration(r.Int64()), true
	}
	state := func() byte { return "\x00RSDTtXZPI"[r.IntN(10)] }
	for range r.IntN(12) {
		switch r.IntN(4) {
		case 0:
			s := &TaskState{PID: r.Uint32(), TID: r.Uint32(), State: state(), Wchan: randString(r, 0, 40)}
			s.Wait, s.WaitKnown = wait()
			items = append(items, s)
		case 1:
			if len(pipes) == 0 {
				continue
			}
			w := &Waiter{PipeRef: pipes[r.IntN(len(pipes))], PID: r.Uint32(), TID: r.Uint32(), Queue: Queue(r.IntN(2)),
				Via: Via(r.IntN(4)), State: state(), EpollFD: -1, Outside: r.IntN(2) == 0, Comm: randString(r, 0, 15)}
			if w.Via != ViaDirect {
				w.Events = r.Uint32()
			}
			if w.Via == ViaEpoll && r.IntN(2) == 0 {
				w.EpollFD = r.Int32()
			}
			w.Wait, w.WaitKnown = wait()
			items = append(items, w)
		case 2:
			o := &OpenWait{PID: r.Uint32(), TID: r.Uint32(), End: uint8(1 + r.IntN(2)), State: state(), Ino: r.Uint64(),
				Comm: randString(r, 0, 15), Path: randString(r, 0, 200)}
			o.Wait, o.WaitKnown = wait()
			items = append(items, o)
		default:
			items = append(items, &Note{PID: r.Uint32(), Code: r.Uint32(), Msg: randString(r, 0, 100)})
		}
	}
	// And then, in half of those, containers and processes.
	if r.IntN(2) == 0 {
		return h, items
	}
	containers := uint32(0)
	pids := map[uint32]bool{}
	for range r.IntN(8) {
		if r.IntN(3) == 0 {
			containers++
			items = append(items, &Container{Ref: containers, Runtime: randString(r, 0, 10), ID: randString(r, 1, 64),
				Name: randString(r, 0, 30), Pod: randString(r, 0, 30), Namespace: randString(r, 0, 20), KubeName: randString(r, 0, 20)})
			continue
		}
		pr := &Proc{PID: 1 + r.Uint32N(1<<31), NSPID: r.Uint32(), CgroupID: r.Uint64(), Comm: randString(r, 0, 15), Cgroup: randString(r, 0, 300)}
		if pids[pr.PID] {
			continue
		}
		pids[pr.PID] = true
		if containers > 0 && r.IntN(3) > 0 {
			pr.Container = 1 + r.Uint32N(containers)
			pr.Monitor = r.IntN(4) == 0
		}
		pr.CgroupTruncated = r.IntN(5) == 0
		items = append(items, pr)
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
	if c := crc32.Checksum([]byte("123456789"), castagnoli()); c != 0xe3069283 {
		t.Errorf("CRC-32C check value %#x", c)
	}
	if KindPipe.String() != "pipe" || KindFIFO.String() != "fifo" || Kind(7).String() != "kind 7" {
		t.Error("Kind.String")
	}
	if QueueRead.String() != "read" || QueueWrite.String() != "write" || Queue(2).String() != "queue 2" {
		t.Error("Queue.String")
	}
	if ViaDirect.String() != "direct" || ViaPoll.String() != "poll" || ViaEpoll.String() != "epoll" ||
		ViaOther.String() != "other" || Via(4).String() != "via 4" {
		t.Error("Via.String")
	}
	for typ, want := range map[uint32]string{TypeTaskState: "PS_TASK_STATE", TypeWaiter: "PS_WAITER", TypeOpenWait: "PS_OPEN_WAIT"} {
		if RecordName(typ) != want {
			t.Errorf("RecordName(%d) = %q", typ, RecordName(typ))
		}
	}
	for c := range 256 {
		if want := c == 0 || strings.IndexByte("RSDTtXZPI", byte(c)) >= 0; ValidState(byte(c)) != want {
			t.Errorf("ValidState(%q) = %v", byte(c), !want)
		}
	}
	e := &Error{Offset: 1234, Record: "FILE", Err: fmt.Errorf("%w: x", ErrMalformed)}
	if e.Error() != "offset 1234: FILE record: malformed: x" || !errors.Is(e, ErrMalformed) {
		t.Errorf("Error() = %q", e.Error())
	}
	if !strings.HasPrefix((&Error{Offset: 5, Err: ErrTruncated}).Error(), "offset 5: truncated") {
		t.Error("Error() without a record")
	}
}

// TestFormatDumps: the annotated dumps of FORMAT.md section 11 are the
// golden files' bytes, all of them, in order.
func TestFormatDumps(t *testing.T) {
	doc, err := os.ReadFile("FORMAT.md")
	if err != nil {
		t.Fatal(err)
	}
	line := regexp.MustCompile(`^([0-9a-f]{4})  ([0-9a-f]{2}(?: [0-9a-f]{2})*)(?:  |$)`)
	for _, g := range []struct {
		heading string
		want    []byte
		from    int // the dump starts here
	}{
		{"### testdata/golden-v1.bin", goldenWire().b, 0},
		{"### testdata/golden-v2.bin", goldenWireV2().b, goldenV2Waits},
	} {
		_, sec, ok := strings.Cut(string(doc), "\n"+g.heading+"\n")
		if !ok {
			t.Fatalf("FORMAT.md has no %q", g.heading)
		}
		_, sec, _ = strings.Cut(sec, "\n```\n")
		sec, _, _ = strings.Cut(sec, "\n```\n")
		next := g.from
		for _, l := range strings.Split(sec, "\n") {
			m := line.FindStringSubmatch(l)
			if m == nil {
				continue
			}
			off, _ := strconv.ParseUint(m[1], 16, 32)
			b, err := hex.DecodeString(strings.ReplaceAll(m[2], " ", ""))
			if err != nil {
				t.Fatal(err)
			}
			if int(off) != next {
				t.Fatalf("%s: line %q at %#x, want %#x", g.heading, l, off, next)
			}
			if next+len(b) > len(g.want) || !bytes.Equal(b, g.want[next:next+len(b)]) {
				t.Fatalf("%s: line %q differs from the golden bytes", g.heading, l)
			}
			next += len(b)
		}
		if next != len(g.want) {
			t.Errorf("%s: the dump ends at %#x, the stream at %#x", g.heading, next, len(g.want))
		}
	}
}
