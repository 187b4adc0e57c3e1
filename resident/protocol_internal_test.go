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
	"time"

	"github.com/pipesnap/pipesnap/loader"
	"github.com/pipesnap/pipesnap/pipemodel"
)

type fakeBackend struct {
	smp       *pipemodel.Sample
	cancelled chan struct{} // closed when a dump of pid 3 sees its ctx end
}

// Dump writes a stream by the first pid asked for: 1 writes and fails, 2
// fails first, 3 waits for its ctx to end, else it writes "stream".
func (f fakeBackend) Dump(ctx context.Context, w io.Writer, _ *Session, req Request) (*DumpResult, error) {
	switch req.PIDs[0] {
	case 1:
		w.Write([]byte("half"))
		return nil, errors.New("failed after writing")
	case 2:
		return nil, errors.New("failed before writing")
	case 3:
		<-ctx.Done()
		close(f.cancelled)
		return nil, ctx.Err()
	}
	if _, err := w.Write([]byte("stream")); err != nil {
		return nil, err
	}
	return &DumpResult{Report: &loader.Report{Bytes: 6}}, nil
}

func (f fakeBackend) Sample(context.Context, *Session, Request) (*pipemodel.Sample, error) {
	if f.smp != nil {
		return f.smp, nil
	}
	return &pipemodel.Sample{PageSize: 4096, Procs: map[uint32]*pipemodel.Proc{}}, nil
}

// TestDumpToClientFile: the serve writes a dump into the fd the client
// sends; a failure says whether anything was written; a client gone
// mid-dump ends it; an fd sent with anything but a dump that says so is
// refused.
func TestDumpToClientFile(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skip("the server answers only peers that could take the direct path")
	}
	fb := fakeBackend{cancelled: make(chan struct{})}
	sock, ctx := serveFake(t, fb)
	c, err := Dial(sock)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	f, err := os.CreateTemp(t.TempDir(), "out")
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	res, err := c.DumpTo(ctx, f, Request{PIDs: []int{9}})
	if err != nil || res.Report.Bytes != 6 {
		t.Fatalf("DumpTo: %+v, %v", res, err)
	}
	f.Write([]byte("+")) // the serve wrote at the file's own offset
	if b, _ := os.ReadFile(f.Name()); string(b) != "stream+" {
		t.Errorf("file holds %q", b)
	}
	for pid, wrote := range map[int]int64{1: 4, 2: 0} {
		_, err := c.DumpTo(ctx, f, Request{PIDs: []int{pid}})
		var e *Error
		if !errors.As(err, &e) || e.Wrote != wrote {
			t.Errorf("pid %d: %v, want an error having written %d", pid, err, wrote)
		}
	}
	// The session goes on, and frames still work.
	var b strings.Builder
	if res, err := c.Dump(ctx, &b, Request{PIDs: []int{9}}); err != nil || b.String() != "stream" || res.Report.Bytes != 6 {
		t.Errorf("Dump in frames: %q, %v", b.String(), err)
	}

	// A client gone mid-dump ends it.
	c2, err := Dial(sock)
	if err != nil {
		t.Fatal(err)
	}
	ctx2, cancel := context.WithCancel(ctx)
	go func() { time.Sleep(50 * time.Millisecond); cancel() }()
	if _, err := c2.DumpTo(ctx2, f, Request{PIDs: []int{3}}); !errors.Is(err, context.Canceled) {
		t.Errorf("cancelled DumpTo: %v", err)
	}
	c2.Close()
	select {
	case <-fb.cancelled:
	case <-time.After(5 * time.Second):
		t.Error("the serve's dump went on after its client left")
	}

	// An fd with a sample request, or a dump that does not say so.
	for _, req := range []Request{{Protocol: Protocol, Op: OpSample}, {Protocol: Protocol, Op: OpDump, PIDs: []int{9}}} {
		c3, err := Dial(sock)
		if err != nil {
			t.Fatal(err)
		}
		payload, _ := json.Marshal(req)
		if err := writeFrameFD(c3.c, frameRequest, payload, f); err != nil {
			t.Fatal(err)
		}
		typ, b, err := readFrame(c3.c, nil, maxReq)
		var e Error
		if err != nil || typ != frameError || json.Unmarshal(b, &e) != nil || e.Code != CodeUsage {
			t.Errorf("%s with an fd: frame %q %s, %v", req.Op, typ, b, err)
		}
		c3.Close()
	}
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
