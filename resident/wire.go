package resident

import (
	"encoding/binary"
	"errors"
	"math"
	"time"

	"github.com/pipesnap/pipesnap/pipemodel"
)

// A sample on the wire: every field of pipemodel.Sample in a fixed order,
// integers as varints, strings length-prefixed, no names and no types:
// both ends are the same protocol version (Protocol), and the round-trip
// test fills every field of the model by reflection, so a field added to
// the model and not here fails it. At 10,000 pipes a round trip takes
// half the time of encoding/gob's and a fifth of its allocations
// (BenchmarkWire), and gob's package init, paid by every pipesnap run,
// is gone.

type wenc struct{ b []byte }

func (e *wenc) u(v uint64) { e.b = binary.AppendUvarint(e.b, v) }
func (e *wenc) i(v int64)  { e.b = binary.AppendVarint(e.b, v) }
func (e *wenc) s(v string) { e.u(uint64(len(v))); e.b = append(e.b, v...) }
func (e *wenc) d(v time.Duration) {
	e.i(int64(v))
}
func (e *wenc) bool(v bool) {
	if v {
		e.b = append(e.b, 1)
	} else {
		e.b = append(e.b, 0)
	}
}

func (e *wenc) u32s(v []uint32) {
	e.u(uint64(len(v)))
	for _, x := range v {
		e.u(uint64(x))
	}
}

// A sample crosses as its head (every field but the pipes) and then its
// pipes in batches, so that a client can lay them out as they come
// (ls) without holding them all.

// encodeHead appends the encoding of s without its pipes to b.
func encodeHead(b []byte, s *pipemodel.Sample) []byte {
	e := &wenc{b: b}
	e.bool(!s.Time.IsZero())
	if !s.Time.IsZero() {
		e.i(s.Time.UnixNano())
	}
	e.d(s.Took)
	e.u(s.PageSize)
	e.u(uint64(len(s.Procs)))
	for _, p := range s.Procs {
		e.proc(p)
	}
	e.u32s(s.Gone)
	e.u(uint64(len(s.OpenWaits)))
	for _, w := range s.OpenWaits {
		e.u(uint64(w.PID))
		e.u(uint64(w.TID))
		e.s(w.Comm)
		e.s(string(w.State))
		e.s(string(w.End))
		e.u(w.Ino)
		e.s(w.Path)
		e.d(w.Wait)
		e.u(uint64(w.Readers))
		e.u(uint64(w.Writers))
	}
	e.bool(s.Scoped)
	e.bool(s.Offline)
	return e.b
}

// appendPipe appends one pipe's encoding to b.
func appendPipe(b []byte, p *pipemodel.Pipe) []byte {
	e := &wenc{b: b}
	e.pipe(p)
	return e.b
}

func (e *wenc) pipe(p *pipemodel.Pipe) {
	e.u(p.Ino)
	e.s(p.Kind)
	e.s(p.Path)
	e.u(p.Bytes)
	e.u(p.Capacity)
	for _, v := range []uint32{p.Bufs, p.MaxUsage, p.RingSize, p.Head, p.Tail, p.Readers, p.Writers, p.UnseenReaders, p.UnseenWriters} {
		e.u(uint64(v))
	}
	e.bool(p.Moving)
	e.bool(p.Truncated)
	e.bool(p.BadRing)
	e.u(uint64(len(p.Slots)))
	for _, s := range p.Slots {
		e.u(uint64(s.Offset))
		e.u(uint64(s.Len))
	}
	e.u(uint64(len(p.Holders)))
	for _, h := range p.Holders {
		e.u(uint64(h.PID))
		e.s(h.Comm)
		e.i(int64(h.FD))
		e.s(string(h.End))
		e.s(h.Blocked)
		e.u32s(h.BlockedTIDs)
		e.s(h.Waiting)
		e.s(h.Via)
		e.i(int64(h.EpollFD))
		e.u32s(h.WaitingTIDs)
		e.bool(h.Polling)
		e.d(h.Wait)
		e.u(uint64(h.Flags))
		e.bool(h.Outside)
		e.u(h.File)
		e.u(uint64(h.Mode))
	}
	e.u(uint64(len(p.Waiters)))
	for _, w := range p.Waiters {
		e.s(string(w.Queue))
		e.s(string(w.Kind))
		e.u(uint64(w.PID))
		e.u(uint64(w.TID))
		e.s(w.Comm)
		e.s(string(w.State))
		e.bool(w.Sleeping)
		e.u(uint64(w.Events))
		e.i(int64(w.EpollFD))
		e.i(int64(w.TargetFD))
		e.d(w.Wait)
		e.bool(w.Outside)
		e.u(w.Entry)
	}
}

func (e *wenc) proc(p *pipemodel.Proc) {
	e.u(uint64(p.PID))
	e.s(p.Comm)
	e.s(string(p.State))
	e.u(uint64(p.Threads))
	e.d(p.Idle)
	e.bool(p.IdleKnown)
	e.u(uint64(len(p.Tasks)))
	for _, t := range p.Tasks {
		e.u(uint64(t.TID))
		e.s(string(t.State))
		e.d(t.Idle)
		e.s(t.Wchan)
	}
	e.bool(p.Outside)
	e.u(uint64(p.NSPID))
	e.u(p.CgroupID)
	e.s(p.Cgroup)
	e.bool(p.CgroupTruncated)
	e.bool(p.CgroupV1 != nil)
	if c := p.CgroupV1; c != nil {
		e.s(c.Controller)
		e.u(c.ID)
		e.s(c.Path)
		e.bool(c.Truncated)
	}
	e.bool(p.Container != nil)
	if c := p.Container; c != nil {
		for _, v := range []string{c.Runtime, c.ID, c.Name, c.Pod, c.Namespace, c.KubeName} {
			e.s(v)
		}
		e.bool(c.Monitor)
	}
}

var errWire = errors.New("malformed sample from the resident serve")

// wdec reads what wenc wrote; the first error sticks and every read after
// it returns zero values.
type wdec struct {
	b   []byte
	err error
	// strs interns the strings that repeat (commands, ends, states).
	strs map[string]string
}

func (d *wdec) fail() {
	if d.err == nil {
		d.err = errWire
	}
	d.b = nil
}

func (d *wdec) u() uint64 {
	v, n := binary.Uvarint(d.b)
	if n <= 0 {
		d.fail()
		return 0
	}
	d.b = d.b[n:]
	return v
}

func (d *wdec) u32() uint32 {
	v := d.u()
	if v > math.MaxUint32 {
		d.fail()
		return 0
	}
	return uint32(v)
}

func (d *wdec) i() int64 {
	v, n := binary.Varint(d.b)
	if n <= 0 {
		d.fail()
		return 0
	}
	d.b = d.b[n:]
	return v
}

func (d *wdec) i32() int32 {
	v := d.i()
	if v < math.MinInt32 || v > math.MaxInt32 {
		d.fail()
		return 0
	}
	return int32(v)
}

func (d *wdec) d() time.Duration { return time.Duration(d.i()) }

func (d *wdec) bool() bool {
	if len(d.b) == 0 || d.b[0] > 1 {
		d.fail()
		return false
	}
	v := d.b[0] == 1
	d.b = d.b[1:]
	return v
}

func (d *wdec) s() string {
	n := d.u()
	if n > uint64(len(d.b)) {
		d.fail()
		return ""
	}
	raw := d.b[:n]
	d.b = d.b[n:]
	if n == 0 {
		return ""
	}
	if s, ok := d.strs[string(raw)]; ok {
		return s
	}
	s := string(raw)
	if n <= 64 {
		d.strs[s] = s
	}
	return s
}

// count reads a length whose every element takes at least min bytes:
// a length the rest of the payload cannot hold is malformed (and makes
// no allocation).
func (d *wdec) count(min int) int {
	n := d.u()
	if n > uint64(len(d.b)/min) {
		d.fail()
		return 0
	}
	return int(n)
}

func (d *wdec) u32s() []uint32 {
	n := d.count(1)
	if n == 0 {
		return nil
	}
	v := make([]uint32, n)
	for i := range v {
		v[i] = d.u32()
	}
	return v
}

func newDecoder() *wdec { return &wdec{strs: map[string]string{}} }

// head decodes what encodeHead wrote.
func (d *wdec) head(b []byte) (*pipemodel.Sample, error) {
	d.b, d.err = b, nil
	s := &pipemodel.Sample{}
	if d.bool() {
		s.Time = time.Unix(0, d.i())
	}
	s.Took = d.d()
	s.PageSize = d.u()
	n := d.count(14)
	s.Procs = make(map[uint32]*pipemodel.Proc, n)
	for range n {
		p := d.proc()
		s.Procs[p.PID] = p
	}
	s.Gone = d.u32s()
	if n := d.count(10); n > 0 {
		s.OpenWaits = make([]pipemodel.OpenWait, n)
		for i := range s.OpenWaits {
			w := &s.OpenWaits[i]
			w.PID, w.TID = d.u32(), d.u32()
			w.Comm, w.State, w.End = d.s(), pipemodel.State(d.s()), pipemodel.End(d.s())
			w.Ino, w.Path, w.Wait = d.u(), d.s(), d.d()
			w.Readers, w.Writers = d.u32(), d.u32()
		}
	}
	s.Scoped = d.bool()
	s.Offline = d.bool()
	return s, d.end()
}

// pipes decodes a batch (a count, then each pipe's appendPipe), appended
// to into.
func (d *wdec) pipes(b []byte, into []*pipemodel.Pipe) ([]*pipemodel.Pipe, error) {
	d.b, d.err = b, nil
	n := d.count(20)
	for range n {
		into = append(into, d.pipe())
	}
	return into, d.end()
}

// end: all of the payload read, and well.
func (d *wdec) end() error {
	if d.err == nil && len(d.b) != 0 {
		d.fail()
	}
	return d.err
}

func (d *wdec) pipe() *pipemodel.Pipe {
	p := &pipemodel.Pipe{}
	p.Ino, p.Kind, p.Path, p.Bytes, p.Capacity = d.u(), d.s(), d.s(), d.u(), d.u()
	for _, v := range []*uint32{&p.Bufs, &p.MaxUsage, &p.RingSize, &p.Head, &p.Tail, &p.Readers, &p.Writers, &p.UnseenReaders, &p.UnseenWriters} {
		*v = d.u32()
	}
	p.Moving, p.Truncated, p.BadRing = d.bool(), d.bool(), d.bool()
	if n := d.count(2); n > 0 {
		p.Slots = make([]pipemodel.Slot, n)
		for i := range p.Slots {
			p.Slots[i] = pipemodel.Slot{Offset: d.u32(), Len: d.u32()}
		}
	}
	if n := d.count(16); n > 0 {
		p.Holders = make([]pipemodel.Holder, n)
		for i := range p.Holders {
			h := &p.Holders[i]
			h.PID, h.Comm, h.FD, h.End = d.u32(), d.s(), d.i32(), pipemodel.End(d.s())
			h.Blocked, h.BlockedTIDs = d.s(), d.u32s()
			h.Waiting, h.Via, h.EpollFD, h.WaitingTIDs = d.s(), d.s(), d.i32(), d.u32s()
			h.Polling, h.Wait, h.Flags, h.Outside = d.bool(), d.d(), d.u32(), d.bool()
			h.File, h.Mode = d.u(), d.u32()
		}
	}
	if n := d.count(13); n > 0 {
		p.Waiters = make([]pipemodel.Waiter, n)
		for i := range p.Waiters {
			w := &p.Waiters[i]
			w.Queue, w.Kind = pipemodel.Queue(d.s()), pipemodel.WaiterKind(d.s())
			w.PID, w.TID, w.Comm, w.State = d.u32(), d.u32(), d.s(), pipemodel.State(d.s())
			w.Sleeping, w.Events, w.EpollFD, w.TargetFD = d.bool(), d.u32(), d.i32(), d.i32()
			w.Wait, w.Outside, w.Entry = d.d(), d.bool(), d.u()
		}
	}
	return p
}

func (d *wdec) proc() *pipemodel.Proc {
	p := &pipemodel.Proc{}
	p.PID, p.Comm, p.State, p.Threads = d.u32(), d.s(), pipemodel.State(d.s()), d.u32()
	p.Idle, p.IdleKnown = d.d(), d.bool()
	if n := d.count(4); n > 0 {
		p.Tasks = make([]pipemodel.Thread, n)
		for i := range p.Tasks {
			p.Tasks[i] = pipemodel.Thread{TID: d.u32(), State: pipemodel.State(d.s()), Idle: d.d(), Wchan: d.s()}
		}
	}
	p.Outside, p.NSPID, p.CgroupID, p.Cgroup, p.CgroupTruncated = d.bool(), d.u32(), d.u(), d.s(), d.bool()
	if d.bool() {
		p.CgroupV1 = &pipemodel.Cgroup{Controller: d.s(), ID: d.u(), Path: d.s(), Truncated: d.bool()}
	}
	if d.bool() {
		c := &pipemodel.Container{}
		for _, v := range []*string{&c.Runtime, &c.ID, &c.Name, &c.Pod, &c.Namespace, &c.KubeName} {
			*v = d.s()
		}
		c.Monitor = d.bool()
		p.Container = c
	}
	return p
}
