package termsafe

import "testing"

func TestString(t *testing.T) {
	for in, want := range map[string]string{
		"gzip":                    "gzip",
		"/var/lib/containers/x y": "/var/lib/containers/x y",
		"naïve €":                 "naïve €",
		"a\x1b[2Jb":               `a\x1b[2Jb`,
		"line\nforged row":        `line\nforged row`,
		"cr\roverwrite":           `cr\roverwrite`,
		"\xff":                    `\xff`,
		"a\\b":                    `a\\b`,
		"tab\there":               `tab\there`,
		"\u202etxt.exe":           `\u{202e}txt.exe`,
		"zero\u200bwidth":         `zero\u{200b}width`,
		"c1\u0085":                `c1\u{0085}`,
		"nul\x00":                 `nul\x00`,
		"del\x7f":                 `del\x7f`,
	} {
		if got := String(in); got != want {
			t.Errorf("String(%q) = %q, want %q", in, got, want)
		}
	}
}

func TestSafeAllocatesNothing(t *testing.T) {
	if n := testing.AllocsPerRun(100, func() { _ = String("sleep 600 | cat") }); n != 0 {
		t.Errorf("%v allocations for printable text", n)
	}
}
