package format

import (
	"io"

	"golang.org/x/sys/unix"
)

// Chunk sizes of the decoder's reader: it starts small, so that a short
// stream costs little, and doubles each time the input fills a chunk.
const (
	minChunk = 32 << 10
	maxChunk = MaxBuffer
)

// reader buffers the decoder's input in chunks and hands BUFFER payloads
// out as slices of the chunk they were read into, not as copies. A chunk
// whose bytes were handed out is never written again: the next read goes
// into a new chunk, to which only the bytes not yet consumed move (less
// than one record).
type reader struct {
	src  io.Reader
	buf  []byte
	r, w int   // buf[r:w] is read and not yet consumed
	lent bool  // buf[:r] may be referenced by slices handed out
	err  error // what src returned last; reported once buf[r:w] is short
}

// fill reads until n bytes (at most maxChunk) are buffered, or fails
// with what the input returned, leaving what it had buffered.
func (rd *reader) fill(n int) error {
	empty := 0
	for rd.w-rd.r < n {
		if rd.err != nil {
			return rd.err
		}
		if rd.w == len(rd.buf) {
			rd.makeRoom()
		}
		m, err := rd.src.Read(rd.buf[rd.w:])
		if m < 0 || m > len(rd.buf)-rd.w {
			rd.err = io.ErrShortBuffer // a broken io.Reader
			continue
		}
		rd.w += m
		rd.err = err
		if empty++; m > 0 {
			empty = 0
		} else if empty >= 100 {
			rd.err = io.ErrNoProgress
		}
	}
	return nil
}

// makeRoom makes room after the unconsumed bytes of a full chunk: it
// moves them to the front of this chunk or, if its bytes were handed out
// or they fill it, of a new one, twice as large when the input filled
// this one (up to maxChunk). Growing only behind bytes that arrived
// keeps a length field the input does not back from costing more than
// the input itself.
func (rd *reader) makeRoom() {
	size := len(rd.buf)
	switch {
	case size == 0:
		size = minChunk
	case rd.lent || rd.r == 0:
		size = min(2*size, maxChunk)
	}
	buf := rd.buf
	if rd.lent || size != len(buf) {
		buf = make([]byte, size)
		// Fault the new chunk's pages in with one call (Linux 5.14+;
		// else, or if buf is not page-aligned, this does nothing): the
		// read(2) into it would take a fault per page, and in a VM those
		// cost more than copying the bytes (64 MiB decoded 15% faster).
		unix.Madvise(buf, unix.MADV_POPULATE_WRITE)
		rd.lent = false
	}
	rd.w = copy(buf, rd.buf[rd.r:rd.w])
	rd.buf, rd.r = buf, 0
}

// readFull reads len(p) bytes into p, with io.ReadFull's results: io.EOF
// if the input ended before the first byte, io.ErrUnexpectedEOF if after.
func (rd *reader) readFull(p []byte) (int, error) {
	done := 0
	for done < len(p) {
		err := rd.fill(min(len(p)-done, maxChunk))
		n := copy(p[done:], rd.buf[rd.r:rd.w])
		rd.r += n
		done += n
		if err != nil && done < len(p) {
			return done, eofError(err, done)
		}
	}
	return done, nil
}

// take returns the next n bytes (at most maxChunk), for the caller to
// keep: a slice of the chunk, never written again. On error it returns
// how many bytes the input had.
func (rd *reader) take(n int) ([]byte, int, error) {
	if n == 0 {
		return []byte{}, 0, nil
	}
	if err := rd.fill(n); err != nil {
		return nil, rd.w - rd.r, eofError(err, rd.w-rd.r)
	}
	p := rd.buf[rd.r : rd.r+n : rd.r+n]
	rd.r += n
	rd.lent = true
	return p, n, nil
}

// readByte returns the next byte.
func (rd *reader) readByte() (byte, error) {
	if err := rd.fill(1); err != nil {
		return 0, err
	}
	rd.r++
	return rd.buf[rd.r-1], nil
}

func eofError(err error, got int) error {
	if err == io.EOF && got > 0 {
		return io.ErrUnexpectedEOF
	}
	return err
}
