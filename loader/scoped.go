package loader

import (
	"errors"
	"fmt"

	"golang.org/x/sys/unix"

	"github.com/pipesnap/pipesnap/internal/taskiter"
)

// walk runs the dump program over the given processes: one scoped walk
// per process where the kernel allows it, so the cost follows their fds,
// not the machine's; else (or with no targets) one walk over every task,
// the program keeping only the targets.
func (it *pipeIter) walk(targets []uint32, fn func([]byte) error) error {
	if len(targets) == 0 || it.unscoped {
		return it.readFDs(it.dump, fn)
	}
	for _, tgid := range targets {
		l, err := taskiter.AttachProcess(it.objs.DumpPipes, tgid)
		switch {
		case errors.Is(err, taskiter.ErrNoScope):
			it.unscoped = true
			return it.readFDs(it.dump, fn)
		case errors.Is(err, unix.ESRCH) || errors.Is(err, unix.ENOENT):
			continue // exited: the caller notes it
		case err != nil:
			return fmt.Errorf("attaching iterator to pid %d: %w", tgid, err)
		}
		err = it.readFDs(l, fn)
		l.Close()
		if err != nil {
			return err
		}
	}
	return nil
}
