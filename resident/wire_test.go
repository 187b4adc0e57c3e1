package resident

import (
	"encoding/binary"
	"math/rand/v2"
	"reflect"
	"testing"
	"time"

	"github.com/pipesnap/pipesnap/pipemodel"
)

// fill sets every field reachable from v to a value of its own, not zero:
// slices and maps get two elements, pointers a value.
func fill(v reflect.Value, n *int) {
	*n++
	switch v.Kind() {
	case reflect.Bool:
		v.SetBool(true)
	case reflect.Int, reflect.Int8, reflect.Int16, reflect.Int32, reflect.Int64:
		v.SetInt(int64(-*n))
	case reflect.Uint, reflect.Uint8, reflect.Uint16, reflect.Uint32, reflect.Uint64:
		v.SetUint(uint64(*n))
	case reflect.String:
		v.SetString("s" + string(rune('a'+*n%26)) + string(rune('A'+*n/26%26)))
	case reflect.Pointer:
		v.Set(reflect.New(v.Type().Elem()))
		fill(v.Elem(), n)
	case reflect.Slice:
		v.Set(reflect.MakeSlice(v.Type(), 2, 2))
		for i := range 2 {
			fill(v.Index(i), n)
		}
	case reflect.Map:
		v.Set(reflect.MakeMap(v.Type()))
		for range 2 {
			k, e := reflect.New(v.Type().Key()).Elem(), reflect.New(v.Type().Elem()).Elem()
			fill(k, n)
			fill(e, n)
			v.SetMapIndex(k, e)
		}
	case reflect.Struct:
		if v.Type() == reflect.TypeFor[time.Time]() {
			v.Set(reflect.ValueOf(time.Unix(1700000000, int64(*n))))
			return
		}
		for i := range v.NumField() {
			fill(v.Field(i), n)
		}
	default:
		panic("fill: " + v.Kind().String())
	}
}

// fullSample is a sample with every field of the model set.
func fullSample() *pipemodel.Sample {
	s := &pipemodel.Sample{}
	n := 0
	fill(reflect.ValueOf(s).Elem(), &n)
	// Procs are keyed by their pid.
	procs := map[uint32]*pipemodel.Proc{}
	for _, p := range s.Procs {
		procs[p.PID] = p
	}
	s.Procs = procs
	return s
}

// encodeSample and decodeSample are a sample as one head and one batch.
func encodeSample(b []byte, s *pipemodel.Sample) []byte {
	h := encodeHead(nil, s)
	b = binary.AppendUvarint(b, uint64(len(h)))
	b = binary.AppendUvarint(append(b, h...), uint64(len(s.Pipes)))
	for _, p := range s.Pipes {
		b = appendPipe(b, p)
	}
	return b
}

func decodeSample(b []byte) (*pipemodel.Sample, error) {
	n, k := binary.Uvarint(b)
	if k <= 0 || n > uint64(len(b)-k) {
		return nil, errWire
	}
	d := newDecoder()
	s, err := d.head(b[k : k+int(n)])
	if err != nil {
		return nil, err
	}
	s.Pipes, err = d.pipes(b[k+int(n):], nil)
	return s, err
}

// TestWireRoundTrip: every field of the model crosses the wire. A field
// added to pipemodel and not to wire.go fails here.
func TestWireRoundTrip(t *testing.T) {
	s := fullSample()
	got, err := decodeSample(encodeSample(nil, s))
	if err != nil {
		t.Fatal(err)
	}
	if !reflect.DeepEqual(got, s) {
		t.Errorf("round trip differs:\n got %+v\nwant %+v", got, s)
	}
	// The zero sample, and extremes.
	z := &pipemodel.Sample{Procs: map[uint32]*pipemodel.Proc{}}
	if got, err := decodeSample(encodeSample(nil, z)); err != nil || !reflect.DeepEqual(got, z) {
		t.Errorf("zero sample: %+v, %v", got, err)
	}
	s.Pipes[0].Holders[0].FD = -1 << 31
	s.Pipes[0].Waiters[0].TargetFD = 1<<31 - 1
	s.Pipes[0].Ino = 1<<64 - 1
	s.Took = -1 << 63
	if got, err := decodeSample(encodeSample(nil, s)); err != nil || !reflect.DeepEqual(got, s) {
		t.Errorf("extremes: %v", err)
	}
}

// TestWireMalformed: every truncation and random damage of a valid
// encoding is an error (or a sample), never a panic or a huge allocation.
func TestWireMalformed(t *testing.T) {
	b := encodeSample(nil, fullSample())
	for i := range len(b) {
		if _, err := decodeSample(b[:i]); err == nil {
			t.Errorf("truncated at %d of %d: no error", i, len(b))
		}
	}
	if _, err := decodeSample(append(b, 0)); err == nil {
		t.Error("trailing byte: no error")
	}
	r := rand.New(rand.NewPCG(1, 2))
	for range 20000 {
		c := append([]byte(nil), b...)
		for range 1 + r.IntN(4) {
			c[r.IntN(len(c))] = byte(r.Uint32())
		}
		decodeSample(c)
	}
	// A count the payload cannot hold allocates nothing.
	huge := []byte{0, 0, 0, 0xff, 0xff, 0xff, 0xff, 0x0f}
	if _, err := decodeSample(huge); err == nil {
		t.Error("huge pipe count: no error")
	}
}

// BenchmarkWire: one 10,000-pipe sample each way.
func BenchmarkWire(b *testing.B) {
	s := &pipemodel.Sample{Procs: map[uint32]*pipemodel.Proc{}}
	for i := range 10000 {
		pid := uint32(100 + i/1000)
		s.Procs[pid] = &pipemodel.Proc{PID: pid, Comm: "python3", State: "S", Threads: 1, Tasks: []pipemodel.Thread{{TID: pid, State: "S"}}}
		s.Pipes = append(s.Pipes, &pipemodel.Pipe{Ino: uint64(i), Kind: "pipe", Capacity: 65536, MaxUsage: 16, RingSize: 16,
			Readers: 1, Writers: 1, Holders: []pipemodel.Holder{
				{PID: pid, Comm: "python3", FD: int32(3 + 2*i%1000), End: "read"},
				{PID: pid, Comm: "python3", FD: int32(4 + 2*i%1000), End: "write", Flags: 1}}})
	}
	var buf []byte
	for b.Loop() {
		buf = encodeSample(buf[:0], s)
		if _, err := decodeSample(buf); err != nil {
			b.Fatal(err)
		}
	}
	b.ReportMetric(float64(len(buf)), "bytes")
}
