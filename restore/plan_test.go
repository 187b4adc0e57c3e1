package restore

import (
	"errors"
	"strings"
	"testing"

	"github.com/pipesnap/pipesnap/format"
	"github.com/pipesnap/pipesnap/snapshot"
)

// TestPlanPipe: capacities and the pages a refill takes, in uint64,
// against what the kernel does with them.
func TestPlanPipe(t *testing.T) {
	pipe := func(capacity, maxUsage uint32, status format.Status, bufs ...format.Buffer) *snapshot.Pipe {
		p := &snapshot.Pipe{Pipe: format.Pipe{Ino: 1, Capacity: capacity, MaxUsage: maxUsage, PageSize: 4096, Status: status}, Buffers: bufs}
		for _, b := range bufs {
			p.Bytes += uint64(b.Len)
		}
		return p
	}
	plainBufs := func(n int, l uint32) []format.Buffer {
		out := make([]format.Buffer, n)
		for i := range out {
			out[i] = format.Buffer{Len: l, Flags: format.BufCanMerge}
		}
		return out
	}
	packet := func(l uint32) format.Buffer { return format.Buffer{Len: l, Flags: format.BufPacket} }
	for _, c := range []struct {
		name               string
		p                  *snapshot.Pipe
		size, pages, slots uint64
	}{
		{"new pipe", pipe(0, 0, 0), 0, 0, 16},
		{"full 64 KiB", pipe(65536, 16, 0, plainBufs(16, 4096)...), 65536, 16, 16},
		// 16 buffers of 100 bytes: one writev, one page.
		{"small writes", pipe(65536, 16, 0, plainBufs(16, 100)...), 65536, 1, 16},
		// 2000 small buffers are two writevs (IOV_MAX 1024): 2 pages
		// at most; their page-a-buffer need raises the capacity.
		{"many small", pipe(65536, 16, 0, plainBufs(2000, 1)...), 2000 * 4096, 2, 2048},
		{"packets", pipe(65536, 16, format.StatusPacket, packet(1), packet(1), packet(5000)), 65536, 4, 16},
		// Plain after a packet is a write of its own, then a writev.
		{"mixed", pipe(65536, 16, format.StatusPacket, packet(1), format.Buffer{Len: 10}, format.Buffer{Len: 10}, packet(1)), 65536, 4, 16},
		{"empty packets", pipe(65536, 16, format.StatusPacket, packet(0), packet(0)), 65536, 0, 16},
		{"not a power of two", pipe(3*4096, 3, 0), 3 * 4096, 0, 4},
	} {
		pl, err := planPipe(c.p, 4096)
		if err != nil {
			t.Errorf("%s: %v", c.name, err)
			continue
		}
		if pl.size != c.size || pl.mem.pages != c.pages || pl.mem.slots != c.slots {
			t.Errorf("%s: size %d, %d pages, %d slots; want %d, %d, %d", c.name, pl.size, pl.mem.pages, pl.mem.slots, c.size, c.pages, c.slots)
		}
	}

	// 2049 buffers of 1 MiB need more than 2 GiB: refused, not wrapped.
	p := pipe(65536, 16, 0, plainBufs(2049, 1<<20)...)
	if _, err := planPipe(p, 4096); !errors.Is(err, ErrCapacity) || !strings.Contains(err.Error(), "need 2148532224 bytes") {
		t.Errorf("2049 MiB of buffers: %v", err)
	}
	// 2 GiB itself is a capacity Linux has.
	if pl, err := planPipe(pipe(0, 1<<19, 0), 4096); err != nil || pl.size != 1<<31 {
		t.Errorf("2 GiB: %v", err)
	}
}

// TestWarnings: repeated kinds fold into the first, with a count and
// the first few; kinds keep the order they came in.
func TestWarnings(t *testing.T) {
	var got []string
	w := warnings{out: func(s string) { got = append(got, s) }}
	w.add("a", "1", "pipe 1 is odd")
	w.add("b", "1", "pipe 1 is even")
	for i := 2; i <= 6; i++ {
		w.add("a", string(rune('0'+i)), "pipe n is odd")
	}
	w.add("c", "9", "pipe 9")
	w.add("c", "10", "pipe 10")
	w.flush()
	want := []string{
		"pipe 1 is odd (the same for 5 more pipes: 2, 3, 4 and 2 more)",
		"pipe 1 is even",
		"pipe 9 (the same for 1 more pipe: 10)",
	}
	if strings.Join(got, "\n") != strings.Join(want, "\n") {
		t.Errorf("got\n%s\nwant\n%s", strings.Join(got, "\n"), strings.Join(want, "\n"))
	}
	if firstFew([]uint32{7}, "buffer", "buffers") != "buffer 7" || firstFew([]uint32{1, 2, 3, 4}, "buffer", "buffers") != "buffers 1, 2, 3 and 1 more" {
		t.Error(firstFew([]uint32{1, 2, 3, 4}, "buffer", "buffers"))
	}
}
