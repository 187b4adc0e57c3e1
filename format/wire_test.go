package format

import (
	"bytes"
	"encoding/binary"
	"hash/crc32"
)

// wire builds streams byte by byte, field by field, without the encoder,
// so tests can compare the encoder against an independent writing of
// FORMAT.md and can build streams the encoder refuses to write.
type wire struct {
	b     []byte
	offs  []int    // start of each record
	types []uint32 // type of each record
}

func u16(v uint16) []byte { return binary.LittleEndian.AppendUint16(nil, v) }
func u32(v uint32) []byte { return binary.LittleEndian.AppendUint32(nil, v) }
func i32(v int32) []byte  { return u32(uint32(v)) }
func u64(v uint64) []byte { return binary.LittleEndian.AppendUint64(nil, v) }
func pad(n int) []byte    { return make([]byte, n) }

// rec appends a record: pre-header {type, len}, then the payload parts.
func (w *wire) rec(typ uint32, parts ...[]byte) *wire {
	n := 8
	for _, p := range parts {
		n += len(p)
	}
	w.offs = append(w.offs, len(w.b))
	w.types = append(w.types, typ)
	w.b = append(w.b, u32(typ)...)
	w.b = append(w.b, u32(uint32(n))...)
	for _, p := range parts {
		w.b = append(w.b, p...)
	}
	return w
}

func (w *wire) header(arch, major, minor, patch, rev uint16, ns, flags uint64, release, version, machine string) *wire {
	return w.rec(TypeHeader, u64(HeadMagic), u16(arch), u16(major), u16(minor), u16(patch), u16(rev), pad(2), pad(4), u64(ns), u64(flags)).
		rec(TypeBuffer, []byte(release)).
		rec(TypeBuffer, []byte(version)).
		rec(TypeBuffer, []byte(machine))
}

// stdHeader is the golden stream's header.
func (w *wire) stdHeader() *wire {
	return w.header(1, 6, 18, 0, 1, 1700000000123456789, 1, "6.18.0", "#1 SMP", "x86_64")
}

func (w *wire) task(pid, tid uint32, startNS uint64, uid uint32, comm string) *wire {
	c := make([]byte, 16)
	copy(c, comm)
	return w.rec(TypeTask, u32(pid), u32(tid), u64(startNS), u32(uid), pad(4), c)
}

func (w *wire) fdent(ref, fd int32, cloexec uint32) *wire {
	return w.rec(TypeFDEnt, i32(ref), i32(fd), u32(cloexec), pad(4))
}

func (w *wire) file(mode, flags uint32, pos, version uint64, pipeRef int32) *wire {
	return w.rec(TypeFile, u32(2), u32(mode), u32(flags), pad(4), u64(pos), u64(version), i32(pipeRef), pad(4))
}

func (w *wire) filePipe(nrbufs int32) *wire {
	return w.rec(TypeFilePipe, i32(nrbufs), pad(4))
}

// psPipe writes PS_PIPE from p's fields (Ref and Path are not in it).
func (w *wire) psPipe(p Pipe) *wire {
	return w.rec(TypePipe, u64(p.Ino), u32(uint32(p.Kind)), u32(uint32(p.Status)), u32(uint32(p.Reason)),
		u32(p.Attempts), u32(p.RingSize), u32(p.MaxUsage), u32(p.Capacity), u32(p.PageSize),
		u32(p.Head), u32(p.Tail), u32(p.Readers), u32(p.Writers), u32(p.NrBufs), pad(4), u64(p.Bytes))
}

func (w *wire) psBuf(index, offset, n, flags uint32) *wire {
	return w.rec(TypeBuf, u32(index), u32(offset), u32(n), u32(flags))
}

func (w *wire) buffer(data string) *wire { return w.rec(TypeBuffer, []byte(data)) }

func (w *wire) str(s string) *wire { return w.rec(TypeString, append([]byte(s), 0)) }

func (w *wire) note(pid, code uint32, msg string) *wire {
	return w.rec(TypeNote, u32(pid), u32(code)).str(msg)
}

func (w *wire) trailer() *wire {
	crc := crc32.Checksum(w.b, crc32.MakeTable(crc32.Castagnoli))
	return w.rec(TypeTrailer, u32(crc), u32(uint32(len(w.offs))), u64(uint64(len(w.b))))
}

func (w *wire) tail() *wire { return w.rec(TypeTail, u64(TailMagic)) }

// end closes a stream the usual way.
func (w *wire) end() []byte { return w.trailer().tail().b }

// at returns the offset of the k-th (from 0) record of type typ.
func (w *wire) at(typ uint32, k int) int {
	for i, t := range w.types {
		if t == typ {
			if k == 0 {
				return w.offs[i]
			}
			k--
		}
	}
	panic("no such record")
}

// recordAt returns the start of the record that holds byte off.
func (w *wire) recordAt(off int) int {
	start := 0
	for _, o := range w.offs {
		if o > off {
			break
		}
		start = o
	}
	return start
}

// stdHeaderV2 is the golden v2 stream's header: stdHeader with rev 2.
func (w *wire) stdHeaderV2() *wire {
	return w.header(1, 6, 18, 0, 2, 1700000000123456789, 1, "6.18.0", "#1 SMP", "x86_64")
}

// stdHeaderV3 is the golden v3 stream's header: stdHeader with rev 3.
func (w *wire) stdHeaderV3() *wire {
	return w.header(1, 6, 18, 0, 3, 1700000000123456789, 1, "6.18.0", "#1 SMP", "x86_64")
}

// container writes PS_CONTAINER and its six STRINGs.
func (w *wire) container(ref uint32, runtime, id, name, pod, ns, kube string) *wire {
	w.rec(TypeContainer, u32(ref), pad(4))
	for _, s := range []string{runtime, id, name, pod, ns, kube} {
		w.str(s)
	}
	return w
}

// proc writes PS_PROC and its cgroup STRING.
func (w *wire) proc(pid, nspid uint32, cgroupID uint64, container, flags uint32, comm, cgroup string) *wire {
	return w.rec(TypeProc, u32(pid), u32(nspid), u64(cgroupID), u32(container), u32(flags), comm16(comm)).str(cgroup)
}

func comm16(s string) []byte {
	c := make([]byte, 16)
	copy(c, s)
	return c
}

// taskState writes PS_TASK_STATE and its wchan STRING.
func (w *wire) taskState(pid, tid uint32, state byte, waitNS uint64, flags uint32, wchan string) *wire {
	return w.rec(TypeTaskState, u32(pid), u32(tid), []byte{state}, pad(7), u64(waitNS), u32(flags), pad(4)).str(wchan)
}

// waiter writes a PS_WAITER.
func (w *wire) waiter(pipeRef int32, pid, tid uint32, queue, via, state byte, epollFD int32, events uint32, waitNS uint64, flags uint32, comm string) *wire {
	return w.rec(TypeWaiter, i32(pipeRef), u32(pid), u32(tid), []byte{queue, via, state, 0}, i32(epollFD), u32(events),
		u64(waitNS), u32(flags), comm16(comm), pad(4))
}

// openWait writes PS_OPEN_WAIT and its path STRING.
func (w *wire) openWait(pid, tid uint32, end, state byte, ino, waitNS uint64, flags uint32, comm, path string) *wire {
	return w.rec(TypeOpenWait, u32(pid), u32(tid), []byte{end, state}, pad(6), u64(ino), u64(waitNS), u32(flags), comm16(comm), pad(4)).str(path)
}

// asRevision returns a copy of a whole stream b with the HEADER's rev set
// to rev and the trailer's CRC made right again.
func asRevision(b []byte, rev uint16) []byte {
	b = bytes.Clone(b)
	copy(b[8+16:], u16(rev))
	off := len(b) - (preHeader + sizeTail) - (preHeader + sizeTrailer)
	copy(b[off+8:], u32(crc32.Checksum(b[:off], crc32.MakeTable(crc32.Castagnoli))))
	return b
}
