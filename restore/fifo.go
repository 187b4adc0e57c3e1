package restore

import (
	"errors"
	"fmt"
	"path/filepath"
	"strings"

	"golang.org/x/sys/unix"
)

// resolve confines every lookup under the directory it starts from and
// refuses symbolic links: a captured path is the kernel's canonical path,
// so recreating it never needs one, and one may point out of the root.
const resolve = unix.RESOLVE_BENEATH | unix.RESOLVE_NO_SYMLINKS | unix.RESOLVE_NO_MAGICLINKS

// splitPath returns the components of a captured FIFO path, refusing
// what could leave the root.
func splitPath(path string) ([]string, error) {
	if !strings.HasPrefix(path, "/") {
		return nil, errors.New("not an absolute path: cannot place it under the root directory")
	}
	var comps []string
	for _, c := range strings.Split(path, "/") {
		switch c {
		case "", ".":
			continue
		case "..":
			return nil, fmt.Errorf("its %q component %w", "..", ErrEscape)
		}
		comps = append(comps, c)
	}
	if len(comps) == 0 {
		return nil, errors.New("the path names no file")
	}
	return comps, nil
}

// makeFIFO creates the FIFO at root+path, creating the directories on the
// way (mode 0700), and opens it O_RDWR (which never blocks). Each
// component is resolved under the directory before it, so nothing is
// created outside root. What it creates is removed if Build fails.
func makeFIFO(root, path string, b *builder) (fd int, where string, err error) {
	comps, err := splitPath(path)
	if err != nil {
		return -1, "", err
	}
	where = filepath.Join(root, filepath.Join(comps...))
	dir, err := unix.Open(root, unix.O_PATH|unix.O_DIRECTORY|unix.O_CLOEXEC, 0)
	if err != nil {
		return -1, "", fmt.Errorf("opening the root directory %s: %w", root, err)
	}
	defer func() { unix.Close(dir) }()
	at := root
	for _, c := range comps[:len(comps)-1] {
		at = filepath.Join(at, c)
		err := unix.Mkdirat(dir, c, 0o700)
		created := err == nil
		if err != nil && !errors.Is(err, unix.EEXIST) {
			return -1, "", fmt.Errorf("creating directory %s: %w", at, err)
		}
		if created {
			b.undoAt(dir, c, unix.AT_REMOVEDIR)
		}
		next, err := unix.Openat2(dir, c, &unix.OpenHow{Flags: unix.O_PATH | unix.O_DIRECTORY | unix.O_CLOEXEC, Resolve: resolve})
		if err != nil {
			return -1, "", walkError(at, err)
		}
		unix.Close(dir)
		dir = next
	}
	leaf := comps[len(comps)-1]
	if err := unix.Mknodat(dir, leaf, unix.S_IFIFO|0o600, 0); err != nil {
		if errors.Is(err, unix.EEXIST) {
			return -1, "", fmt.Errorf("%s already exists: remove it or restore under another root: %w", where, err)
		}
		return -1, "", fmt.Errorf("creating fifo %s: %w", where, err)
	}
	b.undoAt(dir, leaf, 0)
	fd, err = unix.Openat2(dir, leaf, &unix.OpenHow{Flags: unix.O_RDWR | unix.O_NONBLOCK | unix.O_CLOEXEC, Resolve: resolve})
	if err != nil {
		return -1, "", walkError(where, err)
	}
	var st unix.Stat_t
	if err := unix.Fstat(fd, &st); err != nil || st.Mode&unix.S_IFMT != unix.S_IFIFO {
		unix.Close(fd)
		return -1, "", fmt.Errorf("%s was replaced by something other than a fifo while being restored", where)
	}
	return fd, where, nil
}

func walkError(at string, err error) error {
	switch {
	case errors.Is(err, unix.ELOOP):
		return fmt.Errorf("%s is a symbolic link, which %w", at, ErrEscape)
	case errors.Is(err, unix.EXDEV):
		return fmt.Errorf("%s %w", at, ErrEscape)
	case errors.Is(err, unix.ENOTDIR):
		return fmt.Errorf("%s is not a directory: %w", at, err)
	case errors.Is(err, unix.ENOSYS):
		return fmt.Errorf("opening %s: openat2 is missing (Linux 5.6 or later is needed to recreate fifos): %w", at, err)
	}
	return fmt.Errorf("opening %s: %w", at, err)
}
