package deploy

import (
	"bytes"
	"encoding/json"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"sync"
	"testing"

	"github.com/pipesnap/pipesnap/internal/pipetest"
)

var (
	buildOnce sync.Once
	buildDir  string
	buildErr  error
	buildOut  []byte
)

func TestMain(m *testing.M) {
	code := m.Run()
	if buildDir != "" {
		os.RemoveAll(buildDir)
	}
	os.Exit(code)
}

// binary builds ./cmd/pipesnap as scripts/image.sh does (static,
// -trimpath), once per test process.
func binary(t *testing.T) string {
	t.Helper()
	buildOnce.Do(func() {
		buildDir, buildErr = os.MkdirTemp("", "pipesnap-deploy-")
		if buildErr != nil {
			return
		}
		// World-readable: the capability tests run it as nobody.
		os.Chmod(buildDir, 0o755)
		cmd := exec.Command("go", "build", "-trimpath", "-o", filepath.Join(buildDir, "pipesnap"), "./cmd/pipesnap")
		cmd.Dir = ".."
		cmd.Env = append(os.Environ(), "CGO_ENABLED=0")
		buildOut, buildErr = cmd.CombinedOutput()
	})
	if buildErr != nil {
		t.Fatalf("go build ./cmd/pipesnap: %v: %s", buildErr, buildOut)
	}
	return filepath.Join(buildDir, "pipesnap")
}

// lsPipe is the part of `ls --json` compared.
type lsPipe struct {
	Ino      uint64     `json:"ino"`
	Kind     string     `json:"kind"`
	Bytes    uint64     `json:"bytes"`
	Capacity uint64     `json:"capacity"`
	Holders  []lsHolder `json:"holders"`
}

type lsHolder struct {
	PID     int    `json:"pid"`
	Comm    string `json:"comm"`
	FD      int    `json:"fd"`
	End     string `json:"end"`
	Blocked string `json:"blocked"`
}

// pipelinePipes are the pipes of `ls --json` output held by the pipeline's
// processes, their holders sorted, in inode order.
func pipelinePipes(t *testing.T, out []byte, pl *pipetest.Pipeline) []lsPipe {
	t.Helper()
	var doc struct {
		Pipes []lsPipe `json:"pipes"`
	}
	if err := json.Unmarshal(out, &doc); err != nil {
		t.Fatalf("ls --json: %v: %.300s", err, out)
	}
	pids := pl.PIDs()
	var got []lsPipe
	for _, p := range doc.Pipes {
		if !slices.ContainsFunc(p.Holders, func(h lsHolder) bool { return slices.Contains(pids, h.PID) }) {
			continue
		}
		slices.SortFunc(p.Holders, func(a, b lsHolder) int {
			if a.PID != b.PID {
				return a.PID - b.PID
			}
			return a.FD - b.FD
		})
		got = append(got, p)
	}
	slices.SortFunc(got, func(a, b lsPipe) int { return int(a.Ino) - int(b.Ino) })
	return got
}

// checkFull checks what ls says of a "full" pipeline: its pipe full, its
// writer blocked writing, its reader holding the read end.
func checkFull(t *testing.T, pipes []lsPipe, pl *pipetest.Pipeline) {
	t.Helper()
	for _, p := range pipes {
		if p.Ino != pl.Ino() {
			continue
		}
		if p.Bytes != p.Capacity || p.Bytes == 0 {
			t.Errorf("pipe %d: %d/%d bytes, want full", p.Ino, p.Bytes, p.Capacity)
		}
		var w, r bool
		for _, h := range p.Holders {
			switch {
			case h.PID == pl.PID("writer") && h.End == "write" && h.Blocked == "writing":
				w = true
			case h.PID == pl.PID("reader") && h.End == "read":
				r = true
			}
		}
		if !w || !r {
			t.Errorf("pipe %d: holders %+v, want the writer %d blocked, the reader %d", p.Ino, p.Holders, pl.PID("writer"), pl.PID("reader"))
		}
		return
	}
	t.Errorf("pipe %d not listed: %+v", pl.Ino(), pipes)
}

func mustJSON(v any) string {
	b, _ := json.Marshal(v)
	return string(bytes.TrimSpace(b))
}
