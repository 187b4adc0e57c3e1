// Package termsafe makes text from other processes safe to print on a
// terminal. A command name, a FIFO's path, a note in a snapshot: any of
// them may hold ESC, CR, a newline or bytes that are not UTF-8, put
// there by whoever named the process or file, and printed raw they can
// move the cursor, rewrite a table row or forge a line of output. So,
// as `ls -b` and `ps` do, everything that is not printable is written as
// an escape: \n \r \t \\ and \xNN for control bytes and invalid UTF-8,
// \u{NNNN} for Unicode controls (C1, bidi overrides and isolates, zero
// width and line separators). JSON output needs none of it: its encoder
// escapes.
package termsafe

import (
	"fmt"
	"strings"
	"unicode"
	"unicode/utf8"
)

// String returns s with everything a terminal would not print as a
// character written as an escape. Printable text is returned as is.
func String(s string) string {
	if safe(s) {
		return s
	}
	var b strings.Builder
	for i := 0; i < len(s); {
		r, size := utf8.DecodeRuneInString(s[i:])
		switch {
		case r == utf8.RuneError && size <= 1:
			fmt.Fprintf(&b, `\x%02x`, s[i])
		case r == '\n':
			b.WriteString(`\n`)
		case r == '\r':
			b.WriteString(`\r`)
		case r == '\t':
			b.WriteString(`\t`)
		case r == '\\':
			b.WriteString(`\\`)
		case r < 0x20 || r == 0x7f:
			fmt.Fprintf(&b, `\x%02x`, r)
		case !printable(r):
			fmt.Fprintf(&b, `\u{%04x}`, r)
		default:
			b.WriteRune(r)
		}
		i += size
	}
	return b.String()
}

// safe tells whether s needs no escape (the common case, without
// allocating).
func safe(s string) bool {
	for _, r := range s {
		if r == utf8.RuneError || r < 0x20 || r == 0x7f || r == '\\' || r >= 0x80 && !printable(r) {
			return false
		}
	}
	return true
}

// printable: a character that shows as itself. Controls, format
// characters (bidi marks, zero width joiners) and line or paragraph
// separators do not.
func printable(r rune) bool {
	return unicode.IsPrint(r) && !unicode.Is(unicode.Cf, r)
}
