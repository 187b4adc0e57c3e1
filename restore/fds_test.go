package restore

import (
	"slices"
	"testing"

	"golang.org/x/sys/unix"
)

func TestFDSet(t *testing.T) {
	var s fdSet
	for _, fd := range []int{0, 5, 63, 64, 65, 200, 5} {
		s.add(fd)
	}
	s.add(-1)
	if s.len() != 6 || !s.has(63) || !s.has(64) || s.has(62) || s.has(-1) || s.has(1<<20) {
		t.Fatalf("set of %d: %v", s.len(), s.words)
	}
	if !s.remove(64) || s.remove(64) || s.len() != 5 {
		t.Fatal("remove")
	}
	var got []int
	for fd := s.next(0); fd >= 0; fd = s.next(fd + 1) {
		got = append(got, fd)
	}
	if !slices.Equal(got, []int{0, 5, 63, 65, 200}) {
		t.Errorf("next: %v", got)
	}
}

// devNull opens /dev/null at fd n, without close-on-exec unless cloexec.
func devNull(t *testing.T, n int, cloexec bool) {
	t.Helper()
	fd, err := unix.Open("/dev/null", unix.O_RDONLY|unix.O_CLOEXEC, 0)
	if err != nil {
		t.Fatal(err)
	}
	flags := 0
	if cloexec {
		flags = unix.O_CLOEXEC
	}
	if err := unix.Dup3(fd, n, flags); err != nil {
		t.Skipf("dup3 to fd %d: %v", n, err)
	}
	unix.Close(fd)
	t.Cleanup(func() { unix.Close(n) })
}

// TestInheritable: both ways to find the fds an exec would pass on, by
// trying every fd number below the table size and by listing
// /proc/self/fd, find the same, above 1024 too; skip leaves fds out.
func TestInheritable(t *testing.T) {
	devNull(t, 900, false)
	devNull(t, 1500, false)
	devNull(t, 1501, true)
	devNull(t, 1502, false)
	size := fdTableSize()
	if size <= 1502 {
		t.Fatalf("fd table size %d with fd 1502 open", size)
	}
	var skip fdSet
	skip.add(1502)
	probed, listed := probeFDs(size, &skip), listFDs(&skip)
	slices.Sort(listed)
	if !slices.Equal(probed, listed) {
		t.Errorf("probed %v, listed %v", probed, listed)
	}
	for _, fd := range []int{900, 1500} {
		if !slices.Contains(probed, fd) {
			t.Errorf("fd %d not found in %v", fd, probed)
		}
	}
	for _, fd := range []int{1501, 1502} {
		if slices.Contains(probed, fd) || slices.Contains(inheritable(&skip), fd) {
			t.Errorf("fd %d found", fd)
		}
	}
	if got := inheritable(&skip); !slices.Equal(got, probed) {
		t.Errorf("inheritable %v, want %v", got, probed)
	}
}

// TestCloseRuns: closing a set in runs closes its fds and no other.
func TestCloseRuns(t *testing.T) {
	var s fdSet
	var others []int
	for fd := 3000; fd < 3012; fd++ {
		devNull(t, fd, true)
		if fd%4 == 3 {
			others = append(others, fd) // not the set's: between its runs
		} else {
			s.add(fd)
		}
	}
	var kept []int
	for fd := s.next(0); fd >= 0; fd = s.next(fd + 1) {
		if len(kept) < 2 {
			kept = append(kept, fd)
		}
	}
	var closed []int
	for fd := s.next(0); fd >= 0; fd = s.next(fd + 1) {
		if !slices.Contains(kept, fd) {
			closed = append(closed, fd)
		}
	}
	s.closeRuns(func(fd int) bool { return slices.Contains(kept, fd) })
	if s.len() != 2 || !s.has(kept[0]) || !s.has(kept[1]) {
		t.Fatalf("%d fds left in the set", s.len())
	}
	for _, fd := range closed {
		if _, err := unix.FcntlInt(uintptr(fd), unix.F_GETFD, 0); err == nil {
			t.Errorf("fd %d still open", fd)
		}
	}
	for _, fd := range append(others, kept...) {
		if _, err := unix.FcntlInt(uintptr(fd), unix.F_GETFD, 0); err != nil {
			t.Errorf("fd %d closed: %v", fd, err)
		}
	}
	s.closeRuns(func(int) bool { return false })
	for _, fd := range kept {
		if _, err := unix.FcntlInt(uintptr(fd), unix.F_GETFD, 0); err == nil {
			t.Errorf("fd %d still open", fd)
		}
	}
	for _, fd := range others {
		if _, err := unix.FcntlInt(uintptr(fd), unix.F_GETFD, 0); err != nil {
			t.Errorf("fd %d closed: %v", fd, err)
		}
	}
}
