package pipetest

// Streams built by hand, for the tests that read snapshots without BPF.

import (
	"bytes"
	"testing"

	"github.com/pipesnap/pipesnap/format"
)

// SPipe is a pipe of a hand-built stream.
type SPipe struct {
	Ino      uint64
	Kind     format.Kind // 0: anonymous pipe
	Path     string      // a FIFO's
	Status   format.Status
	Reason   format.Reason
	Capacity uint32   // 0: 65536
	Bufs     [][]byte // one per buffer; packets with Packet
	Packet   bool
}

// SFD is an fd of a task of a hand-built stream. Fds with the same File
// (across tasks too) share an open file: the first one defines it.
type SFD struct {
	FD      int32
	File    string
	Pipe    *SPipe
	Mode    uint32 // format.ModeRead, ModeWrite or both
	Flags   uint32 // O_NONBLOCK, O_DIRECT...; the access mode is added
	Cloexec bool
}

// STask is a task of a hand-built stream.
type STask struct {
	PID  uint32
	Comm string
	FDs  []SFD
}

// Stream encodes tasks as a snapshot stream, objrefs and all.
func Stream(t testing.TB, tasks ...STask) []byte {
	t.Helper()
	var out bytes.Buffer
	enc, err := format.NewEncoder(&out, format.Header{Arch: format.ArchX86_64, Major: 6, Minor: 18, Release: "6.18.0", Machine: "x86_64"})
	if err != nil {
		t.Fatal(err)
	}
	files := map[string]int32{}
	pipes := map[*SPipe]int32{}
	must := func(err error) {
		t.Helper()
		if err != nil {
			t.Fatal(err)
		}
	}
	for _, task := range tasks {
		must(enc.WriteTask(format.Task{PID: task.PID, TID: task.PID, Comm: task.Comm}))
		for _, fd := range task.FDs {
			if ref, ok := files[fd.File]; ok && fd.File != "" {
				must(enc.WriteFDEnt(format.FDEnt{FD: fd.FD, FileRef: ref, Cloexec: fd.Cloexec}))
				continue
			}
			ref := enc.NextRef()
			if fd.File != "" {
				files[fd.File] = ref
			}
			must(enc.WriteFDEnt(format.FDEnt{FD: fd.FD, FileRef: ref, Cloexec: fd.Cloexec}))
			acc := uint32(0)
			switch fd.Mode {
			case format.ModeWrite:
				acc = 1
			case format.ModeRead | format.ModeWrite:
				acc = 2
			}
			pref, known := pipes[fd.Pipe]
			if !known {
				pref = enc.NextRef()
				pipes[fd.Pipe] = pref
			}
			must(enc.WriteFile(format.File{Ref: ref, Type: format.FileTypePipe, Mode: fd.Mode, Flags: fd.Flags | acc, PipeRef: pref}))
			if known {
				continue
			}
			p := fd.Pipe
			kind, capacity := p.Kind, p.Capacity
			if kind == 0 {
				kind = format.KindPipe
			}
			if capacity == 0 {
				capacity = 65536
			}
			fp := format.Pipe{
				Ref: pref, Ino: p.Ino, Kind: kind, Status: p.Status, Reason: p.Reason, Attempts: 1,
				RingSize: capacity / 4096, MaxUsage: capacity / 4096, Capacity: capacity, PageSize: 4096,
				Head: 100 + uint32(len(p.Bufs)), Tail: 100, Readers: 1, Writers: 1,
				NrBufs: uint32(len(p.Bufs)), Path: p.Path,
			}
			if p.Packet {
				fp.Status |= format.StatusPacket
			}
			for _, b := range p.Bufs {
				fp.Bytes += uint64(len(b))
			}
			must(enc.WritePipe(fp))
			for i, b := range p.Bufs {
				flags := format.BufCanMerge
				if p.Packet {
					flags = format.BufPacket
				}
				must(enc.WriteBuffer(format.Buffer{Index: 100 + uint32(i), Len: uint32(len(b)), Flags: flags, Data: b}))
			}
		}
	}
	must(enc.Close())
	return out.Bytes()
}
