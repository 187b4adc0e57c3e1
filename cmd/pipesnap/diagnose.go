package main

import (
	"encoding/json"
	"fmt"
	"io"
	"os"
	"slices"
	"strings"
	"time"

	"github.com/urfave/cli/v2"

	"github.com/pipesnap/pipesnap/diagnose"
	"github.com/pipesnap/pipesnap/internal/termsafe"
	"github.com/pipesnap/pipesnap/pipemodel"
)

func diagnoseCommand() *cli.Command {
	return &cli.Command{
		Name:      "diagnose",
		Usage:     "say where pipelines are stuck and why; exit status 1 when something is",
		ArgsUsage: "[FILE]",
		Description: `Groups processes connected by pipes into chains (a shell pipeline is one),
draws them in the order data flows, and says in plain words where each is
stuck, who the culprit is, and for how long.

A pipe is stuck when it did not move while watched and, for at least
--min-wait (default 3s):
  - a writer waits for room (blocked in write, or in poll/select/epoll
    for the pipe to become writable) and its reader does not read;
  - bytes are queued and the reader has not run;
  - a reader waits on an empty pipe whose writer is stopped (SIGSTOP, a
    debugger) or stuck in uninterruptible sleep;
  - a reader waits on an empty pipe whose only write end left is its own
    (the writer exited: end of file never comes);
  - bytes sit in a pipe with no reader left (they can never be read);
  - a task waits in open(2) of a FIFO nobody opens from the other end.
The culprit is the stage that explains it (a reader that is itself
blocked writing further down passes the stall on); when it is not among
the processes given with --pid, pipesnap finds who holds the other end
and names it. A reader waiting on an empty pipe whose writer is alive and
waiting itself (an idle daemon, tail -f | grep) is idle, not stuck
(--verbose lists those); an empty pipe with no reader is a warning. How
long comes from the kernel: the time since each task last ran.

The pipes are walked twice, --settle apart (default 500ms), and a pipe
whose ring moved in between is left out; while a wait looks like a stall
but is younger than --min-wait, pipesnap keeps looking until it is old
enough or moves. --settle 0 judges one walk. pipesnap's own stdin, stdout
and stderr pipes are left out.

With FILE, diagnoses a snapshot (pipesnap dump) the same way, from the
states, waits and wait queues it recorded: no settle, waits as long as
they were when it was taken.

` + scopeHelp + `

Exit status: 0 when nothing is stuck, 1 when something is (or on
failure), 2 on a usage error. --json prints one object: stuck, chains
(procs and stages in flow order, pipes, stuck, stuck_at, findings,
summary), findings (kind, category stall/idle/warning, ino, bytes,
capacity, readers, writers, waiting and other_end and culprits as tasks
with pid, tid, comm, end, via, epoll_fd, fds, state, wait_ns, wchan,
stack, threads, blocked_on, outside; for_ns, for, message), moving,
considered, left_out and min_wait_ns.

` + residentHelp + `
A FILE is read by this process.`,
		Flags: append(scopeFlags(),
			&cli.BoolFlag{Name: "json", Usage: "print one JSON object instead of text"},
			&cli.DurationFlag{Name: "settle", Value: 500 * time.Millisecond, Usage: "walk again after `DURATION` and leave out what moved (0: one walk)"},
			&cli.DurationFlag{Name: "min-wait", Value: diagnose.DefaultMinWait, Usage: "a wait is a stall once it has lasted `DURATION`"},
			&cli.BoolFlag{Name: "verbose", Aliases: []string{"v"}, Usage: "also list the idle waits that are not stalls"},
			directFlag(),
		),
		OnUsageError: onUsageError,
		Action: func(c *cli.Context) error {
			settle, minWait := c.Duration("settle"), c.Duration("min-wait")
			if settle < 0 {
				return usagef("--settle must not be negative")
			}
			if minWait < 0 {
				return usagef("--min-wait must not be negative")
			}
			opts := diagnose.Options{Ignore: ownPipes(), MinWait: minWait}
			var rep *diagnose.Report
			var smp *pipemodel.Sample
			if c.NArg() > 0 {
				var err error
				if rep, smp, err = diagnoseFile(c, opts); err != nil {
					return err
				}
			} else {
				s, err := openSampler(c, "diagnose", false, true)
				if err != nil {
					return err
				}
				defer s.Close()
				ctx, stop := signalContext()
				defer stop()
				if rep, smp, err = diagnose.Observe(ctx, s, settle, opts); err != nil {
					return stateError("diagnose", err)
				}
			}
			if c.Bool("json") {
				enc := json.NewEncoder(os.Stdout)
				enc.SetIndent("", "  ")
				if err := enc.Encode(rep); err != nil {
					return err
				}
			} else if err := writeDiagnosis(os.Stdout, rep, smp, settle, c.Bool("verbose")); err != nil {
				return err
			}
			if rep.Stuck {
				return exitStatus{1, fmt.Errorf("%s", verdict(rep))}
			}
			return nil
		},
	}
}

// ownPipes are the pipes pipesnap's own stdio is: its reader or writer
// (a pager, a shell) waits on pipesnap, not on a stuck pipeline.
func ownPipes() map[uint64]bool {
	out := map[uint64]bool{}
	for _, f := range []*os.File{os.Stdin, os.Stdout, os.Stderr} {
		if ino := pipeIno(f); ino != 0 {
			out[ino] = true
		}
	}
	return out
}

func writeDiagnosis(w io.Writer, rep *diagnose.Report, s *pipemodel.Sample, settle time.Duration, verbose bool) error {
	shownFinding := map[int]bool{}
	for _, c := range rep.Chains {
		if !c.Stuck {
			continue
		}
		fmt.Fprintf(w, "STUCK %s\n", termsafe.String(c.Summary))
		shown := map[[2]uint32]bool{}
		for _, i := range c.Findings {
			f := rep.Findings[i]
			if f.Category != diagnose.Stall && !verbose {
				continue
			}
			shownFinding[i] = true
			fmt.Fprintf(w, "  - %s [%s, %s]\n", termsafe.String(f.Message), f.Kind, f.ForText)
			for _, t := range slices.Concat(f.Waiting, f.Culprits) {
				key := [2]uint32{t.PID, t.TID}
				if shown[key] || len(t.Stack) == 0 && t.Wchan == "" {
					continue
				}
				shown[key] = true
				fmt.Fprintf(w, "      %s, state %s, wchan %s\n", taskText(t), orDash(t.State), termsafe.String(orDash(t.Wchan)))
				for _, frame := range t.Stack {
					fmt.Fprintf(w, "          %s\n", termsafe.String(frame))
				}
			}
		}
	}
	for i, f := range rep.Findings {
		switch {
		case shownFinding[i]:
		case f.Category == diagnose.Stall:
			fmt.Fprintf(w, "STUCK %s [%s, %s]\n", termsafe.String(f.Message), f.Kind, f.ForText)
		case f.Category == diagnose.Warning:
			fmt.Fprintf(w, "warning: %s [%s]\n", termsafe.String(f.Message), f.Kind)
		case verbose:
			fmt.Fprintf(w, "idle: %s [%s, %s]\n", termsafe.String(f.Message), f.Kind, f.ForText)
		}
	}
	var parts []string
	if s.Offline {
		parts = append(parts, "from a snapshot")
	}
	parts = append(parts, count(len(s.Pipes), "pipe", "pipes")+" walked")
	parts = append(parts, count(rep.Considered, "wait", "waits")+" considered")
	if left := leftOut(rep); left != "" {
		parts = append(parts, "left out: "+left)
	}
	if settle > 0 && !s.Offline {
		parts = append(parts, fmt.Sprintf("%s moved during the watch", count(len(rep.Moving), "pipe", "pipes")))
	}
	fmt.Fprintf(w, "%s: %s\n", verdict(rep), strings.Join(parts, ", "))
	return nil
}

// taskText names a task of a finding as the detail lines do: "sleep
// (pid 24524/1, thread 24530, container web, pod api-7d9f)".
func taskText(t diagnose.Task) string {
	pid := fmt.Sprint(t.PID)
	if t.NSPID != 0 && t.NSPID != t.PID {
		pid += fmt.Sprintf("/%d", t.NSPID)
	}
	parts := []string{"pid " + pid}
	if t.TID != 0 && t.TID != t.PID {
		parts = append(parts, fmt.Sprintf("thread %d", t.TID))
	}
	switch {
	case t.Container != "" && t.Monitor:
		parts = append(parts, "monitor of container "+t.Container)
	case t.Container != "":
		parts = append(parts, "container "+t.Container)
	}
	if t.Pod != "" {
		parts = append(parts, "pod "+t.Pod)
	}
	return termsafe.String(fmt.Sprintf("%s (%s)", t.Comm, strings.Join(parts, ", ")))
}

// verdict is the first words of the last line: "nothing stuck", "1 stall
// in 1 pipeline".
func verdict(rep *diagnose.Report) string {
	stalls := len(rep.Stalls())
	if stalls == 0 {
		return "nothing stuck"
	}
	chains := 0
	for _, c := range rep.Chains {
		if c.Stuck {
			chains++
		}
	}
	return fmt.Sprintf("%s in %s", count(stalls, "stall", "stalls"), count(chains, "pipeline", "pipelines"))
}

func leftOut(rep *diagnose.Report) string {
	var parts []string
	for _, why := range []string{diagnose.LeftIdle, diagnose.LeftSelf, diagnose.LeftMoving, diagnose.LeftYoung, diagnose.LeftNew} {
		if n := rep.LeftOut[why]; n > 0 {
			s := fmt.Sprintf("%d %s", n, why)
			if why == diagnose.LeftYoung {
				s += " (" + rep.MinWait.String() + ")"
			}
			parts = append(parts, s)
		}
	}
	warnings := 0
	for _, f := range rep.Findings {
		if f.Category == diagnose.Warning {
			warnings++
		}
	}
	if warnings > 0 {
		parts = append(parts, count(warnings, "warning", "warnings"))
	}
	return strings.Join(parts, ", ")
}

func count(n int, one, many string) string {
	if n == 1 {
		return fmt.Sprintf("%d %s", n, one)
	}
	return fmt.Sprintf("%d %s", n, many)
}

func orDash(s string) string {
	if s == "" {
		return "-"
	}
	return s
}
