package restore

import (
	"bytes"
	"math/bits"
	"os"
	"strconv"

	"golang.org/x/sys/unix"
)

// fdSet is a set of fd numbers, one bit each: a restore holds thousands,
// looked up one by one.
type fdSet struct {
	words []uint64
	n     int
}

func (s *fdSet) add(fd int) {
	if fd < 0 {
		return
	}
	w := fd / 64
	if w >= len(s.words) {
		s.words = append(s.words, make([]uint64, w+1-len(s.words))...)
	}
	if s.words[w]&(1<<(fd%64)) == 0 {
		s.words[w] |= 1 << (fd % 64)
		s.n++
	}
}

func (s *fdSet) has(fd int) bool {
	w := fd / 64
	return fd >= 0 && w < len(s.words) && s.words[w]&(1<<(fd%64)) != 0
}

func (s *fdSet) remove(fd int) bool {
	if !s.has(fd) {
		return false
	}
	s.words[fd/64] &^= 1 << (fd % 64)
	s.n--
	return true
}

func (s *fdSet) len() int { return s.n }

// next returns the lowest fd in s from fd on, or -1.
func (s *fdSet) next(fd int) int {
	for w := fd / 64; w < len(s.words); w++ {
		word := s.words[w]
		if w == fd/64 {
			word &^= 1<<(fd%64) - 1
		}
		if word != 0 {
			return w*64 + bits.TrailingZeros64(word)
		}
	}
	return -1
}

// closeRuns closes every fd of s for which keep is false, removing it
// from s: one close_range(2) per run of consecutive fds, all of them s's,
// so nothing else is closed.
func (s *fdSet) closeRuns(keep func(fd int) bool) {
	for lo := s.next(0); lo >= 0; {
		if keep(lo) {
			lo = s.next(lo + 1)
			continue
		}
		hi := lo
		for s.has(hi+1) && !keep(hi+1) {
			hi++
		}
		closeRange(lo, hi)
		for fd := lo; fd <= hi; fd++ {
			s.remove(fd)
		}
		lo = s.next(hi + 1)
	}
}

// closeRange closes fds lo to hi, every one of them open.
func closeRange(lo, hi int) {
	if lo < hi && unix.CloseRange(uint(lo), uint(hi), 0) == nil {
		return
	}
	for fd := lo; fd <= hi; fd++ { // a single fd, or close_range is missing (Linux < 5.9)
		unix.Close(fd)
	}
}

// reserveFDs grows this process's fd table, in one step, so that n more
// fds fit in it. The kernel grows it by doubling, and in a process of
// several threads (any Go program) every growth waits for an RCU grace
// period (expand_fdtable), milliseconds each: a restore of 2,000 fds
// otherwise waits for five of them. Best effort: nothing is raised, and
// on any error the table grows as fds come.
func reserveFDs(n int) {
	if n < 32 {
		return
	}
	fd, err := unix.Open("/", unix.O_PATH|unix.O_CLOEXEC, 0)
	if err != nil {
		return
	}
	defer unix.Close(fd)
	top := fd + n
	var lim unix.Rlimit
	if err := unix.Getrlimit(unix.RLIMIT_NOFILE, &lim); err == nil && uint64(top) >= lim.Cur {
		top = int(min(lim.Cur, maxFD)) - 1
	}
	if top <= fd {
		return
	}
	if d, err := unix.FcntlInt(uintptr(fd), unix.F_DUPFD_CLOEXEC, top); err == nil {
		unix.Close(d)
	}
}

// probeMax bounds the fd numbers inheritable tries one by one; beyond
// it, it lists /proc/self/fd.
const probeMax = 4096

// inheritable lists this process's fds that are not close-on-exec,
// leaving out those of skip (all close-on-exec).
func inheritable(skip *fdSet) []int {
	// Every open fd is below the size of the fd table: trying each number
	// is cheaper than listing /proc/self/fd, which builds a dentry per fd.
	if size := fdTableSize(); size > 0 && size-skip.len() <= probeMax {
		return probeFDs(size, skip)
	}
	return listFDs(skip)
}

// probeFDs is inheritable for the fds below size.
func probeFDs(size int, skip *fdSet) []int {
	var fds []int
	for fd := range size {
		if !skip.has(fd) && inheritableFD(fd) {
			fds = append(fds, fd)
		}
	}
	return fds
}

// listFDs is inheritable for the fds /proc/self/fd lists.
func listFDs(skip *fdSet) []int {
	f, err := os.Open("/proc/self/fd")
	if err != nil {
		return nil
	}
	defer f.Close()
	names, _ := f.Readdirnames(-1)
	var fds []int
	for _, name := range names {
		if fd, err := strconv.Atoi(name); err == nil && !skip.has(fd) && inheritableFD(fd) {
			fds = append(fds, fd)
		}
	}
	return fds
}

// inheritableFD tells whether fd is open without close-on-exec.
func inheritableFD(fd int) bool {
	fl, err := unix.FcntlInt(uintptr(fd), unix.F_GETFD, 0)
	return err == nil && fl&unix.FD_CLOEXEC == 0
}

// fdTableSize returns the size of this process's fd table (FDSize in
// /proc/self/status), or 0.
func fdTableSize() int {
	b, err := os.ReadFile("/proc/self/status")
	if err != nil {
		return 0
	}
	_, rest, ok := bytes.Cut(b, []byte("\nFDSize:"))
	if !ok {
		return 0
	}
	line, _, _ := bytes.Cut(rest, []byte("\n"))
	n, err := strconv.Atoi(string(bytes.TrimSpace(line)))
	if err != nil || n < 0 {
		return 0
	}
	return n
}
