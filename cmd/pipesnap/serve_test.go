package main

import (
	"bufio"
	"encoding/json"
	"io"
	"net/http"
	"os/exec"
	"regexp"
	"strconv"
	"strings"
	"syscall"
	"testing"

	"github.com/prometheus/common/expfmt"
	"github.com/prometheus/common/model"

	"github.com/pipesnap/pipesnap/internal/pipetest"
)

// serveStart starts `pipesnap serve --listen 127.0.0.1:0 ARGS...` and
// returns its metrics URL; it is stopped with SIGTERM when the test ends
// (and must say so).
func serveStart(t *testing.T, args ...string) string {
	t.Helper()
	cmd := exec.Command(pipesnapBin, append([]string{"serve", "--listen", "127.0.0.1:0"}, args...)...)
	stderr, err := cmd.StderrPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	url := announcedURL(t, stderr)
	t.Cleanup(func() {
		cmd.Process.Signal(syscall.SIGTERM)
		rest, _ := io.ReadAll(stderr)
		if err := cmd.Wait(); err != nil || !strings.Contains(string(rest), "stopped") {
			t.Errorf("serve after SIGTERM: %v, stderr %q", err, rest)
		}
		if strings.Contains(string(rest), "left out") {
			t.Errorf("serve left metrics out: %s", rest)
		}
	})
	if !strings.HasPrefix(url, "http://127.0.0.1:") {
		t.Fatalf("no address announced (%q)", url)
	}
	return url
}

// serveScrape scrapes url once: every sample of every family.
func serveScrape(t *testing.T, url string) model.Vector {
	t.Helper()
	resp, err := http.Get(url)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	if resp.StatusCode != 200 {
		b, _ := io.ReadAll(resp.Body)
		t.Fatalf("scrape: %s: %s", resp.Status, b)
	}
	parser := expfmt.NewTextParser(model.UTF8Validation)
	fams, err := parser.TextToMetricFamilies(resp.Body)
	if err != nil {
		t.Fatal(err)
	}
	vec, err := expfmt.ExtractSamples(&expfmt.DecodeOptions{Timestamp: model.Now()}, mapValues(fams)...)
	if err != nil {
		t.Fatal(err)
	}
	return vec
}

// serveSeries are the samples of one metric whose labels include match.
func serveSeries(vec model.Vector, name string, match map[string]string) []*model.Sample {
	var out []*model.Sample
	for _, s := range vec {
		if string(s.Metric[model.MetricNameLabel]) != name {
			continue
		}
		ok := true
		for k, v := range match {
			if string(s.Metric[model.LabelName(k)]) != v {
				ok = false
			}
		}
		if ok {
			out = append(out, s)
		}
	}
	return out
}

// serveValue is the value of the one series of name matching match.
func serveValue(t *testing.T, vec model.Vector, name string, match map[string]string) float64 {
	t.Helper()
	ss := serveSeries(vec, name, match)
	if len(ss) != 1 {
		t.Errorf("%s%v: %d series, want 1: %v", name, match, len(ss), ss)
		return -1
	}
	return float64(ss[0].Value)
}

func TestServeStuckPipeline(t *testing.T) {
	requireBPF(t)
	pl := pipetest.StartStuck(t, "full") // yes | sleep
	url := serveStart(t, append([]string{"--min-wait", "100ms"}, pidArgs(pl.PIDs()...)...)...)
	reader := strconv.Itoa(pl.PID("reader"))
	// The first scrape walks twice, 200ms apart, and already answers; the
	// next compare with the walk before.
	for i := range 3 {
		m := serveScrape(t, url)
		if v := serveValue(t, m, "pipesnap_stuck_pipelines", nil); v != 1 {
			t.Errorf("scrape %d: pipesnap_stuck_pipelines = %v, want 1", i, v)
		}
		stuck := serveSeries(m, "pipesnap_stuck_pipeline_seconds", nil)
		if len(stuck) != 1 {
			t.Fatalf("scrape %d: stuck pipeline series %v, want 1", i, stuck)
		}
		if l := stuck[0].Metric; l["culprit_comm"] != "sleep" || l["culprit_pid"] != model.LabelValue(reader) ||
			l["first_comm"] != "yes" || l["kind"] != "full-reader-idle" || stuck[0].Value <= 0 {
			t.Errorf("scrape %d: %v: want culprit sleep (pid %s), first yes, kind full-reader-idle, stuck > 0s", i, stuck[0], reader)
		}
		if v := serveValue(t, m, "pipesnap_longest_wait_seconds", map[string]string{"end": "write"}); v <= 0 {
			t.Errorf("scrape %d: longest write wait %v, want > 0 (yes is blocked)", i, v)
		}
		if v := serveValue(t, m, "pipesnap_longest_wait_seconds", map[string]string{"end": "open"}); v != 0 {
			t.Errorf("scrape %d: longest open wait %v, want 0", i, v)
		}
		if v := serveValue(t, m, "pipesnap_stalls", map[string]string{"kind": "full-reader-idle"}); v != 1 {
			t.Errorf("scrape %d: full-reader-idle stalls %v, want 1", i, v)
		}
		if v := serveValue(t, m, "pipesnap_stalls", map[string]string{"kind": "writer-stopped"}); v != 0 {
			t.Errorf("scrape %d: writer-stopped stalls %v, want 0", i, v)
		}
		if v := serveValue(t, m, "pipesnap_waits_considered", nil); v < 1 {
			t.Errorf("scrape %d: waits considered %v, want >= 1", i, v)
		}
		// The per-pipe series are still there.
		if v := serveValue(t, m, "pipesnap_pipe_blocked_writers", map[string]string{"ino": strconv.FormatUint(pl.Ino(), 10)}); v != 1 {
			t.Errorf("scrape %d: blocked writers %v", i, v)
		}
	}
}

func TestServeFlowing(t *testing.T) {
	requireBPF(t)
	pl := pipetest.StartStuck(t, "flowing") // yes | cat >/dev/null
	url := serveStart(t, append([]string{"--min-wait", "100ms"}, pidArgs(pl.PIDs()...)...)...)
	for i := range 3 {
		m := serveScrape(t, url)
		if v := serveValue(t, m, "pipesnap_stuck_pipelines", nil); v != 0 {
			t.Errorf("scrape %d: pipesnap_stuck_pipelines = %v, want 0", i, v)
		}
		if s := serveSeries(m, "pipesnap_stuck_pipeline_seconds", nil); len(s) != 0 {
			t.Errorf("scrape %d: stuck pipeline series %v, want none", i, s)
		}
		for _, s := range serveSeries(m, "pipesnap_stalls", nil) {
			if s.Value != 0 {
				t.Errorf("scrape %d: %v, want no stall", i, s)
			}
		}
		if s := serveSeries(m, "pipesnap_waits_left_out", nil); len(s) != 4 {
			t.Errorf("scrape %d: waits left out %v, want idle, moving, young, new", i, s)
		}
	}
}

func TestServeSigstopMiddle(t *testing.T) {
	requireBPF(t)
	sc := pipetest.StartScenario(t, "sigstop-middle") // yes | cat (stopped) | cat
	url := serveStart(t, append([]string{"--min-wait", "100ms"}, pidArgs(sc.PIDs()...)...)...)
	m := serveScrape(t, url)
	if v := serveValue(t, m, "pipesnap_stuck_pipelines", nil); v != 1 {
		t.Errorf("pipesnap_stuck_pipelines = %v, want 1: two stalls, one pipeline", v)
	}
	middle := model.LabelValue(strconv.Itoa(sc.PID("middle")))
	if s := serveSeries(m, "pipesnap_stuck_pipeline_seconds", nil); len(s) != 1 ||
		s[0].Metric["culprit_comm"] != "cat" || s[0].Metric["culprit_pid"] != middle || s[0].Metric["first_comm"] != "yes" || s[0].Value <= 0 {
		t.Errorf("stuck pipeline series %v: want one, culprit the stopped cat (pid %s)", s, middle)
	}
	for _, kind := range []string{"full-reader-idle", "writer-stopped"} {
		if v := serveValue(t, m, "pipesnap_stalls", map[string]string{"kind": kind}); v != 1 {
			t.Errorf("%s stalls %v, want 1", kind, v)
		}
	}
	if v := serveValue(t, m, "pipesnap_longest_wait_seconds", map[string]string{"end": "read"}); v <= 0 {
		t.Errorf("longest read wait %v, want > 0 (the last cat waits for data)", v)
	}
}

func TestServeMaxStuck(t *testing.T) {
	requireBPF(t)
	a, b := pipetest.StartStuck(t, "full"), pipetest.StartStuck(t, "full")
	url := serveStart(t, append([]string{"--min-wait", "100ms", "--max-stuck", "1"}, pidArgs(append(a.PIDs(), b.PIDs()...)...)...)...)
	m := serveScrape(t, url)
	if v := serveValue(t, m, "pipesnap_stuck_pipelines", nil); v != 2 {
		t.Errorf("pipesnap_stuck_pipelines = %v, want 2", v)
	}
	if s := serveSeries(m, "pipesnap_stuck_pipeline_seconds", nil); len(s) != 1 {
		t.Errorf("stuck pipeline series %v: want 1 (--max-stuck 1)", s)
	}
}

func TestServeUsage(t *testing.T) {
	for _, tc := range []struct {
		args []string
		msg  string
	}{
		{[]string{"serve", "--max-stuck", "-1"}, "--max-stuck"},
		{[]string{"serve", "--min-wait", "-1s"}, "--min-wait"},
	} {
		_, stderr, code := run(t, tc.args...)
		if code != 2 || !strings.Contains(stderr, tc.msg) {
			t.Errorf("%v: exit %d, stderr %q; want 2 and %q", tc.args, code, stderr, tc.msg)
		}
	}
	out, _, code := run(t, "serve", "--help")
	for _, want := range []string{"pipesnap_stuck_pipelines", "pipesnap_stuck_pipeline_seconds", "--max-stuck", "--min-wait", "deploy/prometheus/pipesnap-alerts.yml"} {
		if code != 0 || !strings.Contains(out, want) {
			t.Errorf("serve --help (exit %d) does not say %s", code, want)
		}
	}
}

// announcedURL reads serve's log until it says where it serves (the url
// attribute of "serving metrics").
func announcedURL(t *testing.T, stderr io.Reader) string {
	t.Helper()
	lines := bufio.NewScanner(stderr)
	for lines.Scan() {
		if m := urlAttr.FindStringSubmatch(lines.Text()); m != nil && strings.Contains(lines.Text(), "serving metrics") {
			return m[1]
		}
		t.Logf("serve: %s", lines.Text())
	}
	return ""
}

var urlAttr = regexp.MustCompile(`url=(\S+)`)

// TestServeBuildInfoAndJSONLog: --log-format json logs one JSON object a
// line, and pipesnap_build_info names the version.
func TestServeBuildInfoAndJSONLog(t *testing.T) {
	requireBPF(t)
	pl := pipetest.StartStuck(t, "full")
	cmd := exec.Command(pipesnapBin, append([]string{"serve", "--listen", "127.0.0.1:0", "--log-format", "json"}, pidArgs(pl.PIDs()...)...)...)
	stderr, err := cmd.StderrPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	defer func() { cmd.Process.Signal(syscall.SIGTERM); cmd.Wait() }()
	lines := bufio.NewScanner(stderr)
	var url string
	for lines.Scan() {
		var rec struct{ Msg, URL, Level, Version string }
		if err := json.Unmarshal(lines.Bytes(), &rec); err != nil {
			t.Fatalf("log line %q is not JSON: %v", lines.Text(), err)
		}
		if rec.Msg == "serving metrics" {
			url = rec.URL
			if rec.Level != "INFO" || rec.Version == "" {
				t.Errorf("log record %+v", rec)
			}
			break
		}
	}
	resp, err := http.Get(url)
	if err != nil {
		t.Fatal(err)
	}
	body, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if !regexp.MustCompile(`(?m)^pipesnap_build_info\{goversion="go[0-9.]+",revision="[^"]*",version="[^"]+"\} 1$`).Match(body) {
		t.Errorf("no pipesnap_build_info in:\n%s", body)
	}
	if _, stderr, code := run(t, "serve", "--log-format", "xml"); code != 2 || !strings.Contains(stderr, `--log-format "xml": want text or json`) {
		t.Errorf("serve --log-format xml: exit %d, %q", code, stderr)
	}
}
