package output

import (
	"errors"
	"io"
	"net"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"

	"golang.org/x/sys/unix"
)

// entries lists the names in dir.
func entries(t *testing.T, dir string) []string {
	t.Helper()
	ents, err := os.ReadDir(dir)
	if err != nil {
		t.Fatal(err)
	}
	var names []string
	for _, e := range ents {
		names = append(names, e.Name())
	}
	return names
}

// refused checks that err is an *Error wrapping want, of kind k.
func refused(t *testing.T, what string, err error, want error, k Kind) *Error {
	t.Helper()
	var e *Error
	if !errors.Is(err, want) || !errors.As(err, &e) || e.Kind != k {
		t.Fatalf("%s: %v; want an *Error wrapping %q, kind %v", what, err, want, k)
	}
	return e
}

// bothWays runs test with O_TMPFILE and as on a filesystem without it.
func bothWays(t *testing.T, test func(t *testing.T, tmpfile bool)) {
	for _, tmpfile := range []bool{true, false} {
		name := "O_TMPFILE"
		if !tmpfile {
			name = "named-temporary"
		}
		t.Run(name, func(t *testing.T) {
			tmpfileOff = !tmpfile
			defer func() { tmpfileOff = false }()
			test(t, tmpfile)
		})
	}
}

func TestNewFile(t *testing.T) {
	bothWays(t, func(t *testing.T, tmpfile bool) {
		dir := t.TempDir()
		path := filepath.Join(dir, "s.snap")
		old := syscall.Umask(0o077)
		f, err := Open(path, Options{})
		syscall.Umask(old)
		if err != nil {
			t.Fatal(err)
		}
		defer f.Abort()
		if f.Kind() != KindFile {
			t.Errorf("kind %v, want %v", f.Kind(), KindFile)
		}
		if _, err := io.WriteString(f, "half"); err != nil {
			t.Fatal(err)
		}
		names := entries(t, dir)
		switch {
		case tmpfile && len(names) != 0:
			t.Errorf("names in the directory before Commit: %v; want none", names)
		case !tmpfile && (len(names) != 1 || !strings.HasPrefix(names[0], ".s.snap.") || !strings.HasSuffix(names[0], ".tmp")):
			t.Errorf("names in the directory before Commit: %v; want one .s.snap.*.tmp", names)
		}
		io.WriteString(f, " and whole")
		if err := f.Commit(); err != nil {
			t.Fatal(err)
		}
		if err := f.Abort(); err != nil {
			t.Errorf("Abort after Commit: %v", err)
		}
		if got := entries(t, dir); len(got) != 1 || got[0] != "s.snap" {
			t.Errorf("names after Commit: %v; want s.snap alone", got)
		}
		st, err := os.Stat(path)
		if err != nil {
			t.Fatal(err)
		}
		if st.Mode() != 0o600 {
			t.Errorf("mode %v, want 0600", st.Mode())
		}
		if b, _ := os.ReadFile(path); string(b) != "half and whole" {
			t.Errorf("content %q", b)
		}
	})
}

func TestAbortLeavesNothing(t *testing.T) {
	bothWays(t, func(t *testing.T, tmpfile bool) {
		dir := t.TempDir()
		f, err := Open(filepath.Join(dir, "s.snap"), Options{})
		if err != nil {
			t.Fatal(err)
		}
		io.WriteString(f, "partial")
		if err := f.Abort(); err != nil {
			t.Fatal(err)
		}
		if names := entries(t, dir); len(names) != 0 {
			t.Errorf("after Abort: %v; want nothing", names)
		}
		if err := f.Commit(); err == nil {
			t.Error("Commit after Abort succeeded")
		}
	})
}

func TestExisting(t *testing.T) {
	bothWays(t, func(t *testing.T, tmpfile bool) {
		dir := t.TempDir()
		path := filepath.Join(dir, "s.snap")
		if err := os.WriteFile(path, []byte("old"), 0o644); err != nil {
			t.Fatal(err)
		}
		_, err := Open(path, Options{})
		refused(t, "Open of an existing file", err, ErrExists, KindFile)
		if err.Error() != path+" exists" {
			t.Errorf("message %q", err)
		}

		f, err := Open(path, Options{Replace: true})
		if err != nil {
			t.Fatal(err)
		}
		io.WriteString(f, "new")
		if b, _ := os.ReadFile(path); string(b) != "old" {
			t.Errorf("before Commit, the old file holds %q", b)
		}
		if err := f.Commit(); err != nil {
			t.Fatal(err)
		}
		if b, _ := os.ReadFile(path); string(b) != "new" {
			t.Errorf("after Commit: %q", b)
		}
		if st, _ := os.Stat(path); st.Mode() != 0o600 {
			t.Errorf("replaced file mode %v, want 0600", st.Mode())
		}
		if names := entries(t, dir); len(names) != 1 {
			t.Errorf("names after replacing: %v", names)
		}
	})
}

// TestAppearedMeanwhile: a file made at the path while the stream is
// written is not replaced without Replace.
func TestAppearedMeanwhile(t *testing.T) {
	bothWays(t, func(t *testing.T, tmpfile bool) {
		dir := t.TempDir()
		path := filepath.Join(dir, "s.snap")
		f, err := Open(path, Options{})
		if err != nil {
			t.Fatal(err)
		}
		io.WriteString(f, "mine")
		if err := os.Symlink("/etc/passwd", path); err != nil {
			t.Fatal(err)
		}
		refused(t, "Commit over a link made meanwhile", f.Commit(), ErrExists, KindFile)
		if st, err := os.Lstat(path); err != nil || st.Mode()&os.ModeSymlink == 0 {
			t.Errorf("the link: %v, %v", st, err)
		}
		if names := entries(t, dir); len(names) != 1 {
			t.Errorf("names: %v; want the link alone", names)
		}
	})
}

func TestSymlinks(t *testing.T) {
	dir := t.TempDir()
	file := filepath.Join(dir, "file")
	os.WriteFile(file, []byte("keep"), 0o600)
	for _, tc := range []struct {
		target string
		kind   Kind
	}{
		{file, KindFile},
		{dir, KindDirectory},
		{filepath.Join(dir, "nowhere"), KindNone},
	} {
		link := filepath.Join(dir, "link")
		os.Remove(link)
		if err := os.Symlink(tc.target, link); err != nil {
			t.Fatal(err)
		}
		for _, replace := range []bool{false, true} {
			_, err := Open(link, Options{Replace: replace})
			e := refused(t, "link to "+tc.target, err, ErrSymlink, tc.kind)
			if tc.kind != KindNone && e.Target != tc.target {
				t.Errorf("target %q, want %q", e.Target, tc.target)
			}
			if !strings.HasPrefix(err.Error(), link+" is a symbolic link") {
				t.Errorf("message %q", err)
			}
		}
	}
	if b, _ := os.ReadFile(file); string(b) != "keep" {
		t.Errorf("link target rewritten: %q", b)
	}

	// A link to a character device is followed.
	null := filepath.Join(dir, "null")
	os.Symlink(os.DevNull, null)
	f, err := Open(null, Options{})
	if err != nil {
		t.Fatal(err)
	}
	if f.Kind() != KindCharDevice {
		t.Errorf("link to %s: kind %v", os.DevNull, f.Kind())
	}
	io.WriteString(f, "gone")
	if err := f.Commit(); err != nil {
		t.Fatal(err)
	}
	if st, err := os.Lstat(null); err != nil || st.Mode()&os.ModeSymlink == 0 {
		t.Errorf("link after writing through it: %v, %v", st, err)
	}
}

func TestRefusedKinds(t *testing.T) {
	dir := t.TempDir()
	sock := filepath.Join(dir, "s.sock")
	l, err := net.Listen("unix", sock)
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	for _, tc := range []struct {
		path string
		kind Kind
	}{
		{sock, KindSocket},
		{dir, KindDirectory},
		{dir + "/", KindDirectory},
		{filepath.Join(dir, "new") + "/", KindDirectory},
	} {
		for _, replace := range []bool{false, true} {
			_, err := Open(tc.path, Options{Replace: replace})
			refused(t, tc.path, err, ErrKind, tc.kind)
		}
	}
	if st, err := os.Lstat(sock); err != nil || st.Mode()&os.ModeSocket == 0 {
		t.Errorf("socket after Open: %v, %v", st, err)
	}
	if names := entries(t, dir); len(names) != 1 {
		t.Errorf("names: %v; want the socket alone", names)
	}
	if _, err := Open(filepath.Join(dir, "no", "such"), Options{}); err == nil || !errors.Is(err, os.ErrNotExist) {
		t.Errorf("Open in a missing directory: %v", err)
	}
}

func TestDevNull(t *testing.T) {
	f, err := Open(os.DevNull, Options{Owners: []int{}})
	if err != nil {
		t.Fatal(err)
	}
	if f.Kind() != KindCharDevice {
		t.Errorf("kind %v", f.Kind())
	}
	if _, err := io.WriteString(f, "x"); err != nil {
		t.Fatal(err)
	}
	if err := f.Commit(); err != nil {
		t.Fatal(err)
	}
}

// fifo makes a FIFO owned by someone who is not trusted: nobody if the
// test runs as root (which is always trusted), else the test's user with
// Options.Owners left empty. It returns the options that trust no one.
func fifo(t *testing.T, path string) Options {
	t.Helper()
	if err := unix.Mkfifo(path, 0o600); err != nil {
		t.Fatal(err)
	}
	if os.Geteuid() == 0 {
		if err := os.Chown(path, 65534, 65534); err != nil {
			t.Fatal(err)
		}
	}
	return Options{Owners: []int{}}
}

func owner(t *testing.T, path string) int {
	var st unix.Stat_t
	if err := unix.Stat(path, &st); err != nil {
		t.Fatal(err)
	}
	return int(st.Uid)
}

// readEnd opens the read end of a FIFO without blocking.
func readEnd(t *testing.T, path string) *os.File {
	t.Helper()
	r, err := os.OpenFile(path, os.O_RDONLY|syscall.O_NONBLOCK, 0)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { r.Close() })
	return r
}

// nread is how many bytes wait in the FIFO r.
func nread(t *testing.T, r *os.File) int {
	t.Helper()
	rc, err := r.SyscallConn()
	if err != nil {
		t.Fatal(err)
	}
	var n int
	rc.Control(func(fd uintptr) { n, err = unix.IoctlGetInt(int(fd), unix.TIOCINQ) })
	if err != nil {
		t.Fatal(err)
	}
	return n
}

func TestForeignFIFO(t *testing.T) {
	dir := t.TempDir()
	path := filepath.Join(dir, "x.snap")
	opts := fifo(t, path)
	uid := owner(t, path)
	r := readEnd(t, path)

	_, err := Open(path, opts)
	e := refused(t, "foreign FIFO", err, ErrForeignOwner, KindFIFO)
	if e.Owner != uid || e.Target != "" {
		t.Errorf("owner %d, target %q; want %d, none", e.Owner, e.Target, uid)
	}
	if want := path + " is a FIFO owned by uid "; !strings.HasPrefix(err.Error(), want) {
		t.Errorf("message %q, want it to begin %q", err, want)
	}

	// Through a link, the owner of the FIFO counts.
	link := filepath.Join(dir, "link")
	os.Symlink(path, link)
	_, err = Open(link, Options{Owners: []int{}, Replace: true})
	e = refused(t, "link to a foreign FIFO", err, ErrForeignOwner, KindFIFO)
	if e.Target != path {
		t.Errorf("target %q, want %q", e.Target, path)
	}
	if n := nread(t, r); n != 0 {
		t.Errorf("%d bytes delivered to a refused FIFO", n)
	}

	// Allowed: by AllowForeign, or with the owner trusted.
	for _, o := range []Options{{Owners: []int{}, AllowForeign: true}, {Owners: []int{uid}}} {
		f, err := Open(link, o)
		if err != nil {
			t.Fatalf("%+v: %v", o, err)
		}
		if f.Kind() != KindFIFO {
			t.Errorf("kind %v", f.Kind())
		}
		io.WriteString(f, "abc")
		if err := f.Commit(); err != nil {
			t.Fatal(err)
		}
	}
	if n := nread(t, r); n != 6 {
		t.Errorf("%d bytes delivered, want 6", n)
	}
	if st, err := os.Lstat(path); err != nil || st.Mode()&os.ModeNamedPipe == 0 {
		t.Errorf("FIFO after writing: %v, %v", st, err)
	}
}

func TestForeignCharDevice(t *testing.T) {
	if os.Geteuid() != 0 {
		if os.Getenv("CI") != "" {
			t.Fatal("mknod needs root, and CI is set: this test must run")
		}
		t.Skip("mknod needs root")
	}
	path := filepath.Join(t.TempDir(), "tty")
	if err := unix.Mknod(path, unix.S_IFCHR|0o620, int(unix.Mkdev(1, 3))); err != nil {
		t.Fatal(err)
	}
	os.Chown(path, 65534, 65534)
	_, err := Open(path, Options{})
	refused(t, "nobody's character device", err, ErrForeignOwner, KindCharDevice)
}

func TestFIFONoReader(t *testing.T) {
	path := filepath.Join(t.TempDir(), "x.fifo")
	if err := unix.Mkfifo(path, 0o600); err != nil {
		t.Fatal(err)
	}
	_, err := Open(path, Options{})
	refused(t, "FIFO without a reader", err, ErrNoReader, KindFIFO)
	if err.Error() != "FIFO "+path+" has no reader" {
		t.Errorf("message %q", err)
	}
	r := readEnd(t, path)
	f, err := Open(path, Options{})
	if err != nil {
		t.Fatal(err)
	}
	defer f.Abort()
	io.WriteString(f, "hello")
	if err := f.Commit(); err != nil {
		t.Fatal(err)
	}
	if n := nread(t, r); n != 5 {
		t.Errorf("%d bytes in the FIFO, want 5", n)
	}
}

func TestInvokingUsers(t *testing.T) {
	t.Setenv("SUDO_UID", "1234")
	got := InvokingUsers()
	want := []int{os.Getuid()}
	if os.Getuid() == 0 {
		want = append(want, 1234)
	}
	if len(got) != len(want) || got[0] != want[0] || len(got) > 1 && got[1] != want[1] {
		t.Errorf("InvokingUsers with SUDO_UID=1234: %v, want %v", got, want)
	}
	for _, bad := range []string{"", "x", "-1", "0"} {
		t.Setenv("SUDO_UID", bad)
		if got := InvokingUsers(); len(got) != 1 {
			t.Errorf("SUDO_UID=%q: %v", bad, got)
		}
	}
}

func TestKindString(t *testing.T) {
	for k := KindNone; k <= KindOther; k++ {
		if k.String() == "" {
			t.Errorf("Kind(%d) has no name", k)
		}
	}
}
