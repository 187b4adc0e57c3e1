// Package pipetest puts real pipes in the states a snapshot must get
// right, in child processes, for the tests of the packages that capture
// and restore them.
package pipetest

// Holders: child processes (this test binary run again) that put a pipe
// in one of the states a snapshot must get right, report it on stdout as
// one JSON line, and keep everything open until their stdin closes.

import (
	"encoding/json"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"testing"
	"time"

	"golang.org/x/sys/unix"
)

const holderEnv = "PIPESNAP_TEST_HOLDER"

// Report is what a holder prints once its pipe is set up.
type Report struct {
	PIDs    []int    `json:"pids"`   // every process holding the pipe
	ReadFD  int      `json:"readFD"` // a read end, in process ReadPID
	ReadPID int      `json:"readPID"`
	Ino     uint64   `json:"ino"`
	Path    string   `json:"path,omitempty"`
	Inos    []uint64 `json:"inos,omitempty"` // "many": every pipe, in order
}

// Main runs the tests, or a holder when this test binary was started as
// one. Call it from TestMain.
func Main(m *testing.M) {
	if kind := os.Getenv(holderEnv); kind != "" {
		if err := runHolder(kind); err != nil {
			fmt.Fprintf(os.Stderr, "holder %s: %v\n", kind, err)
			os.Exit(1)
		}
		os.Exit(0)
	}
	os.Exit(m.Run())
}

// pattern is the deterministic content holders write: n bytes that differ
// per seed and per position, so a shifted or mixed-up copy shows.
func Pattern(seed byte, n int) []byte {
	b := make([]byte, n)
	x := uint32(seed)*2654435761 + 1
	for i := range b {
		x ^= x << 13
		x ^= x >> 17
		x ^= x << 5
		b[i] = byte(x)
	}
	return b
}

func writeAll(fd int, b []byte) error {
	for len(b) > 0 {
		n, err := unix.Write(fd, b)
		if err != nil {
			return err
		}
		b = b[n:]
	}
	return nil
}

func inoOf(fd int) uint64 {
	var st unix.Stat_t
	if unix.Fstat(fd, &st) != nil {
		return 0
	}
	return st.Ino
}

// spawnPeer starts a second holder that keeps the given fds (as 3, 4, ...)
// and shares our stdin, so it exits with us.
func spawnPeer(fds ...int) (int, error) {
	cmd := exec.Command(os.Args[0])
	cmd.Env = append(os.Environ(), holderEnv+"=peer")
	cmd.Stdin = os.Stdin
	cmd.Stderr = os.Stderr
	for _, fd := range fds {
		cmd.ExtraFiles = append(cmd.ExtraFiles, os.NewFile(uintptr(fd), "peer"))
	}
	if err := cmd.Start(); err != nil {
		return 0, err
	}
	return cmd.Process.Pid, nil
}

// manyPipes makes n pipes, pipe i holding ManyData(i), and returns their
// inodes.
func manyPipes(n int) ([]uint64, error) {
	var inos []uint64
	for i := range n {
		var q [2]int
		if err := unix.Pipe2(q[:], unix.O_CLOEXEC); err != nil {
			return nil, err
		}
		if err := writeAll(q[1], ManyData(i)); err != nil {
			return nil, err
		}
		inos = append(inos, inoOf(q[0]))
	}
	return inos, nil
}

// ManyData is what pipe i of the "many" holder holds.
func ManyData(i int) []byte { return []byte(fmt.Sprintf("pipe %d\n", i)) }

// BulkData is what pipe i of the "bulk" holder holds: 1 MiB, or less
// for every pipe but one in three (a reader's window then moves in the
// middle of a pipe's copy).
func BulkData(i int) []byte { return Pattern(byte(100+i), 1<<20-i%3*300000) }

// LiveByte is byte i of the "live" holder's stream: any run of bytes cut
// from it consistently satisfies b[k+1] == LiveByte(i+1) where b[k] ==
// LiveByte(i), so a torn copy shows.
func LiveByte(i uint64) byte { return byte(i % 251) }

// Kinds of pipe state (DESIGN.md), and what each holder writes.
var Kinds = []string{
	"empty", "few", "full", "merged", "packet", "big", "spliced", "vmspliced",
	"shared", "writer-closed", "split-ends", "fifo", "partly-read", "wrapped",
}

var PacketSizes = []int{1, 100, 4096, 7, 300, 2048}

func runHolder(kind string) error {
	if kind == "peer" {
		_, err := os.Stdin.Read(make([]byte, 1))
		_ = err
		return nil
	}
	var p [2]int
	flags := unix.O_CLOEXEC
	if kind == "packet" {
		flags |= unix.O_DIRECT
	}
	rep := Report{PIDs: []int{os.Getpid()}, ReadPID: os.Getpid()}
	if kind != "fifo" {
		if err := unix.Pipe2(p[:], flags); err != nil {
			return err
		}
		rep.ReadFD, rep.Ino = p[0], inoOf(p[0])
	}
	switch kind {
	case "empty":
	case "few":
		if err := writeAll(p[1], []byte("hello, pipe\n")); err != nil {
			return err
		}
	case "full":
		unix.SetNonblock(p[1], true)
		if err := writeAll(p[1], Pattern(3, 65536)); err != nil {
			return err
		}
		if _, err := unix.Write(p[1], []byte{0}); err != unix.EAGAIN {
			return fmt.Errorf("pipe not full: %v", err)
		}
	case "merged":
		data := Pattern(4, 1000)
		for i := 0; i < len(data); i += 10 {
			if err := writeAll(p[1], data[i:i+10]); err != nil {
				return err
			}
		}
	case "packet":
		data := Pattern(5, 1<<16)
		off := 0
		for _, n := range PacketSizes {
			if _, err := unix.Write(p[1], data[off:off+n]); err != nil {
				return err
			}
			off += n
		}
	case "big":
		if _, err := unix.FcntlInt(uintptr(p[1]), unix.F_SETPIPE_SZ, 1<<20); err != nil {
			return err
		}
		if err := writeAll(p[1], Pattern(6, 1<<20)); err != nil {
			return err
		}
	case "spliced":
		f, err := os.CreateTemp("", "pipesnap-splice")
		if err != nil {
			return err
		}
		defer os.Remove(f.Name())
		if _, err := f.Write(Pattern(7, 3*4096)); err != nil {
			return err
		}
		off := int64(100)
		if _, err := unix.Splice(int(f.Fd()), &off, p[1], nil, 5000, 0); err != nil {
			return err
		}
	case "vmspliced":
		mem, err := unix.Mmap(-1, 0, 2*4096, unix.PROT_READ|unix.PROT_WRITE, unix.MAP_ANON|unix.MAP_PRIVATE)
		if err != nil {
			return err
		}
		copy(mem, Pattern(8, len(mem)))
		if _, err := unix.Vmsplice(p[1], []unix.Iovec{{Base: &mem[0], Len: uint64(len(mem))}}, 0); err != nil {
			return err
		}
	case "shared":
		if err := writeAll(p[1], Pattern(9, 5000)); err != nil {
			return err
		}
		pid, err := spawnPeer(p[0], p[1])
		if err != nil {
			return err
		}
		rep.PIDs = append(rep.PIDs, pid)
	case "writer-closed":
		if err := writeAll(p[1], Pattern(10, 3000)); err != nil {
			return err
		}
		unix.Close(p[1])
	case "split-ends":
		pid, err := spawnPeer(p[0])
		if err != nil {
			return err
		}
		unix.Close(p[0])
		rep.PIDs = append(rep.PIDs, pid)
		rep.ReadPID, rep.ReadFD = pid, 3
		if err := writeAll(p[1], Pattern(11, 2000)); err != nil {
			return err
		}
	case "fifo":
		rep.Path = filepath.Join(os.Getenv("PIPESNAP_TEST_DIR"), "fifo")
		if err := unix.Mkfifo(rep.Path, 0o600); err != nil {
			return err
		}
		rw, err := unix.Open(rep.Path, unix.O_RDWR|unix.O_CLOEXEC, 0)
		if err != nil {
			return err
		}
		wr, err := unix.Open(rep.Path, unix.O_WRONLY|unix.O_CLOEXEC, 0)
		if err != nil {
			return err
		}
		rep.ReadFD, rep.Ino = rw, inoOf(rw)
		if err := writeAll(wr, Pattern(12, 777)); err != nil {
			return err
		}
	case "partly-read":
		if err := writeAll(p[1], Pattern(13, 10000)); err != nil {
			return err
		}
		if _, err := unix.Read(p[0], make([]byte, 3000)); err != nil {
			return err
		}
	case "wrapped":
		if _, err := unix.FcntlInt(uintptr(p[1]), unix.F_SETPIPE_SZ, 4*4096); err != nil {
			return err
		}
		page := make([]byte, 4096)
		for i := 0; i < 1000; i++ {
			if err := writeAll(p[1], page); err != nil {
				return err
			}
			if _, err := unix.Read(p[0], page); err != nil {
				return err
			}
		}
		if err := writeAll(p[1], Pattern(14, 5000)); err != nil {
			return err
		}
	case "many":
		// PIPESNAP_TEST_PIPES pipes; pipe i holds "pipe i\n".
		n, err := strconv.Atoi(os.Getenv("PIPESNAP_TEST_PIPES"))
		if err != nil {
			return err
		}
		if _, err := setNofile(uint64(2*n + 64)); err != nil {
			return fmt.Errorf("%d pipes: %w", n, err)
		}
		if rep.Inos, err = manyPipes(n); err != nil {
			return err
		}
	case "bulk":
		// PIPESNAP_TEST_PIPES pipes of 1 MiB; pipe i holds BulkData(i).
		n, err := strconv.Atoi(os.Getenv("PIPESNAP_TEST_PIPES"))
		if err != nil {
			return err
		}
		for i := range n {
			var q [2]int
			if err := unix.Pipe2(q[:], unix.O_CLOEXEC); err != nil {
				return err
			}
			if _, err := unix.FcntlInt(uintptr(q[1]), unix.F_SETPIPE_SZ, 1<<20); err != nil {
				return err
			}
			if err := writeAll(q[1], BulkData(i)); err != nil {
				return err
			}
			rep.Inos = append(rep.Inos, inoOf(q[0]))
		}
	case "fds":
		// As many fds as the hard limit allows, nearly all /dev/null, with
		// PIPESNAP_TEST_PIPES pipes among the last of them.
		n, err := strconv.Atoi(os.Getenv("PIPESNAP_TEST_PIPES"))
		if err != nil {
			return err
		}
		max, err := setNofile(0)
		if err != nil {
			return err
		}
		null, err := unix.Open("/dev/null", unix.O_RDONLY|unix.O_CLOEXEC, 0)
		if err != nil {
			return err
		}
		for uint64(null)+uint64(2*n)+64 < max {
			if null, err = unix.FcntlInt(uintptr(null), unix.F_DUPFD_CLOEXEC, 0); err != nil {
				return err
			}
		}
		if rep.Inos, err = manyPipes(n); err != nil {
			return err
		}
		rep.ReadFD = null // the highest /dev/null fd: how many fds there are
	case "churn":
		// Pipes opened, filled and closed, and short-lived processes
		// holding pipes, without pause: dumps meet tasks and pipes that
		// go away under them.
		go func() {
			for {
				var q [2]int
				if unix.Pipe2(q[:], unix.O_CLOEXEC) != nil {
					return
				}
				writeAll(q[1], []byte("churn"))
				unix.Close(q[0])
				unix.Close(q[1])
			}
		}()
		go func() {
			for {
				cmd := exec.Command("sh", "-c", "echo x | cat >/dev/null")
				if cmd.Run() != nil {
					return
				}
			}
		}()
	case "live":
		// A producer at full speed and a consumer at a varying pace: the
		// pipe never stands still. Byte i of the stream is LiveByte(i).
		// A large ring makes a copy take long enough to race the consumer.
		if _, err := unix.FcntlInt(uintptr(p[1]), unix.F_SETPIPE_SZ, 1<<20); err != nil {
			return err
		}
		go func() {
			buf := make([]byte, 64<<10)
			for i := uint64(0); ; {
				for k := range buf {
					buf[k] = LiveByte(i + uint64(k))
				}
				if writeAll(p[1], buf) != nil {
					return
				}
				i += uint64(len(buf))
			}
		}()
		go func() {
			buf := make([]byte, 64<<10)
			for n := 0; ; n++ {
				if _, err := unix.Read(p[0], buf[:1+(n*7919)%len(buf)]); err != nil {
					return
				}
				if n%16 == 0 {
					time.Sleep(time.Duration(n%5) * 200 * time.Microsecond)
				}
			}
		}()
	default:
		return fmt.Errorf("unknown kind %q", kind)
	}
	if err := json.NewEncoder(os.Stdout).Encode(rep); err != nil {
		return err
	}
	_, _ = os.Stdin.Read(make([]byte, 1))
	return nil
}

// Holder is a running holder as the test sees it.
type Holder struct {
	Kind  string
	Rep   Report
	cmd   *exec.Cmd
	stdin io.WriteCloser
}

// StartHolder starts a holder of the given kind; it stops with the test.
func StartHolder(t testing.TB, kind string, env ...string) *Holder {
	t.Helper()
	cmd := exec.Command(os.Args[0])
	cmd.Env = append(os.Environ(), holderEnv+"="+kind, "PIPESNAP_TEST_DIR="+t.TempDir())
	cmd.Env = append(cmd.Env, env...)
	cmd.Stderr = os.Stderr
	stdin, err := cmd.StdinPipe()
	if err != nil {
		t.Fatal(err)
	}
	out, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	h := &Holder{Kind: kind, cmd: cmd, stdin: stdin}
	t.Cleanup(h.Stop)
	if err := json.NewDecoder(out).Decode(&h.Rep); err != nil {
		t.Fatalf("holder %s did not report: %v", kind, err)
	}
	return h
}

// Stop closes the holder's stdin: it and its peers exit.
func (h *Holder) Stop() {
	h.stdin.Close()
	h.cmd.Wait()
}

// setNofile sets the soft fd limit to want, or to the hard limit when
// want is 0, and returns the hard limit.
func setNofile(want uint64) (uint64, error) {
	var lim unix.Rlimit
	if err := unix.Getrlimit(unix.RLIMIT_NOFILE, &lim); err != nil {
		return 0, err
	}
	if want == 0 {
		want = lim.Max
	}
	if want > lim.Max {
		return lim.Max, fmt.Errorf("%d fds needed, the hard limit is %d", want, lim.Max)
	}
	lim.Cur = want
	if err := unix.Setrlimit(unix.RLIMIT_NOFILE, &lim); err != nil {
		return lim.Max, fmt.Errorf("raising the fd limit to %d: %w", want, err)
	}
	return lim.Max, nil
}
