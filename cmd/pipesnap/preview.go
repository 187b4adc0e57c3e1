package main

import (
	"fmt"
	"strings"
	"unicode"
	"unicode/utf8"

	"github.com/pipesnap/pipesnap/snapshot"
)

// preview shows a pipe's first bytes: quoted text when they are text
// (valid UTF-8, mostly printable), else a hex dump as xxd prints it,
// 16 bytes a line with the printable ASCII beside, under the HOLDERS
// column (indent is the cells before it).
func preview(p *snapshot.Pipe) string {
	b := p.Data()
	more := ""
	if uint64(len(b)) < p.Bytes {
		more = "..."
	}
	if isText(b) {
		return fmt.Sprintf("%q%s", b, more)
	}
	return strings.TrimSuffix(hexDump(b), "\n") + more
}

// isText: valid UTF-8 (a multi-byte character cut at the end of the
// preview counts), 90% printable or newline or tab.
func isText(b []byte) bool {
	if len(b) == 0 {
		return true
	}
	printable, n := 0, 0
	for i := 0; i < len(b); {
		r, size := utf8.DecodeRune(b[i:])
		if r == utf8.RuneError && size <= 1 {
			if !utf8.FullRune(b[i:]) {
				break // cut by the preview's end
			}
			return false
		}
		n++
		if unicode.IsPrint(r) || r == '\n' || r == '\t' {
			printable++
		}
		i += size
	}
	return printable*10 >= n*9
}

// hexDump: "00000000: 7f45 4c46 0201 0100 0000 0000 0000 0000  .ELF............"
func hexDump(b []byte) string {
	var sb strings.Builder
	for off := 0; off < len(b); off += 16 {
		line := b[off:min(off+16, len(b))]
		fmt.Fprintf(&sb, "%08x: ", off)
		for i := 0; i < 16; i++ {
			if i < len(line) {
				fmt.Fprintf(&sb, "%02x", line[i])
			} else {
				sb.WriteString("  ")
			}
			if i%2 == 1 {
				sb.WriteByte(' ')
			}
		}
		sb.WriteByte(' ')
		for _, c := range line {
			if c >= 0x20 && c < 0x7f {
				sb.WriteByte(c)
			} else {
				sb.WriteByte('.')
			}
		}
		sb.WriteByte('\n')
	}
	return sb.String()
}
