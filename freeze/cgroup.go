package freeze

import (
	"bufio"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"time"
)

// The cgroup v2 freezer stops every thread wherever it is, even in
// uninterruptible sleep, and leaves no signal behind. It is used where the
// targets already are the only members of one cgroup, or where they can
// be placed in a cgroup of pipesnap's without side effects: when no
// controller is enabled anywhere in the v2 hierarchy (the controllers are
// bound to v1, as here), membership decides nothing but freezing. They are
// moved back when thawed.

// cgroupFreeze is a cgroup frozen for a set of processes.
type cgroupFreeze struct {
	dir     string         // the frozen cgroup
	created bool           // made by pipesnap: remove it after
	origin  map[int]string // pid -> its cgroup before, when moved
	root    string         // the cgroup2 mount
}

// freezeCgroup freezes pids through cgroup v2, or says why it cannot.
func freezeCgroup(pids []int, timeout time.Duration) (_ *cgroupFreeze, err error) {
	root, err := cgroup2Mount()
	if err != nil {
		return nil, err
	}
	cf := &cgroupFreeze{root: root, origin: map[int]string{}}
	defer func() {
		if err != nil {
			cf.thaw()
		}
	}()
	same, ok := sharedCgroup(pids)
	if ok && same != "/" && onlyMembers(filepath.Join(root, same), pids) {
		cf.dir = filepath.Join(root, same)
	} else {
		ctl, err := os.ReadFile(filepath.Join(root, "cgroup.subtree_control"))
		if err != nil || strings.TrimSpace(string(ctl)) != "" {
			return nil, errors.New("controllers are enabled in the cgroup v2 hierarchy: moving processes would change their limits")
		}
		cf.dir = filepath.Join(root, fmt.Sprintf("pipesnap-freeze-%d", os.Getpid()))
		if err := os.Mkdir(cf.dir, 0o755); err != nil {
			return nil, err
		}
		cf.created = true
		for _, pid := range pids {
			from, err := cgroupOf(pid)
			if err != nil {
				return nil, err
			}
			if err := os.WriteFile(filepath.Join(cf.dir, "cgroup.procs"), []byte(strconv.Itoa(pid)), 0); err != nil {
				return nil, fmt.Errorf("moving pid %d: %w", pid, err)
			}
			cf.origin[pid] = from
		}
	}
	if err := os.WriteFile(filepath.Join(cf.dir, "cgroup.freeze"), []byte("1"), 0); err != nil {
		return nil, err
	}
	for deadline := time.Now().Add(timeout); !cgroupFrozen(cf.dir); time.Sleep(200 * time.Microsecond) {
		if time.Now().After(deadline) {
			return nil, fmt.Errorf("cgroup %s: %w after %v", cf.dir, ErrTimeout, timeout)
		}
	}
	return cf, nil
}

// thaw unfreezes, moves moved processes back and removes a cgroup it made.
func (cf *cgroupFreeze) thaw() error {
	if cf == nil || cf.dir == "" {
		return nil
	}
	var errs []error
	if err := os.WriteFile(filepath.Join(cf.dir, "cgroup.freeze"), []byte("0"), 0); err != nil && !errors.Is(err, os.ErrNotExist) {
		errs = append(errs, fmt.Errorf("thawing %s: %w", cf.dir, err))
	}
	for pid, from := range cf.origin {
		err := os.WriteFile(filepath.Join(cf.root, from, "cgroup.procs"), []byte(strconv.Itoa(pid)), 0)
		if err != nil && !errors.Is(err, os.ErrNotExist) && !isGone(pid) {
			errs = append(errs, fmt.Errorf("moving pid %d back to %s: %w", pid, from, err))
		}
	}
	if cf.created {
		// Empty once everyone is back (or gone); rmdir of a cgroup is
		// refused while it has members.
		for i := 0; i < 100; i++ {
			if err := os.Remove(cf.dir); err == nil || errors.Is(err, os.ErrNotExist) {
				break
			}
			time.Sleep(time.Millisecond)
		}
	}
	cf.dir = ""
	return errors.Join(errs...)
}

func isGone(pid int) bool {
	_, err := os.Stat(fmt.Sprintf("/proc/%d", pid))
	return err != nil
}

// cgroup2Mount finds where the cgroup v2 hierarchy is mounted.
func cgroup2Mount() (string, error) {
	f, err := os.Open("/proc/self/mountinfo")
	if err != nil {
		return "", err
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		// "41 31 0:38 / /sys/fs/cgroup/unified rw,relatime - cgroup2 cgroup2 rw"
		pre, post, ok := strings.Cut(sc.Text(), " - ")
		fields := strings.Fields(pre)
		if ok && strings.HasPrefix(post, "cgroup2 ") && len(fields) > 4 && fields[3] == "/" {
			return fields[4], nil
		}
	}
	return "", errors.New("no cgroup v2 hierarchy mounted")
}

// cgroupOf is pid's cgroup v2 path ("0::/path" in /proc/PID/cgroup).
func cgroupOf(pid int) (string, error) {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/cgroup", pid))
	if err != nil {
		return "", err
	}
	for line := range strings.SplitSeq(string(b), "\n") {
		if path, ok := strings.CutPrefix(line, "0::"); ok {
			return path, nil
		}
	}
	return "", fmt.Errorf("pid %d is in no cgroup v2", pid)
}

// sharedCgroup is the cgroup all pids are in, if they share one.
func sharedCgroup(pids []int) (string, bool) {
	var same string
	for i, pid := range pids {
		cg, err := cgroupOf(pid)
		if err != nil || (i > 0 && cg != same) {
			return "", false
		}
		same = cg
	}
	return same, len(pids) > 0
}

// onlyMembers tells whether dir holds exactly pids and no child cgroup.
func onlyMembers(dir string, pids []int) bool {
	b, err := os.ReadFile(filepath.Join(dir, "cgroup.procs"))
	if err != nil {
		return false
	}
	var members []int
	for f := range strings.FieldsSeq(string(b)) {
		n, err := strconv.Atoi(f)
		if err != nil {
			return false
		}
		members = append(members, n)
	}
	ents, _ := os.ReadDir(dir)
	for _, e := range ents {
		if e.IsDir() {
			return false // freezing it would freeze its children too
		}
	}
	want := slices.Clone(pids)
	slices.Sort(want)
	slices.Sort(members)
	return slices.Equal(members, want)
}

func cgroupFrozen(dir string) bool {
	b, err := os.ReadFile(filepath.Join(dir, "cgroup.events"))
	return err == nil && strings.Contains(string(b), "frozen 1")
}
