// Command pipesnap snapshots what sits in Linux pipes, without consuming
// it, and reads such snapshots back.
package main

import (
	"errors"
	"fmt"
	"os"

	"github.com/urfave/cli/v2"
)

func main() {
	app := newApp()
	if err := app.Run(reorderArgs(app, os.Args)); err != nil {
		fmt.Fprintf(os.Stderr, "pipesnap: %v\n", err)
		os.Exit(exitCode(err))
	}
}

func newApp() *cli.App {
	return &cli.App{
		Name:  "pipesnap",
		Usage: "snapshot the bytes sitting in Linux pipes, without consuming them",
		Description: `pipesnap reads pipe and FIFO buffers in kernel context with a BPF
iterator: nothing is read out of the pipes and no process is stopped.
A snapshot is a checkpoint stream (see format/FORMAT.md) that inspect
and cat read back.

Examples:
   pipesnap dump --pid 812 -o stuck.snap     # the pipes of one process
   pipesnap dump --all -o - | gzip > all.gz  # every process's pipes
   pipesnap inspect stuck.snap               # who holds what, how full
   pipesnap cat --ino 4711 stuck.snap | hexdump -C`,
		Commands: []*cli.Command{
			dumpCommand(), inspectCommand(), catCommand(), restoreCommand(),
			lsCommand(),
			diagnoseCommand(),
			watchCommand(),
			serveCommand(),
		},
		OnUsageError:    onUsageError,
		ExitErrHandler:  func(*cli.Context, error) {}, // main decides the exit status
		HideHelpCommand: true,
		Suggest:         true,
	}
}

// usageError is a mistake in how pipesnap was called: exit status 2.
type usageError struct{ err error }

func (e usageError) Error() string { return e.err.Error() }
func (e usageError) Unwrap() error { return e.err }

func usagef(format string, args ...any) error {
	return usageError{fmt.Errorf(format, args...)}
}

func onUsageError(_ *cli.Context, err error, _ bool) error {
	return usageError{err}
}

// exitStatus carries a chosen status with a message (e.g. --strict).
type exitStatus struct {
	code int
	err  error
}

func (e exitStatus) Error() string { return e.err.Error() }
func (e exitStatus) Unwrap() error { return e.err }

func exitCode(err error) int {
	var u usageError
	if errors.As(err, &u) {
		return 2
	}
	var s exitStatus
	if errors.As(err, &s) {
		return s.code
	}
	return 1
}
