package metrics

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"testing"
	"unicode/utf8"

	"github.com/pipesnap/pipesnap/pipemodel"

	dto "github.com/prometheus/client_model/go"
	"github.com/prometheus/common/expfmt"
	"github.com/prometheus/common/model"
)

func pipe(ino uint64, bytes uint64, head, tail uint32, holders ...pipemodel.Holder) *pipemodel.Pipe {
	p := &pipemodel.Pipe{Ino: ino, Kind: "pipe", Bytes: bytes, Capacity: 65536, MaxUsage: 16, RingSize: 16,
		Head: head, Tail: tail, Bufs: head - tail, Readers: 1, Writers: 1, Holders: holders}
	for i := range p.Bufs {
		n := uint32(4096)
		if i == p.Bufs-1 {
			n = uint32(bytes - uint64(i)*4096)
		}
		p.Slots = append(p.Slots, pipemodel.Slot{Len: n})
	}
	for _, h := range holders {
		if h.Blocked == "writing" {
			p.Waiters = append(p.Waiters, pipemodel.Waiter{Queue: "write", Kind: "blocked", PID: h.PID})
		}
	}
	return p
}

// scrapeText scrapes c once and parses the exposition with Prometheus'
// own parser, failing on what a strict registry refuses (a series left
// out, one given twice, invalid UTF-8).
func scrapeText(t *testing.T, c *Collector) map[string]*dto.MetricFamily {
	t.Helper()
	sc := c.scrape()
	if sc.dropped != 0 {
		t.Errorf("%d series left out", sc.dropped)
	}
	var b strings.Builder
	if err := sc.writeText(&b); err != nil {
		t.Fatal(err)
	}
	text := b.String()
	if !utf8.ValidString(text) {
		t.Errorf("exposition is not UTF-8:\n%s", text)
	}
	parser := expfmt.NewTextParser(model.UTF8Validation)
	fams, err := parser.TextToMetricFamilies(strings.NewReader(text))
	if err != nil {
		t.Fatalf("parsing the exposition: %v\n%s", err, text)
	}
	for name, f := range fams {
		seen := map[string]bool{}
		for _, m := range f.GetMetric() {
			key := fmt.Sprint(m.GetLabel())
			if seen[key] {
				t.Errorf("%s: series %s twice", name, key)
			}
			seen[key] = true
		}
	}
	return fams
}

// gather scrapes c once: metric name -> label "ino" -> value.
func gather(t *testing.T, c *Collector) map[string]map[string]float64 {
	t.Helper()
	out := map[string]map[string]float64{}
	for _, f := range scrapeText(t, c) {
		out[f.GetName()] = map[string]float64{}
		for _, m := range f.GetMetric() {
			key := ""
			for _, l := range m.GetLabel() {
				if l.GetName() == "ino" || l.GetName() == "end" {
					key = l.GetValue()
				}
			}
			out[f.GetName()][key] = value(m)
		}
	}
	return out
}

func value(m *dto.Metric) float64 {
	if m.Gauge != nil {
		return m.Gauge.GetValue()
	}
	return m.Counter.GetValue()
}

func TestCollector(t *testing.T) {
	w := pipemodel.Holder{PID: 10, Comm: "yes", End: "write", Blocked: "writing"}
	r := pipemodel.Holder{PID: 11, Comm: "sleep", End: "read"}
	samples := []*pipemodel.Sample{
		{PageSize: 4096, Pipes: []*pipemodel.Pipe{
			pipe(1, 65536, 116, 100, w, r),
			pipe(2, 100, 1, 0),
			pipe(3, 5000, 12, 10),
		}},
		{PageSize: 4096, Pipes: []*pipemodel.Pipe{
			pipe(1, 65536, 116, 100, w, r), // stuck
			pipe(2, 50, 2, 1),              // 100 bytes read, 50 written
			pipe(3, 5000, 22, 20),          // 10 buffers through, unseen
		}},
	}
	n := 0
	c := New(Sampled(func(context.Context) (*pipemodel.Sample, error) {
		s := samples[min(n, len(samples)-1)]
		n++
		return s, nil
	}), Options{MaxPipes: 2})
	first := gather(t, c)
	if got := first["pipesnap_pipe_queued_bytes"]; len(got) != 2 || got["1"] != 65536 || got["3"] != 5000 {
		t.Errorf("queued bytes %v: want pipes 1 and 3 (blocked, then fullest), capped at 2", got)
	}
	if first["pipesnap_pipes"][""] != 3 || first["pipesnap_pipes_exported"][""] != 2 || first["pipesnap_blocked_tasks"]["write"] != 1 {
		t.Errorf("totals: %v %v %v", first["pipesnap_pipes"], first["pipesnap_pipes_exported"], first["pipesnap_blocked_tasks"])
	}
	if first["pipesnap_pipe_blocked_writers"]["1"] != 1 || first["pipesnap_up"][""] != 1 {
		t.Errorf("blocked writers %v, up %v", first["pipesnap_pipe_blocked_writers"], first["pipesnap_up"])
	}
	second := gather(t, c)
	if got := second["pipesnap_pipe_read_bytes_total"]; got["1"] != 0 || got["3"] != 10*4096 {
		t.Errorf("read bytes %v: want 0 for the stuck pipe, 10 pages for pipe 3", got)
	}
	if got := second["pipesnap_pipe_written_buffers_total"]; got["3"] != 10 {
		t.Errorf("written buffers %v", got)
	}
}

func TestCollectorError(t *testing.T) {
	c := New(Sampled(func(context.Context) (*pipemodel.Sample, error) { return nil, errors.New("boom") }), Options{})
	got := gather(t, c)
	if got["pipesnap_up"][""] != 0 || got["pipesnap_walk_errors_total"][""] != 1 {
		t.Errorf("up %v, errors %v", got["pipesnap_up"], got["pipesnap_walk_errors_total"])
	}
}

func TestComms(t *testing.T) {
	p := &pipemodel.Pipe{}
	for _, c := range []string{"e", "d", "c", "b", "a", "a"} {
		p.Holders = append(p.Holders, pipemodel.Holder{Comm: c, End: "read"})
	}
	p.Holders = append(p.Holders, pipemodel.Holder{Comm: "w", End: "rdwr"})
	if got := Comms(p, "read"); got != "a,b,c,+3" {
		t.Errorf("readers %q", got)
	}
	if got := Comms(p, "write"); got != "w" {
		t.Errorf("writers %q", got)
	}
}
