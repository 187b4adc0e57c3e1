// Package metrics exports pipe state as Prometheus metrics: every scrape
// walks the pipes once (package pipestate) and reports, per pipe, the
// queued bytes, capacity, ends, blocked tasks and the bytes that went
// through since the previous scrape, plus totals that are never capped;
// with a Diagnoser as the source, also what is stuck (package diagnose):
// stuck pipelines, stalls by kind, the longest waits (diagnosis.go).
package metrics

import (
	"cmp"
	"context"
	"fmt"
	"log/slog"
	"slices"
	"strconv"
	"strings"
	"sync"
	"time"
	"unicode/utf8"

	"github.com/pipesnap/pipesnap/diagnose"
	"github.com/pipesnap/pipesnap/pipemodel"
)

// Sampler takes one sample of the pipes (pipestate.Sampler.Sample).
type Sampler func(context.Context) (*pipemodel.Sample, error)

// Look is what one scrape saw.
type Look struct {
	Sample *pipemodel.Sample
	// Report diagnoses what did not move since the previous look; nil:
	// not diagnosed, and the stall metrics are left out.
	Report *diagnose.Report
	// Ignore are the pipes the diagnosis and the longest waits leave out
	// (pipesnap's own stdio).
	Ignore map[uint64]bool
}

// Source takes one look at the pipes: a Diagnoser's Look, or Sampled.
type Source func(context.Context) (*Look, error)

// Sampled is a Source that only samples: no diagnosis.
func Sampled(s Sampler) Source {
	return func(ctx context.Context) (*Look, error) {
		smp, err := s(ctx)
		if err != nil {
			return nil, err
		}
		return &Look{Sample: smp}, nil
	}
}

// Options bound what one scrape exports.
type Options struct {
	// MaxPipes bounds the pipes exported with per-pipe series (0: no
	// bound): those with blocked tasks first, then the fullest.
	MaxPipes int
	// MaxStuck bounds the pipesnap_stuck_pipeline_seconds series (0: no
	// bound): the longest stuck first; pipesnap_stuck_pipelines counts
	// them all.
	MaxStuck int
	// Log says what went wrong in a scrape (a failed walk, a metric left
	// out); nil: slog.Default().
	Log *slog.Logger
	// Build, when set, is exported as pipesnap_build_info{version,
	// revision, goversion} 1.
	Build *BuildInfo
}

// BuildInfo is what pipesnap_build_info says of the running binary.
type BuildInfo struct{ Version, Revision, GoVersion string }

func (o Options) log() *slog.Logger {
	if o.Log == nil {
		return slog.Default()
	}
	return o.Log
}

// Collector exports a Source's looks: each scrape (ServeHTTP) walks
// once. Scrapes are serialized: one walk at a time.
type Collector struct {
	mu     sync.Mutex
	source Source
	opts   Options
	prev   map[uint64]*pipemodel.Pipe
	totals map[uint64]*totals
	errors float64

	queued, capacity, readers, writers      *Desc
	blockedReaders, blockedWriters          *Desc
	readBytes, writtenBytes, writtenBuffers *Desc
	pipes, exported, blocked, full, badRing *Desc
	buildInfo                               *Desc
	up, walkSeconds, scrapeSeconds, errs    *Desc
	diag                                    diagDescs
}

type totals struct {
	read, written, bufs uint64
}

// PipeLabels are the labels of the per-pipe series: the inode, the kind,
// the commands holding each end (at most maxComms names, sorted), and
// the Kubernetes namespace, pod and container of its holders
// (ContainerLabels).
var PipeLabels = []string{"ino", "kind", "readers", "writers", "namespace", "pod", "container"}

const maxComms = 3

// New returns a collector of source's looks, bounded by opts.
func New(source Source, opts Options) *Collector {
	pipe := func(name, help string) *Desc {
		return gaugeDesc("pipesnap_pipe_"+name, help, PipeLabels...)
	}
	counter := func(name, help string) *Desc {
		return counterDesc("pipesnap_pipe_"+name, help, PipeLabels...)
	}
	return &Collector{
		source: source,
		opts:   opts,
		prev:   map[uint64]*pipemodel.Pipe{},
		totals: map[uint64]*totals{},
		diag:   newDiagDescs(),

		queued:         pipe("queued_bytes", "Bytes queued in the pipe."),
		capacity:       pipe("capacity_bytes", "Bytes the pipe holds when full."),
		readers:        pipe("readers", "Open files of the read end (the kernel's count)."),
		writers:        pipe("writers", "Open files of the write end (the kernel's count)."),
		blockedReaders: pipe("blocked_readers", "Tasks sleeping in read on the pipe (its rd_wait queue)."),
		blockedWriters: pipe("blocked_writers", "Tasks sleeping in write on the pipe (its wr_wait queue)."),
		readBytes:      counter("read_bytes_total", "Bytes read out of the pipe since pipesnap first saw it (from tail advances and buffer lengths; buffers that came and went between scrapes count at the mean fill)."),
		writtenBytes:   counter("written_bytes_total", "Bytes written into the pipe since pipesnap first saw it (bytes read plus growth of the queue)."),
		writtenBuffers: counter("written_buffers_total", "Buffers started in the pipe (head advances) since pipesnap first saw it."),

		pipes:         gaugeDesc("pipesnap_pipes", "Pipes and FIFOs the walked processes hold."),
		exported:      gaugeDesc("pipesnap_pipes_exported", "Pipes exported with per-pipe series (at most --max-pipes)."),
		blocked:       gaugeDesc("pipesnap_blocked_tasks", "Tasks blocked on a pipe, over every pipe.", "end"),
		full:          gaugeDesc("pipesnap_full_pipes", "Pipes that are full."),
		badRing:       gaugeDesc("pipesnap_unreadable_pipes", "Pipes whose ring pipesnap could not read (head, tail or ring size not a ring it knows): their fill is unknown and no queued_bytes series is exported for them."),
		up:            gaugeDesc("pipesnap_up", "1 when the last walk succeeded."),
		walkSeconds:   gaugeDesc("pipesnap_walk_duration_seconds", "Duration of the kernel walk of this scrape."),
		scrapeSeconds: gaugeDesc("pipesnap_scrape_duration_seconds", "Duration of this scrape: walk and metrics."),
		errs:          counterDesc("pipesnap_walk_errors_total", "Walks that failed."),
		buildInfo:     gaugeDesc("pipesnap_build_info", "1, labelled with the version, VCS revision and Go version of the running pipesnap.", "version", "revision", "goversion"),
	}
}

// Descs are the metrics a Collector exports.
func (c *Collector) Descs() []*Desc {
	return append([]*Desc{
		c.queued, c.capacity, c.readers, c.writers, c.blockedReaders, c.blockedWriters,
		c.readBytes, c.writtenBytes, c.writtenBuffers,
		c.pipes, c.exported, c.blocked, c.full, c.badRing, c.up, c.walkSeconds, c.scrapeSeconds, c.errs, c.buildInfo,
	}, c.diag.descs()...)
}

// scrape walks the pipes and gathers the metrics.
func (c *Collector) scrape() *scrape {
	c.mu.Lock()
	defer c.mu.Unlock()
	sc := newScrape(c.opts.log())
	c.collect(sc)
	return sc
}

func (c *Collector) collect(sc *scrape) {
	start := time.Now()
	gauge, counter := sc.add, sc.add
	defer func() {
		gauge(c.scrapeSeconds, time.Since(start).Seconds())
		counter(c.errs, c.errors)
	}()
	if b := c.opts.Build; b != nil {
		gauge(c.buildInfo, 1, b.Version, b.Revision, b.GoVersion)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	look, err := c.source(ctx)
	if err == nil && (look == nil || look.Sample == nil) {
		err = fmt.Errorf("no sample")
	}
	if err != nil {
		c.errors++
		c.opts.log().Error("walk failed", "err", err)
		gauge(c.up, 0)
		return
	}
	s := look.Sample
	gauge(c.up, 1)
	gauge(c.walkSeconds, s.Took.Seconds())
	c.update(s)

	var blockedR, blockedW, full, bad int
	for _, p := range s.Pipes {
		if p.BadRing {
			bad++
		}
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
	gauge(c.badRing, float64(bad))

	c.diag.collect(gauge, look, c.opts.MaxStuck)

	export := Rank(s.Pipes)
	if c.opts.MaxPipes > 0 && len(export) > c.opts.MaxPipes {
		export = export[:c.opts.MaxPipes]
	}
	gauge(c.exported, float64(len(export)))
	for _, p := range export {
		l := Labels(s, p)
		if !p.BadRing {
			gauge(c.queued, float64(p.Bytes), l...)
		}
		gauge(c.capacity, float64(p.Capacity), l...)
		gauge(c.readers, float64(p.Readers), l...)
		gauge(c.writers, float64(p.Writers), l...)
		gauge(c.blockedReaders, float64(len(p.Blocked("read"))), l...)
		gauge(c.blockedWriters, float64(len(p.Blocked("write"))), l...)
		t := c.totals[p.Ino]
		counter(c.readBytes, float64(t.read), l...)
		counter(c.writtenBytes, float64(t.written), l...)
		counter(c.writtenBuffers, float64(t.bufs), l...)
	}
}

// LabelValue makes s valid UTF-8 for a label value: each byte that is
// not part of a valid UTF-8 sequence is written \xNN (a command named
// "\xff" is labelled `\xff`, four characters). Valid strings are kept
// as they are.
func LabelValue(s string) string {
	if utf8.ValidString(s) {
		return s
	}
	var b strings.Builder
	for i := 0; i < len(s); {
		r, n := utf8.DecodeRuneInString(s[i:])
		if r == utf8.RuneError && n == 1 {
			fmt.Fprintf(&b, `\x%02x`, s[i])
		} else {
			b.WriteString(s[i : i+n])
		}
		i += n
	}
	return b.String()
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
func Labels(s *pipemodel.Sample, p *pipemodel.Pipe) []string {
	l := []string{strconv.FormatUint(p.Ino, 10), p.Kind, Comms(p, "read"), Comms(p, "write")}
	return append(l, ContainerLabels(pipeContainer(s, p))...)
}

// pipeContainer is the container a pipe belongs to, for its labels: that
// of its first holder in a container (by pid) that is not a runtime's
// monitor, else of a monitor (a container's log pipe, read by conmon,
// is the container's); nil when no holder is in one.
func pipeContainer(s *pipemodel.Sample, p *pipemodel.Pipe) *pipemodel.Container {
	var monitor *pipemodel.Container
	for _, h := range p.Holders {
		pr := s.Procs[h.PID]
		if pr == nil || pr.Container == nil {
			continue
		}
		if !pr.Container.Monitor {
			return pr.Container
		}
		if monitor == nil {
			monitor = pr.Container
		}
	}
	return monitor
}

// ContainerLabels are the namespace, pod and container label values of
// a container: under Kubernetes its namespace, pod and name in the pod;
// otherwise "", "" and the runtime's name (or the id's first 12 digits);
// all "" for none.
func ContainerLabels(c *pipemodel.Container) []string {
	if c == nil {
		return []string{"", "", ""}
	}
	name := c.KubeName
	if name == "" {
		name = c.Name
	}
	if name == "" {
		name = c.ID[:min(12, len(c.ID))]
	}
	return []string{LabelValue(c.Namespace), LabelValue(c.Pod), LabelValue(name)}
}

// Comms names the commands holding one end: sorted, each once, at most
// maxComms of them and "+N" for the rest.
func Comms(p *pipemodel.Pipe, end pipemodel.End) string {
	var names []string
	for _, h := range p.Ends(end) {
		// A comma in a name is written \x2c, as LabelValue writes a
		// byte that is not UTF-8: a name cannot add names to the list.
		name := strings.ReplaceAll(h.Comm, ",", `\x2c`)
		if !slices.Contains(names, name) {
			names = append(names, name)
		}
	}
	slices.Sort(names)
	if len(names) > maxComms {
		names = append(names[:maxComms], fmt.Sprintf("+%d", len(names)-maxComms))
	}
	return strings.Join(names, ",")
}
