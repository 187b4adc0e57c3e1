package teecap

import (
	"bytes"
	"errors"
	"fmt"
	"os"
	"slices"
	"strconv"
	"strings"

	"golang.org/x/sys/unix"

	"github.com/pipesnap/pipesnap/format"
	"github.com/pipesnap/pipesnap/internal/host"
)

// task is one process as the /proc walk saw it.
type task struct {
	pid     uint32
	startNS uint64 // from /proc/PID/stat: clock-tick precision
	ticks   uint64 // the same in clock ticks, for pid reuse
	uid     uint32
	comm    string
	fds     []fdInfo
	err     error // the fds could not be walked (errUnreadable, errExited)
}

// fdInfo is one fd that refers to a pipe or FIFO.
type fdInfo struct {
	fd      int32
	ino     uint64
	kind    format.Kind
	path    string // FIFO path, as readlink gives it
	flags   uint32 // f_flags: fdinfo's flags without O_CLOEXEC
	cloexec bool
	mntID   uint64
	pos     uint64
}

// mode is the FMODE_READ/FMODE_WRITE pair the access mode gives. O_PATH
// files have neither.
func (f *fdInfo) mode() uint32 {
	if f.flags&unix.O_PATH != 0 {
		return 0
	}
	switch f.flags & unix.O_ACCMODE {
	case unix.O_RDONLY:
		return format.ModeRead
	case unix.O_WRONLY:
		return format.ModeWrite
	case unix.O_RDWR:
		return format.ModeRead | format.ModeWrite
	}
	return 0
}

var (
	errExited     = errors.New("exited")
	errUnreadable = errors.New("open files not readable")
)

// walker reads /proc with reused buffers: one readlinkat per fd, and
// fdinfo only for the fds that are pipes or FIFOs.
type walker struct {
	link []byte
	info []byte
}

func newWalker() *walker {
	return &walker{link: make([]byte, unix.PathMax+32), info: make([]byte, 4096)}
}

// allPIDs lists the processes in /proc, in pid order (the order the
// kernel's task iterator walks them in), without self.
func allPIDs(self uint32) ([]uint32, error) {
	f, err := os.Open("/proc")
	if err != nil {
		return nil, fmt.Errorf("listing processes: %w", err)
	}
	defer f.Close()
	names, err := f.Readdirnames(-1)
	if err != nil {
		return nil, fmt.Errorf("listing processes: %w", err)
	}
	var pids []uint32
	for _, name := range names {
		n, err := strconv.ParseUint(name, 10, 32)
		if err != nil || uint32(n) == self {
			continue
		}
		pids = append(pids, uint32(n))
	}
	slices.Sort(pids)
	return pids, nil
}

// task walks one process's fds. A process that is gone or whose fds
// cannot be read comes back with err set, not as an error: the caller
// notes it and goes on.
func (w *walker) task(pid uint32) *task {
	t := &task{pid: pid}
	dir := "/proc/" + strconv.FormatUint(uint64(pid), 10)
	fdDir, err := unix.Open(dir+"/fd", unix.O_RDONLY|unix.O_DIRECTORY|unix.O_CLOEXEC, 0)
	if err != nil {
		t.err = procErr(err)
		return t
	}
	d := os.NewFile(uintptr(fdDir), dir+"/fd")
	defer d.Close()
	names, err := d.Readdirnames(-1)
	if err != nil {
		t.err = procErr(err)
		return t
	}
	fds := make([]int, 0, len(names))
	for _, name := range names {
		if n, err := strconv.Atoi(name); err == nil {
			fds = append(fds, n)
		}
	}
	slices.Sort(fds)

	infoDir := -1
	defer func() {
		if infoDir >= 0 {
			unix.Close(infoDir)
		}
	}()
	for _, fd := range fds {
		name := strconv.Itoa(fd)
		n, err := readlinkat(fdDir, name, w.link)
		if errors.Is(err, unix.ENOENT) {
			continue // closed since the listing
		}
		if err != nil {
			// pid 1's fds list but do not resolve, even for root.
			t.err = procErr(err)
			return t
		}
		link := w.link[:n]
		fi := fdInfo{fd: int32(fd)}
		switch {
		case bytes.HasPrefix(link, []byte("pipe:[")) && bytes.HasSuffix(link, []byte("]")):
			ino, err := strconv.ParseUint(string(link[6:len(link)-1]), 10, 64)
			if err != nil {
				continue
			}
			fi.ino, fi.kind = ino, format.KindPipe
		case len(link) > 0 && link[0] == '/':
			// A path: a FIFO if the inode it names is one. stat follows
			// the magic link without opening (a FIFO open would block).
			var st unix.Stat_t
			if err := unix.Fstatat(fdDir, name, &st, 0); err != nil || st.Mode&unix.S_IFMT != unix.S_IFIFO {
				continue
			}
			fi.ino, fi.kind, fi.path = st.Ino, format.KindFIFO, string(link)
		default:
			continue // sockets, anon inodes, ...
		}
		if infoDir < 0 {
			if infoDir, err = unix.Open(dir+"/fdinfo", unix.O_RDONLY|unix.O_DIRECTORY|unix.O_CLOEXEC, 0); err != nil {
				t.err = procErr(err)
				return t
			}
		}
		ok, err := w.fdinfo(infoDir, name, &fi)
		if err != nil {
			t.err = procErr(err)
			return t
		}
		if ok {
			t.fds = append(t.fds, fi)
		}
	}
	if len(t.fds) > 0 {
		if err := w.identity(dir, t); err != nil {
			t.err = procErr(err)
		}
	}
	return t
}

// fdinfo reads /proc/PID/fdinfo/N: flags (octal; the kernel adds
// O_CLOEXEC when the fd is close-on-exec, and since Linux 5.6 never keeps
// O_CLOEXEC in f_flags itself), mnt_id, pos and ino. ok is false when the
// fd was closed or now names another inode.
func (w *walker) fdinfo(dir int, name string, fi *fdInfo) (ok bool, err error) {
	fd, err := unix.Openat(dir, name, unix.O_RDONLY|unix.O_CLOEXEC, 0)
	if errors.Is(err, unix.ENOENT) {
		return false, nil
	}
	if err != nil {
		return false, err
	}
	n, err := unix.Read(fd, w.info)
	unix.Close(fd)
	if err != nil {
		return false, err
	}
	var flags uint64
	var haveFlags bool
	for line := range strings.SplitSeq(string(w.info[:max(n, 0)]), "\n") {
		key, val, found := strings.Cut(line, ":")
		if !found {
			continue
		}
		val = strings.TrimSpace(val)
		switch key {
		case "flags":
			flags, err = strconv.ParseUint(val, 8, 32)
			haveFlags = err == nil
		case "mnt_id":
			fi.mntID, _ = strconv.ParseUint(val, 10, 64)
		case "pos":
			fi.pos, _ = strconv.ParseUint(val, 10, 64)
		case "ino":
			if ino, err := strconv.ParseUint(val, 10, 64); err == nil && ino != fi.ino {
				return false, nil // the fd was reused since readlink
			}
		}
	}
	if !haveFlags {
		return false, nil
	}
	fi.cloexec = flags&unix.O_CLOEXEC != 0
	fi.flags = uint32(flags &^ unix.O_CLOEXEC)
	return true, nil
}

// identity reads comm, real uid and start time, as PS_TASK wants them.
func (w *walker) identity(dir string, t *task) error {
	b, err := os.ReadFile(dir + "/stat")
	if err != nil {
		return err
	}
	ticks, err := host.ParseStartTicks(b)
	if err != nil {
		return err
	}
	t.ticks = ticks
	t.startNS = ticks * (1e9 / host.ClockTicks)
	if b, err = os.ReadFile(dir + "/comm"); err != nil {
		return err
	}
	t.comm = strings.TrimSuffix(string(b), "\n")
	if len(t.comm) > 15 {
		t.comm = t.comm[:15]
	}
	if b, err = os.ReadFile(dir + "/status"); err != nil {
		return err
	}
	for line := range strings.SplitSeq(string(b), "\n") {
		if v, ok := strings.CutPrefix(line, "Uid:"); ok {
			if f := strings.Fields(v); len(f) > 0 {
				uid, _ := strconv.ParseUint(f[0], 10, 32)
				t.uid = uint32(uid)
			}
			break
		}
	}
	return nil
}

func procErr(err error) error {
	switch {
	case errors.Is(err, unix.ENOENT), errors.Is(err, unix.ESRCH):
		return errExited
	case errors.Is(err, unix.EACCES), errors.Is(err, unix.EPERM):
		return fmt.Errorf("%w: %w", errUnreadable, err)
	}
	return fmt.Errorf("%w: %w", errUnreadable, err)
}

func readlinkat(dir int, name string, buf []byte) (int, error) {
	for {
		n, err := unix.Readlinkat(dir, name, buf)
		if err == unix.EINTR {
			continue
		}
		return n, err
	}
}
