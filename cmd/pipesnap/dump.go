package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"os/signal"
	"os/user"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/cilium/ebpf/btf"
	"github.com/urfave/cli/v2"
	"golang.org/x/sys/unix"

	"github.com/pipesnap/pipesnap/container"
	"github.com/pipesnap/pipesnap/diagnose"
	"github.com/pipesnap/pipesnap/internal/dumpstream"
	"github.com/pipesnap/pipesnap/internal/termsafe"
	"github.com/pipesnap/pipesnap/loader"
	"github.com/pipesnap/pipesnap/output"
	"github.com/pipesnap/pipesnap/pipemodel"
	"github.com/pipesnap/pipesnap/pipestate"
	"github.com/pipesnap/pipesnap/resident"
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
	direct bool // never ask a resident serve
	// allowForeign names the output that may be another user's FIFO or
	// character device (it must be the -o FILE).
	allowForeign string
	// procRoot is where the host's /proc is (--host-proc), for the
	// processes' containers.
	procRoot string
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

The snapshot goes to a new file, mode 0600 (pipe contents can be
secrets), that has no name until it is complete and synced (O_TMPFILE,
then linked as FILE): an interrupted or killed dump, even by SIGKILL,
leaves no file. On a filesystem without O_TMPFILE it is written under a
hidden temporary name next to FILE and renamed. An existing regular
file is replaced only with --force. An existing character device or
FIFO (-o /dev/null, a FIFO a consumer reads), or a symbolic link to
one, is written in place, without --force; a FIFO must already have its
reader. That device or FIFO must belong to root or to the user running
pipesnap (the real uid; under sudo, also SUDO_UID): one of another
user's would hand that user the snapshot, so it is refused, with status
1 and nothing written, unless --allow-foreign-output names it (the same
path as -o). A block device, a socket or a directory is refused, and so
is a symbolic link to anything but a character device or FIFO.
With --freeze, a process to stop must not read the output pipe or FIFO.

` + residentHelp + `

Through the serve, it writes the stream and this process the file: the
output rules above are this process's. --method tee never asks it.`,
		Flags: append([]cli.Flag{
			pidFlag("dump the pipes of process `PID` (repeat, or list them: 1,2 or \"1 2\")"),
			&cli.BoolFlag{Name: "all", Aliases: []string{"a"}, Usage: "dump every process's pipes (except pipesnap's own)"},
			&cli.StringFlag{Name: "output", Aliases: []string{"o"}, Usage: "write the snapshot to `FILE` (- for stdout)"},
			&cli.BoolFlag{Name: "strict", Usage: "exit with status 1 if any pipe is torn or incomplete"},
			&cli.BoolFlag{Name: "force", Aliases: []string{"f"}, Usage: "replace FILE if it is an existing regular file"},
			&cli.StringFlag{Name: "method", Value: "auto", Usage: "`METHOD` of capture: bpf (kernel iterator), tee (user space: pidfd_getfd + tee(2); sees no buffer offsets, ring or counts), or auto (bpf, falling back to tee when BPF is unavailable)"},
			&cli.BoolFlag{Name: "freeze", Usage: "stop the processes during the kernel walk for a consistent cut (cgroup freezer, or SIGSTOP); they are resumed before the output is written, and on every way out, even if pipesnap is killed"},
			directFlag(),
			&cli.StringFlag{Name: "allow-foreign-output", Usage: "let the snapshot go to `FILE`, the -o FILE, even though it is a FIFO or character device (or a link to one) owned by a user other than root or the one running pipesnap"},
		}, containerFlags()...),
		OnUsageError: onUsageError,
		Action: func(c *cli.Context) error {
			if c.NArg() > 0 {
				return usagef("dump takes no arguments (got %q): use --pid or --all, and -o FILE", c.Args().First())
			}
			sel, err := selectionOf(c, "dump")
			if err != nil {
				return err
			}
			if !sel.sel.Empty() {
				r := newResolver(sel.procRoot)
				err := sel.resolve(c.Context, r)
				r.Close()
				if err != nil {
					return err
				}
			}
			cfg := dumpConfig{pids: sel.pids, all: c.Bool("all"), output: c.String("output"), strict: c.Bool("strict"), force: c.Bool("force"), freeze: c.Bool("freeze"), method: c.String("method"), allowForeign: c.String("allow-foreign-output"), procRoot: sel.procRoot, direct: c.Bool("direct")}
			switch {
			case cfg.all && len(cfg.pids) > 0:
				return usagef("dump: --pid and --all exclude each other: give one")
			case !cfg.all && len(cfg.pids) == 0:
				return usagef("dump needs --pid PID (one or more) or --all")
			case cfg.output == "":
				return usagef("dump needs -o FILE (- for stdout)")
			case cfg.method != "auto" && cfg.method != "bpf" && cfg.method != "tee":
				return usagef("--method is bpf, tee or auto, not %q", cfg.method)
			case cfg.freeze && cfg.all:
				return usagef("--freeze takes --pid: freezing every process would stop the machine")
			case cfg.allowForeign != "" && (cfg.output == "-" || filepath.Clean(cfg.allowForeign) != filepath.Clean(cfg.output)):
				return usagef("--allow-foreign-output %s does not name the output (-o %s): it allows only the FILE it names", cfg.allowForeign, cfg.output)
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
	// A resident serve has the programs loaded: it writes the same
	// stream without a load of this process's own.
	var rc *resident.Client
	if method == "bpf" && !cfg.direct {
		rc = dialResident()
	}
	if rc != nil {
		defer rc.Close()
	} else {
		// One decoding of the kernel's BTF for both loads.
		opts.BTF = btf.NewCache()
		opts.AwaitWaits = startWaits(ctx, cfg, opts.BTF)
	}
	var report *loader.Report
	write := func(w io.Writer) error {
		var err error
		if method == "bpf" && rc != nil {
			req := resident.Request{PIDs: cfg.pids, All: cfg.all, ExcludeIno: opts.ExcludeIno, Freeze: cfg.freeze, ProcRoot: cfg.procRoot}
			res, wrote, err := residentDump(ctx, rc, w, req)
			if err == nil {
				for _, w := range res.Warnings {
					fmt.Fprintf(os.Stderr, "pipesnap: note: %s\n", termsafe.String(w))
				}
				report = res.Report
				return nil
			}
			if wrote || ctx.Err() != nil || errors.Is(err, loader.ErrNoProcess) {
				return err
			}
			// Nothing written (the serve could not start the dump): the
			// direct path may still take it.
			rc = nil
			opts.BTF = btf.NewCache()
			opts.AwaitWaits = startWaits(ctx, cfg, opts.BTF)
		}
		if method == "bpf" {
			cw := &output.Counter{W: w}
			report, err = loader.Dump(ctx, cw, opts)
			if err == nil || cfg.method != "auto" || cw.N > 0 || ctx.Err() != nil {
				return err
			}
			// Nothing written yet (loading or calibration failed): the
			// user-space method can still take the snapshot.
			fmt.Fprintf(os.Stderr, "pipesnap: the BPF method failed (%v): using the tee method\n", err)
		}
		if opts.AwaitWaits != nil {
			opts.Waits, opts.AwaitWaits = opts.AwaitWaits(), nil
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
	if cfg.output == "-" {
		opts.ExcludeIno = pipeIno(os.Stdout)
		if err = check(os.Stdout); err == nil {
			err = write(os.Stdout)
		}
	} else {
		err = writeOutput(ctx, cfg, &opts, check, write)
	}
	if err != nil {
		return dumpError(err)
	}

	for _, p := range report.Problems {
		fmt.Fprintf(os.Stderr, "pipesnap: %s\n", termsafe.String(p.String()))
	}
	for _, n := range report.Notes {
		fmt.Fprintf(os.Stderr, "pipesnap: note: %s\n", termsafe.String(n))
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

// residentDump has the resident serve dump into w: straight into its
// file when it is one (the output's fd goes to the serve), else through
// the socket. wrote says whether anything reached w.
func residentDump(ctx context.Context, rc *resident.Client, w io.Writer, req resident.Request) (*resident.DumpResult, bool, error) {
	var f *os.File
	switch o := w.(type) {
	case *os.File:
		f = o
	case interface{ File() *os.File }:
		f = o.File()
	}
	if f == nil {
		cw := &output.Counter{W: w}
		res, err := rc.Dump(ctx, cw, req)
		return res, cw.N > 0, err
	}
	res, err := rc.DumpTo(ctx, f, req)
	var re *resident.Error
	wrote := err != nil && (!errors.As(err, &re) || re.Wrote > 0)
	return res, wrote, err
}

// startWaits runs waitsOf on another goroutine, on another core while
// the dump loads, calibrates and walks (the two walks cost about the
// same): the dump takes the result after its walk, or, frozen, before.
func startWaits(ctx context.Context, cfg dumpConfig, kernel *btf.Cache) func() *dumpstream.Waits {
	type result struct {
		w   *dumpstream.Waits
		err error
	}
	done := make(chan result, 1)
	go func() {
		w, err := waitsOf(ctx, cfg, kernel)
		done <- result{w, err}
	}()
	return sync.OnceValue(func() *dumpstream.Waits {
		r := <-done
		if r.err != nil {
			fmt.Fprintf(os.Stderr, "pipesnap: note: %v\n", r.err)
		}
		return r.w
	})
}

// waitsOf takes a live sample of who waits on what, and of the
// processes' containers, alongside the capture, for the snapshot to
// record (diagnose FILE reads it): nil, and why, when the pipe-state
// walk cannot run.
func waitsOf(ctx context.Context, cfg dumpConfig, kernel *btf.Cache) (*dumpstream.Waits, error) {
	return sampleWaits(ctx, cfg.procRoot, func() (*pipemodel.Sample, error) {
		s, err := pipestate.Open(pipestate.Options{PIDs: cfg.pids, All: cfg.all, BTF: kernel})
		if err != nil {
			return nil, err
		}
		defer s.Close()
		return s.Sample(ctx)
	})
}

// sampleWaits makes the waits of a dump from a sample, with the
// containers of its processes (procRoot: --host-proc), or says why they
// are not recorded.
func sampleWaits(ctx context.Context, procRoot string, sample func() (*pipemodel.Sample, error)) (*dumpstream.Waits, error) {
	smp, err := sample()
	if err != nil {
		return nil, fmt.Errorf("who waits on what is not recorded: %w", err)
	}
	r := newResolver(procRoot)
	defer r.Close()
	container.Annotate(ctx, smp, r, procRoot)
	// Only the waiters are written: the rest of a large sample would be
	// held through the whole walk.
	dumpstream.Trim(smp)
	return &dumpstream.Waits{Sample: smp, Wchan: diagnose.Procfs{}.Wchan}, nil
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

// dumpError says what to do about the failures people meet first.
func dumpError(err error) error {
	switch {
	case errors.Is(err, loader.ErrNoProcess):
		return err // a process that does not exist: exit 1, not a usage error
	case errors.Is(err, loader.ErrPermission):
		return err
	case errors.Is(err, context.Canceled):
		return errors.New("dump interrupted: no snapshot written")
	}
	return fmt.Errorf("dump: %w", err)
}

// writeOutput delivers the stream to cfg.output through package output,
// which refuses what it must not write over or hand to another user. A
// FIFO that is itself one of the dumped pipes is left out, as stdout is.
// A FIFO stays in the runtime poller, so that a write blocked on a reader
// that does not read ends when ctx is cancelled.
func writeOutput(ctx context.Context, cfg dumpConfig, opts *loader.Options, check func(*os.File) error, write func(io.Writer) error) error {
	out, err := output.Open(cfg.output, output.Options{Replace: cfg.force, AllowForeign: cfg.allowForeign != ""})
	if err != nil {
		return outputError(err)
	}
	defer out.Abort()
	f := out.File()
	opts.ExcludeIno = pipeIno(f)
	if err := check(f); err != nil {
		return err
	}
	// A deadline in the past wakes a blocked Write (pollable files only;
	// for others, such as /dev/null or a new file, it is not supported
	// and not needed).
	unblock := context.AfterFunc(ctx, func() { f.SetWriteDeadline(time.Unix(1, 0)) })
	defer unblock()
	if err := write(out); err != nil {
		if out.Kind() != output.KindFile && ctx.Err() != nil {
			return fmt.Errorf("writing %s: %w", cfg.output, ctx.Err())
		}
		return err
	}
	if err := out.Commit(); err != nil {
		return outputError(err)
	}
	return nil
}

// outputError words a refusal of package output: a usage error (status
// 2) for an output that is the wrong kind of file or exists, a failure
// (status 1) for another user's FIFO or device and for a FIFO nobody
// reads.
func outputError(err error) error {
	var e *output.Error
	if !errors.As(err, &e) {
		return err
	}
	switch {
	case errors.Is(err, output.ErrExists):
		return usagef("%s exists: use --force to replace it", e.Path)
	case errors.Is(err, output.ErrSymlink):
		return usagef("%s is a symbolic link: name the file it points to", e.Path)
	case errors.Is(err, output.ErrNoReader):
		return fmt.Errorf("FIFO %s has no reader: start the consumer first", e.Path)
	case errors.Is(err, output.ErrForeignOwner):
		what := fmt.Sprintf("%s is a %s", e.Path, e.Kind)
		if e.Target != "" {
			what = fmt.Sprintf("%s is a symbolic link to a %s (%s)", e.Path, e.Kind, termsafe.String(e.Target))
		}
		return fmt.Errorf("%s owned by %s, not by root or the user running pipesnap: refusing to hand the snapshot to another user (--allow-foreign-output %s allows it)",
			what, uidName(e.Owner), e.Path)
	case errors.Is(err, output.ErrKind):
		switch e.Kind {
		case output.KindDirectory:
			return usagef("%s is a directory: -o takes a file name", e.Path)
		case output.KindBlockDevice, output.KindSocket:
			return usagef("%s is a %s: refusing to write a snapshot over it", e.Path, e.Kind)
		}
		return usagef("%s is not a regular file, character device or FIFO: refusing to write a snapshot over it", e.Path)
	}
	return err
}

// uidName is "uid N (name)", or "uid N" for a uid with no name.
func uidName(uid int) string {
	if u, err := user.LookupId(strconv.Itoa(uid)); err == nil && u.Username != "" {
		return fmt.Sprintf("uid %d (%s)", uid, u.Username)
	}
	return fmt.Sprintf("uid %d", uid)
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
