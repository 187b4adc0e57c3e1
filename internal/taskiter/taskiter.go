// Package taskiter attaches BPF task iterators scoped to one process.
package taskiter

import (
	"context"
	"errors"
	"fmt"
	"io"
	"runtime"
	"unsafe"

	"github.com/cilium/ebpf"
	"github.com/cilium/ebpf/btf"
	"github.com/cilium/ebpf/link"
	"golang.org/x/sys/unix"
)

// ErrNoScope means the kernel cannot scope a task iterator to one
// process (before Linux 6.1): walk every task and filter in the program.
var ErrNoScope = errors.New("task iterators cannot be scoped to a process")

// Scopable tells, from the kernel's BTF, whether task iterators can be
// scoped to a process: union bpf_iter_link_info has a task member (Linux
// 6.1). AttachProcess finds out by trying; this is for those who must
// know without (tests that tell a fallback from a failure).
func Scopable(kernel *btf.Spec) bool {
	var u *btf.Union
	if kernel.TypeByName("bpf_iter_link_info", &u) != nil {
		return false
	}
	for _, m := range u.Members {
		if m.Name == "task" {
			return true
		}
	}
	return false
}

// AttachProcess attaches prog as a task iterator that visits only the
// tasks of process pid (union bpf_iter_link_info.task.pid, Linux 6.1).
// cilium/ebpf v0.22 has no option for it: this is the raw BPF_LINK_CREATE.
func AttachProcess(prog *ebpf.Program, pid uint32) (*link.Iter, error) {
	const bpfLinkCreate = 28
	// union bpf_iter_link_info: task {tid, pid, pid_fd}, padded to the
	// union's 16 bytes. On the heap, so it stays put during the call.
	info := new([4]uint32)
	info[1] = pid
	attr := struct {
		progFD, targetFD, attachType, flags uint32
		iterInfo                            uint64
		iterInfoLen                         uint32
		_                                   uint32
	}{
		progFD:      uint32(prog.FD()),
		attachType:  uint32(ebpf.AttachTraceIter),
		iterInfo:    uint64(uintptr(unsafe.Pointer(info))),
		iterInfoLen: uint32(unsafe.Sizeof(*info)),
	}
	fd, _, errno := unix.Syscall(unix.SYS_BPF, bpfLinkCreate, uintptr(unsafe.Pointer(&attr)), unsafe.Sizeof(attr))
	runtime.KeepAlive(info)
	switch {
	case errno == unix.EINVAL || errno == unix.E2BIG:
		return nil, fmt.Errorf("%w: %w", ErrNoScope, errno)
	case errno != 0:
		return nil, errno
	}
	l, err := link.NewFromFD(int(fd))
	if err != nil {
		return nil, err
	}
	iter, ok := l.(*link.Iter)
	if !ok {
		l.Close()
		return nil, fmt.Errorf("link of type %T, want an iterator", l)
	}
	return iter, nil
}

// Read runs one walk of an iterator, handing fn each size-byte record of
// its output in order; buf is the read buffer (at least one page). A
// record never spans reads as fn sees it. EAGAIN (the kernel visited many
// objects without output, or the program asked to revisit one) is
// retried; ctx is checked between reads.
func Read(ctx context.Context, l *link.Iter, buf []byte, size int, fn func([]byte) error) error {
	return ReadAgain(ctx, l, buf, size, fn, nil)
}

// ReadAgain is Read with again, called before a read is retried after
// EAGAIN: the program may be waiting for room only the caller can make.
func ReadAgain(ctx context.Context, l *link.Iter, buf []byte, size int, fn func([]byte) error, again func() error) error {
	return ReadRecords(ctx, l, buf, size, func([]byte) int { return size }, fn, again)
}

// ReadRecords is ReadAgain for records of more than one size: each starts
// with a header of hdr bytes, from which size tells the record's whole
// size (a fixed-size record, and the one that follows it when its header
// says so: a program writes both in one visit, and the kernel keeps or
// drops a visit's output whole).
func ReadRecords(ctx context.Context, l *link.Iter, buf []byte, hdr int, size func(hdr []byte) int, fn func([]byte) error, again func() error) error {
	r, err := l.Open()
	if err != nil {
		return fmt.Errorf("opening iterator: %w", err)
	}
	defer r.Close()

	var pending []byte
	for tries := 0; ; {
		if err := ctx.Err(); err != nil {
			return err
		}
		n, err := r.Read(buf)
		if n > 0 {
			tries = 0
			data := buf[:n]
			if len(pending) > 0 {
				data = append(pending, data...)
			}
			for len(data) >= hdr {
				n := size(data[:hdr])
				if len(data) < n {
					break
				}
				if err := fn(data[:n]); err != nil {
					return err
				}
				data = data[n:]
			}
			pending = append(pending[:0], data...)
		}
		switch {
		case err == nil && n > 0:
		case err == nil || errors.Is(err, io.EOF):
			if len(pending) > 0 {
				return fmt.Errorf("iterator output ends inside a record (%d bytes left)", len(pending))
			}
			return nil
		case errors.Is(err, unix.EAGAIN):
			if tries++; tries > 1000 {
				return fmt.Errorf("reading iterator: no progress after %d tries: %w", tries, err)
			}
			if again != nil {
				if err := again(); err != nil {
					return err
				}
			}
		default:
			return fmt.Errorf("reading iterator: %w", err)
		}
	}
}
