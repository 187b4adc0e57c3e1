package diagnose

import (
	"fmt"
	"os"
	"strconv"
	"strings"
)

// Procfs reads where tasks sleep from /proc: wchan (the kernel function a
// sleeping task waits in) and stack (root only; nil where unreadable).
type Procfs struct{}

// Wchan is /proc/PID/task/TID/wchan; "" for a running task. Where the
// kernel always says 0 (5.10 with the ORC unwinder), the first frame of
// the task's stack says the same.
func (p Procfs) Wchan(pid, tid uint32) string {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/task/%d/wchan", pid, tid))
	if err != nil {
		return ""
	}
	w := strings.TrimSpace(string(b))
	if w == "0" || w == "" {
		if st := p.Stack(pid, tid); len(st) > 0 {
			if fn, _, ok := strings.Cut(st[0], "+"); ok && fn != "" {
				return fn
			}
		}
		return ""
	}
	return w
}

// maxFrames bounds the stack kept per task.
const maxFrames = 16

// Stack is /proc/PID/task/TID/stack, one frame per line, without the
// "[<0>] " addresses (hidden to all but the kernel anyway).
func (Procfs) Stack(pid, tid uint32) []string {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/task/%d/stack", pid, tid))
	if err != nil {
		return nil
	}
	var out []string
	for _, line := range strings.Split(strings.TrimSpace(string(b)), "\n") {
		if _, frame, ok := strings.Cut(line, "] "); ok {
			line = frame
		}
		if line = strings.TrimSpace(line); line != "" && len(out) < maxFrames {
			out = append(out, line)
		}
	}
	return out
}

// Threads lists the thread ids of process pid.
func (Procfs) Threads(pid uint32) []uint32 {
	ents, err := os.ReadDir(fmt.Sprintf("/proc/%d/task", pid))
	if err != nil {
		return nil
	}
	var out []uint32
	for _, e := range ents {
		if n, err := strconv.ParseUint(e.Name(), 10, 32); err == nil {
			out = append(out, uint32(n))
		}
	}
	return out
}
