package resident

import (
	"context"
	"encoding/json"
	"errors"
	"io"
	"log/slog"
	"net"
	"os"
	"path/filepath"
	"reflect"
	"slices"
	"strings"
	"testing"

	"github.com/pipesnap/pipesnap/pipemodel"
)

type fakeBackend struct{ smp *pipemodel.Sample }

func (fakeBackend) Dump(context.Context, io.Writer, *Session, Request) (*DumpResult, error) {
	return nil, errors.New("not here")
}

func (f fakeBackend) Sample(context.Context, *Session, Request) (*pipemodel.Sample, error) {
	if f.smp != nil {
		return f.smp, nil
	}
	return &pipemodel.Sample{PageSize: 4096, Procs: map[uint32]*pipemodel.Proc{}}, nil
}

// serveFake serves b on a socket of the test's until it ends.
func serveFake(t *testing.T, b Backend) (string, context.Context) {
	t.Helper()
	sock := filepath.Join(t.TempDir(), "s.sock")
	ln, err := Listen(sock)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error)
	go func() {
		done <- (&Server{Backend: b, Log: slog.New(slog.DiscardHandler)}).Serve(ctx, ln)
	}()
	t.Cleanup(func() { cancel(); <-done })
	return sock, ctx
}

// TestSampleStreamed: a sample of many pipes crosses in several frames,
// arrives whole and in order through Sample, and head first, then each
// pipe, through SampleEach.
func TestSampleStreamed(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skip("the server answers only peers that could take the direct path")
	}
	smp := fullSample()
	one := smp.Pipes[0]
	smp.Pipes = nil
	for i := range 2500 {
		p := *one
		p.Ino = uint64(i)
		p.Path = strings.Repeat("p", i%700) // some batches over dataChunk at 1,000 pipes
		smp.Pipes = append(smp.Pipes, &p)
	}
	var frames int
	var b strings.Builder
	writeSample(countingFrames{&b, &frames}, smp)
	if frames < 5 {
		t.Errorf("%d frames for 2,500 pipes", frames)
	}
	sock, ctx := serveFake(t, fakeBackend{smp: smp})
	c, err := Dial(sock)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	got, err := c.Sample(ctx, Request{})
	if err != nil || !reflect.DeepEqual(got, smp) {
		t.Fatalf("Sample: %v (equal %v)", err, reflect.DeepEqual(got, smp))
	}
	var order []uint64
	headFirst := false
	err = c.SampleEach(ctx, Request{}, func(h *pipemodel.Sample) error {
		headFirst = len(order) == 0 && h.Pipes == nil && len(h.Procs) == len(smp.Procs)
		return nil
	}, func(p *pipemodel.Pipe) error {
		order = append(order, p.Ino)
		return nil
	})
	if err != nil || !headFirst || len(order) != 2500 || !slices.IsSorted(order) {
		t.Errorf("SampleEach: %v, head first %v, %d pipes", err, headFirst, len(order))
	}
	// The session goes on.
	if _, err := c.Sample(ctx, Request{}); err != nil {
		t.Errorf("a third sample: %v", err)
	}
}

// countingFrames counts the frames written through it.
type countingFrames struct {
	w io.Writer
	n *int
}

func (c countingFrames) Write(p []byte) (int, error) {
	if len(p) == 5 {
		*c.n++ // a header: writeFrame writes the header and payload apart
	}
	return c.w.Write(p)
}

// TestProtocolVersions: a client of this version is answered; a request
// of another version (or none, as older clients send) is refused with
// a usage error that says what to do; a serve whose yes names another
// version (or none) is declined by the client.
func TestProtocolVersions(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skip("the server answers only peers that could take the direct path")
	}
	sock, ctx := serveFake(t, fakeBackend{})

	c, err := Dial(sock)
	if err != nil {
		t.Fatal(err)
	}
	if s, err := c.Sample(ctx, Request{}); err != nil || s.PageSize != 4096 {
		t.Errorf("same version: %+v, %v", s, err)
	}
	c.Close()

	for _, p := range []int{0, 1, Protocol + 1} {
		conn, err := net.Dial("unix", sock)
		if err != nil {
			t.Fatal(err)
		}
		if typ, _, err := readFrame(conn, nil, maxReq); err != nil || typ != frameAccept {
			t.Fatalf("no yes: %q, %v", typ, err)
		}
		b, _ := json.Marshal(Request{Protocol: p, Op: OpSample})
		writeFrame(conn, frameRequest, b)
		typ, payload, err := readFrame(conn, nil, maxReq)
		conn.Close()
		var e Error
		if err != nil || typ != frameError || json.Unmarshal(payload, &e) != nil || e.Code != CodeUsage || !strings.Contains(e.Msg, "--direct") {
			t.Errorf("protocol %d: frame %q %s, %v", p, typ, payload, err)
		}
	}

	// A serve of another version: its yes says so, or says nothing.
	for _, yes := range [][]byte{nil, []byte(`{"protocol":1}`)} {
		old := filepath.Join(t.TempDir(), "old.sock")
		l, err := net.Listen("unix", old)
		if err != nil {
			t.Fatal(err)
		}
		go func() {
			c, err := l.Accept()
			if err == nil {
				writeFrame(c, frameAccept, yes)
				c.Close()
			}
		}()
		if c, err := Dial(old); !errors.Is(err, ErrDeclined) {
			if c != nil {
				c.Close()
			}
			t.Errorf("yes %q: %v, want declined", yes, err)
		}
		l.Close()
	}
}
