package restore

import (
	"bytes"
	"fmt"
	"testing"

	"golang.org/x/sys/unix"

	"github.com/pipesnap/pipesnap/internal/pipetest"
	"github.com/pipesnap/pipesnap/snapshot"
)

// BenchmarkRefill: rebuilding 64 pipes of 1 MiB from a snapshot (create,
// F_SETPIPE_SZ, refill one write per captured buffer) against the plain
// way to make the same pipes (pipe2, F_SETPIPE_SZ, one 1 MiB write each).
func BenchmarkRefill(b *testing.B) {
	const pipes, size = 64, 1 << 20
	page := pipetest.Pattern(1, 4096)
	task := pipetest.STask{PID: 4242, Comm: "bench"}
	for i := range pipes {
		p := &pipetest.SPipe{Ino: uint64(1000 + i), Capacity: size}
		for range size / len(page) {
			p.Bufs = append(p.Bufs, page)
		}
		task.FDs = append(task.FDs, pipetest.SFD{FD: int32(10 + i), File: fmt.Sprint("f", i), Pipe: p, Mode: 1})
	}
	snap, err := snapshot.Read(bytes.NewReader(pipetest.Stream(b, task)), snapshot.Options{Data: true})
	if err != nil {
		b.Fatal(err)
	}
	b.Run("restore", func(b *testing.B) {
		b.SetBytes(pipes * size)
		for b.Loop() {
			set, err := Build(snap, Options{PID: 4242})
			if err != nil {
				b.Fatal(err)
			}
			set.Close()
		}
	})
	b.Run("write", func(b *testing.B) {
		b.SetBytes(pipes * size)
		data := bytes.Repeat(page, size/len(page))
		for b.Loop() {
			for range pipes {
				var p [2]int
				if err := unix.Pipe2(p[:], unix.O_CLOEXEC|unix.O_NONBLOCK); err != nil {
					b.Fatal(err)
				}
				if _, err := unix.FcntlInt(uintptr(p[1]), unix.F_SETPIPE_SZ, size); err != nil {
					b.Fatal(err)
				}
				if n, err := unix.Write(p[1], data); err != nil || n != size {
					b.Fatalf("write: %d, %v", n, err)
				}
				unix.Close(p[0])
				unix.Close(p[1])
			}
		}
	})
}
