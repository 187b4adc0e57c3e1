package diagnose

import (
	"context"
	"time"

	"github.com/pipesnap/pipesnap/pipemodel"
)

// Sampler walks the live system (pipestate.Sampler).
type Sampler interface {
	Sample(ctx context.Context) (*pipemodel.Sample, error)
}

// pollEvery is how often Observe looks again while a wait is younger
// than the minimum.
const pollEvery = 250 * time.Millisecond

// Observe diagnoses the live system: it walks, waits settle, walks
// again, and leaves out what moved in between. While some wait looks
// like a stall but is younger than opts.MinWait, it keeps looking, every
// 250 ms, until that wait is old enough or its pipe moved, and at most
// MinWait longer: a stall that has just begun is reported as one, a
// consumer that reads in bursts is not. settle 0 judges one walk. It
// returns the report and the last sample.
func Observe(ctx context.Context, s Sampler, settle time.Duration, opts Options) (*Report, *pipemodel.Sample, error) {
	first, err := s.Sample(ctx)
	if err != nil {
		return nil, nil, err
	}
	if settle <= 0 {
		return Diagnose(nil, first, opts), first, nil
	}
	deadline := time.Now().Add(settle + opts.MinWait)
	wait := settle
	for {
		if err := sleep(ctx, wait); err != nil {
			return nil, nil, err
		}
		cur, err := s.Sample(ctx)
		if err != nil {
			return nil, nil, err
		}
		rep := Diagnose(first, cur, opts)
		if !rep.Pending() || !time.Now().Before(deadline) {
			return rep, cur, nil
		}
		wait = min(pollEvery, time.Until(deadline))
	}
}

func sleep(ctx context.Context, d time.Duration) error {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-t.C:
		return nil
	case <-ctx.Done():
		return ctx.Err()
	}
}
