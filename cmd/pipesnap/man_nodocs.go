//go:build urfave_cli_no_docs

package main

import (
	"errors"

	"github.com/urfave/cli/v2"
)

// manPage, in a build without urfave/cli's page generator (the tag keeps
// go-md2man and its inits out of every run): make man has it.
func manPage(*cli.App) (string, error) {
	return "", errors.New("this pipesnap is built without the manual page generator (tag urfave_cli_no_docs): run make man")
}
