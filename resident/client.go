package resident

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"time"

	"github.com/pipesnap/pipesnap/pipemodel"
)

// Client is a session with a resident serve.
type Client struct {
	c   *net.UnixConn
	buf []byte
}

// handshakeTimeout bounds the wait for the server's yes or no: it comes
// before any work, so only a server that hangs takes that long.
const handshakeTimeout = 2 * time.Second

// Dial connects to the server at path and waits for it to take the
// client. Any error means: take the direct path (a missing or stale
// socket, a server the client must not trust, a server that declined).
func Dial(path string) (*Client, error) {
	// A missing socket costs one failed stat, a stale one a refused
	// connect: neither waits.
	if _, err := os.Lstat(path); err != nil {
		return nil, err
	}
	conn, err := net.DialTimeout("unix", path, handshakeTimeout)
	if err != nil {
		return nil, err
	}
	c := conn.(*net.UnixConn)
	if err := checkServer(c, path); err != nil {
		c.Close()
		return nil, fmt.Errorf("%w: %w", ErrDeclined, err)
	}
	c.SetReadDeadline(time.Now().Add(handshakeTimeout))
	typ, payload, err := readFrame(c, nil, maxReq)
	if err != nil {
		c.Close()
		return nil, fmt.Errorf("%w: reading its answer: %w", ErrDeclined, err)
	}
	c.SetReadDeadline(time.Time{})
	switch typ {
	case frameAccept:
		var a accept
		if len(payload) == 0 || json.Unmarshal(payload, &a) != nil || a.Protocol != Protocol {
			// A serve of another pipesnap version: the direct path.
			c.Close()
			return nil, fmt.Errorf("%w: it speaks protocol %d, this pipesnap %d", ErrDeclined, a.Protocol, Protocol)
		}
		return &Client{c: c}, nil
	case frameError:
		c.Close()
		return nil, fmt.Errorf("%w: %w", ErrDeclined, decodeError(payload))
	}
	c.Close()
	return nil, fmt.Errorf("%w: frame %q where a yes or no was due", ErrDeclined, typ)
}

// Close ends the session.
func (c *Client) Close() error { return c.c.Close() }

// send writes a request, with ctx able to end the exchange that follows.
func (c *Client) send(ctx context.Context, req Request) (stop func() bool, err error) {
	req.Protocol = Protocol
	b, err := json.Marshal(req)
	if err != nil {
		return nil, err
	}
	// A cancelled ctx wakes a blocked read or write.
	stop = context.AfterFunc(ctx, func() { c.c.SetDeadline(time.Unix(1, 0)) })
	if err := writeFrame(c.c, frameRequest, b); err != nil {
		stop()
		return nil, c.ioError(ctx, err)
	}
	return stop, nil
}

func (c *Client) ioError(ctx context.Context, err error) error {
	if ctx.Err() != nil {
		return ctx.Err()
	}
	return fmt.Errorf("talking to the resident serve: %w", err)
}

// Dump has the server dump and writes the stream to w as it comes: the
// bytes the direct path would write. On an error, part of the stream may
// have been written.
func (c *Client) Dump(ctx context.Context, w io.Writer, req Request) (*DumpResult, error) {
	req.Op = OpDump
	stop, err := c.send(ctx, req)
	if err != nil {
		return nil, err
	}
	defer stop()
	for {
		typ, payload, err := readFrame(c.c, c.buf, maxFrame)
		if err != nil {
			return nil, c.ioError(ctx, err)
		}
		c.buf = payload[:0]
		switch typ {
		case frameData:
			if _, err := w.Write(payload); err != nil {
				return nil, err
			}
		case frameResult:
			return decodeResult(payload)
		case frameError:
			return nil, decodeError(payload)
		default:
			return nil, fmt.Errorf("frame %q in a dump", typ)
		}
	}
}

// DumpTo has the server dump straight into f (its fd goes with the
// request): the bytes the direct path would write, written by the serve.
// A failure says, as a *Error's Wrote, whether anything was written.
func (c *Client) DumpTo(ctx context.Context, f *os.File, req Request) (*DumpResult, error) {
	req.Op, req.Output, req.Protocol = OpDump, true, Protocol
	b, err := json.Marshal(req)
	if err != nil {
		return nil, err
	}
	stop := context.AfterFunc(ctx, func() { c.c.SetDeadline(time.Unix(1, 0)) })
	defer stop()
	if err := writeFrameFD(c.c, frameRequest, b, f); err != nil {
		return nil, c.ioError(ctx, err)
	}
	typ, payload, err := readFrame(c.c, c.buf, maxReq)
	if err != nil {
		return nil, c.ioError(ctx, err)
	}
	c.buf = payload[:0]
	switch typ {
	case frameResult:
		return decodeResult(payload)
	case frameError:
		return nil, decodeError(payload)
	}
	return nil, fmt.Errorf("frame %q where a dump's report was due", typ)
}

func decodeResult(payload []byte) (*DumpResult, error) {
	var res DumpResult
	if err := json.Unmarshal(payload, &res); err != nil {
		return nil, fmt.Errorf("reading the dump's report: %w", err)
	}
	if res.Report == nil {
		return nil, errors.New("the resident serve sent no report")
	}
	return &res, nil
}

// Sample has the server walk the pipes once.
func (c *Client) Sample(ctx context.Context, req Request) (*pipemodel.Sample, error) {
	var smp *pipemodel.Sample
	err := c.SampleEach(ctx, req, func(s *pipemodel.Sample) error {
		smp = s
		return nil
	}, func(p *pipemodel.Pipe) error {
		smp.Pipes = append(smp.Pipes, p)
		return nil
	})
	return smp, err
}

// SampleEach has the server walk the pipes once and gives the sample as
// it comes: head gets it without its pipes, then pipe each of them in
// order (by inode). An error of either ends the exchange; the session
// then cannot be used again.
func (c *Client) SampleEach(ctx context.Context, req Request, head func(*pipemodel.Sample) error, pipe func(*pipemodel.Pipe) error) error {
	req.Op = OpSample
	stop, err := c.send(ctx, req)
	if err != nil {
		return err
	}
	defer stop()
	d := newDecoder()
	var batch []*pipemodel.Pipe
	for seen := false; ; seen = true {
		typ, payload, err := readFrame(c.c, c.buf, maxFrame)
		if err != nil {
			return c.ioError(ctx, err)
		}
		c.buf = payload[:0]
		switch {
		case typ == frameError:
			return decodeError(payload)
		case typ == frameSample && !seen:
			smp, err := d.head(payload)
			if err != nil {
				return fmt.Errorf("reading the sample: %w", err)
			}
			if err := head(smp); err != nil {
				return err
			}
		case typ == framePipes && seen:
			if batch, err = d.pipes(payload, batch[:0]); err != nil {
				return fmt.Errorf("reading the sample: %w", err)
			}
			for _, p := range batch {
				if err := pipe(p); err != nil {
					return err
				}
			}
			clear(batch)
		case typ == frameEnd && seen:
			return nil
		default:
			return fmt.Errorf("frame %q where a sample was due", typ)
		}
	}
}

func decodeError(payload []byte) error {
	var e Error
	if err := json.Unmarshal(payload, &e); err != nil {
		return fmt.Errorf("an error the resident serve sent, unreadable: %w", err)
	}
	return &e
}
