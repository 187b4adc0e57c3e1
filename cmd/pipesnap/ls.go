package main

import (
	"context"
	"errors"
	"fmt"
	"os"
	"os/signal"
	"runtime/debug"
	"syscall"

	"github.com/pipesnap/pipesnap/pipemodel"

	"github.com/urfave/cli/v2"
	"golang.org/x/sys/unix"

	"github.com/pipesnap/pipesnap/pipestate"
)

func stateError(what string, err error) error {
	switch {
	case errors.Is(err, pipestate.ErrNoProcess):
		return err // a process that does not exist: exit 1, not a usage error
	case errors.Is(err, pipestate.ErrPermission):
		return err
	case errors.Is(err, context.Canceled):
		return fmt.Errorf("%s interrupted", what)
	}
	return fmt.Errorf("%s: %w", what, err)
}

// signalContext is cancelled by SIGINT or SIGTERM.
func signalContext() (context.Context, context.CancelFunc) {
	return signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
}

func lsCommand() *cli.Command {
	return &cli.Command{
		Name:      "ls",
		Usage:     "list pipes and FIFOs: fill, holders, and who is blocked on them right now",
		ArgsUsage: " ",
		Description: `Prints one row per pipe or FIFO: inode, kind, bytes queued / capacity
(with a fill bar on a terminal), the kernel's count of open read and
write ends (R, W), WAIT: how long the task waiting longest on it has
waited (since it last ran, from the kernel's scheduler timestamps), STATE:
the holders' process states (stopped, zombie, uninterruptible, running,
sleeping), CONTAINER: the containers of the holders (and POD,
namespace/pod, when one runs in a Kubernetes pod), the holders as
pid(comm):fd:end (pid as 24524/1 when its own pid namespace calls it
1), and a FIFO's path last.

A holder marked :blocked has a thread asleep in read or write on this
pipe right now; :waiting, a thread asleep in poll, select or epoll_wait
waiting for it to become readable (when it is empty) or writable (when
it is full): as good as blocked for a Go, Node or asyncio program;
:polling, a thread in poll/select with it for something else. :stopped,
:zombie and :uninterruptible mark a holder in that state. Blocked and
waiting come from the kernel: the pipe's wait queues are walked, a sleeper
compared with the holders' threads (any thread, not only the main one),
and an epoll entry followed to the epoll instance and to the thread
asleep in epoll_wait on it. A task blocked on the pipe in a process that
was not walked is shown as pid(comm):-:end:blocked. A task asleep in
open(2) of a FIFO, waiting for the other end to be opened, holds no fd
yet: it gets a row of its own, pid(comm):-:end:opening.

` + scopeHelp + `

--json prints one object: pipes (ino, kind, path, bytes, capacity, bufs,
readers, writers, unseen_readers, unseen_writers, moving, holders [pid,
comm, fd, end, blocked ("reading", "writing" or ""), blocked_tids,
waiting, via ("poll" or "epoll"), epoll_fd, waiting_tids, polling,
wait_ns, outside], waiters [queue, kind (blocked, poll, epoll, other),
pid, tid, comm, state, sleeping, events, epoll_fd, target_fd, wait_ns,
outside]), procs (pid, comm, state, threads, idle_ns, idle_known, tasks
[tid, state, idle_ns]), gone (requested pids that exited) and open_waits
(pid, tid, comm, state, end, ino, path, wait_ns, readers, writers).

` + residentHelp,
		Flags: append(scopeFlags(),
			&cli.BoolFlag{Name: "json", Usage: "print one JSON object instead of the table"},
			directFlag(),
		),
		OnUsageError: onUsageError,
		Action: func(c *cli.Context) error {
			// ls holds its rows (or, direct, the whole sample) until it
			// writes them: a lower GC target keeps its peak RSS near the
			// live heap (100,000 pipes via serve: 31 -> 27 MiB), unless
			// GOGC says otherwise.
			if _, set := os.LookupEnv("GOGC"); !set {
				debug.SetGCPercent(50)
			}
			s, err := openSampler(c, "ls", false, true)
			if err != nil {
				return err
			}
			defer s.Close()
			ctx, stop := signalContext()
			defer stop()
			// Laid out as the pipes come: a resident serve's sample is
			// never held whole.
			var j *stateJSONWriter
			var t *stateTable
			err = s.SampleEach(ctx, func(head *pipemodel.Sample) error {
				if c.Bool("json") {
					j = newStateJSON(os.Stdout, head)
				} else {
					t = newStateTable(head, tableOptions{bar: isTerminal(os.Stdout)})
				}
				return nil
			}, func(p *pipemodel.Pipe) error {
				if j != nil {
					return j.pipe(p)
				}
				t.pipe(p)
				return nil
			})
			if err != nil {
				return stateError("ls", err)
			}
			if j != nil {
				return j.finish()
			}
			return t.write(os.Stdout)
		},
	}
}

func isTerminal(f *os.File) bool {
	_, err := unix.IoctlGetTermios(int(f.Fd()), unix.TCGETS)
	return err == nil
}
