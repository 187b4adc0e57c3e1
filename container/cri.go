package container

import (
	"bytes"
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/url"
	"strconv"
)

// The CRI's one call this package makes, ListContainers, spoken as gRPC
// is on the wire (HTTP/2 without TLS, one length-prefixed protobuf
// message each way, the status in the trailers) with net/http's own
// HTTP/2 client, and the answer's few fields decoded by hand: the
// generated client (k8s.io/cri-api over google.golang.org/grpc) costs
// every pipesnap run ~1 ms of package inits and 9 MB of binary for it.
// The tests talk to a real grpc server of the CRI API.

// criListContainers is the method's path: package runtime.v1, service
// RuntimeService.
const criListContainers = "/runtime.v1.RuntimeService/ListContainers"

// gRPC status codes this package tells apart.
const (
	grpcOK               = 0
	grpcCanceled         = 1
	grpcDeadlineExceeded = 4
	grpcUnimplemented    = 12
	grpcUnavailable      = 14
)

// criClient is one runtime socket's HTTP/2 connection, kept between
// listings.
func criClient(path string) *http.Client {
	var p http.Protocols
	p.SetUnencryptedHTTP2(true)
	return &http.Client{Transport: &http.Transport{
		Protocols: &p,
		DialContext: func(ctx context.Context, _, _ string) (net.Conn, error) {
			var d net.Dialer
			return d.DialContext(ctx, "unix", path)
		},
		MaxResponseHeaderBytes: 1 << 20,
	}}
}

// criError is a gRPC status other than OK.
type criError struct {
	code int
	msg  string
}

// grpcCodes names the status codes as grpc's codes package does.
var grpcCodes = [...]string{"OK", "Canceled", "Unknown", "InvalidArgument", "DeadlineExceeded",
	"NotFound", "AlreadyExists", "PermissionDenied", "ResourceExhausted", "FailedPrecondition",
	"Aborted", "OutOfRange", "Unimplemented", "Internal", "Unavailable", "DataLoss", "Unauthenticated"}

func (e *criError) Error() string {
	name := "Code(" + strconv.Itoa(e.code) + ")"
	if e.code >= 0 && e.code < len(grpcCodes) {
		name = grpcCodes[e.code]
	}
	if e.msg == "" {
		return name
	}
	return name + ": " + e.msg
}

// criCall makes one unary call with an empty request message and returns
// the answer's message.
func criCall(ctx context.Context, c *http.Client, method string) ([]byte, error) {
	// The request: not compressed, length 0 (every field at its default).
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, "http://localhost"+method, bytes.NewReader(make([]byte, 5)))
	if err != nil {
		return nil, err
	}
	req.Header.Set("Content-Type", "application/grpc")
	req.Header.Set("TE", "trailers")
	resp, err := c.Do(req)
	if err != nil {
		if ctx.Err() != nil {
			return nil, ctx.Err()
		}
		var ue *url.Error
		if errors.As(err, &ue) {
			err = ue.Err
		}
		return nil, &criError{code: grpcUnavailable, msg: err.Error()}
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return nil, &criError{code: grpcUnavailable, msg: "http status " + resp.Status}
	}
	// A status in the headers (trailers-only: no message follows).
	if e := grpcStatus(resp.Header); e != nil {
		return nil, e
	}
	msg, err := readGRPCMessage(resp.Body)
	if err != nil {
		if ctx.Err() != nil {
			return nil, ctx.Err()
		}
		return nil, err
	}
	// The rest of the body, then the trailers.
	if _, err := io.Copy(io.Discard, io.LimitReader(resp.Body, 1<<20)); err != nil {
		return nil, err
	}
	if e := grpcStatus(resp.Trailer); e != nil {
		return nil, e
	}
	if resp.Trailer.Get("Grpc-Status") == "" {
		return nil, errors.New("answer without a grpc status")
	}
	return msg, nil
}

// grpcStatus is the status a header block carries, nil for OK or none.
func grpcStatus(h http.Header) error {
	s := h.Get("Grpc-Status")
	if s == "" {
		return nil
	}
	code, err := strconv.Atoi(s)
	if err != nil {
		return fmt.Errorf("grpc status %q", s)
	}
	if code == grpcOK {
		return nil
	}
	msg, _ := url.PathUnescape(h.Get("Grpc-Message"))
	return &criError{code: code, msg: msg}
}

// readGRPCMessage reads one length-prefixed message of at most maxBody.
func readGRPCMessage(r io.Reader) ([]byte, error) {
	var hdr [5]byte
	if _, err := io.ReadFull(r, hdr[:]); err != nil {
		return nil, fmt.Errorf("reading the answer: %w", err)
	}
	if hdr[0] != 0 {
		return nil, errors.New("a compressed answer (none was asked for)")
	}
	n := binary.BigEndian.Uint32(hdr[1:])
	if n > maxBody {
		return nil, fmt.Errorf("an answer of %d bytes, more than %d", n, maxBody)
	}
	msg := make([]byte, n)
	if _, err := io.ReadFull(r, msg); err != nil {
		return nil, fmt.Errorf("reading the answer: %w", err)
	}
	return msg, nil
}

// criContainer is what this package reads of a runtime.v1.Container.
type criContainer struct {
	id, name string
	labels   map[string]string
}

// Field numbers of runtime.v1 (api.proto).
const (
	fieldListContainers = 1 // ListContainersResponse.containers
	fieldContainerID    = 1 // Container.id
	fieldContainerMeta  = 3 // Container.metadata
	fieldContainerLabel = 8 // Container.labels (map<string, string>)
	fieldMetaName       = 1 // ContainerMetadata.name
	fieldMapKey         = 1
	fieldMapValue       = 2
)

// decodeListContainers decodes a ListContainersResponse.
func decodeListContainers(b []byte) ([]criContainer, error) {
	var out []criContainer
	err := eachField(b, func(num int, v []byte) error {
		if num != fieldListContainers {
			return nil
		}
		c := criContainer{labels: map[string]string{}}
		err := eachField(v, func(num int, v []byte) error {
			switch num {
			case fieldContainerID:
				c.id = string(v)
			case fieldContainerMeta:
				return eachField(v, func(num int, v []byte) error {
					if num == fieldMetaName {
						c.name = string(v)
					}
					return nil
				})
			case fieldContainerLabel:
				var k, val string
				err := eachField(v, func(num int, v []byte) error {
					switch num {
					case fieldMapKey:
						k = string(v)
					case fieldMapValue:
						val = string(v)
					}
					return nil
				})
				c.labels[k] = val
				return err
			}
			return nil
		})
		out = append(out, c)
		return err
	})
	if err != nil {
		return nil, fmt.Errorf("decoding ListContainers' answer: %w", err)
	}
	return out, nil
}

var errProtobuf = errors.New("malformed protobuf")

// eachField calls fn with each length-delimited field of a message (the
// only wire type the fields read here have); fields of other wire types
// are skipped.
func eachField(b []byte, fn func(num int, v []byte) error) error {
	for len(b) > 0 {
		key, n := binary.Uvarint(b)
		if n <= 0 {
			return errProtobuf
		}
		b = b[n:]
		num, typ := int(key>>3), key&7
		switch typ {
		case 0: // varint
			_, n := binary.Uvarint(b)
			if n <= 0 {
				return errProtobuf
			}
			b = b[n:]
		case 1: // 64-bit
			if len(b) < 8 {
				return errProtobuf
			}
			b = b[8:]
		case 5: // 32-bit
			if len(b) < 4 {
				return errProtobuf
			}
			b = b[4:]
		case 2: // length-delimited
			l, n := binary.Uvarint(b)
			if n <= 0 || l > uint64(len(b)-n) {
				return errProtobuf
			}
			v := b[n : n+int(l)]
			b = b[n+int(l):]
			if err := fn(num, v); err != nil {
				return err
			}
		default:
			return errProtobuf
		}
	}
	return nil
}
