package pipestate

import (
	"bufio"
	"bytes"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"

	"golang.org/x/sys/unix"
)

// What the kernel's records name by number, turned into names through
// /proc: the path a task asleep in open(2) gave, and the epoll fd behind
// an epoll registration. Both only for the few tasks that need them.

// resolveOpenPath makes the path a task gave to open(2) absolute (it may
// be relative to its working directory or to the directory fd dfd) and
// keeps the result only if it names the inode the kernel reported: the
// task may have changed directory, or the name may have moved since.
// Otherwise it returns the path as given.
func resolveOpenPath(pid uint32, dfd int32, name string, ino uint64) string {
	path := name
	if !filepath.IsAbs(name) {
		base := fmt.Sprintf("/proc/%d/cwd", pid)
		if dfd != unix.AT_FDCWD {
			base = fmt.Sprintf("/proc/%d/fd/%d", pid, dfd)
		}
		dir, err := os.Readlink(base)
		if err != nil {
			return name
		}
		path = filepath.Join(dir, name)
	}
	var st unix.Stat_t
	if unix.Stat(path, &st) != nil || st.Ino != ino {
		return name
	}
	return path
}

// epollFD finds the fd of process pid that is the epoll instance with a
// registration for target fd tfd of pipe inode ino: the fdinfo of an
// epoll fd lists its registrations ("tfd: 5 events: 19 data: ... ino:
// 1a2b sdev: ..."). 0 when none is found.
func epollFD(pid uint32, tfd int32, ino uint64) int32 {
	dir := fmt.Sprintf("/proc/%d/fd", pid)
	ents, err := os.ReadDir(dir)
	if err != nil {
		return 0
	}
	want := []byte(fmt.Sprintf("ino:%x", ino))
	for _, e := range ents {
		link, err := os.Readlink(dir + "/" + e.Name())
		if err != nil || link != "anon_inode:[eventpoll]" {
			continue
		}
		fd, err := strconv.Atoi(e.Name())
		if err != nil {
			continue
		}
		info, err := os.ReadFile(fmt.Sprintf("/proc/%d/fdinfo/%d", pid, fd))
		if err != nil {
			continue
		}
		sc := bufio.NewScanner(bytes.NewReader(info))
		for sc.Scan() {
			f := strings.Fields(sc.Text())
			if len(f) < 2 || f[0] != "tfd:" || f[1] != strconv.Itoa(int(tfd)) {
				continue
			}
			for _, x := range f[2:] {
				if x == string(want) {
					return int32(fd)
				}
			}
		}
	}
	return 0
}
