package pipemodel

import "testing"

func ring(head, tail uint32, slots ...Slot) *Pipe {
	p := &Pipe{Head: head, Tail: tail, Bufs: head - tail, Slots: slots}
	for _, s := range slots {
		p.Bytes += uint64(s.Len)
	}
	return p
}

func TestFlowBetween(t *testing.T) {
	for _, tc := range []struct {
		name      string
		prev, cur *Pipe
		want      Flow
	}{
		{"still", ring(5, 3, Slot{0, 4096}, Slot{0, 10}), ring(5, 3, Slot{0, 4096}, Slot{0, 10}),
			Flow{Exact: true}},
		{"partly read", ring(5, 3, Slot{0, 4096}, Slot{0, 10}), ring(5, 3, Slot{1000, 3096}, Slot{0, 10}),
			Flow{Read: 1000, Written: 0, Exact: true}},
		{"appended to the last buffer", ring(5, 3, Slot{0, 4096}, Slot{0, 10}), ring(5, 3, Slot{0, 4096}, Slot{0, 30}),
			Flow{Written: 20, Exact: true}},
		{"a seen buffer read, part of the next", ring(5, 3, Slot{100, 3996}, Slot{0, 10}), ring(5, 4, Slot{4, 6}),
			Flow{Read: 3996 + 4, BufsRead: 1, Exact: true}},
		{"a new buffer written", ring(4, 3, Slot{0, 4096}), ring(5, 3, Slot{0, 4096}, Slot{0, 4096}),
			Flow{Written: 4096, BufsWritten: 1, Exact: true}},
		{"turned over unseen", ring(5, 3, Slot{0, 4096}, Slot{0, 4096}), ring(15, 13, Slot{0, 4096}, Slot{0, 4096}),
			Flow{Read: 10 * 4096, Written: 10 * 4096, BufsRead: 10, BufsWritten: 10}},
		{"wrapped indices", ring(1, 0xffffffff, Slot{0, 4096}, Slot{0, 100}), ring(1, 0, Slot{0, 100}),
			Flow{Read: 4096, BufsRead: 1, Exact: true}},
		{"went backwards: another pipe", ring(10, 9, Slot{0, 5}), ring(2, 1, Slot{0, 5}), Flow{}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if got := FlowBetween(tc.prev, tc.cur, 4096); got != tc.want {
				t.Errorf("got %+v, want %+v", got, tc.want)
			}
		})
	}
}
