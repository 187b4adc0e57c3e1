// Package metrics exports pipe state as Prometheus metrics: every scrape
// walks the pipes once (package pipestate) and reports, per pipe, the
// queued bytes, capacity, ends, blocked tasks and the bytes that went
// through since the previous scrape, plus totals that are never capped.
package metrics

import (
	"cmp"
	"context"
	"fmt"
	"os"
	"slices"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/pipesnap/pipesnap/pipemodel"

	"github.com/prometheus/client_golang/prometheus"
)

// Source takes one sample of the pipes.
type Source func(context.Context) (*pipemodel.Sample, error)

// Collector is a prometheus.Collector over a Source. Scrapes are
// serialized: one walk at a time.
type Collector struct {
	mu       sync.Mutex
	source   Source
	maxPipes int
	prev     map[uint64]*pipemodel.Pipe
	totals   map[uint64]*totals
	errors   float64

	queued, capacity, readers, writers      *prometheus.Desc
	blockedReaders, blockedWriters          *prometheus.Desc
	readBytes, writtenBytes, writtenBuffers *prometheus.Desc
	pipes, exported, blocked, full          *prometheus.Desc
	up, walkSeconds, scrapeSeconds, errs    *prometheus.Desc
}

type totals struct {
	read, written, bufs uint64
}

// PipeLabels are the labels of the per-pipe series: the inode, the kind,
// and the commands holding each end (at most maxComms names, sorted).
var PipeLabels = []string{"ino", "kind", "readers", "writers"}

const maxComms = 3

// New returns a collector that exports at most maxPipes pipes per scrape
// (0: no limit): those with blocked tasks first, then the fullest.
func New(source Source, maxPipes int) *Collector {
	pipe := func(name, help string) *prometheus.Desc {
		return prometheus.NewDesc("pipesnap_pipe_"+name, help, PipeLabels, nil)
	}
	return &Collector{
		source:   source,
		maxPipes: maxPipes,
		prev:     map[uint64]*pipemodel.Pipe{},
		totals:   map[uint64]*totals{},

		queued:         pipe("queued_bytes", "Bytes queued in the pipe."),
		capacity:       pipe("capacity_bytes", "Bytes the pipe holds when full."),
		readers:        pipe("readers", "Open files of the read end (the kernel's count)."),
		writers:        pipe("writers", "Open files of the write end (the kernel's count)."),
		blockedReaders: pipe("blocked_readers", "Tasks sleeping in read on the pipe (its rd_wait queue)."),
		blockedWriters: pipe("blocked_writers", "Tasks sleeping in write on the pipe (its wr_wait queue)."),
		readBytes:      pipe("read_bytes_total", "Bytes read out of the pipe since pipesnap first saw it (from tail advances and buffer lengths; buffers that came and went between scrapes count at the mean fill)."),
		writtenBytes:   pipe("written_bytes_total", "Bytes written into the pipe since pipesnap first saw it (bytes read plus growth of the queue)."),
		writtenBuffers: pipe("written_buffers_total", "Buffers started in the pipe (head advances) since pipesnap first saw it."),

		pipes:         prometheus.NewDesc("pipesnap_pipes", "Pipes and FIFOs the walked processes hold.", nil, nil),
		exported:      prometheus.NewDesc("pipesnap_pipes_exported", "Pipes exported with per-pipe series (at most --max-pipes).", nil, nil),
		blocked:       prometheus.NewDesc("pipesnap_blocked_tasks", "Tasks blocked on a pipe, over every pipe.", []string{"end"}, nil),
		full:          prometheus.NewDesc("pipesnap_full_pipes", "Pipes that are full.", nil, nil),
		up:            prometheus.NewDesc("pipesnap_up", "1 when the last walk succeeded.", nil, nil),
		walkSeconds:   prometheus.NewDesc("pipesnap_walk_duration_seconds", "Duration of the kernel walk of this scrape.", nil, nil),
		scrapeSeconds: prometheus.NewDesc("pipesnap_scrape_duration_seconds", "Duration of this scrape: walk and metrics.", nil, nil),
		errs:          prometheus.NewDesc("pipesnap_walk_errors_total", "Walks that failed.", nil, nil),
	}
}

// Describe sends every metric's description.
func (c *Collector) Describe(ch chan<- *prometheus.Desc) {
	for _, d := range []*prometheus.Desc{
		c.queued, c.capacity, c.readers, c.writers, c.blockedReaders, c.blockedWriters,
		c.readBytes, c.writtenBytes, c.writtenBuffers,
		c.pipes, c.exported, c.blocked, c.full, c.up, c.walkSeconds, c.scrapeSeconds, c.errs,
	} {
		ch <- d
	}
}

// Collect walks the pipes and sends the metrics.
func (c *Collector) Collect(ch chan<- prometheus.Metric) {
	c.mu.Lock()
	defer c.mu.Unlock()
	start := time.Now()
	gauge := func(d *prometheus.Desc, v float64, labels ...string) {
		ch <- prometheus.MustNewConstMetric(d, prometheus.GaugeValue, v, labels...)
	}
	defer func() {
		gauge(c.scrapeSeconds, time.Since(start).Seconds())
		ch <- prometheus.MustNewConstMetric(c.errs, prometheus.CounterValue, c.errors)
	}()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	s, err := c.source(ctx)
	if err != nil {
		c.errors++
		fmt.Fprintf(os.Stderr, "pipesnap: walk failed: %v\n", err)
		gauge(c.up, 0)
		return
	}
	gauge(c.up, 1)
	gauge(c.walkSeconds, s.Took.Seconds())
	c.update(s)

	var blockedR, blockedW, full int
	for _, p := range s.Pipes {
		blockedR += len(p.Blocked("read"))
		blockedW += len(p.Blocked("write"))
		if p.Full() {
			full++
		}
	}
	gauge(c.pipes, float64(len(s.Pipes)))
	gauge(c.blocked, float64(blockedR), "read")
	gauge(c.blocked, float64(blockedW), "write")
	gauge(c.full, float64(full))

	export := Rank(s.Pipes)
	if c.maxPipes > 0 && len(export) > c.maxPipes {
		export = export[:c.maxPipes]
	}
	gauge(c.exported, float64(len(export)))
	for _, p := range export {
		l := Labels(p)
		gauge(c.queued, float64(p.Bytes), l...)
		gauge(c.capacity, float64(p.Capacity), l...)
		gauge(c.readers, float64(p.Readers), l...)
		gauge(c.writers, float64(p.Writers), l...)
		gauge(c.blockedReaders, float64(len(p.Blocked("read"))), l...)
		gauge(c.blockedWriters, float64(len(p.Blocked("write"))), l...)
		t := c.totals[p.Ino]
		ch <- prometheus.MustNewConstMetric(c.readBytes, prometheus.CounterValue, float64(t.read), l...)
		ch <- prometheus.MustNewConstMetric(c.writtenBytes, prometheus.CounterValue, float64(t.written), l...)
		ch <- prometheus.MustNewConstMetric(c.writtenBuffers, prometheus.CounterValue, float64(t.bufs), l...)
	}
}

// update adds what moved since the previous sample to every pipe's
// counters (all pipes, exported or not, so a pipe that enters the top
// keeps its history), and forgets the pipes that are gone.
func (c *Collector) update(s *pipemodel.Sample) {
	next := make(map[uint64]*pipemodel.Pipe, len(s.Pipes))
	for _, p := range s.Pipes {
		next[p.Ino] = p
		t := c.totals[p.Ino]
		if t == nil {
			t = &totals{}
			c.totals[p.Ino] = t
		}
		if q := c.prev[p.Ino]; q != nil {
			f := pipemodel.FlowBetween(q, p, s.PageSize)
			t.read += f.Read
			t.written += f.Written
			t.bufs += f.BufsWritten
		}
	}
	for ino := range c.totals {
		if next[ino] == nil {
			delete(c.totals, ino)
		}
	}
	c.prev = next
}

// Rank orders pipes by how much they deserve a look: blocked tasks
// first, then full ones, then by fill, then by inode.
func Rank(pipes []*pipemodel.Pipe) []*pipemodel.Pipe {
	out := slices.Clone(pipes)
	slices.SortStableFunc(out, func(a, b *pipemodel.Pipe) int {
		if c := cmp.Compare(b.BlockedTasks(), a.BlockedTasks()); c != 0 {
			return c
		}
		if a.Full() != b.Full() {
			if a.Full() {
				return -1
			}
			return 1
		}
		if c := cmp.Compare(b.Fill(), a.Fill()); c != 0 {
			return c
		}
		return cmp.Compare(a.Ino, b.Ino)
	})
	return out
}

// Labels are a pipe's label values, in PipeLabels order.
func Labels(p *pipemodel.Pipe) []string {
	return []string{strconv.FormatUint(p.Ino, 10), p.Kind, Comms(p, "read"), Comms(p, "write")}
}

// Comms names the commands holding one end: sorted, each once, at most
// maxComms of them and "+N" for the rest.
func Comms(p *pipemodel.Pipe, end pipemodel.End) string {
	var names []string
	for _, h := range p.Ends(end) {
		if !slices.Contains(names, h.Comm) {
			names = append(names, h.Comm)
		}
	}
	slices.Sort(names)
	if len(names) > maxComms {
		names = append(names[:maxComms], fmt.Sprintf("+%d", len(names)-maxComms))
	}
	return strings.Join(names, ",")
}
