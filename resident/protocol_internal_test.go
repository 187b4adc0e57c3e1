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
	"strings"
	"testing"

	"github.com/pipesnap/pipesnap/pipemodel"
)

type fakeBackend struct{}

func (fakeBackend) Dump(context.Context, io.Writer, *Session, Request) (*DumpResult, error) {
	return nil, errors.New("not here")
}

func (fakeBackend) Sample(context.Context, *Session, Request) (*pipemodel.Sample, error) {
	return &pipemodel.Sample{PageSize: 4096, Procs: map[uint32]*pipemodel.Proc{}}, nil
}

// TestProtocolVersions: a client of this version is answered; a request
// of another version (or none, as older clients send) is refused with
// a usage error that says what to do; a serve whose yes names another
// version (or none) is declined by the client.
func TestProtocolVersions(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skip("the server answers only peers that could take the direct path")
	}
	sock := filepath.Join(t.TempDir(), "s.sock")
	ln, err := Listen(sock)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error)
	go func() {
		done <- (&Server{Backend: fakeBackend{}, Log: slog.New(slog.DiscardHandler)}).Serve(ctx, ln)
	}()
	defer func() { cancel(); <-done }()

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
