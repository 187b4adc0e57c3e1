package main

// pipesnap run inside a pid namespace: it shows and takes the pids of
// its own namespace, leaves itself out, and its BPF dump works.

import (
	"encoding/json"
	"os/exec"
	"strings"
	"testing"
)

func TestInPidNamespace(t *testing.T) {
	requireBPF(t)
	if _, err := exec.LookPath("unshare"); err != nil {
		t.Fatalf("unshare (util-linux): %v", err)
	}
	dir := t.TempDir()
	// In the namespace: sh is 1, yes 2, sleep 3 (started in that order).
	script := `yes | sleep 600 &
sleep 0.5
"$0" ls --all --json > "$1/ls.json"
"$0" ls --pid 2 --json > "$1/ls2.json"
"$0" dump --pid 2,3 --method bpf -o "$1/s.snap" 2> "$1/dump.err"
echo $? > "$1/dump.rc"
"$0" diagnose --min-wait 0 --json --pid 2,3 > "$1/diag.json"
kill %1 2>/dev/null; exit 0`
	cmd := exec.Command("unshare", "-fp", "--mount-proc", "sh", "-c", script, pipesnapBin, dir)
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("unshare: %v\n%s", err, out)
	}
	read := func(name string) string {
		b, _ := exec.Command("cat", dir+"/"+name).Output()
		return string(b)
	}
	var all lsOut
	if err := json.Unmarshal([]byte(read("ls.json")), &all); err != nil {
		t.Fatalf("ls --all: %v: %s", err, read("ls.json"))
	}
	var full bool
	for _, p := range all.Pipes {
		for _, h := range p.Holders {
			if h.PID > 100 {
				t.Errorf("holder %+v: a pid of the host, not of the namespace", h)
			}
			if h.Comm == "pipesnap" {
				t.Errorf("pipesnap lists itself: %+v", h)
			}
			full = full || h.PID == 2 && h.Comm == "yes" && h.Blocked == "writing"
		}
	}
	if !full {
		t.Errorf("ls --all in the namespace: no yes (pid 2) blocked writing: %s", read("ls.json"))
	}
	if !strings.Contains(read("ls2.json"), `"comm": "yes"`) {
		t.Errorf("ls --pid 2 in the namespace finds no yes: %s", read("ls2.json"))
	}
	if rc := strings.TrimSpace(read("dump.rc")); rc != "0" || strings.Contains(read("dump.err"), "tee") {
		t.Errorf("dump --method bpf in the namespace: exit %s: %s", rc, read("dump.err"))
	}
	if out, stderr, code := run(t, "inspect", dir+"/s.snap"); code != 0 || !strings.Contains(out, "2(yes):1:write:blocked 3(sleep):0:read") || !strings.Contains(out, "65536/65536") {
		t.Errorf("inspect of the namespace's snapshot: exit %d %s\n%s", code, stderr, out)
	}
	var d diagOut
	if err := json.Unmarshal([]byte(read("diag.json")), &d); err != nil || len(d.Chains) == 0 || len(d.Chains[0].StuckAt) != 1 || d.Chains[0].StuckAt[0] != 3 {
		t.Errorf("diagnose in the namespace: %v %s", err, read("diag.json"))
	}
}
