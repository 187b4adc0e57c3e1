package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"os/signal"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/urfave/cli/v2"
	"golang.org/x/sys/unix"

	"github.com/pipesnap/pipesnap/diagnose"
	"github.com/pipesnap/pipesnap/internal/dumpstream"
	"github.com/pipesnap/pipesnap/loader"
	"github.com/pipesnap/pipesnap/pipestate"
	"github.com/pipesnap/pipesnap/teecap"
)

type dumpConfig struct {
	pids   []int
	all    bool
	output string
	strict bool
	force  bool
	freeze bool
	method string
}

func dumpCommand() *cli.Command {
	return &cli.Command{
		Name:      "dump",
		Usage:     "snapshot the pipes and FIFOs of processes into a file",
		ArgsUsage: " ",
		Description: `Walks the open files of the chosen processes in the kernel (a BPF
iterator), and for every pipe or FIFO records who holds which end and
the bytes in its buffers, without reading them out of the pipe and
without stopping anyone. A pipe shared by several fds or processes is
copied once. Needs root, or CAP_BPF and CAP_PERFMON, and a
kernel with BTF.

A pipe whose contents moved during every copy attempt is marked torn;
one that could not be fully read is marked incomplete. Both are listed
on stderr and kept in the snapshot with their flags. --freeze stops the
processes for the walk only, which makes every copy consistent: with the
cgroup v2 freezer where that has no side effect (the processes already
are alone in a cgroup, or no controller is enabled in the v2 hierarchy,
so moving them to a cgroup of pipesnap's changes nothing else), else
with SIGSTOP and SIGCONT. They are resumed on every way out, and a
process that was already stopped is left stopped.

The snapshot is written to a temporary file next to FILE, mode 0600
(pipe contents can be secrets), and renamed to FILE once complete. An
existing character device or FIFO (-o /dev/null, a FIFO a consumer
reads) is written in place instead, without --force; a FIFO must already
have its reader. A block device, a socket or a directory is refused, and
so is a symbolic link unless it leads to a character device or FIFO.
With --freeze, a process to stop must not read the output pipe or FIFO.`,
		Flags: []cli.Flag{
			&cli.IntSliceFlag{Name: "pid", Aliases: []string{"p"}, Usage: "dump the pipes of process `PID` (repeat for more)"},
			&cli.BoolFlag{Name: "all", Aliases: []string{"a"}, Usage: "dump every process's pipes (except pipesnap's own)"},
			&cli.StringFlag{Name: "output", Aliases: []string{"o"}, Usage: "write the snapshot to `FILE` (- for stdout)"},
			&cli.BoolFlag{Name: "strict", Usage: "exit with status 1 if any pipe is torn or incomplete"},
			&cli.BoolFlag{Name: "force", Aliases: []string{"f"}, Usage: "replace FILE if it is an existing regular file"},
			&cli.StringFlag{Name: "method", Value: "auto", Usage: "`METHOD` of capture: bpf (kernel iterator), tee (user space: pidfd_getfd + tee(2); sees no buffer offsets, ring or counts), or auto (bpf, falling back to tee when BPF is unavailable)"},
			&cli.BoolFlag{Name: "freeze", Usage: "stop the processes (SIGSTOP) during the walk for a consistent cut; they are resumed on every way out"},
		},
		OnUsageError: onUsageError,
		Action: func(c *cli.Context) error {
			if c.NArg() > 0 {
				return usagef("dump takes no arguments (got %q): use --pid or --all, and -o FILE", c.Args().First())
			}
			cfg := dumpConfig{pids: c.IntSlice("pid"), all: c.Bool("all"), output: c.String("output"), strict: c.Bool("strict"), force: c.Bool("force"), freeze: c.Bool("freeze"), method: c.String("method")}
			switch {
			case cfg.all == (len(cfg.pids) > 0):
				return usagef("dump needs either --pid PID (one or more) or --all")
			case cfg.output == "":
				return usagef("dump needs -o FILE (- for stdout)")
			case cfg.method != "auto" && cfg.method != "bpf" && cfg.method != "tee":
				return usagef("--method is bpf, tee or auto, not %q", cfg.method)
			case cfg.freeze && cfg.all:
				return usagef("--freeze takes --pid: freezing every process would stop the machine")
			}
			return runDump(cfg)
		},
	}
}

func runDump(cfg dumpConfig) error {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()

	opts := loader.Options{PIDs: cfg.pids, All: cfg.all, Freeze: cfg.freeze}
	// Say what is missing before creating any file.
	method, err := chooseMethod(cfg.method, opts)
	if err != nil {
		return dumpError(err)
	}
	opts.Waits = waitsOf(ctx, cfg)
	var report *loader.Report
	write := func(w io.Writer) error {
		var err error
		if method == "bpf" {
			cw := &countingWriter{w: w}
			report, err = loader.Dump(ctx, cw, opts)
			if err == nil || cfg.method != "auto" || cw.n > 0 || ctx.Err() != nil {
				return err
			}
			// Nothing written yet (loading or calibration failed): the
			// user-space method can still take the snapshot.
			fmt.Fprintf(os.Stderr, "pipesnap: the BPF method failed (%v): using the tee method\n", err)
		}
		report, err = teecap.Dump(ctx, w, opts)
		return err
	}
	// A process stopped by --freeze cannot drain the output: refuse when
	// one of them reads it, before anything is stopped.
	check := func(f *os.File) error {
		if !cfg.freeze {
			return nil
		}
		return checkFreezeReaders(cfg.pids, f)
	}
	switch special, serr := isSpecial(cfg.output); {
	case cfg.output == "-":
		opts.ExcludeIno = pipeIno(os.Stdout)
		if err = check(os.Stdout); err == nil {
			err = write(os.Stdout)
		}
	case serr != nil:
		err = serr
	case special:
		err = writeSpecial(ctx, cfg.output, &opts, check, write)
	default:
		err = writeAtomic(cfg.output, cfg.force, write)
	}
	if err != nil {
		return dumpError(err)
	}

	for _, p := range report.Problems {
		fmt.Fprintf(os.Stderr, "pipesnap: %s\n", p)
	}
	for _, n := range report.Notes {
		fmt.Fprintf(os.Stderr, "pipesnap: note: %s\n", n)
	}
	where := cfg.output
	if where == "-" {
		where = "stdout"
	}
	if cfg.freeze {
		fmt.Fprintf(os.Stderr, "pipesnap: processes stopped for %v, with the %s\n", report.Frozen.Round(time.Microsecond), report.FrozenHow)
	}
	fmt.Fprintf(os.Stderr, "pipesnap: wrote %s: %s, %s, %s, %s; %d torn or incomplete\n",
		where, count(report.Tasks, "process", "processes"), count(report.FDs, "fd", "fds"), count(report.Pipes, "pipe", "pipes"),
		count(int(report.Bytes), "byte", "bytes"), len(report.Problems))
	if cfg.strict && len(report.Problems) > 0 {
		return exitStatus{1, fmt.Errorf("%s torn or incomplete (--strict)", count(len(report.Problems), "pipe", "pipes"))}
	}
	return nil
}

// waitsOf takes a live sample of who waits on what, just before the
// capture, for the snapshot to record (diagnose FILE reads it): nil, and
// a note, when the pipe-state walk cannot run.
func waitsOf(ctx context.Context, cfg dumpConfig) *dumpstream.Waits {
	s, err := pipestate.Open(pipestate.Options{PIDs: cfg.pids, All: cfg.all})
	if err != nil {
		fmt.Fprintf(os.Stderr, "pipesnap: note: who waits on what is not recorded: %v\n", err)
		return nil
	}
	defer s.Close()
	smp, err := s.Sample(ctx)
	if err != nil {
		fmt.Fprintf(os.Stderr, "pipesnap: note: who waits on what is not recorded: %v\n", err)
		return nil
	}
	return &dumpstream.Waits{Sample: smp, Wchan: diagnose.Procfs{}.Wchan}
}

// chooseMethod checks what the method needs and, for auto, picks bpf
// where it can run and tee otherwise, saying so.
func chooseMethod(method string, opts loader.Options) (string, error) {
	if method == "tee" {
		_, err := teecap.Preflight(opts)
		return "tee", err
	}
	_, err := loader.Preflight(opts)
	if err == nil || method == "bpf" {
		return "bpf", err
	}
	if errors.Is(err, loader.ErrPermission) || errors.Is(err, loader.ErrNoBTF) || errors.Is(err, loader.ErrNotSupported) {
		if _, teeErr := teecap.Preflight(opts); teeErr != nil {
			return "", err
		}
		fmt.Fprintf(os.Stderr, "pipesnap: BPF unavailable (%v): using the tee method\n", err)
		return "tee", nil
	}
	return "", err
}

// countingWriter tells whether anything was written.
type countingWriter struct {
	w io.Writer
	n int64
}

func (c *countingWriter) Write(p []byte) (int, error) {
	n, err := c.w.Write(p)
	c.n += int64(n)
	return n, err
}

// dumpError says what to do about the failures people meet first.
func dumpError(err error) error {
	switch {
	case errors.Is(err, loader.ErrNoProcess):
		return usageError{err}
	case errors.Is(err, loader.ErrPermission):
		return err
	case errors.Is(err, context.Canceled):
		return errors.New("dump interrupted: no snapshot written")
	}
	return fmt.Errorf("dump: %w", err)
}

// writeAtomic writes a file through a 0600 temporary next to it, then
// links it into place: nothing half-written ever carries the final name,
// and an existing file is only replaced with force.
func writeAtomic(path string, force bool, write func(io.Writer) error) (err error) {
	if st, err := os.Lstat(path); err == nil {
		// Renaming over a link replaces the link (/dev/stdout), not the
		// file it points to.
		if st.Mode()&os.ModeSymlink != 0 {
			return usagef("%s is a symbolic link: name the file it points to", path)
		}
		if !force {
			return usagef("%s exists: use --force to replace it", path)
		}
	}
	f, err := os.CreateTemp(filepath.Dir(path), "."+filepath.Base(path)+".*.tmp")
	if err != nil {
		return fmt.Errorf("creating output: %w", err)
	}
	tmp := f.Name()
	defer func() {
		if err != nil {
			f.Close()
			os.Remove(tmp)
		}
	}()
	if err := f.Chmod(0o600); err != nil {
		return fmt.Errorf("creating output: %w", err)
	}
	if err := write(f); err != nil {
		return err
	}
	if err := f.Sync(); err != nil {
		return fmt.Errorf("writing %s: %w", path, err)
	}
	if err := f.Close(); err != nil {
		return fmt.Errorf("writing %s: %w", path, err)
	}
	if force {
		err = os.Rename(tmp, path)
	} else if err = os.Link(tmp, path); err == nil {
		err = os.Remove(tmp)
	}
	if err != nil {
		return fmt.Errorf("moving snapshot into place: %w", err)
	}
	return nil
}

// isSpecial tells whether path names an existing character device or
// FIFO: those are written in place (a temporary renamed over /dev/null
// would replace the device with a file). Other non-regular files are
// refused.
func isSpecial(path string) (bool, error) {
	if path == "-" {
		return false, nil
	}
	st, err := os.Stat(path)
	if err != nil {
		return false, nil // created by writeAtomic
	}
	return outputKind(path, st.Mode())
}

// outputKind classifies an existing -o target by its mode: true for a
// character device or FIFO (written in place), false for a regular file
// (replaced), a usage error for anything else.
func outputKind(path string, mode os.FileMode) (bool, error) {
	switch {
	case mode.IsRegular():
		return false, nil
	case mode&os.ModeCharDevice != 0, mode&os.ModeNamedPipe != 0:
		return true, nil
	case mode.IsDir():
		return false, usagef("%s is a directory: -o takes a file name", path)
	case mode&os.ModeDevice != 0:
		return false, usagef("%s is a block device: refusing to write a snapshot over it", path)
	case mode&os.ModeSocket != 0:
		return false, usagef("%s is a socket: refusing to write a snapshot over it", path)
	}
	return false, usagef("%s is not a regular file, character device or FIFO: refusing to write a snapshot over it", path)
}

// writeSpecial writes the stream straight into a character device or
// FIFO. A FIFO that is itself one of the dumped pipes is left out, as
// stdout is. A FIFO is opened without blocking: with no reader the open
// fails at once rather than waiting for one out of reach of Ctrl-C, and
// the file stays in the runtime poller, so that a write blocked on a
// reader that does not read ends when ctx is cancelled.
func writeSpecial(ctx context.Context, path string, opts *loader.Options, check func(*os.File) error, write func(io.Writer) error) error {
	flag := os.O_WRONLY
	if st, err := os.Stat(path); err == nil && st.Mode()&os.ModeNamedPipe != 0 {
		flag |= syscall.O_NONBLOCK
	}
	f, err := os.OpenFile(path, flag, 0)
	if errors.Is(err, unix.ENXIO) && flag&syscall.O_NONBLOCK != 0 {
		return fmt.Errorf("FIFO %s has no reader: start the consumer first", path)
	}
	if err != nil {
		return fmt.Errorf("opening output: %w", err)
	}
	opts.ExcludeIno = pipeIno(f)
	if err := check(f); err != nil {
		f.Close()
		return err
	}
	// A deadline in the past wakes a blocked Write (pollable files only;
	// for others, such as /dev/null, it is not supported and not needed).
	unblock := context.AfterFunc(ctx, func() { f.SetWriteDeadline(time.Unix(1, 0)) })
	defer unblock()
	if err := write(f); err != nil {
		f.Close()
		if ctx.Err() != nil {
			return fmt.Errorf("writing %s: %w", path, ctx.Err())
		}
		return err
	}
	if err := f.Close(); err != nil {
		return fmt.Errorf("writing %s: %w", path, err)
	}
	return nil
}

// pipeIno is the inode of f if f is a pipe or FIFO, else 0. It uses Stat,
// not Fd: Fd would take f out of the poller and disable its deadlines.
func pipeIno(f *os.File) uint64 {
	st, err := f.Stat()
	if err != nil || st.Mode()&os.ModeNamedPipe == 0 {
		return 0
	}
	return st.Sys().(*syscall.Stat_t).Ino
}

// checkFreezeReaders refuses --freeze when one of the processes to stop
// holds a read end of out, a pipe or FIFO: the dump would fill it and
// wait for a reader that is stopped.
func checkFreezeReaders(pids []int, out *os.File) error {
	ost, err := out.Stat()
	if err != nil || ost.Mode()&os.ModeNamedPipe == 0 {
		return nil
	}
	osys := ost.Sys().(*syscall.Stat_t)
	for _, pid := range pids {
		dir := fmt.Sprintf("/proc/%d/fd", pid)
		ents, err := os.ReadDir(dir)
		if err != nil {
			continue // gone or out of reach: the dump says so
		}
		for _, e := range ents {
			var st unix.Stat_t
			if unix.Stat(filepath.Join(dir, e.Name()), &st) != nil || st.Dev != osys.Dev || st.Ino != osys.Ino {
				continue
			}
			if !fdReads(pid, e.Name()) {
				continue
			}
			what, _ := os.Readlink(filepath.Join(dir, e.Name()))
			return usagef("--freeze: pid %d reads the output (%s); it would be stopped while pipesnap waits for it: write to a file", pid, what)
		}
	}
	return nil
}

// fdReads tells whether fd of pid is open for reading (O_RDONLY or
// O_RDWR), from the flags in /proc/PID/fdinfo/FD.
func fdReads(pid int, fd string) bool {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/fdinfo/%s", pid, fd))
	if err != nil {
		return false
	}
	for _, line := range strings.Split(string(b), "\n") {
		if v, ok := strings.CutPrefix(line, "flags:"); ok {
			flags, err := strconv.ParseUint(strings.TrimSpace(v), 8, 32)
			if err != nil {
				return false
			}
			acc := flags & unix.O_ACCMODE
			return acc == unix.O_RDONLY || acc == unix.O_RDWR
		}
	}
	return false
}
