package main

import (
	"bufio"
	"encoding/json"
	"fmt"
	"io"
	"os"
	"slices"
	"time"

	"github.com/pipesnap/pipesnap/pipemodel"

	"github.com/urfave/cli/v2"
	"golang.org/x/sys/unix"
)

func watchCommand() *cli.Command {
	return &cli.Command{
		Name:      "watch",
		Usage:     "a refreshing view of ls, sorted by fill, with throughput per pipe",
		ArgsUsage: " ",
		Description: `Walks the pipes every --interval (default 1s) and shows the ls table,
fullest pipes first (pipes with waiting tasks before others at equal
fill), with the longest wait and the holders' states (see ls), and what
went through each pipe since the previous frame: IN, bytes written, and
OUT, bytes read, per second, with binary prefixes (KiB/s is 1024 bytes
a second, MiB/s 1024 KiB/s). The kernel keeps no byte counters: the
rates come from the ring's head and tail movement and the lengths of the
buffers seen in the two frames. A buffer written and read whole between
two frames counts at the mean fill of the buffers that were seen; such an
estimate is marked with ~.

On a terminal the screen is redrawn and the rows fit it; otherwise frames
are printed one after another, separated by a blank line. --iterations N
stops after N frames (0, the default: until interrupted).

--json prints JSON Lines: one object per frame, on one line, as ls --json
prints it (pipes, procs, gone, open_waits, took_us) with time (RFC 3339),
frame (from 1), and per pipe, from the second frame on, in_bytes_per_sec,
out_bytes_per_sec and rate_exact (false: an estimate).

` + scopeHelp,
		Flags: append(scopeFlags(),
			&cli.DurationFlag{Name: "interval", Aliases: []string{"i"}, Value: time.Second, Usage: "walk every `DURATION`"},
			&cli.IntFlag{Name: "iterations", Aliases: []string{"n"}, Usage: "stop after `N` frames (0: until interrupted)"},
			&cli.BoolFlag{Name: "json", Usage: "print JSON Lines, one object per frame"},
		),
		OnUsageError: onUsageError,
		Action: func(c *cli.Context) error {
			interval, n := c.Duration("interval"), c.Int("iterations")
			if interval <= 0 {
				return usagef("--interval must be positive")
			}
			if n < 0 {
				return usagef("--iterations must not be negative")
			}
			s, err := openSampler(c, "watch", true, false)
			if err != nil {
				return err
			}
			defer s.Close()
			return runWatch(s, interval, n, c.Bool("json"))
		},
	}
}

func runWatch(s *sampler, interval time.Duration, iterations int, asJSON bool) error {
	ctx, stop := signalContext()
	defer stop()
	out := bufio.NewWriter(os.Stdout)
	term := isTerminal(os.Stdout)
	var prev *pipemodel.Sample
	tick := time.NewTicker(interval)
	defer tick.Stop()
	for frame := 1; ; frame++ {
		cur, err := s.Sample(ctx)
		if err != nil {
			if ctx.Err() != nil {
				return nil // interrupted: a normal way out
			}
			return stateError("watch", err)
		}
		opt := tableOptions{bar: term, rates: map[uint64]pipemodel.Flow{}, order: byFill}
		if prev != nil {
			opt.dt = cur.Time.Sub(prev.Time).Seconds()
			for _, p := range cur.Pipes {
				if q := prev.Find(p.Ino); q != nil {
					opt.rates[p.Ino] = pipemodel.FlowBetween(q, p, cur.PageSize)
				}
			}
		}
		if asJSON {
			if err := writeFrameJSON(out, cur, frame, opt); err != nil {
				return err
			}
			if err := out.Flush(); err != nil {
				return err
			}
			if iterations > 0 && frame >= iterations {
				return nil
			}
			prev = cur
			select {
			case <-tick.C:
				continue
			case <-ctx.Done():
				return nil
			}
		}
		blocked := len(cur.OpenWaits)
		for _, p := range cur.Pipes {
			blocked += p.BlockedTasks()
		}
		if term {
			fmt.Fprint(out, "\x1b[H\x1b[2J")
			if ws, err := unix.IoctlGetWinsize(int(os.Stdout.Fd()), unix.TIOCGWINSZ); err == nil && ws.Row > 4 {
				opt.rows = int(ws.Row) - 4
			}
		} else if frame > 1 {
			fmt.Fprintln(out)
		}
		fmt.Fprintf(out, "%s  %s, %s, walk %v, every %v\n",
			cur.Time.Format("15:04:05"), count(len(cur.Pipes), "pipe", "pipes"), count(blocked, "waiting task", "waiting tasks"),
			cur.Took.Round(time.Microsecond), interval)
		if term {
			fmt.Fprintln(out)
		}
		if err := writeStateTable(out, cur, opt); err != nil {
			return err
		}
		if err := out.Flush(); err != nil {
			return err
		}
		if iterations > 0 && frame >= iterations {
			return nil
		}
		prev = cur
		select {
		case <-tick.C:
		case <-ctx.Done():
			return nil
		}
	}
}

// byFill orders pipes fullest first; at equal fill, those with blocked
// tasks first, then by inode.
func byFill(pipes []*pipemodel.Pipe) []*pipemodel.Pipe {
	out := slices.Clone(pipes)
	slices.SortStableFunc(out, func(a, b *pipemodel.Pipe) int {
		switch {
		case a.Fill() != b.Fill():
			if a.Fill() > b.Fill() {
				return -1
			}
			return 1
		case a.BlockedTasks() != b.BlockedTasks():
			return b.BlockedTasks() - a.BlockedTasks()
		case a.Ino < b.Ino:
			return -1
		case a.Ino > b.Ino:
			return 1
		}
		return 0
	})
	return out
}

// jsonFrame is one line of watch --json.
type jsonFrame struct {
	Time  time.Time       `json:"time"`
	Frame int             `json:"frame"`
	Pipes []jsonWatchPipe `json:"pipes"`
	jsonState
}

type jsonWatchPipe struct {
	jsonStatePipe
	InBytesPerSec  *float64 `json:"in_bytes_per_sec,omitempty"`
	OutBytesPerSec *float64 `json:"out_bytes_per_sec,omitempty"`
	RateExact      *bool    `json:"rate_exact,omitempty"`
}

func writeFrameJSON(w io.Writer, s *pipemodel.Sample, frame int, opt tableOptions) error {
	st := stateJSON(s)
	out := jsonFrame{Time: s.Time, Frame: frame, Pipes: []jsonWatchPipe{}, jsonState: st}
	for _, p := range st.Pipes {
		jp := jsonWatchPipe{jsonStatePipe: p}
		if f, ok := opt.rates[p.Ino]; ok && opt.dt > 0 {
			in, o, exact := float64(f.Written)/opt.dt, float64(f.Read)/opt.dt, f.Exact
			jp.InBytesPerSec, jp.OutBytesPerSec, jp.RateExact = &in, &o, &exact
		}
		out.Pipes = append(out.Pipes, jp)
	}
	out.jsonState.Pipes = nil
	b, err := json.Marshal(out)
	if err != nil {
		return err
	}
	_, err = fmt.Fprintf(w, "%s\n", b)
	return err
}
