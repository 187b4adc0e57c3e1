package table

import (
	"fmt"
	"math/rand/v2"
	"strings"
	"testing"
	"text/tabwriter"
)

// reference lays the rows out with text/tabwriter.
func reference(rows [][]string) string {
	var b strings.Builder
	tw := tabwriter.NewWriter(&b, 0, 4, 2, ' ', 0)
	for _, r := range rows {
		fmt.Fprintln(tw, strings.Join(r, "\t"))
	}
	tw.Flush()
	return b.String()
}

// TestSameAsTabwriter: random tables with rows of different lengths,
// empty and non-ASCII cells, laid out byte for byte as tabwriter does.
func TestSameAsTabwriter(t *testing.T) {
	r := rand.New(rand.NewPCG(3, 4))
	words := []string{"", "a", "pipe", "12345/65536", "é", "ключ", "python3(7):3:read", strings.Repeat("x", 300)}
	for n := range 2000 {
		var rows [][]string
		var tb Table
		for range r.IntN(12) {
			row := make([]string, 1+r.IntN(7))
			for k := range row {
				row[k] = words[r.IntN(len(words))]
			}
			rows = append(rows, row)
			tb.Add(row...)
		}
		var b strings.Builder
		m, err := tb.WriteTo(&b)
		if want := reference(rows); err != nil || b.String() != want || m != int64(len(want)) {
			t.Fatalf("table %d: got\n%q (%d, %v)\nwant\n%q", n, b.String(), m, err, want)
		}
	}
}

func BenchmarkTable(b *testing.B) {
	row := []string{"16714196", "pipe", "0/65536", "1", "1", "-", "S", "-", "python3(12345):3:read, python3(12345):4:write"}
	b.Run("table", func(b *testing.B) {
		for b.Loop() {
			var tb Table
			for range 10000 {
				tb.Add(row...)
			}
			tb.WriteTo(discard{})
		}
	})
	b.Run("tabwriter", func(b *testing.B) {
		for b.Loop() {
			tw := tabwriter.NewWriter(discard{}, 0, 4, 2, ' ', 0)
			for range 10000 {
				fmt.Fprintln(tw, strings.Join(row, "\t"))
			}
			tw.Flush()
		}
	})
}

type discard struct{}

func (discard) Write(p []byte) (int, error) { return len(p), nil }
