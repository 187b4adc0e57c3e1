package container

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"
)

// ErrNoNSpid is returned for a status file without an NSpid line
// (kernels before 4.1).
var ErrNoNSpid = errors.New("no NSpid line in status")

// NSPid is process pid's pid in its own, innermost, pid namespace: the last
// field of the NSpid line of procRoot/PID/status (procRoot "" is /proc;
// give the host's /proc mount when running in a container). The pid is
// as procRoot's pid namespace names it; a process in that namespace itself
// gets its own pid back.
func NSPid(procRoot string, pid int) (int, error) {
	if procRoot == "" {
		procRoot = "/proc"
	}
	b, err := os.ReadFile(filepath.Join(procRoot, strconv.Itoa(pid), "status"))
	if err != nil {
		return 0, err
	}
	return parseNSpid(string(b))
}

// parseNSpid reads the NSpid line of a status file.
func parseNSpid(status string) (int, error) {
	for line := range strings.SplitSeq(status, "\n") {
		v, ok := strings.CutPrefix(line, "NSpid:")
		if !ok {
			continue
		}
		f := strings.Fields(v)
		if len(f) == 0 {
			return 0, fmt.Errorf("empty NSpid line")
		}
		n, err := strconv.Atoi(f[len(f)-1])
		if err != nil {
			return 0, fmt.Errorf("NSpid line %q: %w", strings.TrimSpace(v), err)
		}
		return n, nil
	}
	return 0, ErrNoNSpid
}
