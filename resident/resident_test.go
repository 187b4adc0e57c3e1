package resident_test

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"reflect"
	"regexp"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/pipesnap/pipesnap/format"
	"github.com/pipesnap/pipesnap/internal/pipetest"
	"github.com/pipesnap/pipesnap/resident"
)

// dialEnv makes this test binary a client that dials the socket it
// names, asks for a sample of its own process and prints what happened.
const dialEnv = "PIPESNAP_TEST_DIAL"

func TestMain(m *testing.M) {
	if path := os.Getenv(dialEnv); path != "" {
		os.Exit(dialAndSample(path))
	}
	pipetest.Main(m)
}

func dialAndSample(path string) int {
	c, err := resident.Dial(path)
	if err != nil {
		fmt.Println("dial:", err)
		return 0
	}
	defer c.Close()
	smp, err := c.Sample(context.Background(), resident.Request{PIDs: []int{os.Getpid()}})
	if err != nil {
		fmt.Println("sample:", err)
		return 0
	}
	fmt.Printf("sample: ok, gone %v\n", smp.Gone)
	return 0
}

var (
	buildOnce sync.Once
	binPath   string
	buildErr  error
)

// pipesnap builds cmd/pipesnap once per test run.
func pipesnap(t *testing.T) string {
	t.Helper()
	buildOnce.Do(func() {
		dir, err := os.MkdirTemp("", "pipesnap-resident")
		if err != nil {
			buildErr = err
			return
		}
		binPath = filepath.Join(dir, "pipesnap")
		out, err := exec.Command("go", "build", "-o", binPath, "../cmd/pipesnap").CombinedOutput()
		if err != nil {
			buildErr = fmt.Errorf("%v: %s", err, out)
		}
	})
	if buildErr != nil {
		t.Fatal(buildErr)
	}
	return binPath
}

// server is a running `pipesnap serve` answering on its socket.
type server struct {
	sock string
	mu   sync.Mutex
	log  bytes.Buffer
}

func (s *server) logText() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.log.String()
}

// startServe starts `pipesnap serve --socket SOCK` and waits until it
// answers; it is stopped with SIGTERM when the test ends, which must
// remove the socket.
func startServe(t *testing.T, sock string) *server {
	t.Helper()
	cmd := exec.Command(pipesnap(t), "serve", "--listen", "127.0.0.1:0", "--socket", sock)
	stderr, err := cmd.StderrPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	s := &server{sock: sock}
	t.Logf("serve pid %d", cmd.Process.Pid)
	ready := make(chan bool, 1)
	go func() {
		sc := bufio.NewScanner(stderr)
		for sc.Scan() {
			s.mu.Lock()
			s.log.WriteString(sc.Text() + "\n")
			s.mu.Unlock()
			if strings.Contains(sc.Text(), "answering the CLI") {
				ready <- true
			}
			if strings.Contains(sc.Text(), "not answering the CLI") {
				ready <- false
			}
		}
		close(ready)
	}()
	t.Cleanup(func() {
		cmd.Process.Signal(syscall.SIGTERM)
		cmd.Wait()
		if _, err := os.Lstat(sock); err == nil {
			t.Errorf("serve left its socket %s", sock)
		}
	})
	select {
	case ok := <-ready:
		if !ok {
			t.Fatalf("serve does not answer on %s: %s", sock, s.logText())
		}
	case <-time.After(30 * time.Second):
		t.Fatalf("serve did not start answering: %s", s.logText())
	}
	return s
}

// answered counts the requests of op the server answered.
func (s *server) answered(op string) int {
	return strings.Count(s.logText(), "msg=answered op="+op+" ")
}

// answeredBy is answered once it reaches want, or after 5 s: the serve
// logs a request after its last frame went out, so its client may have
// exited before the line is written.
func (s *server) answeredBy(op string, want int) int {
	deadline := time.Now().Add(5 * time.Second)
	for {
		n := s.answered(op)
		if n >= want || time.Now().After(deadline) {
			return n
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// run runs pipesnap with PIPESNAP_SOCKET=sock (off: the direct path).
func run(t *testing.T, sock string, args ...string) (stdout, stderr string, code int) {
	t.Helper()
	cmd := exec.Command(pipesnap(t), args...)
	cmd.Env = append(os.Environ(), resident.EnvSocket+"="+sock)
	var o, e bytes.Buffer
	cmd.Stdout, cmd.Stderr = &o, &e
	err := cmd.Run()
	var ee *exec.ExitError
	if errors.As(err, &ee) {
		code = ee.ExitCode()
	} else if err != nil {
		t.Fatal(err)
	}
	return o.String(), e.String(), code
}

func sockPath(t *testing.T) string {
	return filepath.Join(t.TempDir(), "pipesnap.sock")
}

func pidList(pids []int) string {
	var s []string
	for _, p := range pids {
		s = append(s, strconv.Itoa(p))
	}
	return strings.Join(s, ",")
}

// records decodes a snapshot into its records, with what differs between
// two dumps of unchanged pipes taken at different times set to zero: the
// header's time, how long each task has waited, and which thread of the
// test's own process sits in epoll_wait.
func records(t *testing.T, path string) (format.Header, []any) {
	t.Helper()
	f, err := os.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	d, err := format.NewDecoder(f)
	if err != nil {
		t.Fatal(err)
	}
	hdr := d.Header()
	hdr.Time = time.Time{}
	var out []any
	for {
		rec, err := d.Next()
		if errors.Is(err, io.EOF) {
			return hdr, out
		}
		if err != nil {
			t.Fatalf("%s: %v", path, err)
		}
		v := reflect.Indirect(reflect.ValueOf(rec))
		cp := reflect.New(v.Type()).Elem()
		cp.Set(v)
		if w := cp.FieldByName("Wait"); w.IsValid() && w.Type() == reflect.TypeOf(time.Duration(0)) {
			w.SetInt(0)
		}
		// This test's own process waits on the holders' stdio in epoll
		// through whichever of its threads the Go runtime has there.
		if pid := cp.FieldByName("PID"); pid.IsValid() && pid.Uint() == uint64(os.Getpid()) {
			if tid := cp.FieldByName("TID"); tid.IsValid() {
				tid.SetUint(0)
			}
		}
		if b := cp.FieldByName("Data"); b.IsValid() && b.Type() == reflect.TypeOf([]byte(nil)) {
			b.SetBytes(bytes.Clone(b.Bytes())) // the decoder reuses its buffers
		}
		out = append(out, cp.Interface())
	}
}

// TestDumpSameAsDirect: a dump through a resident serve is the direct
// path's stream, record for record (the times apart), for every kind of
// pipe state and for a pipeline with a blocked writer (its waits are
// recorded), and the file is the client's (mode 0600, no --force, no
// file on failure).
func TestDumpSameAsDirect(t *testing.T) {
	pipetest.RequireBPF(t)
	k := pipetest.StartKinds(t)
	full := pipetest.StartStuck(t, "full")
	pids := pidList(append(append([]int{}, k.PIDs...), full.PIDs()...))
	s := startServe(t, sockPath(t))
	dir := t.TempDir()
	res, direct := filepath.Join(dir, "resident.snap"), filepath.Join(dir, "direct.snap")

	_, errOut, code := run(t, s.sock, "dump", "--pid", pids, "-o", res)
	if code != 0 {
		t.Fatalf("resident dump: status %d, %s", code, errOut)
	}
	if n := s.answeredBy("dump", 1); n != 1 {
		t.Fatalf("serve answered %d dumps, want 1: %s", n, s.logText())
	}
	_, directErr, code := run(t, resident.Off, "dump", "--pid", pids, "-o", direct)
	if code != 0 {
		t.Fatalf("direct dump: status %d, %s", code, directErr)
	}
	if strings.ReplaceAll(errOut, res, "FILE") != strings.ReplaceAll(directErr, direct, "FILE") {
		t.Errorf("stderr differs:\nresident: %q\ndirect:   %q", errOut, directErr)
	}
	rh, rrecs := records(t, res)
	dh, drecs := records(t, direct)
	if !reflect.DeepEqual(rh, dh) {
		t.Errorf("headers differ:\nresident %+v\ndirect   %+v", rh, dh)
	}
	if len(rrecs) != len(drecs) {
		for i := range min(len(rrecs), len(drecs)) {
			if !reflect.DeepEqual(rrecs[i], drecs[i]) {
				t.Errorf("first difference, record %d:\nresident %+v\ndirect   %+v", i, rrecs[i], drecs[i])
				break
			}
		}
		t.Errorf("last direct record: %+v", drecs[len(drecs)-1])
		t.Fatalf("%d records through serve, %d direct", len(rrecs), len(drecs))
	}
	waits := 0
	for i := range rrecs {
		if !reflect.DeepEqual(rrecs[i], drecs[i]) {
			t.Errorf("record %d differs:\nresident %+v\ndirect   %+v", i, rrecs[i], drecs[i])
		}
		if _, ok := rrecs[i].(format.Waiter); ok {
			waits++
		}
	}
	if waits == 0 {
		t.Errorf("no waiter recorded: yes blocked writing should be")
	}
	if fi, err := os.Stat(res); err != nil || fi.Mode().Perm() != 0o600 {
		t.Errorf("resident snapshot: %v, mode %v, want 0600", err, fi.Mode())
	}
	// The output rules stay the client's: no --force, no replacing.
	_, errOut, code = run(t, s.sock, "dump", "--pid", pids, "-o", res)
	if code != 2 || !strings.Contains(errOut, "use --force") {
		t.Errorf("dump over an existing file: status %d, %q; want 2 and --force", code, errOut)
	}
	// Straight to a pipe of the client's: left out, as in the direct path.
	cmd := exec.Command(pipesnap(t), "dump", "--pid", pids, "-o", "-")
	cmd.Env = append(os.Environ(), resident.EnvSocket+"="+s.sock)
	var stream, e bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stream, &e
	if err := cmd.Run(); err != nil {
		t.Fatalf("dump -o -: %v, %s", err, e.String())
	}
	if _, err := format.NewDecoder(bytes.NewReader(stream.Bytes())); err != nil || stream.Len() < 1000 {
		t.Errorf("dump -o - through serve: %d bytes, %v", stream.Len(), err)
	}
	if n := s.answeredBy("dump", 2); n != 2 {
		t.Errorf("serve answered %d dumps, want 2 (the refused one never reached it)", n)
	}
}

// TestLsSameAsDirect: ls --json through a resident serve is the direct
// path's (the walk's own times apart), and diagnose says the same.
func TestLsSameAsDirect(t *testing.T) {
	pipetest.RequireBPF(t)
	full := pipetest.StartStuck(t, "full")
	pids := pidList(full.PIDs())
	s := startServe(t, sockPath(t))
	norm := func(out string) any {
		var v any
		if err := json.Unmarshal([]byte(out), &v); err != nil {
			t.Fatalf("%v: %s", err, out)
		}
		return dropTimes(v)
	}
	res, errOut, code := run(t, s.sock, "ls", "--json", "--pid", pids)
	if code != 0 {
		t.Fatalf("ls: %d, %s", code, errOut)
	}
	direct, errOut, code := run(t, resident.Off, "ls", "--json", "--pid", pids)
	if code != 0 {
		t.Fatalf("ls --direct: %d, %s", code, errOut)
	}
	if a, b := norm(res), norm(direct); !reflect.DeepEqual(a, b) {
		t.Errorf("ls --json differs:\nresident %s\ndirect   %s", res, direct)
	}
	if n := s.answeredBy("sample", 1); n != 1 {
		t.Fatalf("serve answered %d samples, want 1", n)
	}
	// The table, likewise, but for the WAIT column.
	resT, _, _ := run(t, s.sock, "ls", "--pid", pids)
	dirT, _, _ := run(t, resident.Off, "ls", "--pid", pids)
	if a, b := waitless(resT), waitless(dirT); a != b {
		t.Errorf("ls differs:\nresident\n%s\ndirect\n%s", resT, dirT)
	}
	resD, _, codeR := run(t, s.sock, "diagnose", "--settle", "200ms", "--min-wait", "0s", "--pid", pids)
	dirD, _, codeD := run(t, resident.Off, "diagnose", "--settle", "200ms", "--min-wait", "0s", "--pid", pids)
	if codeR != codeD || codeR != 1 || waitless(resD) != waitless(dirD) {
		t.Errorf("diagnose differs: status %d vs %d\nresident\n%s\ndirect\n%s", codeR, codeD, resD, dirD)
	}
	if n := s.answeredBy("sample", 4); n != 4 {
		t.Errorf("serve answered %d samples, want 4 (diagnose walks twice)", n)
	}
	// --direct never asks.
	run(t, s.sock, "ls", "--direct", "--pid", pids)
	if n := s.answeredBy("sample", 5); n != 4 {
		t.Errorf("ls --direct went to serve")
	}
}

// dropTimes removes what changes from one walk to the next of a stuck
// pipeline: how long tasks have waited, the walk's duration.
func dropTimes(v any) any {
	switch x := v.(type) {
	case map[string]any:
		for k := range x {
			if strings.HasSuffix(k, "_ns") || strings.HasSuffix(k, "_us") {
				delete(x, k)
				continue
			}
			x[k] = dropTimes(x[k])
		}
	case []any:
		for i := range x {
			x[i] = dropTimes(x[i])
		}
	}
	return v
}

// durations are how pipesnap prints how long something waited.
var durations = regexp.MustCompile(`\b\d+(\.\d+)?(ns|µs|ms|s|m|h|d)\b`)

// waitless is an ls table or a diagnosis without its durations (and the
// column widths they make).
func waitless(text string) string {
	var out []string
	for _, l := range strings.Split(durations.ReplaceAllString(text, "T"), "\n") {
		out = append(out, strings.Join(strings.Fields(l), " "))
	}
	return strings.Join(out, "\n")
}

// TestUnprivilegedPeerDeclined: a client that could not take the direct
// path is declined even when it can open the socket (here: nobody with
// CAP_DAC_OVERRIDE, past the 0700 directory and the 0600 socket), and so
// is root of another user namespace (every capability, but only there);
// nobody with CAP_BPF and CAP_PERFMON is answered.
func TestUnprivilegedPeerDeclined(t *testing.T) {
	pipetest.RequireBPF(t)
	s := startServe(t, sockPath(t))
	client := publicCopy(t, os.Args[0])
	const capDacOverride, capPerfmon, capBPF = 1, 38, 39 // linux/capability.h
	for _, tc := range []struct {
		name string
		attr *syscall.SysProcAttr
		want string
	}{
		{"nobody, CAP_DAC_OVERRIDE", &syscall.SysProcAttr{
			Credential:  &syscall.Credential{Uid: 65534, Gid: 65534},
			AmbientCaps: []uintptr{capDacOverride},
		}, "lacks CAP_SYS_ADMIN, or CAP_BPF and CAP_PERFMON"},
		{"nobody, CAP_DAC_OVERRIDE, CAP_BPF only", &syscall.SysProcAttr{
			Credential:  &syscall.Credential{Uid: 65534, Gid: 65534},
			AmbientCaps: []uintptr{capDacOverride, capBPF},
		}, "lacks CAP_SYS_ADMIN, or CAP_BPF and CAP_PERFMON"},
		{"root of a new user namespace", &syscall.SysProcAttr{
			Cloneflags:  syscall.CLONE_NEWUSER,
			UidMappings: []syscall.SysProcIDMap{{ContainerID: 0, HostID: 0, Size: 1}},
			GidMappings: []syscall.SysProcIDMap{{ContainerID: 0, HostID: 0, Size: 1}},
		}, "in another user namespace"},
		{"nobody, CAP_DAC_OVERRIDE, CAP_BPF, CAP_PERFMON", &syscall.SysProcAttr{
			Credential:  &syscall.Credential{Uid: 65534, Gid: 65534},
			AmbientCaps: []uintptr{capDacOverride, capBPF, capPerfmon},
		}, "sample: ok"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			before := strings.Count(s.logText(), "declined a client")
			cmd := exec.Command(client)
			cmd.Env = append(os.Environ(), dialEnv+"="+s.sock)
			cmd.SysProcAttr = tc.attr
			out, err := cmd.CombinedOutput()
			if err != nil {
				t.Fatalf("client: %v: %s", err, out)
			}
			if !strings.Contains(string(out), tc.want) {
				t.Fatalf("client said %q, want %q", out, tc.want)
			}
			// The serve's log arrives on its own: wait for the line a
			// refusal writes (a while longer when none is due).
			declined := 0
			for deadline := time.Now().Add(2 * time.Second); time.Now().Before(deadline); time.Sleep(20 * time.Millisecond) {
				if declined = strings.Count(s.logText(), "declined a client") - before; declined > 0 {
					break
				}
			}
			if ok := tc.want == "sample: ok"; ok != (declined == 0) {
				t.Errorf("serve declined %d clients; log:\n%s", declined, s.logText())
			}
			if tc.want != "sample: ok" && !strings.Contains(string(out), resident.ErrDeclined.Error()) {
				t.Errorf("client error %q does not say it was declined", out)
			}
		})
	}
}

// TestStaleSocket: a socket nobody answers on sends the CLI down the
// direct path, and a new serve replaces it.
func TestStaleSocket(t *testing.T) {
	pipetest.RequireBPF(t)
	full := pipetest.StartStuck(t, "full")
	sock := sockPath(t)
	ln, err := net.ListenUnix("unix", &net.UnixAddr{Name: sock, Net: "unix"})
	if err != nil {
		t.Fatal(err)
	}
	ln.SetUnlinkOnClose(false)
	ln.Close()
	if _, err := os.Lstat(sock); err != nil {
		t.Fatalf("no stale socket: %v", err)
	}
	out := filepath.Join(t.TempDir(), "stale.snap")
	start := time.Now()
	_, errOut, code := run(t, sock, "dump", "--pid", pidList(full.PIDs()), "-o", out)
	if code != 0 {
		t.Fatalf("dump past a stale socket: %d, %s", code, errOut)
	}
	if _, recs := records(t, out); len(recs) == 0 {
		t.Errorf("empty snapshot")
	}
	t.Logf("dump past a stale socket: %v", time.Since(start))

	s := startServe(t, sock)
	if _, errOut, code = run(t, sock, "ls", "--pid", pidList(full.PIDs())); code != 0 || s.answeredBy("sample", 1) != 1 {
		t.Errorf("ls after serve replaced the stale socket: %d, %s; log %s", code, errOut, s.logText())
	}
	// A second serve finds the socket answered and serves metrics alone.
	cmd := exec.Command(pipesnap(t), "serve", "--listen", "127.0.0.1:0", "--socket", sock)
	stderr, _ := cmd.StderrPipe()
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	defer func() { cmd.Process.Signal(syscall.SIGTERM); cmd.Wait() }()
	sc := bufio.NewScanner(stderr)
	said := ""
	for sc.Scan() {
		said += sc.Text() + "\n"
		if strings.Contains(sc.Text(), "serving metrics") {
			break
		}
	}
	if !strings.Contains(said, "not answering the CLI") || !strings.Contains(said, resident.ErrInUse.Error()) {
		t.Errorf("second serve: %s", said)
	}
}

// TestListenRefusesOpenDirectory: the socket's directory must be the
// server's alone.
func TestListenRefusesOpenDirectory(t *testing.T) {
	dir := t.TempDir()
	if err := os.Chmod(dir, 0o777); err != nil {
		t.Fatal(err)
	}
	_, err := resident.Listen(filepath.Join(dir, "s.sock"))
	if err == nil || !strings.Contains(err.Error(), "writable by group or others") {
		t.Errorf("Listen in a 0777 directory: %v", err)
	}
	ln, err := resident.Listen(filepath.Join(t.TempDir(), "new", "s.sock"))
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	fi, err := os.Stat(filepath.Dir(ln.Addr().String()))
	if err != nil || fi.Mode().Perm() != 0o700 {
		t.Errorf("made directory: %v, %v", err, fi.Mode())
	}
	fi, err = os.Stat(ln.Addr().String())
	if err != nil || fi.Mode().Perm() != 0o600 {
		t.Errorf("socket: %v, %v", err, fi.Mode())
	}
}

// publicCopy copies the executable at path where nobody can run it: a
// directory of mode 0755 (the test binary's own is root's, 0700).
func publicCopy(t *testing.T, path string) string {
	t.Helper()
	dir, err := os.MkdirTemp("", "pipesnap-resident-client")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(dir) })
	if err := os.Chmod(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	dst := filepath.Join(dir, "client")
	if err := os.WriteFile(dst, b, 0o755); err != nil {
		t.Fatal(err)
	}
	return dst
}
