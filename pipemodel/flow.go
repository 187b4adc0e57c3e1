package pipemodel

// Flow is what went through a pipe between two samples.
type Flow struct {
	// Read is the bytes read out of the pipe; Written the bytes written
	// into it (Read plus what the queue grew by).
	Read, Written uint64
	// BufsRead and BufsWritten are the tail and head advances: buffers
	// read to their end and buffers started. Exact.
	BufsRead, BufsWritten uint64
	// Exact is false when buffers were written and read whole between
	// the samples: their lengths were never seen, and each counts as the
	// mean fill of the buffers that were.
	Exact bool
}

// FlowBetween estimates what went through a pipe from prev to cur (the
// same pipe, sampled later). The kernel keeps no byte counters, only the
// ring indices and each buffer's offset and length, so: a buffer the
// earlier sample saw and that has since left the ring took its bytes
// with it (len, as then seen); the buffer now at the tail gave what its
// offset moved by; buffers that came and went unseen count as the mean
// fill of the seen ones (a page when none was seen).
func FlowBetween(prev, cur *Pipe, pageSize uint64) Flow {
	f := Flow{
		BufsRead:    uint64(cur.Tail - prev.Tail),
		BufsWritten: uint64(cur.Head - prev.Head),
		Exact:       true,
	}
	if f.BufsRead > uint64(1)<<31 || f.BufsWritten > uint64(1)<<31 {
		return Flow{} // the indices went backwards: not the same pipe
	}
	// slotOf returns what a sample saw of ring index i.
	slotOf := func(p *Pipe, i uint32) (Slot, bool) {
		k := i - p.Tail
		if k >= p.Bufs || int(k) >= len(p.Slots) {
			return Slot{}, false
		}
		return p.Slots[k], true
	}
	var unseen uint64
	mean := meanFill(prev, cur, pageSize)
	for k := uint64(0); k < f.BufsRead; k++ {
		s, ok := slotOf(prev, prev.Tail+uint32(k))
		switch {
		case !ok:
			unseen++
		case prev.Tail+uint32(k) == prev.Head-1 && f.BufsWritten > 0:
			// The last buffer may have been appended to before the
			// writer started the next: count it at least as full as
			// the others.
			f.Read += max(uint64(s.Len), mean-min(mean, uint64(s.Offset)))
			f.Exact = false
		default:
			f.Read += uint64(s.Len)
		}
	}
	if unseen > 0 {
		f.Exact = false
		f.Read += unseen * mean
	}
	// The buffer now at the tail: what was read of it since.
	if now, ok := slotOf(cur, cur.Tail); ok {
		if then, ok := slotOf(prev, cur.Tail); ok {
			if now.Offset >= then.Offset {
				f.Read += uint64(now.Offset - then.Offset)
			}
		} else if now.Offset > 0 {
			// Written and partly read unseen; its first offset is not
			// known (spliced pages start anywhere): assume 0.
			f.Read += uint64(now.Offset)
			f.Exact = false
		}
	}
	if grown := int64(cur.Bytes) - int64(prev.Bytes); grown >= 0 || uint64(-grown) <= f.Read {
		f.Written = uint64(int64(f.Read) + grown)
	}
	return f
}

// meanFill is the mean of offset+len over the buffers two samples saw
// whole (every one but the last of each, which may still be filling):
// the best guess for a buffer that was never seen.
func meanFill(a, b *Pipe, pageSize uint64) uint64 {
	var sum, n uint64
	for _, p := range []*Pipe{a, b} {
		for i := 0; i+1 < len(p.Slots); i++ {
			sum += uint64(p.Slots[i].Offset) + uint64(p.Slots[i].Len)
			n++
		}
	}
	if n == 0 {
		return pageSize
	}
	return sum / n
}
