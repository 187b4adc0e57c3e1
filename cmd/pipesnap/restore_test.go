package main

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/pipesnap/pipesnap/format"
	"github.com/pipesnap/pipesnap/internal/pipetest"
)

// TestRestoreStuckPipeline is the "done when": a snapshot of a
// stuck producer | consumer pair, replayed into a fresh consumer with one
// command.
func TestRestoreStuckPipeline(t *testing.T) {
	requireBPF(t)
	r, w, err := os.Pipe()
	if err != nil {
		t.Fatal(err)
	}
	producer := exec.Command("seq", "1", "100000") // 588895 bytes: more than a pipe holds
	producer.Stdout = w
	consumer := exec.Command("sleep", "60") // never reads
	consumer.Stdin = r
	for _, c := range []*exec.Cmd{producer, consumer} {
		if err := c.Start(); err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { c.Process.Kill(); c.Wait() })
	}
	w.Close()
	st, err := r.Stat()
	if err != nil {
		t.Fatal(err)
	}
	ino := strconv.FormatUint(statIno(st), 10)
	// Wait for seq to fill the pipe and block.
	held := 0
	for deadline := time.Now().Add(10 * time.Second); ; {
		n, err := unix.IoctlGetInt(int(r.Fd()), unix.TIOCINQ)
		if err != nil {
			t.Fatal(err)
		}
		if n == held && n > 0 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("the pipe never filled: %d bytes", n)
		}
		held = n
		time.Sleep(100 * time.Millisecond)
	}
	r.Close()
	var all bytes.Buffer
	for i := 1; i <= 100000; i++ {
		all.WriteString(strconv.Itoa(i) + "\n")
	}
	want := all.String()[:held]

	snap := filepath.Join(t.TempDir(), "stuck.snap")
	if _, stderr, code := run(t, "dump", "--pid", strconv.Itoa(consumer.Process.Pid), "-o", snap); code != 0 {
		t.Fatalf("dump: exit %d: %s", code, stderr)
	}
	out, stderr, code := run(t, "restore", "--ino", ino, snap, "--", "wc", "-c")
	if code != 0 || strings.TrimSpace(out) != strconv.Itoa(held) {
		t.Errorf("restore -- wc -c: exit %d, %q (want %d), stderr %q", code, out, held, stderr)
	}
	out, stderr, code = run(t, "restore", snap, "--ino", ino, "--", "cat")
	if code != 0 || out != want {
		t.Errorf("restore -- cat: exit %d, %d bytes, stderr %q; want the %d bytes seq wrote first", code, len(out), stderr, held)
	}
	if cat, _, _ := run(t, "cat", "--ino", ino, snap); cat != out {
		t.Errorf("restore -- cat and cat --ino differ")
	}
	// The consumer's own fd table: its stdin is the pipe.
	out, stderr, code = run(t, "restore", "--pid", strconv.Itoa(consumer.Process.Pid), snap, "--", "cat")
	if code != 0 || out != want {
		t.Errorf("restore --pid -- cat: exit %d, %d bytes, stderr %q", code, len(out), stderr)
	}
	// CMD's flags are CMD's.
	out, _, code = run(t, "restore", snap, "--ino", ino, "--", "cat", "-n")
	if code != 0 || !strings.HasPrefix(out, "     1\t1\n     2\t2\n") {
		t.Errorf("restore -- cat -n: exit %d, %q", code, out[:min(len(out), 40)])
	}
}

const (
	rd = format.ModeRead
	wr = format.ModeWrite
)

// handBuilt writes a snapshot made without BPF: task 100 reads pipe 1001
// on fd 0 and packets on fd 5; task 200 holds a FIFO; task 300 a FIFO
// whose path leaves any root; task 400 a torn pipe.
func handBuilt(t *testing.T, dir string) string {
	t.Helper()
	text := &pipetest.SPipe{Ino: 1001, Bufs: [][]byte{[]byte("line one\n"), []byte("line two\n")}}
	packets := &pipetest.SPipe{Ino: 1002, Packet: true, Bufs: [][]byte{[]byte("p1"), []byte("packet2")}}
	fifo := &pipetest.SPipe{Ino: 1003, Kind: format.KindFIFO, Path: "/run/app/in.fifo", Bufs: [][]byte{[]byte("via fifo\n")}}
	evil := &pipetest.SPipe{Ino: 1004, Kind: format.KindFIFO, Path: "/../../evil.fifo"}
	torn := &pipetest.SPipe{Ino: 1005, Status: format.StatusTorn, Reason: format.ReasonMoved, Bufs: [][]byte{[]byte("torn\n")}}
	b := pipetest.Stream(t,
		pipetest.STask{PID: 100, Comm: "consumer", FDs: []pipetest.SFD{
			{FD: 0, File: "text", Pipe: text, Mode: rd},
			{FD: 5, File: "packets", Pipe: packets, Mode: rd},
		}},
		pipetest.STask{PID: 200, Comm: "fifo", FDs: []pipetest.SFD{{FD: 0, File: "fifo", Pipe: fifo, Mode: rd}}},
		pipetest.STask{PID: 300, Comm: "evil", FDs: []pipetest.SFD{{FD: 0, File: "evil", Pipe: evil, Mode: rd}}},
		pipetest.STask{PID: 400, Comm: "torn", FDs: []pipetest.SFD{{FD: 0, File: "torn", Pipe: torn, Mode: rd}}},
	)
	path := filepath.Join(dir, "hand.snap")
	if err := os.WriteFile(path, b, 0o644); err != nil {
		t.Fatal(err)
	}
	return path
}

func TestRestoreHandBuilt(t *testing.T) {
	dir := t.TempDir()
	snap := handBuilt(t, dir)
	root := filepath.Join(dir, "root")
	if err := os.Mkdir(root, 0o700); err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		args   []string
		code   int
		out    string
		stderr string
	}{
		{[]string{"restore", "--ino", "1001", snap, "--", "cat"}, 0, "line one\nline two\n", ""},
		{[]string{"restore", snap, "--ino", "1001", "--", "cat", "-n"}, 0, "     1\tline one\n     2\tline two\n", ""},
		{[]string{"restore", "--ino", "1001", "--as", "fd:5", snap, "--", "sh", "-c", "cat <&5"}, 0, "line one\nline two\n", ""},
		{[]string{"restore", "--ino=1001", "--as=fd:5", snap, "--", "sh", "-c", "cat <&5"}, 0, "line one\nline two\n", ""},
		// Flags after -- are CMD's, pipesnap's own included.
		{[]string{"restore", snap, "--ino", "1001", "--", "sh", "-c", `echo "$@"`, "sh", "--pid", "7", "-x"}, 0, "--pid 7 -x\n", ""},
		{[]string{"restore", "--pid", "100", snap, "--", "sh", "-c", "cat; cat <&5; echo"}, 0, "line one\nline two\np1packet2\n", "note: fd 0 (stdin) of sh is pipe 1001's read end: the captured bytes, then end of file"}, // its writer was another task
		// EOF after the bytes, unless --keep-writer.
		{[]string{"restore", "--ino", "1001", snap, "--", "sh", "-c", "head -c 18 >/dev/null; timeout 0.3 cat && echo EOF || echo NOEOF"}, 0, "EOF\n", ""},
		{[]string{"restore", "--ino", "1001", "--keep-writer", snap, "--", "sh", "-c", "head -c 18 >/dev/null; timeout 0.3 cat && echo EOF || echo NOEOF"}, 0, "NOEOF\n", ""},
		// CMD's status is pipesnap's, silently.
		{[]string{"restore", "--ino", "1001", snap, "--", "sh", "-c", "exit 7"}, 7, "", ""},
		{[]string{"restore", "--ino", "1001", snap, "--", "sh", "-c", "kill -TERM $$"}, 128 + int(syscall.SIGTERM), "", ""},
		{[]string{"restore", "--ino", "1001", snap, "--", "pipesnap-no-such-command"}, 127, "", "not found"},
		// FIFOs.
		{[]string{"restore", "--pid", "200", snap, "--", "cat"}, 2, "", "--root DIR"},
		{[]string{"restore", "--pid", "200", "--root", root, snap, "--", "sh", "-c", "cat; test -p " + root + "/run/app/in.fifo && echo fifo"}, 0, "via fifo\nfifo\n", ""},
		{[]string{"restore", "--ino", "1003", snap, "--", "cat"}, 0, "via fifo\n", ""},
		{[]string{"restore", "--pid", "300", "--root", root, snap, "--", "true"}, 1, "", "could lead out of the root directory: refusing"},
		// Partial captures.
		{[]string{"restore", "--pid", "400", snap, "--", "cat"}, 1, "", "--allow-partial"},
		{[]string{"restore", "--ino", "1005", "--allow-partial", snap, "--", "cat"}, 0, "torn\n", "warning: pipe 1005 is torn"},
		// Unknown pid or inode.
		{[]string{"restore", "--pid", "999", snap, "--", "true"}, 2, "", "pid 999: no such process in the snapshot"},
		{[]string{"restore", "--ino", "999", snap, "--", "true"}, 2, "", "pipe 999: no such pipe"},
		// Usage.
		{[]string{"restore", "--ino", "1001", snap, "cat"}, 2, "", "needs -- between FILE and the command"},
		{[]string{"restore", "--ino", "1001", snap}, 2, "", "needs -- between"},
		{[]string{"restore", "--ino", "1001", snap, "--"}, 2, "", "needs a command after --"},
		{[]string{"restore", "--ino", "1001"}, 2, "", "needs FILE"},
		{[]string{"restore", snap, "--", "cat"}, 2, "", "--pid PID or --ino"},
		{[]string{"restore", "--pid", "100", "--ino", "1001", snap, "--", "cat"}, 2, "", "not both"},
		{[]string{"restore", "--pid", "100", "--as", "fd:3", snap, "--", "cat"}, 2, "", "--as goes with --ino"},
		{[]string{"restore", "--ino", "1001", "--keep-cloexec", snap, "--", "cat"}, 2, "", "--keep-cloexec goes with --pid"},
		{[]string{"restore", "--ino", "1001", "--as", "stdout", snap, "--", "cat"}, 2, "", "want stdin or fd:K"},
		{[]string{"restore", "--ino", "1001", "--as", "fd:-1", snap, "--", "cat"}, 2, "", "want stdin or fd:K"},
		{[]string{"restore", "--pid", "-3", snap, "--", "cat"}, 2, "", "not a process id"},
		{[]string{"restore", "--ino", "1001", filepath.Join(dir, "missing"), "--", "cat"}, 1, "", "no such file"},
	} {
		out, stderr, code := run(t, tc.args...)
		if code != tc.code || out != tc.out || !strings.Contains(stderr, tc.stderr) || (tc.stderr == "" && stderr != "") {
			t.Errorf("pipesnap %q:\nexit %d, stdout %q, stderr %q\nwant exit %d, stdout %q, stderr with %q", tc.args, code, out, stderr, tc.code, tc.out, tc.stderr)
		}
		if n := strings.Count(strings.TrimSpace(stderr), "\n"); n > 0 && tc.code != 0 {
			t.Errorf("pipesnap %q: error on %d lines, want one: %q", tc.args, n+1, stderr)
		}
	}
}

func TestRestoreCorrupted(t *testing.T) {
	dir := t.TempDir()
	b, err := os.ReadFile(handBuilt(t, dir))
	if err != nil {
		t.Fatal(err)
	}
	bad := filepath.Join(dir, "bad.snap")
	b[len(b)/2] ^= 0x40
	os.WriteFile(bad, b, 0o600)
	cut := filepath.Join(dir, "cut.snap")
	os.WriteFile(cut, b[:len(b)/2], 0o600)
	for _, f := range []string{bad, cut} {
		out, stderr, code := run(t, "restore", "--ino", "1001", f, "--", "sh", "-c", "echo ran")
		if code != 1 || out != "" || !strings.Contains(stderr, "offset ") || strings.Count(strings.TrimSpace(stderr), "\n") > 0 {
			t.Errorf("%s: exit %d, stdout %q, stderr %q; want exit 1, one line naming the offset, and no command run", filepath.Base(f), code, out, stderr)
		}
	}
}

// TestRestoreSignals: SIGTERM to pipesnap reaches the command, and
// pipesnap exits with the command's status.
func TestRestoreSignals(t *testing.T) {
	snap := handBuilt(t, t.TempDir())
	cmd := exec.Command(pipesnapBin, "restore", "--ino", "1001", snap, "--", "sh", "-c", "trap 'exit 42' TERM; echo ready; while :; do sleep 0.05; done")
	out, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { cmd.Process.Kill(); cmd.Wait() })
	line := make([]byte, 6)
	if _, err := io.ReadFull(out, line); err != nil || string(line) != "ready\n" {
		t.Fatalf("the command did not start: %q, %v", line, err)
	}
	if err := cmd.Process.Signal(syscall.SIGTERM); err != nil {
		t.Fatal(err)
	}
	err = cmd.Wait()
	var ee *exec.ExitError
	if !errors.As(err, &ee) || ee.ExitCode() != 42 {
		t.Errorf("after SIGTERM: %v, want exit status 42 (the command's trap)", err)
	}
}

// TestRestoreCapacityLimit runs restore without root on a pipe larger than
// pipe-max-size: one line saying what to do, exit 1.
func TestRestoreCapacityLimit(t *testing.T) {
	limit, err := os.ReadFile("/proc/sys/fs/pipe-max-size")
	if err != nil {
		t.Skip(err)
	}
	max, _ := strconv.Atoi(strings.TrimSpace(string(limit)))
	dir, err := os.MkdirTemp("", "pipesnap-cap")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(dir) })
	os.Chmod(dir, 0o755)
	big := &pipetest.SPipe{Ino: 7, Capacity: uint32(2 * max), Bufs: [][]byte{[]byte("x")}}
	snap := filepath.Join(dir, "big.snap")
	os.WriteFile(snap, pipetest.Stream(t, pipetest.STask{PID: 1, FDs: []pipetest.SFD{{FD: 0, File: "r", Pipe: big, Mode: rd}}}), 0o644)
	bin := filepath.Join(dir, "pipesnap")
	data, err := os.ReadFile(pipesnapBin)
	if err != nil {
		t.Fatal(err)
	}
	os.WriteFile(bin, data, 0o755)

	cmd := exec.Command(bin, "restore", "--ino", "7", snap, "--", "true")
	if os.Geteuid() == 0 {
		cmd.SysProcAttr = &syscall.SysProcAttr{Credential: &syscall.Credential{Uid: 65534, Gid: 65534}}
	}
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	err = cmd.Run()
	var ee *exec.ExitError
	if !errors.As(err, &ee) || ee.ExitCode() != 1 || !strings.Contains(stderr.String(), "pipe-max-size") ||
		!strings.Contains(stderr.String(), "run as root") || strings.Count(strings.TrimSpace(stderr.String()), "\n") > 0 {
		t.Errorf("capacity %d above %d, unprivileged: %v, stderr %q", 2*max, max, err, stderr.String())
	}
}

func TestReorderRestoreArgs(t *testing.T) {
	app := newApp()
	for _, tc := range []struct{ in, want []string }{
		{[]string{"p", "restore", "f", "--ino", "5", "--", "cat", "-n"}, []string{"p", "restore", "--ino", "5", "--", "f", "--", "cat", "-n"}},
		{[]string{"p", "restore", "--ino", "5", "f", "--", "cat"}, []string{"p", "restore", "--ino", "5", "--", "f", "--", "cat"}},
		{[]string{"p", "restore", "f", "--keep-writer", "--", "cat", "--keep-writer", "--ino", "9"}, []string{"p", "restore", "--keep-writer", "--", "f", "--", "cat", "--keep-writer", "--ino", "9"}},
		{[]string{"p", "restore", "--pid", "3", "--root", "/r", "f", "--", "x"}, []string{"p", "restore", "--pid", "3", "--root", "/r", "--", "f", "--", "x"}},
	} {
		if got := reorderArgs(app, tc.in); !slices.Equal(got, tc.want) {
			t.Errorf("reorderArgs(%q) = %q, want %q", tc.in, got, tc.want)
		}
	}
}

func TestFDList(t *testing.T) {
	many := make([]int, 2000)
	for i := range many {
		many[i] = 3 + i
	}
	for _, c := range []struct {
		fds  []int
		want string
	}{
		{[]int{7}, "fd 7 was"},
		{[]int{3, 4}, "fds 3, 4 were"},
		{many[:10], "fds 3, 4, 5, 6, 7, 8, 9, 10, 11, 12 were"},
		{many, "fds 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, and 1990 more were"},
	} {
		if got := fdList(c.fds); got != c.want {
			t.Errorf("fdList(%d fds) = %q, want %q", len(c.fds), got, c.want)
		}
	}
}

// TestRestoreHostile: what a hostile snapshot gets from pipesnap
// restore: a refusal on one line that says why, before anything is made
// (fd numbers past RLIMIT_NOFILE, pages for packets, capacities that
// wrap, an fd twice), or one warning line for a thousand empty packets.
func TestRestoreHostile(t *testing.T) {
	dir := t.TempDir()
	var lim unix.Rlimit
	if err := unix.Getrlimit(unix.RLIMIT_NOFILE, &lim); err != nil {
		t.Fatal(err)
	}
	onePipe := func(fd int32, p format.Pipe, bufs ...format.Buffer) []byte {
		return encodeStream(t, func(e *format.Encoder, must func(error)) {
			must(e.WriteTask(format.Task{PID: 1, TID: 1, Comm: "hostile"}))
			must(e.WriteFDEnt(format.FDEnt{FD: fd, FileRef: 1}))
			must(e.WriteFile(format.File{Ref: 1, Type: format.FileTypePipe, Mode: format.ModeRead, PipeRef: 2}))
			p.Ref, p.Ino, p.Kind, p.NrBufs = 2, 9, format.KindPipe, uint32(len(bufs))
			for _, b := range bufs {
				p.Bytes += uint64(b.Len)
			}
			must(e.WritePipe(p))
			for _, b := range bufs {
				must(e.WriteBuffer(b))
			}
		})
	}
	std := format.Pipe{RingSize: 16, MaxUsage: 16, Capacity: 65536, PageSize: 4096}
	x := format.Buffer{Len: 1, Data: []byte("x")}
	packet := format.Buffer{Len: 1, Flags: format.BufPacket, Data: []byte("x")}
	many := func(n int, b format.Buffer) []format.Buffer {
		out := make([]format.Buffer, n)
		for i := range out {
			out[i] = b
		}
		return out
	}
	wrap := std
	wrap.RingSize, wrap.MaxUsage, wrap.Capacity = 1<<20, 1<<20, 0
	wrap8k := wrap
	wrap8k.Capacity = 8192
	packetPipe := std
	packetPipe.Status = format.StatusPacket

	// 70 pipes of 256 1-byte packets at fds 3 to 72: 70.7 MiB of pages.
	packets70 := encodeStream(t, func(e *format.Encoder, must func(error)) {
		must(e.WriteTask(format.Task{PID: 1, TID: 1, Comm: "hostile"}))
		for i := range 70 {
			ref := e.NextRef()
			must(e.WriteFDEnt(format.FDEnt{FD: int32(3 + i), FileRef: ref}))
			must(e.WriteFile(format.File{Ref: ref, Type: format.FileTypePipe, Mode: format.ModeRead, PipeRef: ref + 1}))
			must(e.WritePipe(format.Pipe{Ref: ref + 1, Ino: uint64(100 + i), Kind: format.KindPipe, Status: format.StatusPacket,
				RingSize: 256, MaxUsage: 256, Capacity: 1 << 20, PageSize: 4096, NrBufs: 256, Bytes: 256}))
			for range 256 {
				must(e.WriteBuffer(packet))
			}
		}
	})
	dupFD := encodeStream(t, func(e *format.Encoder, must func(error)) {
		must(e.WriteTask(format.Task{PID: 1, TID: 1, Comm: "hostile"}))
		for ref := int32(1); ref <= 3; ref += 2 {
			must(e.WriteFDEnt(format.FDEnt{FD: 3, FileRef: ref}))
			must(e.WriteFile(format.File{Ref: ref, Type: format.FileTypePipe, Mode: format.ModeRead, PipeRef: ref + 1}))
			must(e.WritePipe(format.Pipe{Ref: ref + 1, Ino: uint64(ref), Kind: format.KindPipe}))
		}
	})
	mixed := onePipe(0, packetPipe, packet, x, x, packet)

	for _, tc := range []struct {
		name   string
		stream []byte
		args   []string
		code   int
		out    string
		stderr []string
	}{
		{"fd 999999", onePipe(999999, std, x), []string{"--pid", "1"}, 1, "",
			[]string{"pid 1 fd 999999: at or above the limit on fd numbers (RLIMIT_NOFILE)", "could not be given it", "ulimit -Hn"}},
		{"fd at the hard limit", onePipe(int32(lim.Max), std, x), []string{"--pid", "1"}, 1, "",
			[]string{fmt.Sprintf("fd %d: at or above", lim.Max), "RLIMIT_NOFILE"}},
		{"fd just below it", onePipe(int32(lim.Max-1), std, x), []string{"--pid", "1"}, 1, "",
			[]string{fmt.Sprintf("fd %d: within 2 of", lim.Max-1), "RLIMIT_NOFILE"}},
		{"17000 1-byte packets", onePipe(0, packetPipe, many(17000, packet)...), []string{"--ino", "9"}, 1, "",
			[]string{"1 pipe would pin about 67.7 MiB of kernel memory (17000 pages for 17000 bytes", "more than the 64 MiB allowed", "--allow-kernel-memory 68M allows it"}},
		{"70 pipes of packets", packets70, []string{"--pid", "1"}, 1, "",
			[]string{"70 pipes would pin about 70.7 MiB", "--allow-kernel-memory 71M"}},
		{"70 pipes of packets, allowed", packets70, []string{"--pid", "1", "--allow-kernel-memory", "71M"}, 0, "256\n", nil},
		{"allowed, but less", packets70, []string{"--pid", "1", "--allow-kernel-memory", "70MiB"}, 1, "", []string{"more than the 70 MiB allowed"}},
		{"allowance not a size", packets70, []string{"--pid", "1", "--allow-kernel-memory", "lots"}, 2, "", []string{"--allow-kernel-memory \"lots\"", "512M"}},
		{"capacity 2^32", onePipe(0, wrap, x), []string{"--ino", "9"}, 1, "",
			[]string{"pipe 9: a capacity of 4294967296 bytes (max_usage 1048576 x page_size 4096), more than a Linux pipe can have"}},
		{"capacity 8192 for 2^32", onePipe(0, wrap8k, x), []string{"--pid", "1"}, 1, "",
			[]string{"capacity 8192 bytes, but max_usage 1048576 x page_size 4096 is 4294967296"}},
		{"fd 3 twice", dupFD, []string{"--pid", "1"}, 1, "", []string{"FD_ENT record: malformed: fd_descriptor 3 a second time"}},
		{"1000 empty packets", onePipe(0, packetPipe, append(many(1000, format.Buffer{Flags: format.BufPacket}), packet)...), []string{"--ino", "9"}, 0, "x",
			[]string{"warning: pipe 9: 1000 buffers are empty packets (buffers 0, 0, 0 and 997 more): a pipe cannot hold one again"}},
		{"packets on some buffers", mixed, []string{"--ino", "9"}, 0, "xxxx",
			[]string{"warning: pipe 9: packets (O_DIRECT) in 2 of its buffers, plain bytes in 2"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if tc.code == 0 && strings.Contains(tc.name, "allowed") && os.Geteuid() != 0 {
				t.Skip("70 MiB of pipes is above an unprivileged user's pipe-user-pages-soft")
			}
			snap := writeSnap(t, dir, strings.ReplaceAll(tc.name, " ", "-")+".snap", tc.stream)
			args := append([]string{"restore"}, tc.args...)
			// dash takes no fd above 9 in a redirection: dd opens fd 72 anew
			// (non-blocking, or the open would wait for a writer).
			args = append(args, snap, "--", "sh", "-c", "if test -e /proc/self/fd/72; then dd if=/proc/self/fd/72 iflag=nonblock 2>/dev/null | wc -c; else cat; fi")
			out, stderr, code := run(t, args...)
			if code != tc.code || out != tc.out {
				t.Errorf("exit %d, stdout %q; want %d, %q; stderr %q", code, out, tc.code, tc.out, stderr)
			}
			for _, w := range tc.stderr {
				if !strings.Contains(stderr, w) {
					t.Errorf("stderr %q does not say %q", stderr, w)
				}
			}
			if n := strings.Count(strings.TrimSpace(stderr), "\n"); n > 0 {
				t.Errorf("stderr on %d lines, want one: %q", n+1, stderr)
			}
			if strings.Contains(stderr, "check the command") {
				t.Errorf("the command is blamed: %q", stderr)
			}
		})
	}
}

// TestRestoreStdioNowhere: restoring the middle of yes | sleep | cat gives
// CMD a stdout whose reader was another task: pipesnap says so, and
// --keep-stdio leaves CMD's own 0-2 in place.
func TestRestoreStdioNowhere(t *testing.T) {
	requireBPF(t)
	pl := pipetest.StartStuck(t, "chain")
	snap := filepath.Join(t.TempDir(), "m.snap")
	mid := strconv.Itoa(pl.PID("middle"))
	if _, stderr, code := run(t, "dump", "--pid", mid, "-o", snap); code != 0 {
		t.Fatalf("dump: %s", stderr)
	}
	out, stderr, code := run(t, "restore", "--pid", mid, snap, "--", "sh", "-c", "echo hi")
	if code != 141 || out != "" ||
		!strings.Contains(stderr, "warning: fd 1 (stdout) of sh is pipe") ||
		!strings.Contains(stderr, "whose reader only other tasks held: nothing reads it") ||
		!strings.Contains(stderr, "note: fd 0 (stdin) of sh is pipe") {
		t.Errorf("restore --pid: exit %d, out %q, stderr %q; want 141, a warning for fd 1, a note for fd 0", code, out, stderr)
	}
	out, stderr, code = run(t, "restore", "--pid", mid, "--keep-stdio", snap, "--", "sh", "-c", "echo hi")
	if code != 0 || out != "hi\n" || !strings.Contains(stderr, "sh keeps its own fds 0 and 1 (--keep-stdio)") && !strings.Contains(stderr, "(--keep-stdio)") {
		t.Errorf("restore --pid --keep-stdio: exit %d, out %q, stderr %q; want 0, hi", code, out, stderr)
	}
	if _, stderr, code := run(t, "restore", "--ino", "1", "--keep-stdio", snap, "--", "true"); code != 2 || !strings.Contains(stderr, "--keep-stdio goes with --pid") {
		t.Errorf("--keep-stdio with --ino: exit %d, %q", code, stderr)
	}
}
