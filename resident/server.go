package resident

import (
	"context"
	"encoding/binary"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"os"
	"path/filepath"
	"sync"
	"syscall"
	"time"

	"github.com/pipesnap/pipesnap/loader"
	"github.com/pipesnap/pipesnap/output"
	"github.com/pipesnap/pipesnap/pipemodel"
)

// Backend does what the server is asked: serve's loaded programs.
type Backend interface {
	// Dump writes the stream of a dump to w, as the direct path would.
	Dump(ctx context.Context, w io.Writer, s *Session, req Request) (*DumpResult, error)
	// Sample walks the pipes once, as ls does.
	Sample(ctx context.Context, s *Session, req Request) (*pipemodel.Sample, error)
}

// Session is one client's connection.
type Session struct {
	Peer Peer
	// Data is the backend's own, kept for the session's later requests
	// (the processes a diagnose walks twice, resolved once).
	Data any
}

// Server answers clients on a unix socket.
type Server struct {
	Backend Backend
	Log     *slog.Logger
}

// ErrInUse: another server answers on the socket.
var ErrInUse = errors.New("another pipesnap serve answers on the socket")

// Listen makes the socket at path: its directory is created mode 0700
// and must not be writable by anyone but its owner, the server's user; a
// socket left by a server that is gone (nothing answers) is replaced;
// the new socket is mode 0600.
func Listen(path string) (*net.UnixListener, error) {
	dir := filepath.Dir(path)
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return nil, fmt.Errorf("making the socket's directory: %w", err)
	}
	fi, err := os.Lstat(dir)
	if err != nil {
		return nil, err
	}
	st := fi.Sys().(*syscall.Stat_t)
	switch {
	case !fi.IsDir():
		return nil, fmt.Errorf("%s is not a directory", dir)
	case int(st.Uid) != os.Geteuid():
		return nil, fmt.Errorf("socket directory %s belongs to uid %d, not to the server's uid %d: give --socket a path in a directory of the server's own", dir, st.Uid, os.Geteuid())
	case fi.Mode().Perm()&0o022 != 0:
		return nil, fmt.Errorf("socket directory %s is writable by group or others (mode %o): make it 0700 or give --socket another path", dir, fi.Mode().Perm())
	}
	if fi, err := os.Lstat(path); err == nil {
		if fi.Mode()&os.ModeSocket == 0 {
			return nil, fmt.Errorf("%s exists and is not a socket: remove it or give --socket another path", path)
		}
		if c, err := net.DialTimeout("unix", path, time.Second); err == nil {
			c.Close()
			return nil, fmt.Errorf("%s: %w", path, ErrInUse)
		}
		if err := os.Remove(path); err != nil {
			return nil, fmt.Errorf("removing the stale socket: %w", err)
		}
	}
	ln, err := net.ListenUnix("unix", &net.UnixAddr{Name: path, Net: "unix"})
	if err != nil {
		return nil, err
	}
	if err := os.Chmod(path, 0o600); err != nil {
		ln.Close()
		return nil, err
	}
	return ln, nil
}

// Serve answers the clients of ln until ctx ends, then closes ln (which
// removes the socket) and waits for the sessions to end.
func (s *Server) Serve(ctx context.Context, ln *net.UnixListener) error {
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	var wg sync.WaitGroup
	defer wg.Wait()
	stop := context.AfterFunc(ctx, func() { ln.Close() })
	defer stop()
	for {
		c, err := ln.AcceptUnix()
		if err != nil {
			if ctx.Err() != nil {
				return nil
			}
			var ne net.Error
			if errors.As(err, &ne) && ne.Timeout() {
				continue
			}
			ln.Close()
			return fmt.Errorf("accepting on the socket: %w", err)
		}
		wg.Add(1)
		go func() {
			defer wg.Done()
			s.session(ctx, c)
		}()
	}
}

func (s *Server) session(ctx context.Context, c *net.UnixConn) {
	defer c.Close()
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	// Ending the server ends a session blocked on its client.
	stop := context.AfterFunc(ctx, func() { c.SetDeadline(time.Unix(1, 0)) })
	defer stop()
	peer, refusal := checkClient(c)
	if refusal != nil {
		s.Log.Warn("declined a client", "pid", peer.PID, "uid", peer.UID, "code", refusal.Code, "reason", refusal.Msg)
		writeError(c, refusal)
		return
	}
	if err := writeFrame(c, frameAccept, acceptPayload); err != nil {
		return
	}
	sess := &Session{Peer: peer}
	var buf []byte
	for {
		typ, payload, out, err := readFrameFD(c, buf, maxReq)
		if err != nil {
			return // the client is done (or gone)
		}
		buf = payload[:0]
		var req Request
		if typ != frameRequest || json.Unmarshal(payload, &req) != nil {
			closeFile(out)
			writeError(c, &Error{Code: CodeUsage, Msg: "not a request frame"})
			return
		}
		start := time.Now()
		err = s.answer(ctx, c, sess, req, out)
		if err != nil && !errors.Is(err, errClientGone) {
			s.Log.Info("request failed", "op", req.Op, "pid", peer.PID, "uid", peer.UID, "err", err)
		} else if err == nil {
			s.Log.Info("answered", "op", req.Op, "pid", peer.PID, "uid", peer.UID, "took", time.Since(start).Round(time.Microsecond))
		}
		if errors.Is(err, errClientGone) {
			return
		}
	}
}

// errClientGone: writing to the client failed.
var errClientGone = errors.New("client gone")

func closeFile(f *os.File) {
	if f != nil {
		f.Close()
	}
}

// answer runs one request; errors of the request go to the client. out
// is the fd that came with it, closed here.
func (s *Server) answer(ctx context.Context, c *net.UnixConn, sess *Session, req Request, out *os.File) error {
	defer closeFile(out)
	if (out != nil) != (req.Op == OpDump && req.Output) {
		return s.fail(c, &Error{Code: CodeUsage, Msg: "an output fd comes with a dump request that says so, and only then"})
	}
	if req.Protocol != Protocol {
		// A client of another version (one before versions were sent
		// sends none).
		return s.fail(c, &Error{Code: CodeUsage, Msg: fmt.Sprintf("the resident pipesnap serve speaks protocol %d, this pipesnap %d: run the same pipesnap version as the serve, or --direct", Protocol, req.Protocol)})
	}
	switch req.Op {
	case OpSample:
		smp, err := s.Backend.Sample(ctx, sess, req)
		if err != nil {
			return s.fail(c, err)
		}
		if err := writeSample(c, smp); err != nil {
			return errClientGone
		}
		return nil
	case OpDump:
		var res *DumpResult
		var err error
		if out != nil {
			res, err = s.dumpTo(ctx, c, sess, req, out)
		} else {
			dw := &dataWriter{w: c}
			res, err = s.Backend.Dump(ctx, dw, sess, req)
			if err == nil {
				err = dw.Flush()
			}
		}
		if err != nil {
			return s.fail(c, err)
		}
		b, err := json.Marshal(res)
		if err != nil {
			return s.fail(c, err)
		}
		if err := writeFrame(c, frameResult, b); err != nil {
			return errClientGone
		}
		return nil
	}
	return s.fail(c, &Error{Code: CodeUsage, Msg: fmt.Sprintf("unknown request %q", req.Op)})
}

// dumpTo dumps into the client's output. The client waits for the
// result meanwhile: a read that returns is the client gone (or sending
// out of turn), and ends the dump.
func (s *Server) dumpTo(ctx context.Context, c *net.UnixConn, sess *Session, req Request, out *os.File) (*DumpResult, error) {
	dctx, cancel := context.WithCancel(ctx)
	defer cancel()
	gone := make(chan struct{})
	go func() {
		defer close(gone)
		var b [1]byte
		if _, err := c.Read(b[:]); !errors.Is(err, os.ErrDeadlineExceeded) {
			cancel()
		}
	}()
	cw := &output.Counter{W: out}
	res, err := s.Backend.Dump(dctx, cw, sess, req)
	c.SetReadDeadline(time.Unix(1, 0))
	<-gone
	if ctx.Err() == nil {
		// (An ending server keeps the deadline it set, to end the session.)
		c.SetReadDeadline(time.Time{})
	}
	if dctx.Err() != nil && ctx.Err() == nil {
		err = errClientGone
	}
	if err != nil {
		e := &Error{Code: CodeFailed, Msg: err.Error(), Wrote: cw.N}
		var re *Error
		switch {
		case errors.Is(err, errClientGone):
			return nil, err
		case errors.As(err, &re):
			e.Code = re.Code
		case errors.Is(err, loader.ErrNoProcess):
			e.Code = CodeNoProcess
		}
		return nil, e
	}
	return res, nil
}

// writeSample sends a sample: its head, its pipes in frames of at most
// 1,000 pipes or about dataChunk bytes, the end.
func writeSample(w io.Writer, smp *pipemodel.Sample) error {
	if err := writeFrame(w, frameSample, encodeHead(nil, smp)); err != nil {
		return err
	}
	var body, frame []byte
	n := 0
	flush := func() error {
		frame = binary.AppendUvarint(frame[:0], uint64(n))
		frame = append(frame, body...)
		body, n = body[:0], 0
		return writeFrame(w, framePipes, frame)
	}
	for _, p := range smp.Pipes {
		body = appendPipe(body, p)
		if n++; n == 1000 || len(body) >= dataChunk {
			if err := flush(); err != nil {
				return err
			}
		}
	}
	if n > 0 {
		if err := flush(); err != nil {
			return err
		}
	}
	return writeFrame(w, frameEnd, nil)
}

// fail sends err to the client and returns it.
func (s *Server) fail(c *net.UnixConn, err error) error {
	e := &Error{Code: CodeFailed, Msg: err.Error()}
	var re *Error
	switch {
	case errors.As(err, &re):
		e = re
	case errors.Is(err, loader.ErrNoProcess):
		e.Code = CodeNoProcess
	}
	if writeError(c, e) != nil {
		return errClientGone
	}
	return err
}

func writeError(c *net.UnixConn, e *Error) error {
	b, _ := json.Marshal(e)
	return writeFrame(c, frameError, b)
}
