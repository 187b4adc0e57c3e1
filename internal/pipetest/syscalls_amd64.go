package pipetest

import "golang.org/x/sys/unix"

// The system calls a select(2) or poll(2) caller sleeps in: x86_64 has the
// old calls beside the p* ones.
var (
	selectCalls = []int{unix.SYS_SELECT, unix.SYS_PSELECT6}
	pollCalls   = []int{unix.SYS_POLL, unix.SYS_PPOLL}
)
