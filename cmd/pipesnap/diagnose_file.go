package main

import (
	"github.com/urfave/cli/v2"

	"github.com/pipesnap/pipesnap/diagnose"
	"github.com/pipesnap/pipesnap/pipemodel"
	"github.com/pipesnap/pipesnap/snapshot"
)

// diagnoseFile diagnoses a snapshot with the same code as a live walk:
// the snapshot becomes the model a walk fills, and the kernel's answers
// (where tasks slept) come from what it recorded.
func diagnoseFile(c *cli.Context, opts diagnose.Options) (*diagnose.Report, *pipemodel.Sample, error) {
	if c.NArg() != 1 {
		return nil, nil, usagef("diagnose takes at most one FILE (got %d arguments)", c.NArg())
	}
	if c.IsSet("pid") || c.IsSet("all") {
		return nil, nil, usagef("diagnose FILE takes no --pid or --all: the snapshot holds the processes it was taken of")
	}
	snap, err := readSnapshot(c.Args().First(), snapshot.Options{})
	if err != nil {
		return nil, nil, err
	}
	smp := snap.Sample()
	opts.Kernel = snapshot.NewKernel(smp)
	opts.Ignore = nil // pipesnap's own stdio now is not the snapshot's
	return diagnose.Diagnose(nil, smp, opts), smp, nil
}
