package format

import (
	"bytes"
	"io"
	"math/rand/v2"
	"runtime"
	"testing"
)

// bufferStream is a stream of three pipes with buffers of assorted sizes,
// several MiB in all, and its Buffer items.
func bufferStream(t *testing.T) ([]byte, []*Buffer) {
	t.Helper()
	r := rand.New(rand.NewPCG(3, 4))
	items := []any{&Task{PID: 1, TID: 1, Comm: "many"}}
	var bufs []*Buffer
	for i := range 3 {
		var pbufs []*Buffer
		var bytes uint64
		for j := range 200 + 100*i {
			n := 1 + r.IntN(16<<10)
			if j%50 == 0 {
				n = MaxBuffer - r.IntN(2) // a chunk's worth, give or take
			}
			b := &Buffer{Index: uint32(j), Len: uint32(n), Data: make([]byte, n)}
			for k := range b.Data {
				b.Data[k] = byte(r.Uint32())
			}
			pbufs = append(pbufs, b)
			bytes += uint64(n)
		}
		file, pipe := int32(1+2*i), int32(2+2*i)
		items = append(items, &FDEnt{FD: int32(3 + i), FileRef: file}, &File{Ref: file, Type: FileTypePipe, Mode: ModeRead, PipeRef: pipe},
			&Pipe{Ref: pipe, Ino: uint64(10 + i), Kind: KindPipe, NrBufs: uint32(len(pbufs)), Bytes: bytes})
		for _, b := range pbufs {
			items = append(items, b)
		}
		bufs = append(bufs, pbufs...)
	}
	b, err := encodeAll(goldenHeader, items)
	if err != nil {
		t.Fatal(err)
	}
	return b, bufs
}

// TestBufferData: a Buffer's Data is the caller's to keep. The decoder
// hands out slices of the chunks it reads into, and must never write
// over them: every buffer still holds its bytes once the whole stream is
// read, whatever the reads return, and appending to one leaves the
// others alone.
func TestBufferData(t *testing.T) {
	stream, want := bufferStream(t)
	rs := readers(stream)
	rs["whole"] = bytes.NewReader(stream)
	for name, r := range rs {
		d, err := NewDecoder(r)
		if err != nil {
			t.Fatalf("%s: %v", name, err)
		}
		var got []*Buffer
		for {
			v, err := d.Next()
			if err == io.EOF {
				break
			}
			if err != nil {
				t.Fatalf("%s: %v", name, err)
			}
			if b, ok := v.(*Buffer); ok {
				got = append(got, b)
			}
		}
		if len(got) != len(want) {
			t.Fatalf("%s: %d buffers, want %d", name, len(got), len(want))
		}
		for i, b := range got {
			if !bytes.Equal(b.Data, want[i].Data) {
				t.Fatalf("%s: buffer %d (%d bytes) differs once the stream is read", name, i, len(b.Data))
			}
			if cap(b.Data) != len(b.Data) {
				t.Fatalf("%s: buffer %d: cap %d, len %d", name, i, cap(b.Data), len(b.Data))
			}
		}
		for i := range got {
			got[i].Data = append(got[i].Data, 0xff, 0xfe)
		}
		for i, b := range got {
			if !bytes.Equal(b.Data[:len(b.Data)-2], want[i].Data) {
				t.Fatalf("%s: buffer %d changed when the others grew", name, i)
			}
		}
	}
}

// TestDecodeAllocs: decoding allocates about what the stream holds, not
// more (the chunks grow only behind bytes that arrived).
func TestDecodeAllocs(t *testing.T) {
	stream, _ := bufferStream(t)
	var before, after runtime.MemStats
	runtime.GC()
	runtime.ReadMemStats(&before)
	if _, _, err := decodeAll(stream); err != nil {
		t.Fatal(err)
	}
	runtime.ReadMemStats(&after)
	if n, max := after.TotalAlloc-before.TotalAlloc, 2*uint64(len(stream)); n > max {
		t.Errorf("decoding %d bytes allocated %d", len(stream), n)
	}
}
