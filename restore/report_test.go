package restore_test

// The reporter: this test binary, run as the command a restore starts,
// describes the fds it was given and reads every pipe out, into a JSON
// file (its stdout and stderr may be restored pipes themselves).

import (
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"testing"

	"golang.org/x/sys/unix"

	"github.com/pipesnap/pipesnap/internal/pipetest"
	"github.com/pipesnap/pipesnap/restore"
)

const (
	reportEnv = "PIPESNAP_TEST_REPORT"
	readEnv   = "PIPESNAP_TEST_READ" // the fds whose pipes the reporter reads out
)

func TestMain(m *testing.M) {
	if path := os.Getenv(reportEnv); path != "" {
		os.Exit(reporter(path))
	}
	pipetest.Main(m)
}

// fdReport is what the reporter found at one fd.
type fdReport struct {
	FD      int    `json:"fd"`
	Flags   int    `json:"flags"` // F_GETFL
	Cloexec bool   `json:"cloexec"`
	FIFO    bool   `json:"fifo"` // S_IFIFO: a pipe or a FIFO
	Ino     uint64 `json:"ino"`
	Link    string `json:"link"`   // readlink /proc/self/fd/N
	Size    int    `json:"size"`   // F_GETPIPE_SZ
	Queued  int    `json:"queued"` // FIONREAD, before anything is read
	Shares  int    `json:"shares"` // lowest fd on the same open file (kcmp)

	// The pipe's bytes, read out on its lowest fd only, without blocking.
	Read  bool   `json:"read"`
	Data  []byte `json:"data"`
	Reads []int  `json:"reads"` // size of each read(2): packets come one by one
	EOF   bool   `json:"eof"`   // read returned 0: no writer left
}

type report struct {
	FDs []fdReport `json:"fds"`
	Err string     `json:"err"`
}

// byFD returns the non-close-on-exec fds (the Go runtime's own are
// close-on-exec; everything a restore hands over is not).
func (r report) byFD() map[int]fdReport {
	m := map[int]fdReport{}
	for _, f := range r.FDs {
		if !f.Cloexec {
			m[f.FD] = f
		}
	}
	return m
}

func reporter(path string) int {
	var rep report
	err := describe(&rep)
	if err != nil {
		rep.Err = err.Error()
	}
	b, _ := json.Marshal(rep)
	if werr := os.WriteFile(path, b, 0o600); werr != nil || err != nil {
		return 1
	}
	return 0
}

func describe(rep *report) error {
	// Which fds are open, before this process opens any of its own.
	var open []int
	for fd := 0; fd < 1024; fd++ {
		if _, err := unix.FcntlInt(uintptr(fd), unix.F_GETFD, 0); err == nil {
			open = append(open, fd)
		}
	}
	pid := os.Getpid()
	for _, fd := range open {
		r := fdReport{FD: fd, Size: -1, Shares: fd}
		r.Flags, _ = unix.FcntlInt(uintptr(fd), unix.F_GETFL, 0)
		fdfl, _ := unix.FcntlInt(uintptr(fd), unix.F_GETFD, 0)
		r.Cloexec = fdfl&unix.FD_CLOEXEC != 0
		var st unix.Stat_t
		if err := unix.Fstat(fd, &st); err == nil {
			r.Ino, r.FIFO = st.Ino, st.Mode&unix.S_IFMT == unix.S_IFIFO
		}
		r.Link, _ = os.Readlink("/proc/self/fd/" + strconv.Itoa(fd))
		if r.FIFO {
			r.Size, _ = unix.FcntlInt(uintptr(fd), unix.F_GETPIPE_SZ, 0)
			r.Queued, _ = unix.IoctlGetInt(fd, unix.TIOCINQ)
		}
		for _, o := range rep.FDs {
			if same, _, _ := unix.Syscall6(unix.SYS_KCMP, uintptr(pid), uintptr(pid), 0 /* KCMP_FILE */, uintptr(o.FD), uintptr(fd), 0); same == 0 {
				r.Shares = o.FD
				break
			}
		}
		rep.FDs = append(rep.FDs, r)
	}
	// Only the restored pipes are read: inherited ones (the test's own
	// output) are left alone.
	var toRead []int
	for _, s := range strings.Split(os.Getenv(readEnv), ",") {
		if fd, err := strconv.Atoi(s); err == nil {
			toRead = append(toRead, fd)
		}
	}
	done := map[uint64]bool{}
	buf := make([]byte, 1<<20)
	for i := range rep.FDs {
		r := &rep.FDs[i]
		if !r.FIFO || r.Cloexec || done[r.Ino] || !slices.Contains(toRead, r.FD) {
			continue
		}
		done[r.Ino] = true
		rfd := r.FD
		if acc := r.Flags & unix.O_ACCMODE; acc == unix.O_WRONLY || r.Flags&unix.O_PATH != 0 {
			var err error
			rfd, err = unix.Open("/proc/self/fd/"+strconv.Itoa(r.FD), unix.O_RDONLY|unix.O_NONBLOCK|unix.O_CLOEXEC, 0)
			if err != nil {
				return fmt.Errorf("fd %d: reopening to read: %w", r.FD, err)
			}
		} else if err := unix.SetNonblock(rfd, true); err != nil {
			return fmt.Errorf("fd %d: %w", r.FD, err)
		}
		r.Read, r.Data = true, []byte{}
		for {
			n, err := unix.Read(rfd, buf)
			if errors.Is(err, unix.EAGAIN) {
				break
			}
			if err != nil {
				return fmt.Errorf("fd %d: read: %w", r.FD, err)
			}
			if n == 0 {
				r.EOF = true
				break
			}
			r.Data = append(r.Data, buf[:n]...)
			r.Reads = append(r.Reads, n)
		}
	}
	return nil
}

// runReporter starts the reporter with the set and returns what it saw.
func runReporter(t *testing.T, set *restore.Set) report {
	t.Helper()
	path := filepath.Join(t.TempDir(), "report.json")
	var fds []string
	for _, fd := range set.FDs() {
		fds = append(fds, strconv.Itoa(fd.Num))
	}
	env := append(os.Environ(), reportEnv+"="+path, readEnv+"="+strings.Join(fds, ","))
	proc, err := set.Start([]string{os.Args[0]}, env)
	if err != nil {
		t.Fatalf("starting the reporter: %v", err)
	}
	code, err := proc.Wait()
	if err != nil {
		t.Fatal(err)
	}
	var rep report
	b, err := os.ReadFile(path)
	if err == nil {
		err = json.Unmarshal(b, &rep)
	}
	if err != nil || code != 0 {
		t.Fatalf("reporter: exit %d, %v, %s", code, err, rep.Err)
	}
	// FDs() says what F_GETFL gives in the command, every bit of it.
	got := rep.byFD()
	for _, fd := range set.FDs() {
		if r, ok := got[fd.Num]; ok && r.Flags != fd.Flags {
			t.Errorf("fd %d: FDs() has flags %#o, F_GETFL in the command %#o", fd.Num, fd.Flags, r.Flags)
		}
	}
	return rep
}

// stdio is the caller's fds 0, 1, 2 that are open: a restore passes
// them on where it puts nothing of its own.
func stdio() []int {
	var fds []int
	for fd := 0; fd < 3; fd++ {
		if _, err := unix.FcntlInt(uintptr(fd), unix.F_GETFD, 0); err == nil {
			fds = append(fds, fd)
		}
	}
	return fds
}

// checkFDSet checks that the reporter got exactly the fds want, plus the
// caller's stdio where want has none.
func checkFDSet(t *testing.T, rep report, want []int) {
	t.Helper()
	exp := slices.Clone(want)
	for _, fd := range stdio() {
		if !slices.Contains(exp, fd) {
			exp = append(exp, fd)
		}
	}
	slices.Sort(exp)
	var got []int
	for fd := range rep.byFD() {
		got = append(got, fd)
	}
	slices.Sort(got)
	if !slices.Equal(got, exp) {
		t.Errorf("the command got fds %v, want %v", got, exp)
	}
}
