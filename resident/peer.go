package resident

import (
	"bufio"
	"errors"
	"fmt"
	"net"
	"os"
	"strconv"
	"strings"

	"golang.org/x/sys/unix"

	"github.com/pipesnap/pipesnap/internal/host"
)

// Peer is the process at the other end of a connection, as the kernel
// recorded it at connect(2).
type Peer struct {
	PID int
	UID uint32
}

// checkClient decides whether the server answers the client at the
// other end of c: it must be able to take the direct path itself. Its
// pid comes with a pidfd (SO_PEERPIDFD, Linux 6.5): after /proc/PID was
// read, the pidfd still naming a live process proves the pid was not
// given to another process meanwhile. Without SO_PEERPIDFD the client is
// declined (and takes the direct path). The error's code says whether
// it is a refusal or another namespace.
func checkClient(c *net.UnixConn) (Peer, *Error) {
	cred, pidfd, err := peerCred(c)
	if err != nil {
		return Peer{}, &Error{Code: CodeRefused, Msg: err.Error()}
	}
	defer unix.Close(pidfd)
	p := Peer{PID: int(cred.Pid), UID: cred.Uid}
	if p.PID <= 0 {
		return p, &Error{Code: CodeNamespace, Msg: "the client is outside the server's pid namespace"}
	}
	for _, ns := range []string{"user", "pid", "mnt"} {
		same, err := sameNamespace(p.PID, ns)
		if err != nil {
			return p, &Error{Code: CodeRefused, Msg: fmt.Sprintf("reading pid %d's %s namespace: %v", p.PID, ns, err)}
		}
		if !same {
			return p, &Error{Code: CodeNamespace, Msg: fmt.Sprintf("pid %d is in another %s namespace than the server", p.PID, ns)}
		}
	}
	eff, err := capEff(p.PID)
	if err != nil {
		return p, &Error{Code: CodeRefused, Msg: fmt.Sprintf("reading pid %d's capabilities: %v", p.PID, err)}
	}
	if err := unix.PidfdSendSignal(pidfd, 0, nil, 0); err != nil {
		return p, &Error{Code: CodeRefused, Msg: fmt.Sprintf("pid %d exited while it was checked", p.PID)}
	}
	if !host.BPFCaps(eff) {
		return p, &Error{Code: CodeRefused, Msg: fmt.Sprintf("pid %d (uid %d) lacks CAP_SYS_ADMIN, or CAP_BPF and CAP_PERFMON, which the direct path needs", p.PID, p.UID)}
	}
	return p, nil
}

// peerCred reads SO_PEERCRED and SO_PEERPIDFD of c.
func peerCred(c *net.UnixConn) (*unix.Ucred, int, error) {
	raw, err := c.SyscallConn()
	if err != nil {
		return nil, -1, err
	}
	var cred *unix.Ucred
	pidfd := -1
	var credErr, fdErr error
	if err := raw.Control(func(fd uintptr) {
		cred, credErr = unix.GetsockoptUcred(int(fd), unix.SOL_SOCKET, unix.SO_PEERCRED)
		if credErr == nil {
			pidfd, fdErr = unix.GetsockoptInt(int(fd), unix.SOL_SOCKET, unix.SO_PEERPIDFD)
		}
	}); err != nil {
		return nil, -1, err
	}
	switch {
	case credErr != nil:
		return nil, -1, fmt.Errorf("reading the client's credentials (SO_PEERCRED): %w", credErr)
	case fdErr != nil:
		return nil, -1, fmt.Errorf("the kernel gives no pidfd of the client (SO_PEERPIDFD, Linux 6.5): %w", fdErr)
	}
	return cred, pidfd, nil
}

// sameNamespace tells whether pid is in the server's namespace of kind ns.
func sameNamespace(pid int, ns string) (bool, error) {
	mine, err := os.Readlink("/proc/self/ns/" + ns)
	if err != nil {
		return false, err
	}
	theirs, err := os.Readlink(fmt.Sprintf("/proc/%d/ns/%s", pid, ns))
	if err != nil {
		return false, err
	}
	return mine == theirs, nil
}

// capEff is the effective capability set of pid (CapEff of its status).
func capEff(pid int) (uint64, error) {
	f, err := os.Open(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		return 0, err
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		if v, ok := strings.CutPrefix(sc.Text(), "CapEff:"); ok {
			return strconv.ParseUint(strings.TrimSpace(v), 16, 64)
		}
	}
	if err := sc.Err(); err != nil {
		return 0, err
	}
	return 0, errors.New("no CapEff line")
}

// checkServer decides whether a client trusts the server at the other
// end of c, listening at path: the socket and the server process must be
// root's or the client's own user's, or another user could hand it a
// made-up snapshot.
func checkServer(c *net.UnixConn, path string) error {
	var st unix.Stat_t
	if err := unix.Stat(path, &st); err != nil {
		return err
	}
	me := uint32(os.Geteuid())
	if st.Uid != 0 && st.Uid != me {
		return fmt.Errorf("%s belongs to uid %d, not root or uid %d", path, st.Uid, me)
	}
	raw, err := c.SyscallConn()
	if err != nil {
		return err
	}
	var cred *unix.Ucred
	var credErr error
	if err := raw.Control(func(fd uintptr) {
		cred, credErr = unix.GetsockoptUcred(int(fd), unix.SOL_SOCKET, unix.SO_PEERCRED)
	}); err != nil {
		return err
	}
	if credErr != nil {
		return fmt.Errorf("reading the server's credentials: %w", credErr)
	}
	if cred.Uid != 0 && cred.Uid != me {
		return fmt.Errorf("the server at %s runs as uid %d, not root or uid %d", path, cred.Uid, me)
	}
	return nil
}
