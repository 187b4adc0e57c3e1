package format

import (
	"bytes"
	"errors"
	"testing"
)

// FuzzDecode feeds arbitrary bytes to the decoder. It must not panic,
// every error must be an *Error wrapping a sentinel, and whatever it
// accepts must be canonical: re-encoding the decoded records gives the
// input back byte for byte (for an older revision's stream, once its HEADER's
// rev and the trailer's CRC are made that revision's: the encoder writes only
// the current revision). The seeds are in testdata/fuzz/FuzzDecode.
func FuzzDecode(f *testing.F) {
	f.Add(goldenWire().b)
	f.Add(goldenWireV2().b)
	f.Add(goldenWireV3().b)
	f.Fuzz(func(t *testing.T, b []byte) {
		h, items, err := decodeAll(b)
		if err != nil {
			var e *Error
			if !errors.As(err, &e) {
				t.Fatalf("%v is %T, not *Error", err, err)
			}
			if !(errors.Is(err, ErrTruncated) || errors.Is(err, ErrMagic) || errors.Is(err, ErrRevision) ||
				errors.Is(err, ErrChecksum) || errors.Is(err, ErrMalformed)) {
				t.Fatalf("%v wraps no sentinel", err)
			}
			if e.Offset < 0 || e.Offset > int64(len(b)) {
				t.Fatalf("%v: offset outside the input (%d bytes)", err, len(b))
			}
			return
		}
		rev := h.Revision
		h.Revision = Revision
		out, err := encodeAll(h, items)
		if err != nil {
			t.Fatalf("decoded, but re-encoding fails: %v", err)
		}
		if rev != Revision {
			out = asRevision(out, rev)
		}
		if !bytes.Equal(out, b) {
			t.Fatalf("re-encoding differs\n in %x\nout %x", b, out)
		}
	})
}
