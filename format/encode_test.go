package format

import (
	"bytes"
	"errors"
	"strings"
	"testing"
)

func TestNewEncoderRefuses(t *testing.T) {
	long := strings.Repeat("x", MaxUTSBuffer+1)
	for name, h := range map[string]Header{
		"revision 1":   {Revision: 1},
		"revision 2":   {Revision: 2},
		"revision 4":   {Revision: 4},
		"flags":        {Flags: 2},
		"long release": {Release: long},
		"long version": {Version: long},
		"long machine": {Machine: long},
	} {
		var buf bytes.Buffer
		if _, err := NewEncoder(&buf, h); err == nil || buf.Len() != 0 {
			t.Errorf("%s: err %v, wrote %d bytes", name, err, buf.Len())
		}
	}
	if _, err := NewEncoder(new(bytes.Buffer), Header{Revision: Revision, Release: long[1:]}); err != nil {
		t.Error(err)
	}
}

// TestEncoderMisuse runs calls in order on one encoder: each refused
// call must write nothing and leave the encoder usable, and the accepted
// ones must make a stream the decoder takes.
func TestEncoderMisuse(t *testing.T) {
	var buf bytes.Buffer
	e, err := NewEncoder(&buf, goldenHeader)
	if err != nil {
		t.Fatal(err)
	}
	data := []byte("hello")
	steps := []struct {
		name string
		ok   bool
		call func() error
	}{
		{"fd before task", false, func() error { return e.WriteFDEnt(FDEnt{FileRef: 1}) }},
		{"file before fd", false, func() error { return e.WriteFile(File{Ref: 1, Type: FileTypePipe, PipeRef: 2}) }},
		{"pipe before file", false, func() error { return e.WritePipe(Pipe{Ref: 1, Kind: KindPipe}) }},
		{"buffer before pipe", false, func() error { return e.WriteBuffer(Buffer{}) }},
		{"note with NUL", false, func() error { return e.WriteNote(Note{Msg: "a\x00b"}) }},
		{"note too long", false, func() error { return e.WriteNote(Note{Msg: strings.Repeat("x", MaxString)}) }},
		{"note", true, func() error { return e.WriteNote(Note{Msg: strings.Repeat("x", MaxString-1)}) }},
		{"comm too long", false, func() error { return e.WriteTask(Task{Comm: "0123456789abcdef"}) }},
		{"comm with NUL", false, func() error { return e.WriteTask(Task{Comm: "a\x00"}) }},
		{"task", true, func() error { return e.WriteTask(Task{PID: 1, Comm: "0123456789abcde"}) }},
		{"fd negative", false, func() error { return e.WriteFDEnt(FDEnt{FD: -1, FileRef: 1}) }},
		{"fd objref 0", false, func() error { return e.WriteFDEnt(FDEnt{FileRef: 0}) }},
		{"fd objref skips", false, func() error { return e.WriteFDEnt(FDEnt{FileRef: 2}) }},
		{"fd", true, func() error { return e.WriteFDEnt(FDEnt{FD: 0, FileRef: e.NextRef()}) }},
		{"task before file", false, func() error { return e.WriteTask(Task{}) }},
		{"fd before file", false, func() error { return e.WriteFDEnt(FDEnt{FileRef: 1}) }},
		{"note before file", false, func() error { return e.WriteNote(Note{}) }},
		{"close before file", false, e.Close},
		{"file wrong ref", false, func() error { return e.WriteFile(File{Ref: 2, Type: FileTypePipe, PipeRef: 2}) }},
		{"file wrong type", false, func() error { return e.WriteFile(File{Ref: 1, Type: 1, PipeRef: 2}) }},
		{"file wrong mode", false, func() error { return e.WriteFile(File{Ref: 1, Type: FileTypePipe, Mode: 4, PipeRef: 2}) }},
		{"file pipe is a file", false, func() error { return e.WriteFile(File{Ref: 1, Type: FileTypePipe, PipeRef: 1}) }},
		{"file pipe skips", false, func() error { return e.WriteFile(File{Ref: 1, Type: FileTypePipe, PipeRef: 3}) }},
		{"file", true, func() error {
			return e.WriteFile(File{Ref: 1, Type: FileTypePipe, Mode: ModeRead, PipeRef: e.NextRef()})
		}},
		{"fd before pipe", false, func() error { return e.WriteFDEnt(FDEnt{FileRef: 1}) }},
		{"pipe wrong ref", false, func() error { return e.WritePipe(Pipe{Ref: 3, Kind: KindPipe}) }},
		{"pipe kind 0", false, func() error { return e.WritePipe(Pipe{Ref: 2}) }},
		{"pipe status bits", false, func() error { return e.WritePipe(Pipe{Ref: 2, Kind: KindPipe, Status: 8}) }},
		{"path on a pipe", false, func() error { return e.WritePipe(Pipe{Ref: 2, Kind: KindPipe, Path: "/x"}) }},
		{"path with NUL", false, func() error { return e.WritePipe(Pipe{Ref: 2, Kind: KindFIFO, Path: "/x\x00"}) }},
		{"path too long", false, func() error { return e.WritePipe(Pipe{Ref: 2, Kind: KindFIFO, Path: strings.Repeat("x", MaxString)}) }},
		{"bytes without buffers", false, func() error { return e.WritePipe(Pipe{Ref: 2, Kind: KindPipe, Bytes: 1}) }},
		{"bytes beyond buffers", false, func() error { return e.WritePipe(Pipe{Ref: 2, Kind: KindPipe, NrBufs: 1, Bytes: MaxBuffer + 1}) }},
		{"nrbufs beyond int32", false, func() error { return e.WritePipe(Pipe{Ref: 2, Kind: KindPipe, NrBufs: 1 << 31}) }},
		{"pipe", true, func() error { return e.WritePipe(Pipe{Ref: 2, Kind: KindFIFO, NrBufs: 3, Bytes: 10, Path: "/x"}) }},
		{"note amid buffers", false, func() error { return e.WriteNote(Note{}) }},
		{"close amid buffers", false, e.Close},
		{"buffer len mismatch", false, func() error { return e.WriteBuffer(Buffer{Len: 4, Data: data}) }},
		{"buffer over bytes", false, func() error { return e.WriteBuffer(Buffer{Len: 11, Data: make([]byte, 11)}) }},
		{"buffer", true, func() error { return e.WriteBuffer(Buffer{Len: 5, Data: data}) }},
		{"empty buffer", true, func() error { return e.WriteBuffer(Buffer{}) }},
		{"last buffer short", false, func() error { return e.WriteBuffer(Buffer{Len: 4, Data: data[:4]}) }},
		{"task amid buffers", false, func() error { return e.WriteTask(Task{}) }},
		{"fd amid buffers", false, func() error { return e.WriteFDEnt(FDEnt{FileRef: 1}) }},
		{"last buffer", true, func() error { return e.WriteBuffer(Buffer{Len: 5, Data: data}) }},
		{"buffer after the last", false, func() error { return e.WriteBuffer(Buffer{}) }},
		{"fd pipe objref as file", false, func() error { return e.WriteFDEnt(FDEnt{FD: 1, FileRef: 2}) }},
		{"fd shares file", true, func() error { return e.WriteFDEnt(FDEnt{FD: 1, FileRef: 1}) }},
		{"new file", true, func() error { return e.WriteFDEnt(FDEnt{FD: 2, FileRef: 3}) }},
		{"file shares pipe", true, func() error { return e.WriteFile(File{Ref: 3, Type: FileTypePipe, Mode: ModeWrite, PipeRef: 2}) }},
		{"pipe not due", false, func() error { return e.WritePipe(Pipe{Ref: 4, Kind: KindPipe}) }},
		{"second pipe", true, func() error {
			if err := e.WriteFDEnt(FDEnt{FD: 3, FileRef: 4}); err != nil {
				return err
			}
			if err := e.WriteFile(File{Ref: 4, Type: FileTypePipe, PipeRef: 5}); err != nil {
				return err
			}
			return e.WritePipe(Pipe{Ref: 5, Kind: KindPipe, NrBufs: 2, Bytes: MaxBuffer + 1})
		}},
		{"buffer too big", false, func() error { return e.WriteBuffer(Buffer{Len: MaxBuffer + 1, Data: make([]byte, MaxBuffer+1)}) }},
		{"buffers", true, func() error {
			if err := e.WriteBuffer(Buffer{Len: 1, Data: []byte("a")}); err != nil {
				return err
			}
			return e.WriteBuffer(Buffer{Len: MaxBuffer, Data: make([]byte, MaxBuffer)})
		}},
		{"close", true, e.Close},
		{"task after close", false, func() error { return e.WriteTask(Task{}) }},
		{"note after close", false, func() error { return e.WriteNote(Note{}) }},
		{"close twice", false, e.Close},
	}
	for _, s := range steps {
		before := e.Offset()
		err := s.call()
		if s.ok && err != nil {
			t.Fatalf("%s: %v", s.name, err)
		}
		if !s.ok {
			if err == nil {
				t.Fatalf("%s: accepted", s.name)
			}
			if e.Offset() != before {
				t.Fatalf("%s: refused, but wrote %d bytes", s.name, e.Offset()-before)
			}
			if !strings.HasPrefix(err.Error(), "format: ") {
				t.Errorf("%s: error %q", s.name, err)
			}
		}
	}
	if int64(buf.Len()) != e.Offset() {
		t.Fatalf("wrote %d bytes, Offset() %d", buf.Len(), e.Offset())
	}
	if _, _, err := decodeAll(buf.Bytes()); err != nil {
		t.Fatalf("the accepted calls made a stream the decoder rejects: %v", err)
	}
}

func TestEncoderNextRef(t *testing.T) {
	e, _ := NewEncoder(new(bytes.Buffer), Header{})
	e.WriteTask(Task{})
	for i, want := range []int32{1, 2, 3, 3} {
		if got := e.NextRef(); got != want {
			t.Fatalf("step %d: NextRef %d, want %d", i, got, want)
		}
		switch i {
		case 0:
			e.WriteFDEnt(FDEnt{FileRef: 1}) // takes 1 until its FILE comes
		case 1:
			e.WriteFile(File{Ref: 1, Type: FileTypePipe, PipeRef: 2}) // takes 2
		case 2:
			e.WritePipe(Pipe{Ref: 2, Kind: KindPipe})
		}
	}
}

type failWriter struct{ n int }

var errDisk = errors.New("disk full")

func (w *failWriter) Write(p []byte) (int, error) {
	if w.n < len(p) {
		n := w.n
		w.n = 0
		return n, errDisk
	}
	w.n -= len(p)
	return len(p), nil
}

// TestEncoderWriteError: a failing writer's error comes back and sticks.
func TestEncoderWriteError(t *testing.T) {
	e, err := NewEncoder(&failWriter{n: 100}, goldenHeader)
	if err != nil {
		t.Fatal(err) // buffered: nothing reached the writer yet
	}
	e.WriteTask(Task{})
	e.WriteFDEnt(FDEnt{FileRef: 1})
	e.WriteFile(File{Ref: 1, Type: FileTypePipe, PipeRef: 2})
	e.WritePipe(Pipe{Ref: 2, Kind: KindPipe, NrBufs: 1, Bytes: 100 << 10})
	// Bigger than bufio's buffer: goes straight to the writer and fails.
	if err := e.WriteBuffer(Buffer{Len: 100 << 10, Data: make([]byte, 100<<10)}); !errors.Is(err, errDisk) {
		t.Fatalf("WriteBuffer: %v", err)
	}
	if err := e.Close(); !errors.Is(err, errDisk) {
		t.Fatalf("Close: %v", err)
	}
	if err := e.WriteNote(Note{}); !errors.Is(err, errDisk) {
		t.Fatalf("WriteNote: %v", err)
	}
}

// TestEncoderStreams: the encoder does not hold records back beyond its
// bufio buffer, so a big stream reaches the writer as it is written.
func TestEncoderStreams(t *testing.T) {
	var buf bytes.Buffer
	e, _ := NewEncoder(&buf, goldenHeader)
	e.WriteTask(Task{})
	e.WriteFDEnt(FDEnt{FileRef: 1})
	e.WriteFile(File{Ref: 1, Type: FileTypePipe, PipeRef: 2})
	e.WritePipe(Pipe{Ref: 2, Kind: KindPipe, NrBufs: 64, Bytes: 64 * 4096})
	page := make([]byte, 4096)
	for i := range 64 {
		if err := e.WriteBuffer(Buffer{Len: 4096, Data: page}); err != nil {
			t.Fatal(err)
		}
		if behind := e.Offset() - int64(buf.Len()); behind > 64<<10 {
			t.Fatalf("buffer %d: %d bytes held back", i, behind)
		}
	}
}
