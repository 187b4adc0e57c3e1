package output

import (
	"errors"
	"fmt"
	"math/rand/v2"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"

	"golang.org/x/sys/unix"
)

// The sentinels an *Error wraps.
var (
	// ErrExists: a regular file is at the path and Options.Replace is not
	// set (or one appeared there while the stream was written).
	ErrExists = errors.New("file exists")
	// ErrSymlink: the path is a symbolic link that does not lead to a
	// FIFO or character device.
	ErrSymlink = errors.New("symbolic link not leading to a FIFO or character device")
	// ErrForeignOwner: the FIFO or character device at the path (or the
	// one a link at the path leads to) belongs to a user who is neither
	// root nor one of Options.Owners.
	ErrForeignOwner = errors.New("owned by another user")
	// ErrKind: the path is a directory, socket, block device or another
	// kind of file that a stream is not written over.
	ErrKind = errors.New("not a regular file, FIFO or character device")
	// ErrNoReader: the path is a FIFO that no one has open for reading.
	ErrNoReader = errors.New("FIFO has no reader")
)

// Kind is the kind of file found at a path.
type Kind uint8

const (
	KindNone        Kind = iota // nothing at the path
	KindFile                    // regular file
	KindFIFO                    // FIFO (or a pipe, through /proc/PID/fd)
	KindCharDevice              // character device
	KindSymlink                 // symbolic link
	KindDirectory               // directory
	KindBlockDevice             // block device
	KindSocket                  // socket
	KindOther                   // anything else
)

func (k Kind) String() string {
	switch k {
	case KindNone:
		return "nothing"
	case KindFile:
		return "regular file"
	case KindFIFO:
		return "FIFO"
	case KindCharDevice:
		return "character device"
	case KindSymlink:
		return "symbolic link"
	case KindDirectory:
		return "directory"
	case KindBlockDevice:
		return "block device"
	case KindSocket:
		return "socket"
	}
	return "file of unknown type"
}

func kindOf(mode uint32) Kind {
	switch mode & unix.S_IFMT {
	case unix.S_IFREG:
		return KindFile
	case unix.S_IFIFO:
		return KindFIFO
	case unix.S_IFCHR:
		return KindCharDevice
	case unix.S_IFLNK:
		return KindSymlink
	case unix.S_IFDIR:
		return KindDirectory
	case unix.S_IFBLK:
		return KindBlockDevice
	case unix.S_IFSOCK:
		return KindSocket
	}
	return KindOther
}

// Error is a refusal of a path, wrapping one of the sentinels.
type Error struct {
	Path string // as given to Open
	// Kind is what was found at Path or, when Path is a symbolic link
	// (Target set), what the link leads to (KindNone: nothing).
	Kind Kind
	// Target is where the symbolic link at Path leads, as the kernel
	// resolved it, or "" when Path is no link. It comes from whoever
	// made the link: quote it before printing.
	Target string
	Owner  int   // the owner's uid, for ErrForeignOwner; else -1
	Err    error // one of the sentinels
}

func (e *Error) Error() string {
	what := e.Path + " is a " + e.Kind.String()
	if e.Target != "" || e.Kind == KindSymlink {
		what = e.Path + " is a symbolic link"
		switch {
		case e.Kind == KindNone:
			what += " leading nowhere"
		case e.Kind != KindSymlink:
			what += " to a " + e.Kind.String()
		}
		if e.Target != "" {
			what += " (" + strconv.Quote(e.Target) + ")"
		}
	}
	switch e.Err {
	case ErrExists:
		return e.Path + " exists"
	case ErrNoReader:
		return "FIFO " + e.Path + " has no reader"
	case ErrForeignOwner:
		return fmt.Sprintf("%s owned by uid %d, not by root or the invoking user", what, e.Owner)
	}
	return what
}

func (e *Error) Unwrap() error { return e.Err }

// Options says what Open may deliver to.
type Options struct {
	// Replace lets an existing regular file at the path be replaced (it
	// never lets a symbolic link be replaced or followed to a file).
	Replace bool
	// AllowForeign lets the stream go to a FIFO or character device
	// whatever its owner.
	AllowForeign bool
	// Owners are the users, besides root, whose FIFOs and character
	// devices may receive the stream. Nil means InvokingUsers(); an empty
	// slice, root only.
	Owners []int
}

// InvokingUsers is who ran the program: the real uid and, when that is
// root and the program was run through sudo, the uid in SUDO_UID. (A
// SUDO_UID set by anyone else is not believed.)
func InvokingUsers() []int {
	uids := []int{os.Getuid()}
	if uids[0] == 0 {
		if u, err := strconv.ParseUint(os.Getenv("SUDO_UID"), 10, 31); err == nil && u != 0 {
			uids = append(uids, int(u))
		}
	}
	return uids
}

// tmpfileOff makes newFile act as on a filesystem without O_TMPFILE
// (tests).
var tmpfileOff bool

// File is a stream being delivered to a path: Write into it, then
// Commit, or Abort. Abort after Commit does nothing, so
// `defer f.Abort()` is the way to leave nothing behind on any error.
type File struct {
	f     *os.File
	kind  Kind // KindFile (a new file), KindFIFO or KindCharDevice
	path  string
	dirfd int    // KindFile: the directory the file goes into
	base  string // KindFile: its name there
	fd    int    // KindFile: f's descriptor (f.Fd would make a FIFO blocking)
	tmp   string // KindFile without O_TMPFILE: the temporary name
	// replace: Options.Replace; existed: a regular file was at the path
	// when it was opened.
	replace, existed bool
	done             bool
}

// Open prepares the delivery of a stream to path: see the package
// documentation for what it accepts and refuses. Refusals are *Error.
func Open(path string, opts Options) (*File, error) {
	if path == "" {
		return nil, errors.New("output: no path")
	}
	if strings.HasSuffix(path, "/") {
		return nil, &Error{Path: path, Kind: KindDirectory, Owner: -1, Err: ErrKind}
	}
	dir, base := filepath.Dir(path), filepath.Base(path)
	dirfd, err := unix.Open(dir, unix.O_PATH|unix.O_DIRECTORY|unix.O_CLOEXEC, 0)
	if err != nil {
		return nil, fmt.Errorf("creating output: %w", &os.PathError{Op: "open", Path: dir, Err: err})
	}
	f, err := open(path, dirfd, base, opts)
	if err != nil || f.kind != KindFile {
		unix.Close(dirfd)
	}
	return f, err
}

func open(path string, dirfd int, base string, opts Options) (*File, error) {
	refuse := func(k Kind, target string, owner int, err error) error {
		return &Error{Path: path, Kind: k, Target: target, Owner: owner, Err: err}
	}
	// What is at the path itself, without following a link.
	pfd, err := unix.Openat(dirfd, base, unix.O_PATH|unix.O_NOFOLLOW|unix.O_CLOEXEC, 0)
	if err == unix.ENOENT {
		return newFile(path, dirfd, base, opts.Replace, false)
	}
	if err != nil {
		return nil, fmt.Errorf("opening output: %w", &os.PathError{Op: "open", Path: path, Err: err})
	}
	defer func() { unix.Close(pfd) }()
	st, err := fstat(pfd, path)
	if err != nil {
		return nil, err
	}
	target := ""
	switch kindOf(st.Mode) {
	case KindFile:
		if !opts.Replace {
			return nil, refuse(KindFile, "", -1, ErrExists)
		}
		return newFile(path, dirfd, base, true, true)
	case KindFIFO, KindCharDevice:
	case KindSymlink:
		// Follow it, to a descriptor of what it leads to: the checks
		// below are made on that, whatever the link says later.
		lfd, err := unix.Openat(dirfd, base, unix.O_PATH|unix.O_CLOEXEC, 0)
		if err != nil {
			t, _ := readlinkat(dirfd, base)
			if err == unix.ENOENT {
				return nil, refuse(KindNone, t, -1, ErrSymlink)
			}
			return nil, fmt.Errorf("opening output: %w", &os.PathError{Op: "open", Path: path, Err: err})
		}
		unix.Close(pfd)
		pfd = lfd
		target, _ = os.Readlink(procFD(pfd))
		if target == "" {
			target = "?"
		}
		if st, err = fstat(pfd, path); err != nil {
			return nil, err
		}
		if k := kindOf(st.Mode); k != KindFIFO && k != KindCharDevice {
			return nil, refuse(k, target, -1, ErrSymlink)
		}
	default:
		return nil, refuse(kindOf(st.Mode), "", -1, ErrKind)
	}
	kind := kindOf(st.Mode)
	owners := opts.Owners
	if owners == nil {
		owners = InvokingUsers()
	}
	if st.Uid != 0 && !slices.Contains(owners, int(st.Uid)) && !opts.AllowForeign {
		return nil, refuse(kind, target, int(st.Uid), ErrForeignOwner)
	}
	// Reopen that inode for writing: through /proc/self/fd, an O_PATH
	// descriptor opens the file it holds, not what the path names now.
	flags := unix.O_WRONLY | unix.O_CLOEXEC | unix.O_NOCTTY
	if kind == KindFIFO {
		// No reader: ENXIO at once, not a wait in open(2) that Ctrl-C
		// cannot end; and the file goes into the runtime poller, so
		// that write deadlines can end a write the reader does not take.
		flags |= unix.O_NONBLOCK
	}
	wfd, err := unix.Open(procFD(pfd), flags, 0)
	if err == unix.ENXIO && kind == KindFIFO {
		return nil, refuse(kind, target, -1, ErrNoReader)
	}
	if err == unix.ENOENT {
		return nil, fmt.Errorf("opening output %s: reopening it through %s: %w (is /proc mounted?)", path, procFD(pfd), err)
	}
	if err != nil {
		return nil, fmt.Errorf("opening output: %w", &os.PathError{Op: "open", Path: path, Err: err})
	}
	wst, err := fstat(wfd, path)
	if err == nil && (wst.Dev != st.Dev || wst.Ino != st.Ino) {
		err = fmt.Errorf("opening output: %s changed while it was opened", path)
	}
	if err != nil {
		unix.Close(wfd)
		return nil, err
	}
	return &File{f: os.NewFile(uintptr(wfd), path), kind: kind, path: path, dirfd: -1, fd: -1}, nil
}

// newFile opens a file with no name in the directory, or where the
// filesystem cannot make one (no O_TMPFILE: FUSE, NFS, old kernels), a
// hidden temporary one, the only case where a SIGKILL leaves a file.
// The File takes dirfd only when it is returned.
func newFile(path string, dirfd int, base string, replace, existed bool) (*File, error) {
	fd, err := -1, error(unix.EOPNOTSUPP)
	if !tmpfileOff {
		fd, err = unix.Openat(dirfd, ".", unix.O_TMPFILE|unix.O_WRONLY|unix.O_CLOEXEC, 0o600)
	}
	tmp := ""
	if err == unix.EOPNOTSUPP || err == unix.EISDIR { // EISDIR: a kernel without O_TMPFILE
		tmp, fd, err = createTemp(dirfd, base)
	}
	if err != nil {
		return nil, fmt.Errorf("creating output: %w", &os.PathError{Op: "open", Path: filepath.Join(filepath.Dir(path), tmp), Err: err})
	}
	// The umask may have taken bits off 0600; it cannot have added any.
	if err := unix.Fchmod(fd, 0o600); err != nil {
		unix.Close(fd)
		if tmp != "" {
			unix.Unlinkat(dirfd, tmp, 0)
		}
		return nil, fmt.Errorf("creating output: %w", err)
	}
	return &File{f: os.NewFile(uintptr(fd), path), kind: KindFile, path: path, dirfd: dirfd, base: base, fd: fd, tmp: tmp, replace: replace, existed: existed}, nil
}

// createTemp creates .BASE.N.tmp in the directory, as os.CreateTemp
// does, but relative to dirfd and without following a link.
func createTemp(dirfd int, base string) (string, int, error) {
	for range 100 {
		name := "." + base + "." + strconv.FormatUint(uint64(rand.Uint32()), 10) + ".tmp"
		fd, err := unix.Openat(dirfd, name, unix.O_WRONLY|unix.O_CREAT|unix.O_EXCL|unix.O_NOFOLLOW|unix.O_CLOEXEC, 0o600)
		if err != unix.EEXIST {
			return name, fd, err
		}
	}
	return "", -1, unix.EEXIST
}

// Write writes into the file, FIFO or device.
func (f *File) Write(p []byte) (int, error) { return f.f.Write(p) }

// File is the open file written into, for fstat, write deadlines (a
// FIFO's) or to tell which pipe it is. It must not be closed.
func (f *File) File() *os.File { return f.f }

// Kind is what the stream goes to: KindFile (a new regular file),
// KindFIFO or KindCharDevice.
func (f *File) Kind() Kind { return f.kind }

// Commit ends the delivery. A FIFO or device is closed. A new file is
// fsynced, then given its name: linked under the path, which fails with
// ErrExists if something has appeared there; with Replace and a file
// there, linked under a temporary name and renamed over it (a
// SIGKILL in that instant, after the file is complete, can leave the
// temporary name: Linux has no linkat that replaces).
func (f *File) Commit() error {
	if f.done {
		return errors.New("output: already committed or aborted")
	}
	if f.kind != KindFile {
		f.done = true
		if err := f.f.Close(); err != nil {
			return fmt.Errorf("writing %s: %w", f.path, err)
		}
		return nil
	}
	if err := f.f.Sync(); err != nil {
		f.Abort()
		return fmt.Errorf("writing %s: %w", f.path, err)
	}
	var err error
	if f.tmp == "" {
		err = f.linkTmpfile()
	} else {
		// Named temporary: as os.Rename, or as os.Link then Remove,
		// which does not replace what appeared meanwhile.
		if err = f.f.Close(); err != nil {
			f.Abort()
			return fmt.Errorf("writing %s: %w", f.path, err)
		}
		f.f = nil
		if f.replace {
			err = unix.Renameat(f.dirfd, f.tmp, f.dirfd, f.base)
		} else if err = unix.Linkat(f.dirfd, f.tmp, f.dirfd, f.base, 0); err == nil {
			err = unix.Unlinkat(f.dirfd, f.tmp, 0)
		}
		if err == nil {
			f.tmp = ""
		}
	}
	if err == unix.EEXIST {
		f.Abort()
		return &Error{Path: f.path, Kind: KindFile, Owner: -1, Err: ErrExists}
	}
	if err != nil {
		f.Abort()
		return fmt.Errorf("moving %s into place: %w", f.path, err)
	}
	f.done = true
	unix.Close(f.dirfd)
	if f.f != nil {
		if err := f.f.Close(); err != nil {
			return fmt.Errorf("writing %s: %w", f.path, err)
		}
	}
	return nil
}

// linkTmpfile gives the O_TMPFILE file its name.
func (f *File) linkTmpfile() error {
	if !f.existed {
		err := f.linkAs(f.base)
		if err != unix.EEXIST || !f.replace {
			return err
		}
	}
	// Replacing: through a temporary name, as linkat never replaces.
	for range 100 {
		tmp := "." + f.base + "." + strconv.FormatUint(uint64(rand.Uint32()), 10) + ".tmp"
		err := f.linkAs(tmp)
		if err == unix.EEXIST {
			continue
		}
		if err != nil {
			return err
		}
		if err = unix.Renameat(f.dirfd, tmp, f.dirfd, f.base); err != nil {
			unix.Unlinkat(f.dirfd, tmp, 0)
		}
		return err
	}
	return unix.EEXIST
}

// linkAs links the O_TMPFILE file under name: through /proc/self/fd (any
// user), else AT_EMPTY_PATH (CAP_DAC_READ_SEARCH) where /proc is absent.
func (f *File) linkAs(name string) error {
	err := unix.Linkat(unix.AT_FDCWD, procFD(f.fd), f.dirfd, name, unix.AT_SYMLINK_FOLLOW)
	if err == unix.ENOENT {
		if _, serr := os.Stat("/proc/self/fd"); serr != nil {
			err = unix.Linkat(f.fd, "", f.dirfd, name, unix.AT_EMPTY_PATH)
		}
	}
	return err
}

// Abort ends the delivery without giving the file a name: a new file is
// closed and removed (one made with O_TMPFILE vanishes with its last
// descriptor); a FIFO or device is closed, after whatever was written.
func (f *File) Abort() error {
	if f.done {
		return nil
	}
	f.done = true
	var err error
	if f.f != nil {
		err = f.f.Close()
	}
	if f.kind == KindFile {
		if f.tmp != "" {
			if uerr := unix.Unlinkat(f.dirfd, f.tmp, 0); uerr != nil && err == nil {
				err = uerr
			}
		}
		unix.Close(f.dirfd)
	}
	return err
}

func procFD(fd int) string { return "/proc/self/fd/" + strconv.Itoa(fd) }

func fstat(fd int, path string) (*unix.Stat_t, error) {
	var st unix.Stat_t
	if err := unix.Fstat(fd, &st); err != nil {
		return nil, fmt.Errorf("opening output: %w", &os.PathError{Op: "fstat", Path: path, Err: err})
	}
	return &st, nil
}

func readlinkat(dirfd int, name string) (string, error) {
	buf := make([]byte, 4096)
	n, err := unix.Readlinkat(dirfd, name, buf)
	if err != nil {
		return "", err
	}
	return string(buf[:n]), nil
}
