// Package host reads what pipesnap needs to know about the machine it runs
// on: which processes a pid names and when they started, whether BPF is
// allowed, and the running kernel's identity for a snapshot's header.
package host

import (
	"bytes"
	"errors"
	"fmt"
	"os"
	"runtime"
	"strconv"
	"strings"
	"time"

	"golang.org/x/sys/unix"

	"github.com/pipesnap/pipesnap/format"
)

// ErrNoProcess is returned for a pid no process has.
var ErrNoProcess = errors.New("no such process")

// Resolve maps pids, or thread ids, to their processes (tgids), once each.
func Resolve(pids []int) ([]uint32, error) {
	var out []uint32
	seen := map[uint32]bool{}
	for _, pid := range pids {
		if pid <= 0 {
			return nil, fmt.Errorf("pid %d: %w", pid, ErrNoProcess)
		}
		b, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", pid))
		if err != nil {
			return nil, fmt.Errorf("pid %d: %w", pid, ErrNoProcess)
		}
		tgid := pid
		for line := range strings.SplitSeq(string(b), "\n") {
			if v, ok := strings.CutPrefix(line, "Tgid:"); ok {
				if n, err := strconv.Atoi(strings.TrimSpace(v)); err == nil {
					tgid = n
				}
			}
		}
		if !seen[uint32(tgid)] {
			seen[uint32(tgid)] = true
			out = append(out, uint32(tgid))
		}
	}
	return out, nil
}

// PIDs converts tgids to ints.
func PIDs(tgids []uint32) []int {
	out := make([]int, len(tgids))
	for i, t := range tgids {
		out[i] = int(t)
	}
	return out
}

// ClockTicks is USER_HZ, the unit of start times in /proc/PID/stat.
const ClockTicks = 100

// StartTicks is when process tgid started, in clock ticks since boot
// (/proc/PID/stat field 22); false if it is gone.
func StartTicks(tgid uint32) (uint64, bool) {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", tgid))
	if err != nil {
		return 0, false
	}
	n, err := ParseStartTicks(b)
	return n, err == nil
}

// ParseStartTicks is field 22 of a /proc/PID/stat, the start time in
// clock ticks, counted after the comm (which may hold spaces and
// parentheses).
func ParseStartTicks(stat []byte) (uint64, error) {
	i := bytes.LastIndexByte(stat, ')')
	if i < 0 {
		return 0, errors.New("stat: no comm")
	}
	// Fields after the comm: state is field 3, starttime field 22.
	f := strings.Fields(string(stat[i+1:]))
	if len(f) < 20 {
		return 0, errors.New("stat: too few fields")
	}
	return strconv.ParseUint(f[19], 10, 64)
}

// IsProcfs tells whether dir is the root of a proc filesystem (a
// host's /proc mounted elsewhere is one; a directory made to look like
// one is not).
func IsProcfs(dir string) bool {
	var st unix.Statfs_t
	return unix.Statfs(dir, &st) == nil && st.Type == unix.PROC_SUPER_MAGIC
}

// StartTimes reads when each process started, to tell pid reuse.
func StartTimes(tgids []uint32) map[uint32]uint64 {
	out := map[uint32]uint64{}
	for _, tgid := range tgids {
		if n, ok := StartTicks(tgid); ok {
			out[tgid] = n
		}
	}
	return out
}

// What keeps pipesnap's BPF programs from loading, for every component
// that loads one (loader, pipestate).
var (
	ErrNoBTF      = errors.New("kernel BTF not found at /sys/kernel/btf/vmlinux")
	ErrPermission = errors.New("pipesnap's BPF programs need root, or CAP_BPF and CAP_PERFMON")
)

// CheckBPF checks, before anything is loaded, the privileges and the
// kernel BTF the BPF programs need.
func CheckBPF() error {
	if !CanLoadBPF() {
		return fmt.Errorf("%w: run it as root (sudo)", ErrPermission)
	}
	if _, err := os.Stat("/sys/kernel/btf/vmlinux"); err != nil {
		return fmt.Errorf("%w (pipesnap needs a kernel built with CONFIG_DEBUG_INFO_BTF)", ErrNoBTF)
	}
	return nil
}

// CanLoadBPF reports whether this process may load pipesnap's programs:
// CAP_SYS_ADMIN, or CAP_BPF and CAP_PERFMON. If it cannot tell, it says
// yes and lets the load say no.
func CanLoadBPF() bool {
	hdr := unix.CapUserHeader{Version: unix.LINUX_CAPABILITY_VERSION_3}
	var data [2]unix.CapUserData
	if err := unix.Capget(&hdr, &data[0]); err != nil {
		return true
	}
	return BPFCaps(uint64(data[1].Effective)<<32 | uint64(data[0].Effective))
}

// BPFCaps tells whether an effective capability set (CapEff of
// /proc/PID/status) is what loading pipesnap's programs needs:
// CAP_SYS_ADMIN, or CAP_BPF and CAP_PERFMON.
func BPFCaps(eff uint64) bool {
	has := func(c int) bool { return eff&(1<<c) != 0 }
	return has(unix.CAP_SYS_ADMIN) || has(unix.CAP_BPF) && has(unix.CAP_PERFMON)
}

// ExplainPermission adds what to do to the errors a missing privilege
// gives when loading programs.
func ExplainPermission(err error) error {
	if errors.Is(err, unix.EPERM) || errors.Is(err, unix.EACCES) {
		return fmt.Errorf("%w (run as root, or with CAP_BPF and CAP_PERFMON)", err)
	}
	return err
}

// KernelHeader is a snapshot header describing the running kernel, taken
// now.
func KernelHeader() (format.Header, error) {
	var u unix.Utsname
	if err := unix.Uname(&u); err != nil {
		return format.Header{}, fmt.Errorf("uname: %w", err)
	}
	h := format.Header{
		Time:    time.Now(),
		Release: unix.ByteSliceToString(u.Release[:]),
		Version: unix.ByteSliceToString(u.Version[:]),
		Machine: unix.ByteSliceToString(u.Machine[:]),
	}
	switch runtime.GOARCH {
	case "amd64":
		h.Arch = format.ArchX86_64
	case "arm64":
		h.Arch = format.ArchARM64
	}
	var nums [3]uint16
	for i, part := range strings.SplitN(h.Release, ".", 3) {
		digits := part // "44-fc-v657" -> "44"
		if j := strings.IndexFunc(part, func(r rune) bool { return r < '0' || r > '9' }); j >= 0 {
			digits = part[:j]
		}
		n, _ := strconv.Atoi(digits)
		nums[i] = uint16(n)
	}
	h.Major, h.Minor, h.Patch = nums[0], nums[1], nums[2]
	return h, nil
}
