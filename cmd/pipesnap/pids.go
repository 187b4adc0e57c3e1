package main

import (
	"fmt"
	"strconv"
	"strings"

	"github.com/urfave/cli/v2"
)

// pidList is the value of --pid: repeated flags, and within one, pids
// separated by commas or spaces, as `--pid "$(pidof x)"` and
// `--pid 1,2` give them.
type pidList []int

func (l *pidList) Set(v string) error {
	fields := strings.FieldsFunc(v, func(r rune) bool { return r == ',' || r == ' ' || r == '\t' || r == '\n' })
	if len(fields) == 0 {
		return fmt.Errorf("no pid in %q", v)
	}
	for _, f := range fields {
		n, err := strconv.ParseInt(f, 10, 32)
		if err != nil || n <= 0 {
			return fmt.Errorf("%q is not a process id (a positive number)", f)
		}
		*l = append(*l, int(n))
	}
	return nil
}

func (l *pidList) String() string {
	var s []string
	for _, p := range *l {
		s = append(s, strconv.Itoa(p))
	}
	return strings.Join(s, ",")
}

// pidFlag is --pid (-p) with usage for the command at hand.
func pidFlag(usage string) cli.Flag {
	return &cli.GenericFlag{Name: "pid", Aliases: []string{"p"}, Value: &pidList{}, Usage: usage}
}

// pidsOf returns the --pid values given.
func pidsOf(c *cli.Context) []int {
	if l, ok := c.Generic("pid").(*pidList); ok && l != nil {
		return *l
	}
	return nil
}
