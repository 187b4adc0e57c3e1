//go:build !amd64

package pipetest

import "golang.org/x/sys/unix"

// The system calls a select(2) or poll(2) caller sleeps in: arm64 (like
// every architecture newer than x86_64) has only pselect6 and ppoll, which
// libc's select and poll call.
var (
	selectCalls = []int{unix.SYS_PSELECT6}
	pollCalls   = []int{unix.SYS_PPOLL}
)
