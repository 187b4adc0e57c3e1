package main

import (
	"bufio"
	"encoding/json"
	"io"
	"slices"
	"strconv"

	"github.com/pipesnap/pipesnap/pipemodel"
)

// jsonState is ls --json's document (watch --json's frames embed it).
type jsonState struct {
	Pipes     []jsonStatePipe      `json:"pipes"`
	Procs     []pipemodel.Proc     `json:"procs"`
	Gone      []uint32             `json:"gone"`
	OpenWaits []pipemodel.OpenWait `json:"open_waits"`
	// TookUS is how long the kernel walk took, in microseconds.
	TookUS int64 `json:"took_us"`
}

type jsonStatePipe struct {
	Ino           uint64             `json:"ino"`
	Kind          string             `json:"kind"`
	Path          string             `json:"path"`
	Bytes         uint64             `json:"bytes"`
	Capacity      uint64             `json:"capacity"`
	Bufs          uint32             `json:"bufs"`
	Readers       uint32             `json:"readers"`
	Writers       uint32             `json:"writers"`
	UnseenReaders uint32             `json:"unseen_readers"`
	UnseenWriters uint32             `json:"unseen_writers"`
	Moving        bool               `json:"moving"`
	BadRing       bool               `json:"bad_ring"`
	Holders       []pipemodel.Holder `json:"holders"`
	Waiters       []pipemodel.Waiter `json:"waiters"`
}

func stateJSON(s *pipemodel.Sample) jsonState {
	out := jsonState{Pipes: []jsonStatePipe{}, Procs: []pipemodel.Proc{}, Gone: []uint32{}, TookUS: s.Took.Microseconds(),
		OpenWaits: append([]pipemodel.OpenWait{}, s.OpenWaits...)}
	for _, p := range s.Pipes {
		out.Pipes = append(out.Pipes, statePipeJSON(p))
	}
	for _, pr := range sortedProcs(s) {
		out.Procs = append(out.Procs, *pr)
	}
	out.Gone = append(out.Gone, s.Gone...)
	return out
}

func statePipeJSON(p *pipemodel.Pipe) jsonStatePipe {
	jp := jsonStatePipe{
		Ino: p.Ino, Kind: p.Kind, Path: p.Path, Bytes: p.Bytes, Capacity: p.Capacity, Bufs: p.Bufs,
		Readers: p.Readers, Writers: p.Writers, UnseenReaders: p.UnseenReaders, UnseenWriters: p.UnseenWriters,
		Moving: p.Moving, BadRing: p.BadRing, Holders: p.Holders, Waiters: p.Waiters,
	}
	if jp.Holders == nil {
		jp.Holders = []pipemodel.Holder{}
	}
	if jp.Waiters == nil {
		jp.Waiters = []pipemodel.Waiter{}
	}
	return jp
}

func sortedProcs(s *pipemodel.Sample) []*pipemodel.Proc {
	procs := make([]*pipemodel.Proc, 0, len(s.Procs))
	for _, pr := range s.Procs {
		procs = append(procs, pr)
	}
	slices.SortFunc(procs, func(a, b *pipemodel.Proc) int { return int(a.PID) - int(b.PID) })
	return procs
}

// writeStateJSON writes jsonState indented by two spaces, as
// json.Encoder with SetIndent("", "  ") would, one element at a time: the
// document of 100,000 pipes is never held in memory whole.
func writeStateJSON(w io.Writer, s *pipemodel.Sample) error {
	j := newStateJSON(w, s)
	for _, p := range s.Pipes {
		if err := j.pipe(p); err != nil {
			return err
		}
	}
	return j.finish()
}

// stateJSONWriter writes ls --json a pipe at a time: given the sample's head
// (its processes, gone pids and open waits), then each pipe.
type stateJSONWriter struct {
	bw    *bufio.Writer
	s     *pipemodel.Sample
	pipes int
}

func newStateJSON(w io.Writer, head *pipemodel.Sample) *stateJSONWriter {
	j := &stateJSONWriter{bw: bufio.NewWriterSize(w, 64<<10), s: head}
	j.bw.WriteString("{\n  \"pipes\": [")
	return j
}

func (j *stateJSONWriter) elem(i int, v any) error {
	b, err := json.MarshalIndent(v, "    ", "  ")
	if err != nil {
		return err
	}
	if i > 0 {
		j.bw.WriteByte(',')
	}
	j.bw.WriteString("\n    ")
	_, err = j.bw.Write(b)
	return err
}

func (j *stateJSONWriter) pipe(p *pipemodel.Pipe) error {
	j.pipes++
	return j.elem(j.pipes-1, statePipeJSON(p))
}

// closeArray ends an array of n elements.
func (j *stateJSONWriter) closeArray(n int) {
	if n > 0 {
		j.bw.WriteString("\n  ")
	}
	j.bw.WriteString("],")
}

func (j *stateJSONWriter) finish() error {
	s := j.s
	j.closeArray(j.pipes)
	procs := sortedProcs(s)
	arrays := []struct {
		key  string
		n    int
		elem func(i int) any
	}{
		{"procs", len(procs), func(i int) any { return procs[i] }},
		{"gone", len(s.Gone), func(i int) any { return s.Gone[i] }},
		{"open_waits", len(s.OpenWaits), func(i int) any { return &s.OpenWaits[i] }},
	}
	for _, a := range arrays {
		j.bw.WriteString("\n  \"" + a.key + "\": [")
		for i := range a.n {
			if err := j.elem(i, a.elem(i)); err != nil {
				return err
			}
		}
		j.closeArray(a.n)
	}
	j.bw.WriteString("\n  \"took_us\": " + strconv.FormatInt(s.Took.Microseconds(), 10) + "\n}\n")
	return j.bw.Flush()
}
