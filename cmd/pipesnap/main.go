// Command pipesnap snapshots what sits in Linux pipes, without consuming
// it, and reads such snapshots back.
package main

import (
	"errors"
	"fmt"
	"os"
	"regexp"
	"strings"

	"github.com/urfave/cli/v2"
)

func main() {
	app := newApp()
	err := app.Run(reorderArgs(app, os.Args))
	if err == nil {
		err = notFound
	}
	if err != nil {
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
		Version: readBuildInfo().String(),
		Commands: []*cli.Command{
			dumpCommand(), inspectCommand(), catCommand(), restoreCommand(),
			lsCommand(),
			diagnoseCommand(),
			watchCommand(),
			serveCommand(),
			completionCommand(),
			manCommand(),
		},
		OnUsageError:         onUsageError,
		ExitErrHandler:       func(*cli.Context, error) {}, // main decides the exit status
		EnableBashCompletion: true,
		Suggest:              true,
		CommandNotFound: func(c *cli.Context, name string) {
			// urfave/cli calls this for "pipesnap foo": a usage error.
			notFound = usagef("unknown command %q: the commands are %s (pipesnap help COMMAND tells more)", name, commandNames(c.App))
		},
		Action: func(c *cli.Context) error {
			if c.NArg() > 0 {
				return usagef("unknown command %q: the commands are %s (pipesnap help COMMAND tells more)", c.Args().First(), commandNames(c.App))
			}
			return cli.ShowAppHelp(c)
		},
	}
}

// notFound is the usage error CommandNotFound met (urfave/cli gives the
// handler no way to return one).
var notFound error

// usageError is a mistake in how pipesnap was called: exit status 2.
type usageError struct{ err error }

func (e usageError) Error() string { return e.err.Error() }
func (e usageError) Unwrap() error { return e.err }

func usagef(format string, args ...any) error {
	return usageError{fmt.Errorf(format, args...)}
}

func onUsageError(c *cli.Context, err error, _ bool) error {
	return usageError{explainFlagError(c, err)}
}

var (
	badValue   = regexp.MustCompile(`^invalid value "(.*)" for flag -([^:]+): (.*)$`)
	undefined  = regexp.MustCompile(`^flag provided but not defined: -+(.*)$`)
	needsValue = regexp.MustCompile(`^flag needs an argument: -+(.*)$`)
)

// explainFlagError turns the flag package's words into pipesnap's: the
// flag's long name, the value, and what is expected.
func explainFlagError(c *cli.Context, err error) error {
	msg := err.Error()
	cmd := "pipesnap"
	var flags []cli.Flag
	if c != nil && c.Command != nil && c.Command.Name != "" {
		cmd, flags = "pipesnap "+c.Command.Name, c.Command.Flags
	} else if c != nil && c.App != nil {
		flags = c.App.Flags
	}
	if m := badValue.FindStringSubmatch(msg); m != nil {
		f := findFlag(flags, m[2])
		name := "--" + m[2]
		if f != nil {
			name = "--" + f.Names()[0]
		}
		return fmt.Errorf("%s %q: %s", name, m[1], expected(f, m[3]))
	}
	if m := undefined.FindStringSubmatch(msg); m != nil {
		hint := fmt.Sprintf("pipesnap help %s lists its flags", strings.TrimPrefix(cmd, "pipesnap "))
		if c != nil && c.Command != nil && c.Command.Name == "restore" {
			hint = "if it is CMD's, put CMD after --: pipesnap restore ... FILE -- CMD [ARGS...]"
		}
		return fmt.Errorf("%s has no flag -%s: %s", cmd, m[1], hint)
	}
	if m := needsValue.FindStringSubmatch(msg); m != nil {
		name := m[1]
		if f := findFlag(flags, m[1]); f != nil {
			name = f.Names()[0]
		}
		return fmt.Errorf("--%s needs a value (%s --help says which)", name, cmd)
	}
	return err
}

func findFlag(flags []cli.Flag, name string) cli.Flag {
	for _, f := range flags {
		for _, n := range f.Names() {
			if n == name {
				return f
			}
		}
	}
	return nil
}

// expected says what a flag takes.
func expected(f cli.Flag, why string) string {
	switch f.(type) {
	case *cli.DurationFlag:
		return "not a duration: want a number with a unit, e.g. 500ms, 2s or 1m"
	case *cli.IntFlag, *cli.Int64Flag, *cli.UintFlag, *cli.Uint64Flag:
		return "not a whole number"
	case *cli.GenericFlag:
		if why != "" {
			return why
		}
	}
	if why == "" || why == "parse error" {
		return "not a value it takes"
	}
	return why
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
