package main

import (
	"fmt"
	"os"

	"github.com/urfave/cli/v2"

	"github.com/pipesnap/pipesnap/snapshot"
)

func catCommand() *cli.Command {
	return &cli.Command{
		Name:      "cat",
		Usage:     "write one captured pipe's bytes to stdout",
		ArgsUsage: "FILE",
		Description: `Writes the bytes pipe INO held, its buffers concatenated in ring order
(oldest first), exactly what its reader would have read next. The
stream is checked whole (checksum included) before a byte is written.
A torn or incomplete pipe is still written, with a warning on stderr.`,
		Flags: []cli.Flag{
			&cli.Uint64Flag{Name: "ino", Aliases: []string{"i"}, Usage: "the pipe's inode `NUMBER` (see inspect)"},
		},
		OnUsageError: onUsageError,
		Action: func(c *cli.Context) error {
			if c.NArg() != 1 {
				return usagef("cat needs exactly one FILE")
			}
			ino := c.Uint64("ino")
			if ino == 0 {
				return usagef("cat needs --ino NUMBER (inspect lists them)")
			}
			s, err := readSnapshot(c.Args().First(), snapshot.Options{Data: true, Ino: ino, PipeOnly: true}) // its bytes only: no fds held
			if err != nil {
				return err
			}
			p, err := s.Find(ino)
			if err != nil {
				return usageError{err}
			}
			if !p.Complete() {
				fmt.Fprintf(os.Stderr, "pipesnap: warning: pipe %d is %v: these bytes may not be all it held\n", ino, pipeFlags(p))
			}
			if _, err := os.Stdout.Write(p.Data()); err != nil {
				return fmt.Errorf("writing stdout: %w", err)
			}
			return nil
		},
	}
}
