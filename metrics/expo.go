package metrics

import (
	"bufio"
	"compress/gzip"
	"fmt"
	"io"
	"log/slog"
	"math"
	"net/http"
	"slices"
	"strconv"
	"strings"
)

// The exposition is written here, in Prometheus' text format (0.0.4),
// rather than by client_golang: a scrape is a handful of gauges and
// counters made fresh from one walk, and client_golang's registry and
// its dependencies cost every pipesnap run (ls and dump too: one binary)
// ~1 ms of package inits. The tests parse what is written with
// Prometheus' own parser (prometheus/common/expfmt) and promtool.

// Desc describes one metric: its name, help, type and label names.
type Desc struct {
	Name   string
	Help   string
	Type   string // "gauge" or "counter"
	Labels []string
}

func gaugeDesc(name, help string, labels ...string) *Desc {
	return &Desc{Name: name, Help: help, Type: "gauge", Labels: labels}
}

func counterDesc(name, help string, labels ...string) *Desc {
	return &Desc{Name: name, Help: help, Type: "counter", Labels: labels}
}

// point is one value of a metric, with its label values.
type point struct {
	labels []string
	value  float64
}

// scrape gathers one scrape's series by metric, refusing what a strict
// registry would: a series whose label values do not match its metric's
// labels, or one already given.
type scrape struct {
	log     *slog.Logger
	descs   []*Desc
	series  map[*Desc][]point
	seen    map[*Desc]map[string]bool
	dropped int
}

func newScrape(log *slog.Logger) *scrape {
	return &scrape{log: log, series: map[*Desc][]point{}, seen: map[*Desc]map[string]bool{}}
}

// add records one series. Label values are made valid UTF-8 first
// (LabelValue): a command name is bytes. A series that still cannot be
// exported is left out and logged; the rest of the scrape goes on.
func (s *scrape) add(d *Desc, v float64, labels ...string) {
	if len(labels) != len(d.Labels) {
		s.drop(d, fmt.Sprintf("%d label values for %d labels", len(labels), len(d.Labels)))
		return
	}
	ls := make([]string, len(labels))
	for i, l := range labels {
		ls[i] = LabelValue(l)
	}
	key := strings.Join(ls, "\xff")
	seen := s.seen[d]
	if seen == nil {
		seen = map[string]bool{}
		s.seen[d] = seen
		s.descs = append(s.descs, d)
	}
	if seen[key] {
		s.drop(d, "a series given twice: "+strings.Join(ls, ","))
		return
	}
	seen[key] = true
	s.series[d] = append(s.series[d], point{labels: ls, value: v})
}

func (s *scrape) drop(d *Desc, why string) {
	s.dropped++
	s.log.Warn("metric left out", "metric", d.Name, "err", why)
}

// writeText writes the scrape: metrics sorted by name, each one's series
// by label values, as client_golang orders them.
func (s *scrape) writeText(w io.Writer) error {
	bw := bufio.NewWriter(w)
	descs := slices.Clone(s.descs)
	slices.SortFunc(descs, func(a, b *Desc) int { return strings.Compare(a.Name, b.Name) })
	var buf []byte
	for _, d := range descs {
		// Labels by name, as client_golang writes them.
		order := make([]int, len(d.Labels))
		for i := range order {
			order[i] = i
		}
		slices.SortFunc(order, func(a, b int) int { return strings.Compare(d.Labels[a], d.Labels[b]) })
		ser := s.series[d]
		slices.SortFunc(ser, func(a, b point) int {
			for _, i := range order {
				if c := strings.Compare(a.labels[i], b.labels[i]); c != 0 {
					return c
				}
			}
			return 0
		})
		buf = append(buf[:0], "# HELP "...)
		buf = append(buf, d.Name...)
		buf = append(buf, ' ')
		buf = appendEscaped(buf, d.Help, false)
		buf = append(buf, "\n# TYPE "...)
		buf = append(buf, d.Name...)
		buf = append(buf, ' ')
		buf = append(buf, d.Type...)
		buf = append(buf, '\n')
		for _, x := range ser {
			buf = append(buf, d.Name...)
			for k, i := range order {
				if k == 0 {
					buf = append(buf, '{')
				} else {
					buf = append(buf, ',')
				}
				buf = append(buf, d.Labels[i]...)
				buf = append(buf, `="`...)
				buf = appendEscaped(buf, x.labels[i], true)
				buf = append(buf, '"')
			}
			if len(x.labels) > 0 {
				buf = append(buf, '}')
			}
			buf = append(buf, ' ')
			buf = appendFloat(buf, x.value)
			buf = append(buf, '\n')
			if len(buf) > 32<<10 {
				if _, err := bw.Write(buf); err != nil {
					return err
				}
				buf = buf[:0]
			}
		}
		if _, err := bw.Write(buf); err != nil {
			return err
		}
		buf = buf[:0]
	}
	return bw.Flush()
}

// appendEscaped escapes as the text format wants: a backslash and a
// newline in help and label values, a double quote in label values.
func appendEscaped(b []byte, s string, quote bool) []byte {
	for i := 0; i < len(s); i++ {
		switch c := s[i]; {
		case c == '\\':
			b = append(b, `\\`...)
		case c == '\n':
			b = append(b, `\n`...)
		case c == '"' && quote:
			b = append(b, `\"`...)
		default:
			b = append(b, c)
		}
	}
	return b
}

func appendFloat(b []byte, v float64) []byte {
	switch {
	case math.IsNaN(v):
		return append(b, "NaN"...)
	case math.IsInf(v, 1):
		return append(b, "+Inf"...)
	case math.IsInf(v, -1):
		return append(b, "-Inf"...)
	}
	return strconv.AppendFloat(b, v, 'g', -1, 64)
}

// textContentType is the text format's, version 0.0.4.
const textContentType = "text/plain; version=0.0.4; charset=utf-8"

// ServeHTTP answers a scrape: one walk, the text format, gzipped when the
// scraper takes it (Prometheus does).
func (c *Collector) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	sc := c.scrape()
	w.Header().Set("Content-Type", textContentType)
	out := io.Writer(w)
	if acceptsGzip(r.Header.Get("Accept-Encoding")) {
		w.Header().Set("Content-Encoding", "gzip")
		zw := gzip.NewWriter(w)
		defer zw.Close()
		out = zw
	}
	if err := sc.writeText(out); err != nil {
		c.opts.log().Info("writing a scrape", "err", err)
	}
}

func acceptsGzip(h string) bool {
	for part := range strings.SplitSeq(h, ",") {
		enc, q, _ := strings.Cut(strings.TrimSpace(part), ";")
		if strings.TrimSpace(enc) == "gzip" && strings.ReplaceAll(strings.TrimSpace(q), " ", "") != "q=0" {
			return true
		}
	}
	return false
}
