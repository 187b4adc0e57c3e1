package dumpstream

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"strings"
	"testing"
	"time"

	"github.com/pipesnap/pipesnap/format"
)

// The stage keeps what fits in memory, spills the rest to an unnamed
// 0600 file, and gives back every byte in order.
func TestStageSpill(t *testing.T) {
	for _, limit := range []int{1 << 20, 100} {
		st := &stage{limit: limit}
		var want bytes.Buffer
		for i := range 1000 {
			p := bytes.Repeat([]byte{byte(i)}, i%37)
			want.Write(p)
			if _, err := st.Write(p); err != nil {
				t.Fatal(err)
			}
		}
		if spilled := st.f != nil; spilled != (limit < want.Len()) {
			t.Errorf("limit %d: spilled %v for %d bytes", limit, spilled, want.Len())
		}
		if st.f != nil {
			fi, err := st.f.Stat()
			if err != nil || fi.Mode().Perm() != 0o600 {
				t.Errorf("staging file mode %v (%v), want 0600", fi.Mode(), err)
			}
			if link, _ := os.Readlink(fmt.Sprintf("/proc/self/fd/%d", st.f.Fd())); !strings.Contains(link, "(deleted)") {
				t.Errorf("staging file has a name: %s", link)
			}
		}
		var got bytes.Buffer
		if err := st.writeTo(&got); err != nil {
			t.Fatal(err)
		}
		if !bytes.Equal(got.Bytes(), want.Bytes()) {
			t.Errorf("limit %d: %d bytes back, want %d", limit, got.Len(), want.Len())
		}
		st.Close()
	}
}

// slowOut is an output that takes its time, and records whether the
// frozen process was stopped whenever a byte reached it.
type slowOut struct {
	bytes.Buffer
	pid        int
	delay      time.Duration
	sawStopped bool
	first      time.Time
}

func (o *slowOut) Write(p []byte) (int, error) {
	if o.first.IsZero() {
		o.first = time.Now()
	}
	if stopped(o.pid) {
		o.sawStopped = true
	}
	time.Sleep(o.delay)
	return o.Buffer.Write(p)
}

// stopped tells whether pid is stopped (T) or in a pipesnap freeze
// cgroup (frozen tasks show S).
func stopped(pid int) bool {
	b, _ := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	i := bytes.LastIndexByte(b, ')')
	if i > 0 && i+2 < len(b) && (b[i+2] == 'T' || b[i+2] == 't') {
		return true
	}
	cg, _ := os.ReadFile(fmt.Sprintf("/proc/%d/cgroup", pid))
	return bytes.Contains(cg, []byte("pipesnap-freeze-"))
}

// A frozen walk's stream reaches the output only after the thaw: an
// output that stalls does not keep the processes stopped, and
// Report.Frozen is the walk's time, not the output's.
func TestFrozenWalkStaged(t *testing.T) {
	// As root, with the cgroup freezer where it can be used; otherwise
	// with SIGSTOP (the process is this user's own).
	cmd := exec.Command("sleep", "60")
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	defer func() { cmd.Process.Kill(); cmd.Wait() }()
	old := StageMemory
	StageMemory = 256 << 10 // spill to the file too
	defer func() { StageMemory = old }()

	for _, frozen := range []bool{true, false} {
		out := &slowOut{pid: cmd.Process.Pid, delay: 50 * time.Millisecond}
		s, err := New(out, frozen, "test")
		if err != nil {
			t.Fatal(err)
		}
		pid := uint32(cmd.Process.Pid)
		var walkDone time.Time
		err = s.Walk([]uint32{pid}, func() error {
			if frozen && !stopped(cmd.Process.Pid) {
				return errors.New("walking, and the process is not stopped")
			}
			if err := s.Task(format.Task{PID: pid, TID: pid, Comm: "sleep"}); err != nil {
				return err
			}
			data := bytes.Repeat([]byte("x"), 4096)
			for i := range 256 { // 1 MiB: many writes to the output
				ref := s.NewRef()
				if err := s.FD(format.FDEnt{FD: int32(3 + i), FileRef: ref}); err != nil {
					return err
				}
				pref, _, err := s.File(format.File{Ref: ref, Mode: format.ModeRead}, uint64(1000+i))
				if err != nil {
					return err
				}
				p := format.Pipe{Ref: pref, Ino: uint64(1000 + i), Kind: format.KindPipe, PageSize: 4096, NrBufs: 1, Bytes: 4096, RingSize: 16, Capacity: 65536, MaxUsage: 16, Head: 1}
				if err := s.Pipe(p); err != nil {
					return err
				}
				if err := s.Buffer(format.Buffer{Index: 0, Len: 4096, Data: data}); err != nil {
					return err
				}
				if err := s.EndPipe(&p, pid, "sleep", int32(3+i)); err != nil {
					return err
				}
			}
			walkDone = time.Now()
			return nil
		})
		if err != nil {
			t.Fatal(err)
		}
		written := time.Now()
		report, err := s.Finish([]uint32{pid})
		if err != nil {
			t.Fatal(err)
		}
		if report.Pipes != 256 {
			t.Errorf("%d pipes", report.Pipes)
		}
		dec, err := format.NewDecoder(bytes.NewReader(out.Bytes()))
		if err != nil {
			t.Fatal(err)
		}
		n := 0
		for {
			_, err := dec.Next()
			if errors.Is(err, io.EOF) {
				break
			}
			if err != nil {
				t.Fatalf("frozen %v: stream: %v", frozen, err)
			}
			n++
		}
		if !frozen {
			if out.first.After(walkDone) {
				t.Errorf("unfrozen walk staged: first write after the walk")
			}
			continue
		}
		t.Logf("stopped %v (%s); output written in %v after the walk", report.Frozen, report.FrozenHow, written.Sub(walkDone).Round(time.Millisecond))
		if out.sawStopped {
			t.Error("the output got bytes while the process was stopped")
		}
		if written.Sub(walkDone) < 100*time.Millisecond {
			t.Errorf("the output took %v: too fast to tell", written.Sub(walkDone))
		}
		if report.Frozen <= 0 || report.Frozen > 100*time.Millisecond {
			t.Errorf("Report.Frozen %v, the walk took far less and the output %v", report.Frozen, written.Sub(walkDone))
		}
		if stopped(cmd.Process.Pid) {
			t.Error("still stopped after the dump")
		}
	}
}
