package loader

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"sync"
	"time"

	"github.com/cilium/ebpf"
)

// Resident is the dump programs loaded once, for a process that dumps
// many times (pipesnap serve answering the CLI): each Dump sets the
// processes to walk in the loaded programs instead of loading them again,
// which is most of a one-shot dump's cost. Dumps run one at a time.
type Resident struct {
	mu     sync.Mutex
	it     *pipeIter
	scoped []uint32 // the tgids in the targets map
	// tr is the translation calibrated at calibrated: the bases do not
	// move during a boot, and calibration (a probe pipe, two walks,
	// /proc/zoneinfo) is a third of a small dump's time. It is done
	// again after recalibrate, for memory added since (a page past the
	// spans is refused and reported, never read unverified).
	tr         translation
	calibrated time.Time
}

// recalibrate is how long a resident's calibration is kept.
const recalibrate = time.Minute

// OpenResident checks privileges and BTF and loads the programs, walking
// nothing yet.
func OpenResident() (*Resident, error) {
	if _, err := Preflight(Options{All: true}); err != nil {
		return nil, err
	}
	it, err := loadIter(newIterConfig(nil, 0))
	if err != nil {
		return nil, err
	}
	return &Resident{it: it}, nil
}

// Dump is Dump with the programs already loaded. opts.MaxAttempts is
// the one the programs were loaded with (4).
func (r *Resident) Dump(ctx context.Context, w io.Writer, opts Options) (*Report, error) {
	targets, err := Preflight(opts)
	if err != nil {
		return nil, err
	}
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.it == nil {
		return nil, errors.New("dump programs closed")
	}
	if err := r.scope(targets, opts.Skip); err != nil {
		return nil, err
	}
	if err := r.it.drain(); err != nil {
		return nil, err
	}
	if r.tr.directSpan == 0 || time.Since(r.calibrated) > recalibrate {
		tr, err := r.it.calibrate(uint32(os.Getpagesize()))
		if err != nil {
			r.tr = translation{}
			return nil, err
		}
		r.tr, r.calibrated = tr, time.Now()
	}
	return r.it.dumpTo(ctx, w, opts, targets, r.tr)
}

// scope has the programs walk targets (none: every task) and leave out
// skip as well as pipesnap itself.
func (r *Resident) scope(targets []uint32, skip uint32) error {
	objs := &r.it.objs
	for _, tgid := range r.scoped {
		if err := objs.Targets.Delete(tgid); err != nil && !errors.Is(err, ebpf.ErrKeyNotExist) {
			return fmt.Errorf("removing pid %d from the target map: %w", tgid, err)
		}
	}
	r.scoped = r.scoped[:0]
	for _, tgid := range targets {
		if err := objs.Targets.Put(tgid, uint8(1)); err != nil {
			return fmt.Errorf("adding pid %d to the target map: %w", tgid, err)
		}
		r.scoped = append(r.scoped, tgid)
	}
	if err := objs.FilterTgids.Set(len(targets) > 0); err != nil {
		return fmt.Errorf("setting the target filter: %w", err)
	}
	if err := objs.SkipTgid.Set(skip); err != nil {
		return fmt.Errorf("setting the process to leave out: %w", err)
	}
	return nil
}

// Close unloads the programs.
func (r *Resident) Close() error {
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.it == nil {
		return nil
	}
	err := r.it.Close()
	r.it = nil
	return err
}
