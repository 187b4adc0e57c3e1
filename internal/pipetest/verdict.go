package pipetest

import (
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/pipesnap/pipesnap/diagnose"
)

// CheckVerdict checks what a diagnosis said of one pipe of a scenario
// against what an expert concludes (want): a stall with its culprit and
// a wait no shorter than minWait and no longer than upTo (plus slack),
// an idle wait, a healthy pipeline, or a leaked pipe's warning.
func CheckVerdict(t testing.TB, sc *Scenario, rep *diagnose.Report, want Finding, minWait, upTo time.Duration) {
	t.Helper()
	ino := sc.Inos[want.Pipe]
	var got []string
	for _, f := range rep.Findings {
		if f.Ino == ino {
			got = append(got, string(f.Category)+"/"+string(f.Kind))
		}
	}
	is := func(c diagnose.Category) func(diagnose.Finding) bool {
		return func(f diagnose.Finding) bool { return f.Ino == ino && f.Category == c }
	}
	switch want.Category {
	case "stall":
		i := slices.IndexFunc(rep.Findings, is(diagnose.Stall))
		if i < 0 {
			t.Fatalf("%s: no stall on %s (inode %d); findings %v\n%+v", sc.Kind, want.Pipe, ino, got, rep.Findings)
		}
		f := rep.Findings[i]
		if want.Culprit != "" {
			pid := uint32(sc.PID(want.Culprit))
			if len(f.Culprits) == 0 || f.Culprits[0].PID != pid {
				t.Errorf("%s: culprits %+v, want %s (pid %d) first: %q", sc.Kind, f.Culprits, want.Culprit, pid, f.Message)
			}
			if !slices.ContainsFunc(rep.Chains, func(c diagnose.Chain) bool { return c.Stuck && slices.Contains(c.StuckAt, pid) }) {
				t.Errorf("%s: no chain stuck at %s (pid %d): %+v", sc.Kind, want.Culprit, pid, rep.Chains)
			}
		} else if len(f.Culprits) != 0 {
			t.Errorf("%s: culprits %+v, want none: %q", sc.Kind, f.Culprits, f.Message)
		}
		if f.For < minWait || f.For > upTo+2*time.Second {
			t.Errorf("%s: stuck for %v, want between %v and %v", sc.Kind, f.For, minWait, upTo+2*time.Second)
		}
		if strings.HasPrefix(want.Detail, "open-blocked") && !strings.Contains(f.Message, "opening FIFO "+sc.FIFOs["fifo"]) {
			t.Errorf("%s: message %q lacks the FIFO path %s", sc.Kind, f.Message, sc.FIFOs["fifo"])
		}
	case "idle":
		if slices.ContainsFunc(rep.Findings, is(diagnose.Stall)) {
			t.Errorf("%s: %s (inode %d) called stuck: %v\n%+v", sc.Kind, want.Pipe, ino, got, rep.Findings)
		}
		// An idle pipeline may get a line while it is watched (tail -f
		// | grep): then it moved, which is no stall either.
		if !slices.ContainsFunc(rep.Findings, is(diagnose.Idle)) && !slices.Contains(rep.Moving, ino) {
			t.Errorf("%s: %s (inode %d) not listed as an idle wait, nor as moving: %v", sc.Kind, want.Pipe, ino, got)
		}
	case "healthy":
		if i := slices.IndexFunc(rep.Findings, func(f diagnose.Finding) bool { return f.Category == diagnose.Stall }); i >= 0 {
			t.Errorf("%s: a healthy pipeline called stuck: %+v", sc.Kind, rep.Findings[i])
		}
	case "leak-warning":
		i := slices.IndexFunc(rep.Findings, func(f diagnose.Finding) bool { return f.Ino == ino })
		if i < 0 || rep.Findings[i].Category != diagnose.Warning || rep.Findings[i].Kind != diagnose.NoReaders || len(got) != 1 {
			t.Errorf("%s: %s (inode %d): %v, want one no-readers warning", sc.Kind, want.Pipe, ino, got)
		}
		for _, c := range rep.Chains {
			if slices.Contains(c.Pipes, ino) {
				t.Errorf("%s: the leaked pipe is in a chain: %+v", sc.Kind, c)
			}
		}
	default:
		t.Fatalf("%s: unknown category %q", sc.Kind, want.Category)
	}
}
