package main

import (
	"errors"
	"fmt"
	"math"
	"os"
	"os/exec"
	"os/signal"
	"strconv"
	"strings"
	"syscall"

	"github.com/urfave/cli/v2"

	"github.com/pipesnap/pipesnap/internal/termsafe"
	"github.com/pipesnap/pipesnap/restore"
	"github.com/pipesnap/pipesnap/snapshot"
)

type restoreConfig struct {
	file         string
	argv         []string
	pid          uint32
	ino          uint64
	as           int
	root         string
	keepWriter   bool
	keepCloexec  bool
	keepStdio    bool
	allowPartial bool
	kernelMemory int64 // --allow-kernel-memory; 0: the default bound
}

func restoreCommand() *cli.Command {
	return &cli.Command{
		Name:      "restore",
		Usage:     "rebuild captured pipes and run a command with them",
		ArgsUsage: "FILE -- CMD [ARGS...]",
		Description: `Rebuilds pipes from a snapshot, with their capacity, their bytes and,
for packet-mode (O_DIRECT) pipes, their packet boundaries, then runs CMD
with them and exits with CMD's status (128+N if signal N killed it). The
stream is checked whole before anything is created. Everything after --
belongs to CMD: its flags are never read as pipesnap's.

--ino N feeds one pipe to CMD, read end only, as its stdin (or at fd K
with --as fd:K): CMD reads the captured bytes, then EOF, as it would
from "pipesnap cat --ino N FILE | CMD". Replay what a stuck consumer was
about to read into a debug build of it:

   pipesnap dump --pid 812 -o stuck.snap
   pipesnap inspect stuck.snap                      # find the pipe: 4711
   pipesnap restore --ino 4711 stuck.snap -- ./consumer-debug -v

--pid PID rebuilds every pipe fd the task held, at the same numbers, with
its flags (O_NONBLOCK, O_DIRECT) and ends; fds that shared an open file
share one again, and each pipe is created once. Fds that were
close-on-exec are dropped, as the exec of the task would drop them
(--keep-cloexec hands them over too). A pipe whose write end only other
tasks held gets no writer, so its reader sees EOF after the bytes; one
whose read end only other tasks held gets no reader (writes fail with
EPIPE); pipesnap warns about each of CMD's fds 0-2 that leads nowhere
so, and --keep-stdio leaves CMD's own stdin, stdout and stderr in place
instead of the task's pipes there. --keep-writer keeps a write end open in pipesnap until CMD
exits, for a reader that must not see EOF. CMD's fds 0, 1 and 2 that are
not restored are pipesnap's; no other fd of pipesnap's reaches it.

A FIFO is recreated with mkfifo (mode 0600) at its captured path under
--root DIR (required with --pid when the task held one; with --ino,
without --root, the bytes go through an anonymous pipe). Directories on
the way are created (mode 0700); a path that would leave DIR, through
".." or a symbolic link, is refused. The FIFO stays after CMD exits.

A pipe marked torn or incomplete is restored only with --allow-partial,
with a warning. A pipe larger than /proc/sys/fs/pipe-max-size needs root;
a capacity that the snapshot contradicts (capacity against max_usage x
page_size) or that no pipe can have (above 2 GiB) is refused.

Limits, checked before anything is created: the fd numbers CMD gets must
be below RLIMIT_NOFILE (the soft limit is raised to the hard one when a
number needs it, and CMD inherits it raised);
and the kernel memory the pipes pin (a page for every packet however
small, their bytes in pages, their rings) must be at most 64 MiB or twice
the bytes restored, whichever is more, unless --allow-kernel-memory SIZE
allows more (SIZE in bytes, or with K, M, G: 512M, 2G).

A packet pipe (O_DIRECT) is refilled packet by packet, each buffer that
carries the packet flag one packet; a packet pipe whose buffers carry no
flags (the tee capture's) one packet per buffer. Buffers without the flag
in a pipe with packets are written as plain bytes, with a warning: a
read(2) reads across them as it would have, and stops at the end of each
packet, one after them included. Empty packets cannot be restored (a
warning says how many). A warning repeated for many pipes comes as one
line, with a count and the first few.
SIGTERM and SIGHUP are passed on to CMD; Ctrl-C reaches it directly.`,
		Flags: []cli.Flag{
			&cli.Int64Flag{Name: "pid", Aliases: []string{"p"}, Usage: "rebuild every pipe fd process `PID` held"},
			&cli.Uint64Flag{Name: "ino", Aliases: []string{"i"}, Usage: "feed the pipe with inode `NUMBER` to CMD (see inspect)"},
			&cli.StringFlag{Name: "as", Value: "stdin", Usage: "with --ino: CMD gets the read end as `WHERE`: stdin, or fd:K for fd K"},
			&cli.StringFlag{Name: "root", Usage: "recreate FIFOs at their paths under `DIR`"},
			&cli.BoolFlag{Name: "keep-writer", Usage: "hold a write end open until CMD exits (its reader sees no EOF)"},
			&cli.BoolFlag{Name: "keep-cloexec", Usage: "with --pid: also hand over the fds that were close-on-exec"},
			&cli.BoolFlag{Name: "keep-stdio", Usage: "with --pid: leave CMD's own stdin, stdout and stderr in place, not the task's pipes at 0-2"},
			&cli.BoolFlag{Name: "allow-partial", Usage: "restore torn or incomplete pipes too"},
			&cli.StringFlag{Name: "allow-kernel-memory", Usage: "let the pipes pin up to `SIZE` of kernel memory (default: 64M or twice their bytes)"},
		},
		OnUsageError: onUsageError,
		Action: func(c *cli.Context) error {
			args := c.Args().Slice()
			switch {
			case len(args) == 0:
				return usagef("restore needs FILE, then -- and the command to run (restore --ino N FILE -- CMD)")
			case len(args) == 1 || args[1] != "--":
				return usagef("restore needs -- between FILE and the command (restore --ino N FILE -- CMD ARGS...)")
			case len(args) == 2:
				return usagef("restore needs a command after --")
			}
			cfg := restoreConfig{
				file: args[0], argv: args[2:], ino: c.Uint64("ino"), root: c.String("root"),
				keepWriter: c.Bool("keep-writer"), keepCloexec: c.Bool("keep-cloexec"), keepStdio: c.Bool("keep-stdio"), allowPartial: c.Bool("allow-partial"),
			}
			pid := c.Int64("pid")
			switch {
			case pid < 0 || pid > math.MaxUint32:
				return usagef("--pid %d: not a process id", pid)
			case pid == 0 && cfg.ino == 0:
				return usagef("restore needs --pid PID or --ino NUMBER (inspect lists them)")
			case pid != 0 && cfg.ino != 0:
				return usagef("restore takes --pid or --ino, not both")
			case pid != 0 && c.IsSet("as"):
				return usagef("--as goes with --ino: with --pid every fd keeps its number")
			case cfg.ino != 0 && cfg.keepCloexec:
				return usagef("--keep-cloexec goes with --pid")
			case cfg.ino != 0 && cfg.keepStdio:
				return usagef("--keep-stdio goes with --pid")
			}
			cfg.pid = uint32(pid)
			as, err := parseAs(c.String("as"))
			if err != nil {
				return err
			}
			cfg.as = as
			if c.IsSet("allow-kernel-memory") {
				n, err := parseSize(c.String("allow-kernel-memory"))
				if err != nil {
					return usagef("--allow-kernel-memory %q: %v", c.String("allow-kernel-memory"), err)
				}
				cfg.kernelMemory = n
			}
			code, err := runRestore(cfg)
			if err != nil {
				return err
			}
			if code != 0 {
				os.Exit(code) // CMD's status, and CMD said why if it wanted to
			}
			return nil
		},
	}
}

// parseAs reads --as: "stdin" or "fd:K".
func parseAs(s string) (int, error) {
	if s == "stdin" {
		return 0, nil
	}
	if k, ok := strings.CutPrefix(s, "fd:"); ok {
		if n, err := strconv.Atoi(k); err == nil && n >= 0 && n < 1<<20 {
			return n, nil
		}
	}
	return 0, usagef("--as %q: want stdin or fd:K with K a number from 0, e.g. fd:3", s)
}

// parseSize reads a size in bytes: a number, optionally with K, M, G or T
// (powers of 1024; KiB, MB and the like read alike).
func parseSize(s string) (int64, error) {
	num := strings.TrimRight(s, "KMGTkmgtiIbB")
	unit := strings.ToUpper(strings.TrimSuffix(strings.TrimSuffix(s[len(num):], "B"), "b"))
	shift, ok := map[string]uint{"": 0, "K": 10, "KI": 10, "M": 20, "MI": 20, "G": 30, "GI": 30, "T": 40, "TI": 40}[unit]
	n, err := strconv.ParseUint(num, 10, 63)
	if !ok || err != nil || n == 0 {
		return 0, errors.New("want a size above 0 in bytes, or with K, M, G or T: 512M, 2G")
	}
	if n > math.MaxInt64>>shift {
		return 0, errors.New("too large")
	}
	return int64(n << shift), nil
}

// runRestore rebuilds the pipes, runs the command and returns its exit
// status.
func runRestore(cfg restoreConfig) (int, error) {
	// Only what the restore needs: one pipe (no fds), or one process.
	opt := snapshot.Options{Data: true, Ino: cfg.ino, PipeOnly: cfg.ino != 0, PID: cfg.pid}
	s, err := readSnapshot(cfg.file, opt)
	if err != nil {
		return 0, err
	}
	set, err := restore.Build(s, restore.Options{
		PID: cfg.pid, Ino: cfg.ino, As: cfg.as, Root: cfg.root,
		KeepWriter: cfg.keepWriter, KeepCloexec: cfg.keepCloexec, KeepStdio: cfg.keepStdio, AllowPartial: cfg.allowPartial,
		MaxKernelMemory: cfg.kernelMemory,
		Warn:            func(msg string) { fmt.Fprintf(os.Stderr, "pipesnap: warning: %s\n", termsafe.String(msg)) },
	})
	if err != nil {
		return 0, restoreError(err)
	}
	defer set.Close()
	names := []string{"stdin", "stdout", "stderr"}
	for _, n := range nowhere(set, cfg) {
		if n.NoReader {
			fmt.Fprintf(os.Stderr, "pipesnap: warning: fd %d (%s) of %s is pipe %d's write end, whose reader only other tasks held: nothing reads it, a write gets EPIPE (SIGPIPE ends %s); --keep-stdio leaves %s's own 0-2 in place\n",
				n.Num, names[n.Num], cfg.argv[0], n.Ino, cfg.argv[0], cfg.argv[0])
		} else {
			fmt.Fprintf(os.Stderr, "pipesnap: note: fd %d (%s) of %s is pipe %d's read end: the captured bytes, then end of file (its writers were other tasks; --keep-writer holds one open, --keep-stdio leaves %s's own 0-2)\n",
				n.Num, names[n.Num], cfg.argv[0], n.Ino, cfg.argv[0])
		}
	}
	if k := set.KeptStdio(); len(k) > 0 {
		fmt.Fprintf(os.Stderr, "pipesnap: note: %s keeps its own %s (--keep-stdio): the task's pipes there are not restored\n", cfg.argv[0], fdList(k))
	}
	if d := set.Dropped(); len(d) > 0 {
		fmt.Fprintf(os.Stderr, "pipesnap: note: %s close-on-exec: %s does not get them, as after an exec (--keep-cloexec hands them over)\n",
			fdList(d), cfg.argv[0])
	}

	sigs := make(chan os.Signal, 4)
	signal.Notify(sigs, syscall.SIGINT, syscall.SIGQUIT, syscall.SIGTERM, syscall.SIGHUP)
	defer signal.Stop(sigs)
	proc, err := set.Start(cfg.argv, os.Environ())
	if errors.Is(err, restore.ErrFDLimit) {
		return 0, restoreError(err) // not the command's fault
	}
	if err != nil {
		return 0, startError(err)
	}
	stop := make(chan struct{})
	defer close(stop)
	go func() {
		for {
			select {
			case sig := <-sigs:
				// Ctrl-C and Ctrl-\ reach CMD from the terminal: pipesnap
				// only stays alive to report its status.
				if sig == syscall.SIGTERM || sig == syscall.SIGHUP {
					proc.Signal(sig.(syscall.Signal))
				}
			case <-stop:
				return
			}
		}
	}()
	code, err := proc.Wait()
	if err != nil {
		return 0, fmt.Errorf("restore: %w", err)
	}
	return code, nil
}

func fdList(fds []int) string {
	// A process with thousands of fds would make one unreadable line.
	const most = 10
	s := make([]string, 0, min(len(fds), most+1))
	for _, fd := range fds[:min(len(fds), most)] {
		s = append(s, strconv.Itoa(fd))
	}
	if len(fds) > most {
		s = append(s, fmt.Sprintf("and %d more", len(fds)-most))
	}
	if len(fds) == 1 {
		return "fd " + s[0] + " was"
	}
	return "fds " + strings.Join(s, ", ") + " were"
}

// nowhere lists CMD's fds 0-2 worth a word: with --pid only (with
// --ino, stdin giving the bytes then EOF is the point).
func nowhere(set *restore.Set, cfg restoreConfig) []restore.Stdio {
	if cfg.pid == 0 {
		return nil
	}
	return set.Nowhere()
}

// restoreError says what to do about what Build refused.
func restoreError(err error) error {
	switch {
	case errors.Is(err, restore.ErrNoTask), errors.Is(err, snapshot.ErrNoPipe):
		return usageError{fmt.Errorf("%w (inspect lists them)", err)}
	case errors.Is(err, restore.ErrNeedRoot):
		return usageError{fmt.Errorf("%w: give --root DIR", err)}
	case errors.Is(err, restore.ErrPartial):
		return fmt.Errorf("%w: restore it anyway with --allow-partial", err)
	case errors.Is(err, restore.ErrNotFit):
		return fmt.Errorf("%w: --allow-partial restores what fits", err)
	case errors.Is(err, restore.ErrEscape):
		return fmt.Errorf("%w: refusing to create it", err)
	case errors.Is(err, restore.ErrFDLimit):
		return fmt.Errorf("restore: %w: raise the hard limit (ulimit -Hn, prlimit --nofile) and run again", err)
	}
	var km *restore.KernelMemoryError
	if errors.As(err, &km) {
		return fmt.Errorf("restore: %w: --allow-kernel-memory %dM allows it", err, (km.Need+(1<<20)-1)>>20)
	}
	return fmt.Errorf("restore: %w", err)
}

// startError gives a command that could not run a shell's status: 127
// when it was not found, 126 when it could not be executed.
func startError(err error) error {
	if errors.Is(err, exec.ErrNotFound) || errors.Is(err, syscall.ENOENT) {
		return exitStatus{127, fmt.Errorf("%w: check the command after --", err)}
	}
	return exitStatus{126, fmt.Errorf("%w: check the command after --", err)}
}
