// Command pipesnap-tee writes a pipesnap snapshot through the user-space
// tee path (package teecap): the same stream as `pipesnap dump`, for
// machines without BPF, and the peer `make bench` measures against.
//
//	pipesnap-tee (-pid PID ... | -all) [-freeze] [-o FILE|-]
//
// FILE is created with mode 0600 (or truncated); - (the default) is
// stdout. Usage errors exit with status 2, other failures with 1.
package main

import (
	"bufio"
	"context"
	"flag"
	"fmt"
	"io"
	"os"
	"os/signal"
	"strconv"
	"strings"
	"syscall"

	"golang.org/x/sys/unix"

	"github.com/pipesnap/pipesnap/loader"
	"github.com/pipesnap/pipesnap/teecap"
)

type pidList []int

func (p *pidList) String() string { return fmt.Sprint(*p) }

func (p *pidList) Set(s string) error {
	for _, f := range strings.FieldsFunc(s, func(r rune) bool { return r == ',' || r == ' ' }) {
		n, err := strconv.Atoi(f)
		if err != nil {
			return fmt.Errorf("pid %q: not a number", f)
		}
		*p = append(*p, n)
	}
	return nil
}

func main() {
	var pids pidList
	fs := flag.NewFlagSet("pipesnap-tee", flag.ContinueOnError)
	fs.Var(&pids, "pid", "dump the pipes of process `PID` (repeat, or a comma-separated list)")
	all := fs.Bool("all", false, "dump every process's pipes (except this one)")
	freeze := fs.Bool("freeze", false, "stop the processes (SIGSTOP) during the capture")
	out := fs.String("o", "-", "write the snapshot to `FILE` (- for stdout)")
	quiet := fs.Bool("q", false, "print nothing on success")
	if err := fs.Parse(os.Args[1:]); err != nil {
		os.Exit(2)
	}
	if *all == (len(pids) > 0) || fs.NArg() > 0 {
		fmt.Fprintln(os.Stderr, "pipesnap-tee: need either -pid PID (one or more) or -all, and no arguments")
		os.Exit(2)
	}
	opts := loader.Options{PIDs: pids, All: *all, Freeze: *freeze}
	if _, err := teecap.Preflight(opts); err != nil {
		fmt.Fprintf(os.Stderr, "pipesnap-tee: %v\n", err)
		os.Exit(2)
	}
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()

	var w io.Writer
	var f *os.File
	if *out == "-" {
		f = os.Stdout
		opts.ExcludeIno = pipeIno(f)
	} else {
		var err error
		if f, err = os.OpenFile(*out, os.O_WRONLY|os.O_CREATE|os.O_TRUNC, 0o600); err != nil {
			fmt.Fprintf(os.Stderr, "pipesnap-tee: %v\n", err)
			os.Exit(1)
		}
	}
	w = f
	report, err := teecap.Dump(ctx, w, opts)
	if err == nil && f != os.Stdout {
		err = f.Close()
	}
	if err != nil {
		fmt.Fprintf(os.Stderr, "pipesnap-tee: %v\n", err)
		os.Exit(1)
	}
	if *quiet {
		return
	}
	e := bufio.NewWriter(os.Stderr)
	defer e.Flush()
	for _, p := range report.Problems {
		fmt.Fprintf(e, "pipesnap-tee: %s\n", p)
	}
	fmt.Fprintf(e, "pipesnap-tee: wrote %s: %d processes, %d fds, %d pipes, %d bytes; %d incomplete\n",
		*out, report.Tasks, report.FDs, report.Pipes, report.Bytes, len(report.Problems))
}

// pipeIno is the inode of f if f is a pipe or FIFO, else 0.
func pipeIno(f *os.File) uint64 {
	var st unix.Stat_t
	if err := unix.Fstat(int(f.Fd()), &st); err != nil || st.Mode&unix.S_IFMT != unix.S_IFIFO {
		return 0
	}
	return st.Ino
}
