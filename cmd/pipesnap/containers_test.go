package main

import (
	"bytes"
	"slices"
	"strings"
	"testing"

	"github.com/pipesnap/pipesnap/pipemodel"
)

// TestPodColumn: the ls table has a POD column (namespace/pod) when a
// process runs in a Kubernetes pod, and none otherwise; CONTAINER names
// the container alone.
func TestPodColumn(t *testing.T) {
	p := &pipemodel.Pipe{Ino: 7, Kind: "pipe", Capacity: 65536, Readers: 1, Writers: 1, Holders: []pipemodel.Holder{
		{PID: 10, Comm: "api", FD: 1, End: pipemodel.EndWrite},
		{PID: 11, Comm: "sink", FD: 0, End: pipemodel.EndRead},
	}}
	smp := &pipemodel.Sample{Pipes: []*pipemodel.Pipe{p}, Procs: map[uint32]*pipemodel.Proc{
		10: {PID: 10, Comm: "api", State: "S", NSPID: 1,
			Container: &pipemodel.Container{Runtime: "containerd", ID: strings.Repeat("a", 64), Name: "api", Pod: "api-7d9f", Namespace: "prod", KubeName: "api"}},
		11: {PID: 11, Comm: "sink", State: "S"},
	}}
	var b bytes.Buffer
	if err := writeStateTable(&b, smp, tableOptions{}); err != nil {
		t.Fatal(err)
	}
	lines := strings.Split(b.String(), "\n")
	if h := strings.Fields(lines[0]); !slices.Contains(h, "CONTAINER") || !slices.Contains(h, "POD") {
		t.Errorf("header %q: want CONTAINER and POD", lines[0])
	}
	if row := lines[1]; !strings.Contains(row, " api ") || !strings.Contains(row, "prod/api-7d9f") || !strings.Contains(row, "10/1(api)") {
		t.Errorf("row %q: want container api, pod prod/api-7d9f, holder 10/1(api)", row)
	}

	smp.Procs[10].Container = &pipemodel.Container{Runtime: "podman", ID: strings.Repeat("b", 64), Name: "web"}
	b.Reset()
	if err := writeStateTable(&b, smp, tableOptions{}); err != nil {
		t.Fatal(err)
	}
	if out := b.String(); strings.Contains(out, "POD") || !strings.Contains(out, " web ") {
		t.Errorf("without pods:\n%s\nwant no POD column, container web", out)
	}
}
