package main

import (
	"fmt"
	"os"
	"strings"

	"github.com/urfave/cli/v2"
)

// Completion scripts. bash and zsh ask pipesnap itself, which lists the
// commands and flags that fit (urfave/cli's --generate-bash-completion),
// so the scripts never go stale; fish gets a script made from the
// commands' definitions.

const bashCompletion = `# bash completion for pipesnap: source it, or install it as
# /usr/share/bash-completion/completions/pipesnap
_pipesnap() {
	local cur words
	cur="${COMP_WORDS[COMP_CWORD]}"
	words=("${COMP_WORDS[@]:0:COMP_CWORD}")
	if [[ "$cur" == -* ]]; then
		words+=("$cur")
	fi
	local IFS=$'\n'
	COMPREPLY=($(compgen -W "$("${words[0]}" "${words[@]:1}" --generate-bash-completion 2>/dev/null)" -- "$cur"))
	if [ ${#COMPREPLY[@]} -eq 0 ]; then
		COMPREPLY=($(compgen -f -- "$cur"))
	fi
}
complete -F _pipesnap pipesnap
`

const zshCompletion = `#compdef pipesnap
# zsh completion for pipesnap: put it in a directory of $fpath as _pipesnap
_pipesnap() {
	local -a opts
	local cur=${words[-1]}
	if [[ "$cur" == -* ]]; then
		opts=("${(@f)$(${words[1]} ${words[@]:1:#words[@]-1} --generate-bash-completion 2>/dev/null)}")
	else
		opts=("${(@f)$(${words[1]} ${words[@]:1:#words[@]-2} --generate-bash-completion 2>/dev/null)}")
	fi
	if [[ ${#opts[@]} -gt 0 && -n "${opts[1]}" ]]; then
		_describe 'values' opts
	else
		_files
	fi
}
compdef _pipesnap pipesnap
`

func completionCommand() *cli.Command {
	return &cli.Command{
		Name:      "completion",
		Usage:     "print a shell completion script (bash, zsh or fish)",
		ArgsUsage: "bash|zsh|fish",
		Description: `Prints the completion script for SHELL on stdout. For example:
   source <(pipesnap completion bash)                    # this shell
   pipesnap completion bash > /usr/share/bash-completion/completions/pipesnap
   pipesnap completion zsh > "${fpath[1]}/_pipesnap"
   pipesnap completion fish > ~/.config/fish/completions/pipesnap.fish
make install puts all three in place.`,
		OnUsageError: onUsageError,
		Action: func(c *cli.Context) error {
			if c.NArg() != 1 {
				return usagef("completion needs one SHELL: bash, zsh or fish")
			}
			switch sh := c.Args().First(); sh {
			case "bash":
				_, err := fmt.Fprint(os.Stdout, bashCompletion)
				return err
			case "zsh":
				_, err := fmt.Fprint(os.Stdout, zshCompletion)
				return err
			case "fish":
				s, err := c.App.ToFishCompletion()
				if err != nil {
					return fmt.Errorf("making the fish completion: %w", err)
				}
				_, err = fmt.Fprint(os.Stdout, s)
				return err
			default:
				return usagef("completion: unknown shell %q: want bash, zsh or fish", sh)
			}
		},
	}
}

func manCommand() *cli.Command {
	return &cli.Command{
		Name:   "man",
		Usage:  "print the manual page (roff), made from the commands' own help",
		Hidden: true,
		Action: func(c *cli.Context) error {
			s, err := manPage(c.App)
			if err != nil {
				return fmt.Errorf("making the manual page: %w", err)
			}
			_, err = fmt.Fprint(os.Stdout, s)
			return err
		},
	}
}

// commandNames lists the commands people type.
func commandNames(app *cli.App) string {
	var names []string
	for _, c := range app.Commands {
		if !c.Hidden {
			names = append(names, c.Name)
		}
	}
	return strings.Join(names, ", ")
}
