package main

import (
	"encoding/json"
	"strings"
	"testing"
	"time"

	"github.com/pipesnap/pipesnap/pipemodel"
)

// TestStateJSONStreamed: ls --json, written an element at a time, is
// byte for byte the document json.Encoder makes of it whole.
func TestStateJSONStreamed(t *testing.T) {
	full := &pipemodel.Sample{
		Took: 1234 * time.Microsecond,
		Pipes: []*pipemodel.Pipe{
			{Ino: 1, Kind: "pipe", Bytes: 10, Capacity: 65536, Holders: []pipemodel.Holder{{PID: 7, Comm: "a<b>&c", FD: 1, End: "write", Blocked: "writing", BlockedTIDs: []uint32{7, 8}}},
				Waiters: []pipemodel.Waiter{{Queue: "write", Kind: "blocked", PID: 7, TID: 8, Comm: "x\"y\\z\n", Wait: time.Second}}},
			{Ino: 2, Kind: "fifo", Path: "/tmp/f\xff"},
		},
		Procs: map[uint32]*pipemodel.Proc{
			9: {PID: 9, Comm: "nine", Tasks: []pipemodel.Thread{{TID: 9, State: "S"}}, Container: &pipemodel.Container{Runtime: "podman", ID: "abc"}},
			7: {PID: 7, Comm: "seven", CgroupV1: &pipemodel.Cgroup{Controller: "cpu", ID: 3, Path: "/x"}},
		},
		Gone:      []uint32{5, 6},
		OpenWaits: []pipemodel.OpenWait{{PID: 3, Comm: "opener", End: "read", Ino: 2, Path: "/tmp/f"}},
	}
	for _, s := range []*pipemodel.Sample{full, {Procs: map[uint32]*pipemodel.Proc{}}} {
		var want strings.Builder
		enc := json.NewEncoder(&want)
		enc.SetIndent("", "  ")
		if err := enc.Encode(stateJSON(s)); err != nil {
			t.Fatal(err)
		}
		var got strings.Builder
		if err := writeStateJSON(&got, s); err != nil {
			t.Fatal(err)
		}
		if got.String() != want.String() {
			t.Errorf("streamed:\n%s\nwhole:\n%s", got.String(), want.String())
		}
	}
}
