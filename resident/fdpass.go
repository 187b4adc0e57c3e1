package resident

import (
	"encoding/binary"
	"fmt"
	"io"
	"net"
	"os"

	"golang.org/x/sys/unix"
)

// A dump's output can come with its request: the client sends the
// request frame with the output's fd attached (SCM_RIGHTS), and the
// serve writes the stream straight into it. The bytes then cross no
// socket (two copies fewer, and no frames), and what the client opened
// is what is written: the fd carries the access the client had, checked
// by the kernel when it opened the file (package output's rules stay the
// client's), and gives the serve nothing more.

// writeFrameFD writes a frame with f's fd attached.
func writeFrameFD(c *net.UnixConn, typ byte, payload []byte, f *os.File) error {
	b := make([]byte, 5+len(payload))
	b[0] = typ
	binary.BigEndian.PutUint32(b[1:], uint32(len(payload)))
	copy(b[5:], payload)
	n, _, err := c.WriteMsgUnix(b, unix.UnixRights(int(f.Fd())), nil)
	if err != nil {
		return err
	}
	// The fd went with the first byte; the rest as plain bytes.
	_, err = c.Write(b[n:])
	return err
}

// readFrameFD reads one frame of at most limit bytes, and the fd that
// came with it (nil: none). More than one fd, or rights on another
// frame's bytes, is a protocol error: every fd received is closed then.
func readFrameFD(c *net.UnixConn, buf []byte, limit int) (byte, []byte, *os.File, error) {
	var hdr [5]byte
	oob := make([]byte, unix.CmsgSpace(4*4))
	n, oobn, flags, _, err := c.ReadMsgUnix(hdr[:], oob)
	if err != nil {
		return 0, nil, nil, err
	}
	fds, perr := rights(oob[:oobn])
	var f *os.File
	closeAll := func() {
		for _, fd := range fds {
			unix.Close(fd)
		}
	}
	switch {
	case perr != nil:
		closeAll()
		return 0, nil, nil, perr
	case flags&unix.MSG_CTRUNC != 0 || len(fds) > 1:
		closeAll()
		return 0, nil, nil, fmt.Errorf("more than one fd with a request")
	case len(fds) == 1:
		f = os.NewFile(uintptr(fds[0]), "client output")
	}
	fail := func(err error) (byte, []byte, *os.File, error) {
		if f != nil {
			f.Close()
		}
		return 0, nil, nil, err
	}
	if n == 0 {
		return fail(io.EOF)
	}
	if _, err := io.ReadFull(c, hdr[n:]); err != nil {
		return fail(err)
	}
	size := int(binary.BigEndian.Uint32(hdr[1:]))
	if size > limit {
		return fail(fmt.Errorf("frame of %d bytes, more than %d", size, limit))
	}
	if cap(buf) < size {
		buf = make([]byte, size)
	}
	buf = buf[:size]
	if _, err := io.ReadFull(c, buf); err != nil {
		return fail(err)
	}
	return hdr[0], buf, f, nil
}

// rights are the fds of the SCM_RIGHTS messages in oob.
func rights(oob []byte) ([]int, error) {
	if len(oob) == 0 {
		return nil, nil
	}
	msgs, err := unix.ParseSocketControlMessage(oob)
	if err != nil {
		return nil, err
	}
	var fds []int
	for _, m := range msgs {
		r, err := unix.ParseUnixRights(&m)
		if err != nil {
			for _, fd := range fds {
				unix.Close(fd)
			}
			return nil, err
		}
		fds = append(fds, r...)
	}
	return fds, nil
}
