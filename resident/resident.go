// Package resident lets a CLI call on the same machine use the BPF
// programs a running `pipesnap serve` has loaded, instead of loading its
// own (most of a one-shot dump's or ls's cost): a unix socket, a small
// framed protocol, and who may use it.
//
// Only a peer that could take the direct path is answered: in the
// server's user, pid and mount namespaces, with CAP_SYS_ADMIN, or CAP_BPF
// and CAP_PERFMON, in its effective set (peer.go). The client checks the
// server likewise: a socket and a server process of root or of its own
// user. The socket's directory is the server's, mode 0700, the socket
// 0600. Anything else, and any failure before the server said yes, and
// the CLI takes the direct path: the server is a shortcut, never a way in.
//
// A connection is a session: the server's first frame says yes or why
// not, then the client sends requests and reads each answer in turn.
// Every frame is a type byte, a big-endian uint32 length and the payload:
//
//	server: 'A' yes (JSON {"protocol": Protocol}) | 'E' error (JSON Error)
//	client: 'Q' request (JSON Request, its Protocol set)
//	server, for a dump: 'D' stream bytes ... then 'R' (JSON DumpResult) or 'E';
//	  with the output's fd (Request.Output), only 'R' or 'E'
//	server, for a sample: 'S' (the sample but its pipes, wire.go), 'P' (a
//	  batch of its pipes) ..., then 'Z' (empty); or 'E'
//
// Both ends must speak the same Protocol: a client meeting a serve of
// another version takes the direct path; a serve refuses the requests of
// a client of another version (one that sends none is older).
//
// The dump's bytes are the stream the direct path writes, byte for byte:
// into the client's output itself, whose fd the client opened (package
// output's rules stay the client's) and sends with the request
// (fdpass.go), or, for a writer that is no file, in data frames the
// client writes out.
package resident

import (
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"strconv"

	"github.com/pipesnap/pipesnap/loader"
)

// DefaultSocket is where serve listens and the CLI looks by default.
const DefaultSocket = "/run/pipesnap/pipesnap.sock"

// EnvSocket names the socket for both (Off: none, the direct path).
const EnvSocket = "PIPESNAP_SOCKET"

// Off as the socket path: no socket.
const Off = "off"

// SocketPath is the socket the environment names: EnvSocket, else
// DefaultSocket; "" when it says Off or is set empty.
func SocketPath() string {
	v, ok := os.LookupEnv(EnvSocket)
	switch {
	case !ok:
		return DefaultSocket
	case v == Off:
		return ""
	}
	return v
}

// Protocol is the version of the frames and of the sample's encoding:
// 2 since the sample left encoding/gob.
const Protocol = 2

// accept is the server's yes.
type accept struct {
	Protocol int `json:"protocol"`
}

// acceptPayload is accept{Protocol} as JSON, written out: a json.Marshal
// in a package init costs every pipesnap run.
var acceptPayload = []byte(`{"protocol":` + strconv.Itoa(Protocol) + `}`)

// Request is what a client asks for.
type Request struct {
	Protocol int    `json:"protocol"`
	Op       string `json:"op"` // OpDump or OpSample
	PIDs     []int  `json:"pids,omitempty"`
	All      bool   `json:"all,omitempty"`
	// A dump's: the pipe left out (the client's output), --freeze.
	ExcludeIno uint64 `json:"exclude_ino,omitempty"`
	Freeze     bool   `json:"freeze,omitempty"`
	// Output: the dump's output fd comes with the request (fdpass.go)
	// and the serve writes the stream into it; else in data frames.
	Output bool `json:"output,omitempty"`
	// ProcRoot is the client's --host-proc, for the containers of the
	// processes the dump records.
	ProcRoot string `json:"proc_root,omitempty"`
}

// Ops.
const (
	OpDump   = "dump"
	OpSample = "sample"
)

// DumpResult ends a dump's stream: the report, and notes the server met
// on the way that the direct path prints before it (who waits on what
// not recorded).
type DumpResult struct {
	Report   *loader.Report `json:"report"`
	Warnings []string       `json:"warnings,omitempty"`
}

// Error is a refusal or failure the server sends.
type Error struct {
	Code string `json:"code"` // one of the Code... values
	Msg  string `json:"msg"`
	// Wrote is what a dump into the client's output had written before
	// it failed: nothing, and the client may still take the direct path.
	Wrote int64 `json:"wrote,omitempty"`
}

// Error codes. CodeRefused and CodeNamespace come only as the first
// frame: the client then takes the direct path.
const (
	CodeRefused   = "refused"   // the peer lacks what the direct path needs
	CodeNamespace = "namespace" // another user, pid or mount namespace
	CodeNoProcess = "noprocess" // a requested pid names no process
	CodeFailed    = "failed"    // the walk or dump failed
	CodeUsage     = "usage"     // a request the server does not take
)

func (e *Error) Error() string { return e.Msg }

// Is makes a CodeNoProcess error a loader.ErrNoProcess, as the direct
// path's is.
func (e *Error) Is(target error) bool {
	return e.Code == CodeNoProcess && target == loader.ErrNoProcess
}

// ErrDeclined wraps why a server did not take a client (Dial's errors
// all mean: take the direct path).
var ErrDeclined = errors.New("resident serve declined")

// Frame types.
const (
	frameAccept  = 'A'
	frameError   = 'E'
	frameRequest = 'Q'
	frameData    = 'D'
	frameResult  = 'R'
	frameSample  = 'S'
	framePipes   = 'P'
	frameEnd     = 'Z'
)

// maxFrame bounds what a reader accepts in one frame (a sample of 100,000
// pipes fits; data frames are dataChunk).
const (
	maxFrame  = 1 << 30
	maxReq    = 1 << 20
	dataChunk = 256 << 10
)

func writeFrame(w io.Writer, typ byte, payload []byte) error {
	hdr := make([]byte, 5)
	hdr[0] = typ
	binary.BigEndian.PutUint32(hdr[1:], uint32(len(payload)))
	// One writev a frame on a socket.
	bufs := net.Buffers{hdr, payload}
	_, err := bufs.WriteTo(w)
	return err
}

// readFrame reads one frame of at most limit bytes into buf (grown as
// needed) and returns its type and payload.
func readFrame(r io.Reader, buf []byte, limit int) (byte, []byte, error) {
	var hdr [5]byte
	if _, err := io.ReadFull(r, hdr[:]); err != nil {
		return 0, nil, err
	}
	n := int(binary.BigEndian.Uint32(hdr[1:]))
	if n > limit {
		return 0, nil, fmt.Errorf("frame of %d bytes, more than %d", n, limit)
	}
	if cap(buf) < n {
		buf = make([]byte, n)
	}
	buf = buf[:n]
	if _, err := io.ReadFull(r, buf); err != nil {
		return 0, nil, err
	}
	return hdr[0], buf, nil
}

// dataWriter cuts what it is given into data frames.
type dataWriter struct {
	w   io.Writer
	buf []byte
}

func (d *dataWriter) Write(p []byte) (int, error) {
	n := len(p)
	for len(d.buf) == 0 && len(p) >= dataChunk {
		// Large writes go out as they are, without a copy.
		if err := writeFrame(d.w, frameData, p[:dataChunk]); err != nil {
			return n - len(p), err
		}
		p = p[dataChunk:]
	}
	for len(p) > 0 {
		room := dataChunk - len(d.buf)
		k := min(room, len(p))
		d.buf = append(d.buf, p[:k]...)
		p = p[k:]
		if len(d.buf) == dataChunk {
			if err := d.Flush(); err != nil {
				return n - len(p), err
			}
		}
	}
	return n, nil
}

func (d *dataWriter) Flush() error {
	if len(d.buf) == 0 {
		return nil
	}
	err := writeFrame(d.w, frameData, d.buf)
	d.buf = d.buf[:0]
	return err
}
