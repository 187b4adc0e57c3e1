package dumpstream

import (
	"errors"
	"fmt"
	"io"
	"os"

	"golang.org/x/sys/unix"
)

// StageMemory is how much of a frozen walk's stream is held in memory;
// the rest goes to an anonymous temporary file (O_TMPFILE in the
// temporary directory, mode 0600, never linked: nothing to clean up,
// and nothing another user can open by name).
var StageMemory = 16 << 20

// stage holds what a frozen walk writes until the processes run again.
type stage struct {
	limit int
	mem   []byte
	f     *os.File // once past limit: everything is here
	n     int64
}

func (st *stage) Write(p []byte) (int, error) {
	if st.f == nil && len(st.mem)+len(p) <= st.limit {
		st.mem = append(st.mem, p...)
		st.n += int64(len(p))
		return len(p), nil
	}
	if st.f == nil {
		f, err := tempFile(os.TempDir())
		if err != nil {
			return 0, fmt.Errorf("staging the frozen walk: %w", err)
		}
		st.f = f
		if _, err := f.Write(st.mem); err != nil {
			return 0, fmt.Errorf("staging the frozen walk in %s: %w", os.TempDir(), err)
		}
		st.mem = nil
	}
	n, err := st.f.Write(p)
	st.n += int64(n)
	if err != nil {
		return n, fmt.Errorf("staging the frozen walk in %s: %w", os.TempDir(), err)
	}
	return n, nil
}

// writeTo writes what was staged to w.
func (st *stage) writeTo(w io.Writer) error {
	if st.f == nil {
		_, err := w.Write(st.mem)
		st.mem = nil
		return err
	}
	if _, err := st.f.Seek(0, io.SeekStart); err != nil {
		return err
	}
	// Plain writes (no splice or sendfile): the output's deadlines, set
	// when the dump is interrupted, still apply.
	buf := make([]byte, 256<<10)
	_, err := io.CopyBuffer(struct{ io.Writer }{w}, struct{ io.Reader }{st.f}, buf)
	return err
}

// Close lets the staged bytes go.
func (st *stage) Close() error {
	st.mem = nil
	if st.f == nil {
		return nil
	}
	err := st.f.Close()
	st.f = nil
	return err
}

// tempFile is an unnamed file in dir, mode 0600: O_TMPFILE, or where the
// filesystem lacks it a file removed as soon as it is made.
func tempFile(dir string) (*os.File, error) {
	fd, err := unix.Open(dir, unix.O_TMPFILE|unix.O_RDWR|unix.O_CLOEXEC, 0o600)
	if err == nil {
		return os.NewFile(uintptr(fd), dir+"/(staged walk)"), nil
	}
	if !errors.Is(err, unix.EOPNOTSUPP) && !errors.Is(err, unix.EISDIR) && !errors.Is(err, unix.EINVAL) {
		return nil, err
	}
	f, err := os.CreateTemp(dir, ".pipesnap-stage-*")
	if err != nil {
		return nil, err
	}
	os.Remove(f.Name())
	return f, nil
}
