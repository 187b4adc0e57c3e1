package main

// Tests of ls, diagnose, watch and serve on real stuck pipelines
// (internal/pipetest/stuck.go), through the built binary.

import (
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"os/exec"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"testing"

	"github.com/prometheus/common/expfmt"
	"github.com/prometheus/common/model"

	"github.com/pipesnap/pipesnap/diagnose"
	"github.com/pipesnap/pipesnap/internal/pipetest"
)

// pidArgs turns pids into --pid flags.
func pidArgs(pids ...int) []string {
	var out []string
	for _, pid := range pids {
		out = append(out, "--pid", strconv.Itoa(pid))
	}
	return out
}

type lsOut struct {
	Pipes []struct {
		Ino           uint64 `json:"ino"`
		Kind          string `json:"kind"`
		Bytes         uint64 `json:"bytes"`
		Capacity      uint64 `json:"capacity"`
		Readers       int    `json:"readers"`
		Writers       int    `json:"writers"`
		UnseenReaders int    `json:"unseen_readers"`
		Holders       []struct {
			PID         int    `json:"pid"`
			Comm        string `json:"comm"`
			FD          int    `json:"fd"`
			End         string `json:"end"`
			Blocked     string `json:"blocked"`
			BlockedTIDs []int  `json:"blocked_tids"`
		} `json:"holders"`
		Waiters []struct {
			Queue   string `json:"queue"`
			Kind    string `json:"kind"`
			PID     int    `json:"pid"`
			TID     int    `json:"tid"`
			Outside bool   `json:"outside"`
		} `json:"waiters"`
	} `json:"pipes"`
}

func lsJSON(t *testing.T, args ...string) lsOut {
	t.Helper()
	out, stderr, code := run(t, append([]string{"ls", "--json"}, args...)...)
	if code != 0 {
		t.Fatalf("ls exit %d: %s", code, stderr)
	}
	var v lsOut
	if err := json.Unmarshal([]byte(out), &v); err != nil {
		t.Fatalf("ls --json: %v\n%s", err, out)
	}
	return v
}

// holders renders a pipe's holders as "pid:fd:end:blocked" for comparison.
func (v lsOut) holders(t *testing.T, ino uint64) []string {
	t.Helper()
	for _, p := range v.Pipes {
		if p.Ino == ino {
			var out []string
			for _, h := range p.Holders {
				out = append(out, fmt.Sprintf("%d:%d:%s:%s", h.PID, h.FD, h.End, h.Blocked))
			}
			slices.Sort(out)
			return out
		}
	}
	t.Fatalf("pipe %d not listed", ino)
	return nil
}

func want(hs ...string) []string {
	slices.Sort(hs)
	return hs
}

func TestLsStuckPipelines(t *testing.T) {
	requireBPF(t)
	for _, tc := range []struct {
		kind  string
		check func(t *testing.T, pl *pipetest.Pipeline, v lsOut)
	}{
		{"full", func(t *testing.T, pl *pipetest.Pipeline, v lsOut) {
			w, r := pl.PID("writer"), pl.PID("reader")
			if got := v.holders(t, pl.Ino()); !slices.Equal(got, want(fmt.Sprintf("%d:1:write:writing", w), fmt.Sprintf("%d:0:read:", r))) {
				t.Errorf("holders %v", got)
			}
			if len(v.Pipes) != 1 {
				t.Errorf("%d pipes listed, want only the pipeline's (no pipe inherited from the test)", len(v.Pipes))
			}
			for _, p := range v.Pipes {
				if p.Ino == pl.Ino() && (p.Bytes != 65536 || p.Capacity != 65536 || p.Readers != 1 || p.Writers != 1) {
					t.Errorf("pipe %+v: want full, one reader and one writer", p)
				}
			}
		}},
		{"empty", func(t *testing.T, pl *pipetest.Pipeline, v lsOut) {
			w, r := pl.PID("writer"), pl.PID("reader")
			if got := v.holders(t, pl.Ino()); !slices.Equal(got, want(fmt.Sprintf("%d:1:write:", w), fmt.Sprintf("%d:0:read:reading", r))) {
				t.Errorf("holders %v", got)
			}
		}},
		{"no-readers", func(t *testing.T, pl *pipetest.Pipeline, v lsOut) {
			if got := v.holders(t, pl.Ino()); !slices.Equal(got, want(fmt.Sprintf("%d:1:write:", pl.PID("writer")))) {
				t.Errorf("holders %v", got)
			}
			for _, p := range v.Pipes {
				if p.Ino == pl.Ino() && (p.Readers != 0 || p.Bytes != 5) {
					t.Errorf("pipe %+v: want no readers, 5 bytes", p)
				}
			}
		}},
		{"chain", func(t *testing.T, pl *pipetest.Pipeline, v lsOut) {
			w, m, r := pl.PID("writer"), pl.PID("middle"), pl.PID("reader")
			if got := v.holders(t, pl.Inos["in"]); !slices.Equal(got, want(fmt.Sprintf("%d:1:write:writing", w), fmt.Sprintf("%d:0:read:", m))) {
				t.Errorf("in: holders %v", got)
			}
			if got := v.holders(t, pl.Inos["out"]); !slices.Equal(got, want(fmt.Sprintf("%d:1:write:", m), fmt.Sprintf("%d:0:read:reading", r))) {
				t.Errorf("out: holders %v", got)
			}
		}},
		{"thread-reader", func(t *testing.T, pl *pipetest.Pipeline, v lsOut) {
			r := pl.Stages["reader"]
			for _, p := range v.Pipes {
				for _, h := range p.Holders {
					if p.Ino == pl.Ino() && h.PID == r.PID && (h.Blocked != "reading" || !slices.Equal(h.BlockedTIDs, []int{r.TID})) {
						t.Errorf("reader %+v: want blocked reading in thread %d", h, r.TID)
					}
				}
			}
		}},
		{"poller", func(t *testing.T, pl *pipetest.Pipeline, v lsOut) {
			if got := v.holders(t, pl.Ino()); !slices.Equal(got, want(fmt.Sprintf("%d:1:write:", pl.PID("writer")), fmt.Sprintf("%d:0:read:", pl.PID("reader")))) {
				t.Errorf("holders %v: a poller is not blocked", got)
			}
		}},
	} {
		t.Run(tc.kind, func(t *testing.T) {
			pl := pipetest.StartStuck(t, tc.kind)
			tc.check(t, pl, lsJSON(t, pidArgs(pl.PIDs()...)...))
		})
	}

	// The table says the same.
	pl := pipetest.StartStuck(t, "full")
	out, _, code := run(t, append([]string{"ls"}, pidArgs(pl.PIDs()...)...)...)
	row := fmt.Sprintf("%d(yes):1:write:blocked %d(sleep):0:read", pl.PID("writer"), pl.PID("reader"))
	if code != 0 || !strings.Contains(out, row) || !strings.Contains(out, "65536/65536") {
		t.Errorf("ls table (exit %d) lacks %q:\n%s", code, row, out)
	}
}

type diagOut struct {
	raw        []byte
	Stuck      bool           `json:"stuck"`
	Chains     []diagChain    `json:"chains"`
	Findings   []diagFinding  `json:"findings"`
	Moving     []uint64       `json:"moving"`
	Considered int            `json:"considered"`
	LeftOut    map[string]int `json:"left_out"`
}

type diagChain struct {
	Procs []struct {
		PID int `json:"pid"`
	} `json:"procs"`
	Stages [][]struct {
		PID int `json:"pid"`
	} `json:"stages"`
	Pipes   []uint64 `json:"pipes"`
	Stuck   bool     `json:"stuck"`
	StuckAt []int    `json:"stuck_at"`
	Summary string   `json:"summary"`
}

type diagFinding struct {
	Kind     string     `json:"kind"`
	Category string     `json:"category"`
	Ino      uint64     `json:"ino"`
	Waiting  []diagTask `json:"waiting"`
	OtherEnd []diagTask `json:"other_end"`
	Culprits []diagTask `json:"culprits"`
	ForNS    int64      `json:"for_ns"`
	Message  string     `json:"message"`
}

type diagTask struct {
	PID     int      `json:"pid"`
	TID     int      `json:"tid"`
	End     string   `json:"end"`
	Via     string   `json:"via"`
	EpollFD int      `json:"epoll_fd"`
	State   string   `json:"state"`
	WaitNS  int64    `json:"wait_ns"`
	Wchan   string   `json:"wchan"`
	Stack   []string `json:"stack"`
	Outside bool     `json:"outside"`
}

func diagnoseJSON(t *testing.T, wantCode int, args ...string) diagOut {
	t.Helper()
	out, stderr, code := run(t, append([]string{"diagnose", "--json", "--settle", "150ms"}, args...)...)
	if wantCode >= 0 && code != wantCode { // -1: any
		t.Fatalf("diagnose exit %d, want %d: %s\n%s", code, wantCode, stderr, out)
	}
	var v diagOut
	if err := json.Unmarshal([]byte(out), &v); err != nil {
		t.Fatalf("diagnose --json: %v\n%s", err, out)
	}
	v.raw = []byte(out)
	return v
}

// report is the JSON decoded into diagnose's own report.
func (v diagOut) report(t *testing.T) *diagnose.Report {
	t.Helper()
	var rep diagnose.Report
	if err := json.Unmarshal(v.raw, &rep); err != nil {
		t.Fatalf("diagnose --json into a report: %v", err)
	}
	return &rep
}

// finding is what a test expects diagnose to say about one pipe.
type finding struct {
	ino      uint64
	kind     string
	waiting  []int // pids
	culprits []int
	msg      string
}

func (v diagOut) check(t *testing.T, f finding) {
	t.Helper()
	for _, got := range v.Findings {
		if got.Ino != f.ino {
			continue
		}
		var waiting, culprits []int
		for _, b := range got.Waiting {
			waiting = append(waiting, b.PID)
			if b.Via == "read" || b.Via == "write" {
				if b.State != "S" || !strings.Contains(b.Wchan, "pipe") {
					t.Errorf("blocked task %+v: want state S, waiting in the pipe code", b)
				}
				// Stacks are read for the tasks of stalls only.
				if got.Category == "stall" && (len(b.Stack) == 0 || !strings.Contains(strings.Join(b.Stack, " "), "pipe_")) {
					t.Errorf("blocked task %d: stack %q lacks the pipe code", b.PID, b.Stack)
				}
			}
		}
		for _, i := range got.Culprits {
			culprits = append(culprits, i.PID)
		}
		if got.Kind != f.kind || !slices.Equal(waiting, f.waiting) || !slices.Equal(culprits, f.culprits) || !strings.Contains(got.Message, f.msg) {
			t.Errorf("pipe %d: %s, waiting %v, culprits %v, %q\nwant %s, waiting %v, culprits %v, %q", f.ino,
				got.Kind, waiting, culprits, got.Message, f.kind, f.waiting, f.culprits, f.msg)
		}
		return
	}
	t.Errorf("no finding for pipe %d (%s): %+v", f.ino, f.kind, v.Findings)
}

// minWait is the --min-wait the tests give: stall-shaped waits of the
// test pipelines, a fraction of a second old, count.
var minWait = []string{"--min-wait", "100ms"}

func TestDiagnoseStuckPipelines(t *testing.T) {
	requireBPF(t)
	args := func(pl *pipetest.Pipeline) []string { return append(slices.Clone(minWait), pidArgs(pl.PIDs()...)...) }
	t.Run("full", func(t *testing.T) {
		pl := pipetest.StartStuck(t, "full")
		w, r := pl.PID("writer"), pl.PID("reader")
		v := diagnoseJSON(t, 1, args(pl)...)
		v.check(t, finding{pl.Ino(), "full-reader-idle", []int{w}, []int{r},
			fmt.Sprintf("to write to pipe %d, which is full (65536/65536 bytes); its reader sleep (pid %d) is not reading it: state S, idle ", pl.Ino(), r)})
		if len(v.Chains) != 1 || !slices.Equal(v.Chains[0].StuckAt, []int{r}) {
			t.Errorf("chains %+v: want one, stuck at %d", v.Chains, r)
		}
	})
	t.Run("empty", func(t *testing.T) {
		// A reader waiting for a writer that is alive and asleep is idle,
		// not stuck.
		pl := pipetest.StartStuck(t, "empty")
		w, r := pl.PID("writer"), pl.PID("reader")
		v := diagnoseJSON(t, 0, args(pl)...)
		v.check(t, finding{pl.Ino(), "empty-writer-idle", []int{r}, nil,
			fmt.Sprintf("for input on pipe %d, which is empty (blocked in read); its writer sleep (pid %d) is alive and waiting itself", pl.Ino(), w)})
		if v.LeftOut["idle, waiting for input"] != 1 {
			t.Errorf("left out %v, want 1 idle", v.LeftOut)
		}
	})
	t.Run("no-readers", func(t *testing.T) {
		pl := pipetest.StartStuck(t, "no-readers")
		diagnoseJSON(t, 1, args(pl)...).check(t, finding{pl.Ino(), "data-no-reader", nil, nil,
			"holds 5 bytes and has no reader left: they can never be read; its writer sleep"})
	})
	t.Run("unread", func(t *testing.T) {
		pl := pipetest.StartStuck(t, "unread")
		diagnoseJSON(t, 1, args(pl)...).check(t, finding{pl.Ino(), "unread", nil, []int{pl.PID("reader")},
			"holds 12 bytes that nobody reads, and no writer is left"})
	})
	t.Run("own-writer", func(t *testing.T) {
		pl := pipetest.StartStuck(t, "own-writer")
		r := pl.PID("reader")
		diagnoseJSON(t, 1, args(pl)...).check(t, finding{pl.Ino(), "writer-gone", []int{r}, []int{r},
			fmt.Sprintf("the only write end left is its own (fd 3 of cat (pid %d))", r)})
	})
	t.Run("chain", func(t *testing.T) {
		pl := pipetest.StartStuck(t, "chain")
		w, m, r := pl.PID("writer"), pl.PID("middle"), pl.PID("reader")
		v := diagnoseJSON(t, 1, args(pl)...)
		v.check(t, finding{pl.Inos["in"], "full-reader-idle", []int{w}, []int{m}, "its reader sleep"})
		v.check(t, finding{pl.Inos["out"], "empty-writer-idle", []int{r}, nil, "its writer sleep"})
		if len(v.Chains) != 1 {
			t.Fatalf("chains %+v: want one", v.Chains)
		}
		c := v.Chains[0]
		var order []int
		for _, p := range c.Procs {
			order = append(order, p.PID)
		}
		if !c.Stuck || !slices.Equal(order, []int{w, m, r}) || !slices.Equal(c.StuckAt, []int{m}) {
			t.Errorf("chain %+v: want %d | %d | %d, stuck at the middle", c, w, m, r)
		}
		if !strings.Contains(c.Summary, fmt.Sprintf("stuck at sleep (pid %d)", m)) {
			t.Errorf("summary %q", c.Summary)
		}
	})
	t.Run("thread-reader", func(t *testing.T) {
		pl := pipetest.StartStuck(t, "thread-reader")
		r := pl.Stages["reader"]
		v := diagnoseJSON(t, 0, args(pl)...)
		v.check(t, finding{pl.Ino(), "empty-writer-idle", []int{r.PID}, nil, fmt.Sprintf("thread %d", r.TID)})
	})
	t.Run("poller", func(t *testing.T) {
		pl := pipetest.StartStuck(t, "poller")
		r := pl.Stages["reader"]
		v := diagnoseJSON(t, 0, args(pl)...)
		v.check(t, finding{pl.Ino(), "empty-writer-idle", []int{r.PID}, nil, "(in poll/select)"})
	})
	t.Run("flowing", func(t *testing.T) {
		pl := pipetest.StartStuck(t, "flowing")
		v := diagnoseJSON(t, 0, args(pl)...)
		if v.Stuck || !slices.Contains(v.Moving, pl.Ino()) {
			t.Errorf("a flowing pipe: stuck %v, moving %v; want moving, not stuck", v.Stuck, v.Moving)
		}
	})
	t.Run("partial", func(t *testing.T) {
		// Only the middle of yes | sleep | cat is asked for: the culprit
		// is still the middle, and the writer outside is named.
		pl := pipetest.StartStuck(t, "chain")
		w, m := pl.PID("writer"), pl.PID("middle")
		v := diagnoseJSON(t, 1, append(slices.Clone(minWait), pidArgs(m)...)...)
		v.check(t, finding{pl.Inos["in"], "full-reader-idle", []int{w}, []int{m}, ""})
		for _, f := range v.Findings {
			for _, t2 := range f.Waiting {
				if t2.PID == w && !t2.Outside {
					t.Errorf("writer %d not marked outside: %+v", w, t2)
				}
			}
		}
	})
	t.Run("text", func(t *testing.T) {
		pl := pipetest.StartStuck(t, "chain")
		out, _, code := run(t, append([]string{"diagnose", "--settle", "0", "--min-wait", "0"}, pidArgs(pl.PIDs()...)...)...)
		for _, s := range []string{
			fmt.Sprintf("STUCK yes (%d) | sleep (%d) | cat (%d): stuck at sleep (pid %d)", pl.PID("writer"), pl.PID("middle"), pl.PID("reader"), pl.PID("middle")),
			"[full-reader-idle, ", "pipe_write", "1 stall in 1 pipeline: 2 pipes walked, 2 waits considered, left out: 1 idle, waiting for input",
		} {
			if code != 1 || !strings.Contains(out, s) {
				t.Errorf("diagnose text (exit %d) lacks %q:\n%s", code, s, out)
			}
		}
	})
}

// TestDiagnoseAll: with every process of the machine walked, each test
// pipeline is still pinned on its right stage, and nothing else is
// called stuck (the machine's own pipes are idle).
func TestDiagnoseAll(t *testing.T) {
	requireBPF(t)
	chain := pipetest.StartStuck(t, "chain")
	full := pipetest.StartStuck(t, "full")
	flowing := pipetest.StartStuck(t, "flowing")
	v := diagnoseJSON(t, 1, append(slices.Clone(minWait), "--all")...)
	v.check(t, finding{chain.Inos["in"], "full-reader-idle", []int{chain.PID("writer")}, []int{chain.PID("middle")}, ""})
	v.check(t, finding{full.Ino(), "full-reader-idle", []int{full.PID("writer")}, []int{full.PID("reader")}, ""})
	ours := map[uint64]bool{chain.Inos["in"]: true, chain.Inos["out"]: true, full.Ino(): true}
	for _, f := range v.Findings {
		if f.Ino == flowing.Ino() {
			t.Errorf("the flowing pipe is reported stuck: %+v", f)
		}
		if f.Category == "stall" && !ours[f.Ino] && !fromTests(f) {
			t.Errorf("a pipe of the machine is called stuck: %+v", f)
		}
	}
	atMiddle := false
	for _, c := range v.Chains {
		if slices.Contains(c.Pipes, chain.Inos["in"]) {
			atMiddle = slices.Equal(c.StuckAt, []int{chain.PID("middle")})
		}
	}
	if !atMiddle {
		t.Errorf("the chain is not stuck at its middle stage %d: %+v", chain.PID("middle"), v.Chains)
	}
}

func TestWatch(t *testing.T) {
	requireBPF(t)
	flowing := pipetest.StartStuck(t, "flowing")
	full := pipetest.StartStuck(t, "full")
	args := append([]string{"watch", "--iterations", "2", "--interval", "200ms"}, pidArgs(append(flowing.PIDs(), full.PIDs()...)...)...)
	out, stderr, code := run(t, args...)
	if code != 0 {
		t.Fatalf("watch exit %d: %s", code, stderr)
	}
	frames := strings.Split(strings.TrimSpace(out), "\n\n")
	if len(frames) != 2 || strings.Contains(out, "\x1b[") {
		t.Fatalf("want 2 plain frames, got %d:\n%q", len(frames), out)
	}
	rows := func(frame string) map[uint64][]string {
		out := map[uint64][]string{}
		var order []uint64
		for _, line := range strings.Split(frame, "\n") {
			f := strings.Fields(line)
			if len(f) < 5 {
				continue
			}
			if ino, err := strconv.ParseUint(f[0], 10, 64); err == nil {
				out[ino] = f
				order = append(order, ino)
			}
		}
		// Fullest first: a flowing pipe may be full for a moment too.
		last := 2.0
		for _, ino := range order {
			var n, c float64
			fmt.Sscanf(out[ino][2], "%g/%g", &n, &c)
			if c == 0 || n/c > last {
				t.Errorf("rows not fullest first: %v\n%s", order, frame)
				break
			}
			last = n / c
		}
		if len(order) == 0 || out[full.Ino()] == nil {
			t.Errorf("the full pipe is not listed:\n%s", frame)
		}
		return out
	}
	first, second := rows(frames[0]), rows(frames[1])
	// INO KIND BYTES/CAPACITY IN OUT R W WAIT STATE HOLDERS...
	if r := first[flowing.Ino()]; len(r) < 5 || r[3] != "-" || r[4] != "-" {
		t.Errorf("first frame: rates %v, want none yet", r)
	}
	if r := second[flowing.Ino()]; len(r) < 5 || !strings.HasSuffix(r[4], "MiB/s") && !strings.HasSuffix(r[4], "GiB/s") {
		t.Errorf("second frame: the flowing pipe's rate %v, want megabytes per second", r)
	}
	if r := second[full.Ino()]; len(r) < 11 || r[2] != "65536/65536" || r[3] != "0B/s" || r[4] != "0B/s" || r[7] == "-" || r[8] != "sleeping" || r[9] != "-" || !strings.HasSuffix(r[10], ":write:blocked") {
		t.Errorf("second frame: the full pipe %v, want full, no flow, writer blocked", r)
	}
}

func TestServe(t *testing.T) {
	requireBPF(t)
	pl := pipetest.StartStuck(t, "full")
	cmd := exec.Command(pipesnapBin, append([]string{"serve", "--listen", "127.0.0.1:0", "--max-pipes", "10"}, pidArgs(pl.PIDs()...)...)...)
	stderr, err := cmd.StderrPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	stopped := false
	t.Cleanup(func() {
		if !stopped {
			cmd.Process.Kill()
			cmd.Wait()
		}
	})
	url := announcedURL(t, stderr)
	if !strings.HasPrefix(url, "http://127.0.0.1:") {
		t.Fatalf("no address announced (%q)", url)
	}
	scrape := func() map[string]*model.Sample {
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
		out := map[string]*model.Sample{}
		vec, err := expfmt.ExtractSamples(&expfmt.DecodeOptions{Timestamp: model.Now()}, mapValues(fams)...)
		if err != nil {
			t.Fatal(err)
		}
		for _, s := range vec {
			key := string(s.Metric[model.MetricNameLabel])
			if ino := s.Metric["ino"]; ino != "" {
				key += "/" + string(ino)
			}
			out[key] = s
		}
		return out
	}
	scrape()
	m := scrape()
	ino := strconv.FormatUint(pl.Ino(), 10)
	for name, want := range map[string]float64{
		"pipesnap_pipe_queued_bytes":          65536,
		"pipesnap_pipe_capacity_bytes":        65536,
		"pipesnap_pipe_readers":               1,
		"pipesnap_pipe_writers":               1,
		"pipesnap_pipe_blocked_writers":       1,
		"pipesnap_pipe_blocked_readers":       0,
		"pipesnap_pipe_read_bytes_total":      0,
		"pipesnap_pipe_written_buffers_total": 0,
	} {
		s := m[name+"/"+ino]
		if s == nil || float64(s.Value) != want {
			t.Errorf("%s{ino=%s} = %v, want %v", name, ino, s, want)
		}
	}
	if s := m["pipesnap_pipe_queued_bytes/"+ino]; s != nil && (s.Metric["readers"] != "sleep" || s.Metric["writers"] != "yes" || s.Metric["kind"] != "pipe") {
		t.Errorf("labels %v: want readers sleep, writers yes, kind pipe", s.Metric)
	}
	if s := m["pipesnap_up"]; s == nil || s.Value != 1 {
		t.Errorf("pipesnap_up = %v", s)
	}
	if s := m["pipesnap_scrape_duration_seconds"]; s == nil || s.Value <= 0 || s.Value > 5 {
		t.Errorf("pipesnap_scrape_duration_seconds = %v", s)
	}

	cmd.Process.Signal(syscall.SIGTERM)
	rest, _ := io.ReadAll(stderr)
	err = cmd.Wait()
	stopped = true
	if err != nil || !strings.Contains(string(rest), "stopped") {
		t.Errorf("serve after SIGTERM: %v, stderr %q", err, rest)
	}
}

func mapValues[K comparable, V any](m map[K]V) []V {
	var out []V
	for _, v := range m {
		out = append(out, v)
	}
	return out
}

func TestObserveUsage(t *testing.T) {
	for _, tc := range []struct {
		args []string
		msg  string
	}{
		{[]string{"ls", "--all", "--pid", "1"}, "--pid and --all exclude each other"},
		{[]string{"ls", "extra"}, "no arguments"},
		{[]string{"diagnose", "--settle", "-1s"}, "--settle"},
		{[]string{"watch", "--interval", "0s"}, "--interval"},
		{[]string{"watch", "--iterations", "-1"}, "--iterations"},
		{[]string{"serve", "--listen", "nonsense"}, "--listen"},
		{[]string{"serve", "--max-pipes", "-3"}, "--max-pipes"},
	} {
		_, stderr, code := run(t, tc.args...)
		if code != 2 || !strings.Contains(stderr, tc.msg) {
			t.Errorf("%v: exit %d, %q; want 2 and %q", tc.args, code, stderr, tc.msg)
		}
	}
	// A process that does not exist is no usage error: exit 1.
	if _, stderr, code := run(t, "ls", "--pid", "2147483647"); code != 1 || !strings.Contains(stderr, "pid 2147483647: no such process") {
		t.Errorf("ls --pid 2147483647: exit %d, %q; want 1 and no such process", code, stderr)
	}
}
