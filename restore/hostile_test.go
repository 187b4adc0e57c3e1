package restore_test

// Hostile snapshots, written with format.Encoder field by field as a
// process on the dumped machine could shape them: fd numbers past the
// fd limit, a million pages of 1-byte packets, capacities that wrap,
// duplicate fds, thousands of empty packets, packet flags on some
// buffers only.

import (
	"bytes"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"strconv"
	"strings"
	"testing"

	"golang.org/x/sys/unix"

	"github.com/pipesnap/pipesnap/format"
	"github.com/pipesnap/pipesnap/restore"
	"github.com/pipesnap/pipesnap/snapshot"
)

// hPipe is a pipe of a hostile stream: every PS_PIPE field that matters
// to a restore is the test's, and every buffer as given.
type hPipe struct {
	ino                          uint64
	status                       format.Status
	capacity, maxUsage, pageSize uint32
	bufs                         []format.Buffer // Len is set from Data
}

// hFD is an fd: file names its open file (fds with the same name share
// one, across tasks too); "" is a file of its own.
type hFD struct {
	fd   int32
	file string
	pipe *hPipe
	mode uint32
}

type hTask struct {
	pid, tid uint32
	fds      []hFD
}

// stdPipe is a pipe of the usual 64 KiB with bufs.
func stdPipe(ino uint64, bufs ...format.Buffer) *hPipe {
	return &hPipe{ino: ino, capacity: 65536, maxUsage: 16, pageSize: 4096, bufs: bufs}
}

func hostileStream(t testing.TB, tasks ...hTask) []byte {
	t.Helper()
	var out bytes.Buffer
	e, err := format.NewEncoder(&out, format.Header{Arch: format.ArchX86_64, Major: 6, Minor: 1, Release: "6.1", Machine: "x86_64"})
	if err != nil {
		t.Fatal(err)
	}
	must := func(err error) {
		t.Helper()
		if err != nil {
			t.Fatal(err)
		}
	}
	files := map[string]int32{}
	pipes := map[*hPipe]int32{}
	for _, task := range tasks {
		tid := task.tid
		if tid == 0 {
			tid = task.pid
		}
		must(e.WriteTask(format.Task{PID: task.pid, TID: tid, Comm: "hostile"}))
		for _, fd := range task.fds {
			if ref, ok := files[fd.file]; ok && fd.file != "" {
				must(e.WriteFDEnt(format.FDEnt{FD: fd.fd, FileRef: ref}))
				continue
			}
			ref := e.NextRef()
			files[fd.file] = ref
			must(e.WriteFDEnt(format.FDEnt{FD: fd.fd, FileRef: ref}))
			pref, known := pipes[fd.pipe]
			if !known {
				pref = e.NextRef()
				pipes[fd.pipe] = pref
			}
			must(e.WriteFile(format.File{Ref: ref, Type: format.FileTypePipe, Mode: fd.mode, PipeRef: pref}))
			if known {
				continue
			}
			p := fd.pipe
			fp := format.Pipe{Ref: pref, Ino: p.ino, Kind: format.KindPipe, Status: p.status, Attempts: 1,
				RingSize: p.maxUsage, MaxUsage: p.maxUsage, Capacity: p.capacity, PageSize: p.pageSize,
				Readers: 1, Writers: 1, NrBufs: uint32(len(p.bufs))}
			for _, b := range p.bufs {
				fp.Bytes += uint64(len(b.Data))
			}
			must(e.WritePipe(fp))
			for i, b := range p.bufs {
				b.Index, b.Len = uint32(i), uint32(len(b.Data))
				must(e.WriteBuffer(b))
			}
		}
	}
	must(e.Close())
	return out.Bytes()
}

func packets(n int, data []byte) []format.Buffer {
	out := make([]format.Buffer, n)
	for i := range out {
		out[i] = format.Buffer{Flags: format.BufPacket, Data: data}
	}
	return out
}

// openFDs lists this process's open fds.
func openFDs(t *testing.T) string {
	t.Helper()
	ents, err := os.ReadDir("/proc/self/fd")
	if err != nil {
		t.Fatal(err)
	}
	var s []string
	for _, e := range ents {
		s = append(s, e.Name())
	}
	return strings.Join(s, " ")
}

// refused builds s and wants it refused with an error that is sentinel
// and mentions words, with no fd left behind.
func refused(t *testing.T, s *snapshot.Snapshot, opt restore.Options, sentinel error, words ...string) error {
	t.Helper()
	before := openFDs(t)
	_, _, err := build(t, s, opt)
	if err == nil {
		t.Fatalf("%+v: restored, want %v", opt, sentinel)
	}
	if sentinel != nil && !errors.Is(err, sentinel) {
		t.Errorf("%+v: %v, want %v", opt, err, sentinel)
	}
	for _, w := range words {
		if !strings.Contains(err.Error(), w) {
			t.Errorf("%+v: %q does not say %q", opt, err, w)
		}
	}
	// A directory listing holds an fd of its own: compare two listings.
	if after := openFDs(t); after != before {
		t.Errorf("%+v: fds %s before, %s after", opt, before, after)
	}
	return err
}

const nofileEnv = "PIPESNAP_TEST_NOFILE"

// TestFDLimit runs TestFDLimitChild with RLIMIT_NOFILE at 64, soft and
// hard, so that nothing can raise it.
func TestFDLimit(t *testing.T) {
	cmd := exec.Command(os.Args[0], "-test.run=^TestFDLimitChild$", "-test.v", "-test.count=1")
	cmd.Env = append(os.Environ(), nofileEnv+"=64")
	out, err := cmd.CombinedOutput()
	if err != nil || !strings.Contains(string(out), "--- PASS: TestFDLimitChild") {
		t.Fatalf("%v\n%s", err, out)
	}
}

// TestFDLimitChild: with RLIMIT_NOFILE 64, Build refuses an fd number at
// or above it, or within 2 of it, and a restore that would hold more fds
// than it allows, before creating anything and saying why; Start
// refuses fds it could not put in place rather than fail in the child
// (which said `exec: "sh": bad file descriptor`).
func TestFDLimitChild(t *testing.T) {
	n, _ := strconv.Atoi(os.Getenv(nofileEnv))
	if n == 0 {
		t.Skip("run by TestFDLimit")
	}
	lim := unix.Rlimit{Cur: uint64(n), Max: uint64(n)}
	if err := unix.Setrlimit(unix.RLIMIT_NOFILE, &lim); err != nil {
		t.Fatal(err)
	}
	// Fds inherited without close-on-exec (the test's environment may
	// have some, high ones too) are not this test's: close them.
	for fd := 3; fd < 1024; fd++ {
		if fl, err := unix.FcntlInt(uintptr(fd), unix.F_GETFD, 0); err == nil && fl&unix.FD_CLOEXEC == 0 {
			unix.Close(fd)
		}
	}
	one := func(fd int32) *snapshot.Snapshot {
		return readStream(t, hostileStream(t, hTask{pid: 1, fds: []hFD{{fd: fd, pipe: stdPipe(7, format.Buffer{Data: []byte("x")}), mode: rd}}}))
	}
	for _, fd := range []int32{64, 1000, 999999} {
		refused(t, one(fd), restore.Options{PID: 1}, restore.ErrFDLimit, fmt.Sprintf("pid 1 fd %d: at or above", fd), "RLIMIT_NOFILE", "64")
	}
	refused(t, one(1), restore.Options{Ino: 7, As: 64}, restore.ErrFDLimit, "pipe 7 fd 64: at or above", "RLIMIT_NOFILE")
	refused(t, one(62), restore.Options{PID: 1}, restore.ErrFDLimit, "fd 62: within 2 of", "RLIMIT_NOFILE")
	// A close-on-exec fd that is dropped does not count.
	task := hTask{pid: 2, fds: []hFD{{fd: 3, pipe: stdPipe(8), mode: rd}}}
	s := readStream(t, hostileStream(t, task))
	if _, _, err := build(t, s, restore.Options{PID: 2}); err != nil {
		t.Errorf("fd 3: %v", err)
	}

	// 40 pipes hold 80 fds at once.
	task = hTask{pid: 3}
	for i := range 40 {
		task.fds = append(task.fds, hFD{fd: int32(3 + i), pipe: stdPipe(uint64(100 + i)), mode: rd})
	}
	refused(t, readStream(t, hostileStream(t, task)), restore.Options{PID: 3}, restore.ErrFDLimit, "restoring 40 fds holds about 80 at once", "RLIMIT_NOFILE")

	// Fds 57 to 61 pass Build, but putting them in place takes the
	// status pipe and five moves above fd 61.
	task = hTask{pid: 4}
	for i := range 5 {
		task.fds = append(task.fds, hFD{fd: int32(57 + i), pipe: stdPipe(uint64(200+i), format.Buffer{Data: []byte("y")}), mode: rd})
	}
	set := mustBuild(t, readStream(t, hostileStream(t, task)), restore.Options{PID: 4})
	_, err := set.Start([]string{"true"}, nil)
	if !errors.Is(err, restore.ErrFDLimit) || !strings.Contains(err.Error(), "takes fd numbers up to 68") {
		t.Errorf("start with fds 57 to 61: %v", err)
	}
	var ee *exec.Error
	if errors.As(err, &ee) {
		t.Errorf("start with fds 57 to 61: an exec error, as if the command were at fault: %v", err)
	}

	// Below all that, a restore works.
	task = hTask{pid: 5}
	for i := range 5 {
		task.fds = append(task.fds, hFD{fd: int32(50 + i), pipe: stdPipe(uint64(300+i), format.Buffer{Data: []byte("z")}), mode: rd})
	}
	rep := runReporter(t, mustBuild(t, readStream(t, hostileStream(t, task)), restore.Options{PID: 5}))
	for i := range 5 {
		checkData(t, rep.byFD()[50+i], []byte("z"), nil, true)
	}
}

// TestKernelMemory: 17,000 1-byte packets would take a page each, 66
// MiB for 17 KB: refused by default with the figure, before anything is
// created; so are 70 pipes of 256 of them, restored when allowed. Full
// pipes of as many bytes are restored by default.
func TestKernelMemory(t *testing.T) {
	if os.Getpagesize() != 4096 {
		t.Skip("figures for 4 KiB pages")
	}
	p := stdPipe(9, packets(17000, []byte("x"))...)
	p.status = format.StatusPacket
	s := readStream(t, hostileStream(t, hTask{pid: 1, fds: []hFD{{fd: 0, pipe: p, mode: rd}}}))
	for _, opt := range []restore.Options{{PID: 1}, {Ino: 9}, {Ino: 9, MaxKernelMemory: 60 << 20}} {
		err := refused(t, s, opt, restore.ErrKernelMemory, "1 pipe would pin about 67.7 MiB of kernel memory", "17000 pages for 17000 bytes", "rings of 32768 slots")
		var km *restore.KernelMemoryError
		if !errors.As(err, &km) || km.Need < 17000*4096 || km.Most != 9 {
			t.Errorf("%+v: %#v", opt, km)
		}
	}
	// 70 pipes of 256 1-byte packets: 70 MiB of pages for 17920 bytes.
	task := hTask{pid: 3}
	for i := range 70 {
		p := &hPipe{ino: uint64(2000 + i), status: format.StatusPacket, capacity: 1 << 20, maxUsage: 256, pageSize: 4096, bufs: packets(256, []byte("x"))}
		task.fds = append(task.fds, hFD{fd: int32(3 + i), pipe: p, mode: rd})
	}
	s = readStream(t, hostileStream(t, task))
	refused(t, s, restore.Options{PID: 3}, restore.ErrKernelMemory, "70 pipes would pin about 70.7 MiB", "17920 pages for 17920 bytes", "more than the 64 MiB allowed")
	if os.Geteuid() != 0 {
		t.Skip("70 MiB of pipes is above an unprivileged user's pipe-user-pages-soft")
	}
	set, warnings, err := build(t, s, restore.Options{PID: 3, MaxKernelMemory: 71 << 20})
	if err != nil || len(warnings) != 0 {
		t.Fatalf("%v, warnings %q", err, warnings)
	}
	rep := runReporter(t, set)
	for i := range 70 {
		if r := rep.byFD()[3+i]; len(r.Reads) != 256 || len(r.Data) != 256 {
			t.Errorf("fd %d: %d reads, %d bytes", 3+i, len(r.Reads), len(r.Data))
		}
	}

	// 66 full pipes of 1 MiB: 66.7 MiB, pages and rings, for 66 MiB.
	page := bytes.Repeat([]byte("p"), 4096)
	task = hTask{pid: 2}
	for i := range 66 {
		bufs := make([]format.Buffer, 256)
		for j := range bufs {
			bufs[j] = format.Buffer{Flags: format.BufCanMerge, Data: page}
		}
		task.fds = append(task.fds, hFD{fd: int32(3 + i), pipe: &hPipe{ino: uint64(1000 + i), capacity: 1 << 20, maxUsage: 256, pageSize: 4096, bufs: bufs}, mode: rd})
	}
	s = readStream(t, hostileStream(t, task))
	if _, _, err := build(t, s, restore.Options{PID: 2}); err != nil {
		t.Errorf("66 full pipes: %v", err)
	}
	refused(t, s, restore.Options{PID: 2, MaxKernelMemory: 64 << 20}, restore.ErrKernelMemory, "66 pipes would pin about 66.7 MiB", "more than the 64 MiB allowed")
	if _, _, err := build(t, s, restore.Options{PID: 2, MaxKernelMemory: -1}); err != nil {
		t.Errorf("66 full pipes, no bound: %v", err)
	}
}

// TestCapacityWrap: capacities are computed without wrapping: 2^20 slots
// of 4 KiB (2^32 bytes, which F_SETPIPE_SZ would read as 0 and make a
// page) are more than a pipe can have; a capacity that contradicts
// max_usage x page_size is refused.
func TestCapacityWrap(t *testing.T) {
	for _, c := range []struct {
		p     *hPipe
		words []string
	}{
		{&hPipe{ino: 5, maxUsage: 1 << 20, pageSize: 4096}, []string{"pipe 5: a capacity of 4294967296 bytes", "more than a Linux pipe can have"}},
		{&hPipe{ino: 5, capacity: 8192, maxUsage: 1 << 20, pageSize: 4096}, []string{"capacity 8192 bytes, but max_usage 1048576 x page_size 4096 is 4294967296", "contradicts"}},
		{&hPipe{ino: 5, capacity: 65536, maxUsage: 2, pageSize: 4096}, []string{"capacity 65536 bytes, but max_usage 2 x page_size 4096 is 8192"}},
		{&hPipe{ino: 5, maxUsage: 1<<19 + 1, pageSize: 4096}, []string{"a capacity of 2147487744 bytes"}},
	} {
		c.p.bufs = []format.Buffer{{Data: []byte("x")}}
		s := readStream(t, hostileStream(t, hTask{pid: 1, fds: []hFD{{fd: 0, pipe: c.p, mode: rd}}}))
		for _, opt := range []restore.Options{{PID: 1}, {Ino: 5}} {
			refused(t, s, opt, restore.ErrCapacity, c.words...)
		}
	}
	// Consistent, or known one way only: restored at that capacity.
	for _, p := range []*hPipe{
		{ino: 6, capacity: 8192, maxUsage: 2, pageSize: 4096},
		{ino: 6, maxUsage: 2, pageSize: 4096},
		{ino: 6, capacity: 8192},
	} {
		p.bufs = []format.Buffer{{Data: []byte("x")}}
		s := readStream(t, hostileStream(t, hTask{pid: 1, fds: []hFD{{fd: 0, pipe: p, mode: rd}}}))
		rep := runReporter(t, mustBuild(t, s, restore.Options{Ino: 6}))
		checkFD(t, rep, 0, unix.O_RDONLY, 8192)
	}
}

// TestDuplicateFD: an fd twice in one task section is no stream; in two
// sections of one process (threads with fd tables of their own) as two
// open files, it is refused; as the same open file, given once.
func TestDuplicateFD(t *testing.T) {
	a, b := stdPipe(1, format.Buffer{Data: []byte("a")}), stdPipe(2, format.Buffer{Data: []byte("b")})
	_, err := snapshot.Read(bytes.NewReader(hostileStream(t, hTask{pid: 1, fds: []hFD{{fd: 3, pipe: a, mode: rd}, {fd: 3, pipe: b, mode: rd}}})), snapshot.Options{Data: true})
	if !errors.Is(err, format.ErrMalformed) || !strings.Contains(err.Error(), "fd_descriptor 3 a second time") {
		t.Errorf("fd 3 twice in a section: %v", err)
	}
	s := readStream(t, hostileStream(t,
		hTask{pid: 1, tid: 1, fds: []hFD{{fd: 3, pipe: a, mode: rd}}},
		hTask{pid: 1, tid: 2, fds: []hFD{{fd: 3, pipe: b, mode: rd}}}))
	refused(t, s, restore.Options{PID: 1}, nil, "pid 1 fd 3: the snapshot gives it twice, as two open files")

	s = readStream(t, hostileStream(t,
		hTask{pid: 1, tid: 1, fds: []hFD{{fd: 3, file: "a", pipe: a, mode: rd}, {fd: 4, pipe: b, mode: rd}}},
		hTask{pid: 1, tid: 2, fds: []hFD{{fd: 3, file: "a", pipe: a, mode: rd}}}))
	set := mustBuild(t, s, restore.Options{PID: 1})
	if fds := set.FDs(); len(fds) != 2 || fds[0].Num != 3 || fds[1].Num != 4 {
		t.Errorf("fds %+v", fds)
	}
}

// TestWarningSummary: 1,000 empty packets make one warning line, with
// the count and the first few; so do 40 torn pipes.
func TestWarningSummary(t *testing.T) {
	p := stdPipe(9, append(packets(1000, nil), format.Buffer{Flags: format.BufPacket, Data: []byte("x")})...)
	p.status = format.StatusPacket
	s := readStream(t, hostileStream(t, hTask{pid: 1, fds: []hFD{{fd: 0, pipe: p, mode: rd}}}))
	set, warnings, err := build(t, s, restore.Options{Ino: 9})
	if err != nil {
		t.Fatal(err)
	}
	if want := "pipe 9: 1000 buffers are empty packets (buffers 0, 1, 2 and 997 more): a pipe cannot hold one again"; len(warnings) != 1 || warnings[0] != want {
		t.Errorf("warnings %q, want %q", warnings, want)
	}
	checkData(t, runReporter(t, set).byFD()[0], []byte("x"), []int{1}, true)

	// One is said as it always was.
	p = stdPipe(9, packets(1, nil)...)
	s = readStream(t, hostileStream(t, hTask{pid: 1, fds: []hFD{{fd: 0, pipe: p, mode: rd}}}))
	if _, warnings, err = build(t, s, restore.Options{Ino: 9}); err != nil || len(warnings) != 1 || warnings[0] != "pipe 9: buffer 0 is an empty packet: a pipe cannot hold one again" {
		t.Errorf("%v, warnings %q", err, warnings)
	}

	task := hTask{pid: 2}
	for i := range 40 {
		p := stdPipe(uint64(100+i), format.Buffer{Data: []byte("t")})
		p.status = format.StatusTorn
		task.fds = append(task.fds, hFD{fd: int32(3 + i), pipe: p, mode: rd})
	}
	s = readStream(t, hostileStream(t, task))
	if _, warnings, err = build(t, s, restore.Options{PID: 2, AllowPartial: true}); err != nil {
		t.Fatal(err)
	}
	want := "pipe 100 is torn: restoring the 1 bytes captured; they may not be all it held (the same for 39 more pipes: 101, 102, 103 and 36 more)"
	if len(warnings) != 1 || warnings[0] != want {
		t.Errorf("warnings %q, want %q", warnings, want)
	}
}

// TestMixedPackets: packet flags on some buffers only: the flagged ones
// are packets, a packet after plain bytes too (the kernel would merge a
// write into their page), the others plain bytes, with a warning that
// says so.
func TestMixedPackets(t *testing.T) {
	p := stdPipe(9,
		format.Buffer{Flags: format.BufPacket, Data: []byte("a")},
		format.Buffer{Data: []byte("b")},
		format.Buffer{Data: []byte("c")},
		format.Buffer{Flags: format.BufPacket, Data: []byte("d")},
		format.Buffer{Flags: format.BufPacket, Data: []byte("e")})
	p.status = format.StatusPacket
	s := readStream(t, hostileStream(t, hTask{pid: 1, fds: []hFD{{fd: 0, pipe: p, mode: rd}}}))
	set, warnings, err := build(t, s, restore.Options{Ino: 9})
	if err != nil {
		t.Fatal(err)
	}
	if len(warnings) != 1 || !strings.Contains(warnings[0], "pipe 9: packets (O_DIRECT) in 3 of its buffers, plain bytes in 2: each packet is restored as one") {
		t.Errorf("warnings %q", warnings)
	}
	// A read stops at the end of a packet, not of a plain buffer: as the
	// kernel would have read the captured pipe.
	checkData(t, runReporter(t, set).byFD()[0], []byte("abcde"), []int{1, 3, 1}, true)

	// All flagged, or none (the tee capture's): no warning.
	for _, flags := range []uint32{format.BufPacket, 0} {
		p := stdPipe(9, format.Buffer{Flags: flags, Data: []byte("a")}, format.Buffer{Flags: flags, Data: []byte("b")})
		p.status = format.StatusPacket
		s := readStream(t, hostileStream(t, hTask{pid: 1, fds: []hFD{{fd: 0, pipe: p, mode: rd}}}))
		set, warnings, err := build(t, s, restore.Options{Ino: 9})
		if err != nil || len(warnings) != 0 {
			t.Errorf("flags %#x: %v, warnings %q", flags, err, warnings)
			continue
		}
		checkData(t, runReporter(t, set).byFD()[0], []byte("ab"), []int{1, 1}, true)
	}
}
