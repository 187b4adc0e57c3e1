package main

import (
	"github.com/urfave/cli/v2"

	"github.com/pipesnap/pipesnap/diagnose"
	"github.com/pipesnap/pipesnap/pipemodel"
)

// diagnoseFile diagnoses a snapshot.
func diagnoseFile(c *cli.Context, opts diagnose.Options) (*diagnose.Report, *pipemodel.Sample, error) {
	return nil, nil, usagef("diagnose FILE: not yet")
}
