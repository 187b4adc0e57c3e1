package main

import (
	"encoding/json"
	"fmt"
	"io"
	"os"
	"strings"
	"time"

	"github.com/urfave/cli/v2"

	"github.com/pipesnap/pipesnap/diagnose"
	"github.com/pipesnap/pipesnap/pipestate"
)

func diagnoseCommand() *cli.Command {
	return &cli.Command{
		Name:      "diagnose",
		Usage:     "say where pipelines are stuck and why; exit status 1 when something is",
		ArgsUsage: " ",
		Description: `Groups processes connected by pipes into chains (a shell pipeline is one,
in the order data flows) and says, in plain words, where each chain is
stuck and why: a writer blocked on a full pipe whose reader is not
reading it; a reader blocked on an empty pipe whose writer is alive but
not writing; a reader waiting for end of file that never comes because
the only write end left is its own (the writer exited); a pipe with no
reader left (the next write gets SIGPIPE or EPIPE); data left in a pipe
with no writer and a reader that does not read it. For the tasks
involved it shows their state, where they sleep (/proc/PID/wchan) and,
where readable, their kernel stack (/proc/PID/stack).

The pipes are walked twice, --settle apart (default 500ms): a pipe whose
ring moved in between is moving, not stuck, however blocked its writer
looked. --settle 0 judges from one walk. pipesnap's own stdin, stdout and
stderr pipes are left out.

` + scopeHelp + `

Exit status: 0 when nothing is stuck, 1 when something is (or on
failure), 2 on a usage error. --json prints one object: stuck, chains
(procs in flow order, pipes, stuck, stuck_at, findings, summary), findings
(kind, ino, bytes, capacity, readers, writers, blocked and idle tasks with
pid, tid, comm, end, fds, state, wchan, stack, threads, blocked_on;
message) and moving.`,
		Flags: append(scopeFlags(),
			&cli.BoolFlag{Name: "json", Usage: "print one JSON object instead of text"},
			&cli.DurationFlag{Name: "settle", Value: 500 * time.Millisecond, Usage: "walk again after `DURATION` and leave out what moved (0: one walk)"},
		),
		OnUsageError: onUsageError,
		Action: func(c *cli.Context) error {
			settle := c.Duration("settle")
			if settle < 0 {
				return usagef("--settle must not be negative")
			}
			s, err := openSampler(c, "diagnose")
			if err != nil {
				return err
			}
			defer s.Close()
			ctx, stop := signalContext()
			defer stop()
			var prev *pipestate.Sample
			if settle > 0 {
				if prev, err = s.Sample(ctx); err != nil {
					return stateError("diagnose", err)
				}
				select {
				case <-time.After(settle):
				case <-ctx.Done():
					return stateError("diagnose", ctx.Err())
				}
			}
			cur, err := s.Sample(ctx)
			if err != nil {
				return stateError("diagnose", err)
			}
			rep := diagnose.Diagnose(prev, cur, diagnose.Options{Ignore: ownPipes()})
			if c.Bool("json") {
				enc := json.NewEncoder(os.Stdout)
				enc.SetIndent("", "  ")
				if err := enc.Encode(rep); err != nil {
					return err
				}
			} else if err := writeDiagnosis(os.Stdout, rep, cur, settle); err != nil {
				return err
			}
			if rep.Stuck {
				return exitStatus{1, fmt.Errorf("%d stuck pipes", len(rep.Findings))}
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

func writeDiagnosis(w io.Writer, rep *diagnose.Report, s *pipestate.Sample, settle time.Duration) error {
	healthy := 0
	for _, c := range rep.Chains {
		if !c.Stuck {
			healthy++
			continue
		}
		fmt.Fprintf(w, "STUCK %s\n", c.Summary)
		shown := map[[2]uint32]bool{}
		for _, i := range c.Findings {
			f := rep.Findings[i]
			fmt.Fprintf(w, "  - %s [%s]\n", f.Message, f.Kind)
			for _, t := range append(append([]diagnose.Task{}, f.Blocked...), f.Idle...) {
				key := [2]uint32{t.PID, t.TID}
				if shown[key] || len(t.Stack) == 0 && t.Wchan == "" {
					continue
				}
				shown[key] = true
				who := fmt.Sprintf("%s (pid %d)", t.Comm, t.PID)
				if t.TID != 0 && t.TID != t.PID {
					who = fmt.Sprintf("%s (pid %d, thread %d)", t.Comm, t.PID, t.TID)
				}
				fmt.Fprintf(w, "      %s, state %s, wchan %s\n", who, orDash(t.State), orDash(t.Wchan))
				for _, frame := range t.Stack {
					fmt.Fprintf(w, "          %s\n", frame)
				}
			}
		}
	}
	var parts []string
	parts = append(parts, fmt.Sprintf("%d pipes walked", len(s.Pipes)))
	if healthy > 0 {
		parts = append(parts, fmt.Sprintf("%d chains not stuck", healthy))
	}
	if settle > 0 {
		parts = append(parts, fmt.Sprintf("%d pipes moved during the %v settle", len(rep.Moving), settle))
	}
	verdict := "nothing stuck"
	if rep.Stuck {
		verdict = fmt.Sprintf("%d stuck pipes", len(rep.Findings))
	}
	fmt.Fprintf(w, "%s: %s\n", verdict, strings.Join(parts, ", "))
	return nil
}

func orDash(s string) string {
	if s == "" {
		return "-"
	}
	return s
}
