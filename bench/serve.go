package bench

import (
	"bufio"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"time"
)

// Serve is a resident `pipesnap serve` answering the CLI on a socket of
// its own, for the "via serve" columns.
type Serve struct {
	Socket string
	cmd    *exec.Cmd
	dir    string
}

// StartServe starts `bin serve --socket DIR/pipesnap.sock` (metrics on a
// free loopback port) and waits until it answers on the socket. It
// fails, saying so, when bin has no resident socket.
func StartServe(bin string) (*Serve, error) {
	dir, err := os.MkdirTemp("", "pipesnap-bench-serve")
	if err != nil {
		return nil, err
	}
	s := &Serve{Socket: filepath.Join(dir, "pipesnap.sock"), dir: dir}
	s.cmd = exec.Command(bin, "serve", "--listen", "127.0.0.1:0", "--socket", s.Socket)
	s.cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGTERM}
	stderr, err := s.cmd.StderrPipe()
	if err != nil {
		os.RemoveAll(dir)
		return nil, err
	}
	if err := s.cmd.Start(); err != nil {
		os.RemoveAll(dir)
		return nil, err
	}
	said := make(chan string, 1)
	go func() {
		sc := bufio.NewScanner(stderr)
		var all strings.Builder
		sent := false
		for sc.Scan() {
			all.WriteString(sc.Text() + "\n")
			if !sent && (strings.Contains(sc.Text(), "answering the CLI") || strings.Contains(sc.Text(), "serving metrics")) {
				said <- all.String()
				sent = true
			}
		}
		if !sent {
			said <- all.String()
		}
	}()
	select {
	case log := <-said:
		if !strings.Contains(log, "msg=\"answering the CLI\"") {
			s.Stop()
			return nil, fmt.Errorf("%s serve does not answer on a socket: %s", bin, strings.TrimSpace(log))
		}
	case <-time.After(60 * time.Second):
		s.Stop()
		return nil, fmt.Errorf("%s serve did not start in 60 s", bin)
	}
	return s, nil
}

// PeakRSS is the server's peak resident set so far (VmHWM), in bytes.
func (s *Serve) PeakRSS() int64 {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", s.cmd.Process.Pid))
	if err != nil {
		return 0
	}
	for _, line := range strings.Split(string(b), "\n") {
		if v, ok := strings.CutPrefix(line, "VmHWM:"); ok {
			kib, _ := strconv.ParseInt(strings.TrimSuffix(strings.TrimSpace(v), " kB"), 10, 64)
			return kib << 10
		}
	}
	return 0
}

// Stop ends the server (SIGTERM) and removes its socket's directory.
func (s *Serve) Stop() {
	s.cmd.Process.Signal(syscall.SIGTERM)
	s.cmd.Wait()
	os.RemoveAll(s.dir)
}
