package freeze

import (
	"bufio"
	"bytes"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync/atomic"
	"time"

	"golang.org/x/sys/unix"
)

// The cgroup v2 freezer stops every thread wherever it is, even in
// uninterruptible sleep, and leaves no signal behind. It is used where the
// targets already are the only members of one cgroup, or where they can
// be placed in a cgroup of pipesnap's without side effects: when no
// controller is enabled anywhere in the v2 hierarchy (the controllers are
// bound to v1, as here), membership decides nothing but freezing. They are
// moved back when thawed, and so are the children they forked meanwhile
// (born in their parent's cgroup, so frozen too).

// cgroupFreeze is a cgroup frozen for a set of processes.
type cgroupFreeze struct {
	root    string         // the cgroup2 mount
	dir     string         // the frozen cgroup; "" once thawed
	created bool           // made by pipesnap: move everyone back, remove it
	origin  map[int]string // pid -> its cgroup before, when moved
	first   string         // the first origin: for a member of unknown descent
	resumed time.Time      // when thaw had every member running again
}

// PrefixCgroup starts the name of the cgroups pipesnap makes to freeze
// in, "pipesnap-freeze-PID" (PID is pipesnap's).
const PrefixCgroup = "pipesnap-freeze-"

var cgroupSeq atomic.Int64

// freezeCgroup freezes pids through cgroup v2, or says why it cannot.
// Every step is told to the watchdog before it is taken. how is set when
// the cgroup already was frozen (by someone else: left as it is).
func freezeCgroup(pids []int, timeout time.Duration, wd *watchdog, since *time.Time) (_ *cgroupFreeze, how string, err error) {
	root, err := cgroup2Mount()
	if err != nil {
		return nil, "", err
	}
	cf := &cgroupFreeze{root: root, origin: map[int]string{}}
	defer func() {
		if err != nil {
			cf.thaw()
		}
	}()
	same, ok := sharedCgroup(pids)
	if ok && same != "/" && !isPipesnapCgroup(same) && onlyMembers(filepath.Join(root, same), pids) {
		dir := filepath.Join(root, same)
		if b, err := os.ReadFile(filepath.Join(dir, "cgroup.freeze")); err == nil && strings.TrimSpace(string(b)) == "1" {
			return cf, "cgroup v2 freezer (their cgroup was frozen already, and is left so)", nil
		}
		if err := wd.send("cgroup", root, dir, "0"); err != nil {
			return nil, "", err
		}
		cf.dir = dir
	} else {
		ctl, err := os.ReadFile(filepath.Join(root, "cgroup.subtree_control"))
		if err != nil || strings.TrimSpace(string(ctl)) != "" {
			return nil, "", errors.New("controllers are enabled in the cgroup v2 hierarchy: moving processes would change their limits")
		}
		from := make([]string, len(pids))
		for i, pid := range pids {
			if from[i], err = cgroupOf(pid); err != nil {
				return nil, "", err
			}
			if isPipesnapCgroup(from[i]) {
				dir := filepath.Join(root, from[i])
				return nil, "", fmt.Errorf("pid %d is in %s, the freeze cgroup of another pipesnap (%w); if no pipesnap runs, it was left behind: move it back (echo %d > %s) and rmdir %s",
					pid, dir, ErrBusy, pid, filepath.Join(filepath.Dir(dir), "cgroup.procs"), dir)
			}
		}
		name := fmt.Sprintf("%s%d", PrefixCgroup, os.Getpid())
		if n := cgroupSeq.Add(1); n > 1 {
			name = fmt.Sprintf("%s-%d", name, n)
		}
		dir := filepath.Join(root, name)
		if err := wd.send("cgroup", root, dir, "1"); err != nil {
			return nil, "", err
		}
		err = os.Mkdir(dir, 0o755)
		if errors.Is(err, os.ErrExist) && os.Remove(dir) == nil {
			err = os.Mkdir(dir, 0o755) // an empty one of a dead pipesnap with this pid
		}
		if err != nil {
			return nil, "", err
		}
		cf.dir, cf.created = dir, true
		for i, pid := range pids {
			if err := wd.send("origin", strconv.Itoa(pid), from[i]); err != nil {
				return nil, "", err
			}
			cf.addOrigin(pid, from[i])
			if err := os.WriteFile(filepath.Join(cf.dir, "cgroup.procs"), []byte(strconv.Itoa(pid)), 0); err != nil {
				return nil, "", fmt.Errorf("moving pid %d: %w", pid, err)
			}
		}
	}
	if testHookFreezing != nil {
		testHookFreezing()
	}
	*since = time.Now()
	if err := os.WriteFile(filepath.Join(cf.dir, "cgroup.freeze"), []byte("1"), 0); err != nil {
		return nil, "", err
	}
	for deadline := time.Now().Add(timeout); !cgroupFrozen(cf.dir); time.Sleep(200 * time.Microsecond) {
		if time.Now().After(deadline) {
			return nil, "", fmt.Errorf("cgroup %s: %w after %v", cf.dir, ErrTimeout, timeout)
		}
	}
	return cf, "", nil
}

func (cf *cgroupFreeze) addOrigin(pid int, from string) {
	if cf.first == "" {
		cf.first = from
	}
	cf.origin[pid] = from
}

func isPipesnapCgroup(path string) bool {
	return strings.HasPrefix(filepath.Base(path), PrefixCgroup)
}

// thaw lets the processes go. A cgroup of pipesnap's is emptied while
// still frozen, every member moved back to where it came from (a member
// leaves the freeze as it is moved; one still frozen cannot fork, so
// the cgroup empties without a race with children forked meanwhile),
// then thawed and removed. A member pipesnap did not move itself, a
// child forked during the freeze, goes where its closest moved ancestor
// came from. What cannot be moved or removed is named in the error,
// with what to run.
func (cf *cgroupFreeze) thaw() error {
	if cf == nil || cf.dir == "" {
		return nil
	}
	dir := cf.dir
	if !cf.created {
		cf.dir = ""
		defer func() { cf.resumed = time.Now() }()
		if err := os.WriteFile(filepath.Join(dir, "cgroup.freeze"), []byte("0"), 0); err != nil && !errors.Is(err, os.ErrNotExist) {
			return fmt.Errorf("thawing %s: %w (run: echo 0 > %s)", dir, err, filepath.Join(dir, "cgroup.freeze"))
		}
		return nil
	}
	failed := map[int]error{}
	// Running members (a freeze that failed half-way, or the watchdog's
	// rescue) may fork into the cgroup while it is emptied: a child
	// born before its parent was moved is met in a later round.
	for round := 0; round < 1000; round++ {
		members, err := readProcs(dir)
		if err != nil || len(members) == 0 {
			break
		}
		moved := false
		for _, pid := range members {
			if err := cf.moveBack(pid); err != nil {
				failed[pid] = err
			} else {
				delete(failed, pid)
				moved = true
			}
		}
		if !moved {
			break
		}
	}
	var errs []error
	if err := os.WriteFile(filepath.Join(dir, "cgroup.freeze"), []byte("0"), 0); err != nil && !errors.Is(err, os.ErrNotExist) {
		errs = append(errs, fmt.Errorf("thawing %s: %w", dir, err))
	}
	cf.resumed = time.Now()
	// rmdir is refused while a member is still on its way out.
	for deadline := time.Now().Add(200 * time.Millisecond); ; time.Sleep(time.Millisecond) {
		err := os.Remove(dir)
		if err == nil || errors.Is(err, os.ErrNotExist) {
			cf.dir = ""
			return errors.Join(errs...)
		}
		if time.Now().After(deadline) {
			break
		}
		if members, _ := readProcs(dir); len(members) > 0 {
			for _, pid := range members {
				if err := cf.moveBack(pid); err != nil {
					failed[pid] = err
				}
			}
		}
	}
	cf.dir = ""
	members, _ := readProcs(dir)
	var run []string
	for _, pid := range members {
		to := filepath.Join(cf.root, cf.originOf(pid))
		if err := failed[pid]; err != nil {
			errs = append(errs, err)
		}
		run = append(run, fmt.Sprintf("echo %d > %s", pid, filepath.Join(to, "cgroup.procs")))
	}
	run = append(run, "rmdir "+dir)
	holding := "empty"
	if len(members) > 0 {
		holding = fmt.Sprintf("holding pids %v, thawed", members)
	}
	return errors.Join(append(errs, fmt.Errorf("cgroup %s left behind (%s): run %s", dir, holding, strings.Join(run, "; ")))...)
}

// moveBack moves pid to where it came from; if that cgroup is gone, to
// its closest ancestor that is not.
func (cf *cgroupFreeze) moveBack(pid int) error {
	to := cf.originOf(pid)
	for {
		err := os.WriteFile(filepath.Join(cf.root, to, "cgroup.procs"), []byte(strconv.Itoa(pid)), 0)
		switch {
		case err == nil, errors.Is(err, unix.ESRCH), isGone(pid):
			return nil
		case errors.Is(err, os.ErrNotExist) && to != "/" && to != "":
			to = filepath.Dir(to)
			continue
		}
		return fmt.Errorf("moving pid %d back to %s: %w", pid, filepath.Join(cf.root, to), err)
	}
}

// originOf is the cgroup pid came from, or that of its closest ancestor
// that pipesnap moved.
func (cf *cgroupFreeze) originOf(pid int) string {
	for p, i := pid, 0; p > 1 && i < 256; i++ {
		if o, ok := cf.origin[p]; ok {
			return o
		}
		p = ppidOf(p)
	}
	if cf.first == "" {
		return "/"
	}
	return cf.first
}

// ppidOf is pid's parent, 0 if unknown.
func ppidOf(pid int) int {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return 0
	}
	i := bytes.LastIndexByte(b, ')')
	if i < 0 {
		return 0
	}
	f := strings.Fields(string(b[i+1:])) // state, ppid, ...
	if len(f) < 2 {
		return 0
	}
	n, _ := strconv.Atoi(f[1])
	return n
}

// readProcs lists the members of a cgroup.
func readProcs(dir string) ([]int, error) {
	b, err := os.ReadFile(filepath.Join(dir, "cgroup.procs"))
	if err != nil {
		return nil, err
	}
	var out []int
	for f := range strings.FieldsSeq(string(b)) {
		if n, err := strconv.Atoi(f); err == nil {
			out = append(out, n)
		}
	}
	return out, nil
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
