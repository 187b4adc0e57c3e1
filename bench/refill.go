package bench

import (
	"fmt"
	"os"
	"strconv"
	"strings"

	"golang.org/x/sys/unix"

	"github.com/pipesnap/pipesnap/snapshot"
)

// TaskPipes returns the pipes task pid held in a snapshot, each once, in
// the order its fds first name them, with the number of its pipe fds (a
// process with several sections counts each fd number once) and the
// pipes' bytes in all: what `pipesnap restore --pid` rebuilds.
func TaskPipes(s *snapshot.Snapshot, pid uint32) (pipes []*snapshot.Pipe, fds int, bytes int64) {
	seenFD := map[int32]bool{}
	seenPipe := map[*snapshot.Pipe]bool{}
	for _, t := range s.Tasks {
		if t.PID != pid {
			continue
		}
		for _, fd := range t.FDs {
			if seenFD[fd.FD] {
				continue
			}
			seenFD[fd.FD] = true
			fds++
			if fd.Pipe == nil || seenPipe[fd.Pipe] {
				continue
			}
			seenPipe[fd.Pipe] = true
			pipes = append(pipes, fd.Pipe)
			bytes += int64(fd.Pipe.Bytes)
		}
	}
	return pipes, fds, bytes
}

// PlainPipe is a pipe to make the plain way: its capacity and bytes.
type PlainPipe struct {
	Capacity int // bytes; 0: the default a new pipe has
	Data     []byte
}

// PlainPipes gives the plain way the same pipes: each one's captured
// capacity (as restore computes it when the stream has none: max_usage
// pages) and its bytes in one piece.
func PlainPipes(pipes []*snapshot.Pipe) []PlainPipe {
	out := make([]PlainPipe, len(pipes))
	for i, p := range pipes {
		c := int(p.Capacity)
		if c == 0 {
			c = int(p.MaxUsage) * int(p.PageSize)
		}
		out[i] = PlainPipe{Capacity: c, Data: p.Data()}
	}
	return out
}

// WritePipes makes the pipes the plain way, one after another: pipe2,
// F_SETPIPE_SZ to the pipe's capacity where a new pipe has another one
// (restore's refill likewise only sets a capacity that differs), one
// write(2) of all its bytes, and close of both ends. The pipes are
// non-blocking, so bytes that do not fit are an error, never a hang.
func WritePipes(pipes []PlainPipe) error {
	def := 0 // a new pipe's capacity, read from the first one
	for i, pp := range pipes {
		var p [2]int
		if err := unix.Pipe2(p[:], unix.O_CLOEXEC|unix.O_NONBLOCK); err != nil {
			return fmt.Errorf("pipe %d: %w", i, err)
		}
		err := writePipe(p[1], pp, &def)
		unix.Close(p[0])
		unix.Close(p[1])
		if err != nil {
			return fmt.Errorf("pipe %d: %w", i, err)
		}
	}
	return nil
}

func writePipe(fd int, pp PlainPipe, def *int) error {
	if *def == 0 {
		n, err := unix.FcntlInt(uintptr(fd), unix.F_GETPIPE_SZ, 0)
		if err != nil {
			return fmt.Errorf("F_GETPIPE_SZ: %w", err)
		}
		*def = n
	}
	if pp.Capacity > 0 && pp.Capacity != *def {
		if _, err := unix.FcntlInt(uintptr(fd), unix.F_SETPIPE_SZ, pp.Capacity); err != nil {
			return fmt.Errorf("F_SETPIPE_SZ %d: %w", pp.Capacity, err)
		}
	}
	if len(pp.Data) == 0 {
		return nil
	}
	n, err := unix.Write(fd, pp.Data)
	if err != nil {
		return fmt.Errorf("writing %d bytes: %w", len(pp.Data), err)
	}
	if n != len(pp.Data) {
		return fmt.Errorf("wrote %d of %d bytes in one write", n, len(pp.Data))
	}
	return nil
}

// HeldPipes counts the distinct pipes among this process's fds from 3
// up, and the bytes queued in them (FIONREAD, once per pipe): what a
// command `pipesnap restore` started got.
func HeldPipes() (pipes int, bytes int64, err error) {
	ents, err := os.ReadDir("/proc/self/fd")
	if err != nil {
		return 0, 0, err
	}
	seen := map[string]bool{}
	for _, e := range ents {
		fd, err := strconv.Atoi(e.Name())
		if err != nil || fd < 3 {
			continue
		}
		l, err := os.Readlink("/proc/self/fd/" + e.Name())
		if err != nil || !strings.HasPrefix(l, "pipe:[") || seen[l] {
			continue
		}
		n, err := unix.IoctlGetInt(fd, unix.TIOCINQ) // FIONREAD
		if err != nil {
			return 0, 0, fmt.Errorf("fd %d: FIONREAD: %w", fd, err)
		}
		seen[l] = true
		pipes++
		bytes += int64(n)
	}
	return pipes, bytes, nil
}
