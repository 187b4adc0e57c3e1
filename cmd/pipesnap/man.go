//go:build !urfave_cli_no_docs

package main

import (
	"fmt"
	"os"

	"github.com/urfave/cli/v2"
)

func manCommand() *cli.Command {
	return &cli.Command{
		Name:   "man",
		Usage:  "print the manual page (roff), made from the commands' own help",
		Hidden: true,
		Action: func(c *cli.Context) error {
			s, err := c.App.ToMan()
			if err != nil {
				return fmt.Errorf("making the manual page: %w", err)
			}
			_, err = fmt.Fprint(os.Stdout, s)
			return err
		},
	}
}
