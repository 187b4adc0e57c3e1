package output

import "io"

// Counter counts the bytes written through it to W: a dump that failed
// after writing some of its output cannot fall back to another method
// into the same output.
type Counter struct {
	W io.Writer
	N int64
}

func (c *Counter) Write(p []byte) (int, error) {
	n, err := c.W.Write(p)
	c.N += int64(n)
	return n, err
}
