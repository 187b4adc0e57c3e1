package metrics

import (
	"compress/gzip"
	"context"
	"io"
	"log/slog"
	"math"
	"net/http/httptest"
	"strings"
	"testing"

	"github.com/prometheus/common/expfmt"
	"github.com/prometheus/common/model"
)

// TestExposition: what Prometheus' parser reads back from the text
// written, for values and label values that need escaping.
func TestExposition(t *testing.T) {
	var logged strings.Builder
	sc := newScrape(slog.New(slog.NewTextHandler(&logged, nil)))
	d := gaugeDesc("x_value", "Help with a \\ and a\nnewline.", "b", "a")
	c := counterDesc("x_total", "A counter.")
	values := map[string]float64{
		`plain`:         1,
		`q"uote`:        -2.5,
		`back\slash`:    math.Inf(1),
		"new\nline":     math.Inf(-1),
		"not utf8 \xff": 1e21,
		"":              0,
	}
	for v, x := range values {
		sc.add(d, x, v, "second")
	}
	sc.add(d, math.NaN(), "nan", "second")
	sc.add(c, 7)
	// Refused as a strict registry refuses them, and logged.
	sc.add(d, 1, "plain", "second")
	sc.add(d, 1, "one label value")
	if sc.dropped != 2 || strings.Count(logged.String(), "metric left out") != 2 {
		t.Errorf("dropped %d, logged %q", sc.dropped, logged.String())
	}
	var b strings.Builder
	if err := sc.writeText(&b); err != nil {
		t.Fatal(err)
	}
	parser := expfmt.NewTextParser(model.UTF8Validation)
	fams, err := parser.TextToMetricFamilies(strings.NewReader(b.String()))
	if err != nil {
		t.Fatalf("%v\n%s", err, b.String())
	}
	f := fams["x_value"]
	if f.GetHelp() != d.Help || f.GetType().String() != "GAUGE" || fams["x_total"].GetType().String() != "COUNTER" {
		t.Errorf("help %q, types %v %v", f.GetHelp(), f.GetType(), fams["x_total"].GetType())
	}
	got := map[string]float64{}
	for _, m := range f.GetMetric() {
		ls := m.GetLabel()
		if len(ls) != 2 || ls[0].GetName() != "a" || ls[1].GetName() != "b" || ls[0].GetValue() != "second" {
			t.Fatalf("labels %v", ls)
		}
		got[ls[1].GetValue()] = m.GetGauge().GetValue()
	}
	for v, x := range values {
		if v == "not utf8 \xff" {
			v = `not utf8 \xff`
		}
		if g, ok := got[v]; !ok || g != x {
			t.Errorf("%q: got %v (%v), want %v", v, g, ok, x)
		}
	}
	if !math.IsNaN(got["nan"]) {
		t.Errorf("nan: %v", got["nan"])
	}
	if fams["x_total"].GetMetric()[0].GetCounter().GetValue() != 7 {
		t.Errorf("counter: %v", fams["x_total"])
	}
}

// TestServeHTTPGzip: a scrape that takes gzip gets it; one that does not
// gets plain text; both parse.
func TestServeHTTPGzip(t *testing.T) {
	c := New(func(context.Context) (*Look, error) { return nil, io.EOF }, Options{Log: slog.New(slog.DiscardHandler)})
	for _, enc := range []string{"gzip", "", "gzip;q=0", "deflate, gzip;q=0.5"} {
		rec := httptest.NewRecorder()
		req := httptest.NewRequest("GET", "/metrics", nil)
		if enc != "" {
			req.Header.Set("Accept-Encoding", enc)
		}
		c.ServeHTTP(rec, req)
		body := io.Reader(rec.Body)
		wantGzip := enc == "gzip" || enc == "deflate, gzip;q=0.5"
		if got := rec.Header().Get("Content-Encoding") == "gzip"; got != wantGzip {
			t.Fatalf("Accept-Encoding %q: gzip %v", enc, got)
		}
		if wantGzip {
			zr, err := gzip.NewReader(body)
			if err != nil {
				t.Fatal(err)
			}
			body = zr
		}
		parser := expfmt.NewTextParser(model.UTF8Validation)
		fams, err := parser.TextToMetricFamilies(body)
		if err != nil {
			t.Fatal(err)
		}
		if up := fams["pipesnap_up"]; up == nil || up.GetMetric()[0].GetGauge().GetValue() != 0 {
			t.Errorf("%q: pipesnap_up %v", enc, up)
		}
	}
}
