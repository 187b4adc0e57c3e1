package diagnose

import (
	"cmp"
	"fmt"
	"slices"
	"strings"

	"github.com/pipesnap/pipesnap/pipestate"
)

// maxLinkProcs bounds the processes holding a pipe that links
// processes into a chain. A pipe many processes hold (a shared stderr, a
// log pipe, a pipe every child inherited) is plumbing, not a stage of a
// pipeline: it would merge unrelated pipelines into one.
const maxLinkProcs = 4

// chains groups the processes that pipes connect (a writer and a reader
// of the same pipe, both walked) and orders each group the way data
// flows: writers before readers. Each finding joins the chains of the
// processes it names, or makes a chain of its own.
func (d *diagnosis) chains(s *pipestate.Sample, ignore map[uint64]bool, findings []Finding) []Chain {
	parent := map[uint32]uint32{}
	var find func(uint32) uint32
	find = func(x uint32) uint32 {
		if _, ok := parent[x]; !ok {
			parent[x] = x
		}
		if parent[x] != x {
			parent[x] = find(parent[x])
		}
		return parent[x]
	}
	edges := map[[2]uint32]bool{}  // writer -> reader
	links := map[uint64][]uint32{} // linking pipe -> its processes
	for _, p := range s.Pipes {
		if ignore[p.Ino] {
			continue
		}
		var procs []uint32
		for _, h := range p.Holders {
			procs = appendNew(procs, h.PID)
		}
		if len(procs) > maxLinkProcs {
			continue
		}
		for _, w := range p.Ends("write") {
			for _, r := range p.Ends("read") {
				if w.PID != r.PID {
					edges[[2]uint32{w.PID, r.PID}] = true
					parent[find(w.PID)] = find(r.PID)
					links[p.Ino] = procs
				}
			}
		}
	}
	comm := func(pid uint32) string {
		if pr := s.Procs[pid]; pr != nil {
			return pr.Comm
		}
		return "?"
	}
	var chains []*Chain
	byRoot := map[uint32]*Chain{}
	for _, p := range s.Pipes { // in inode order: stable chains
		procs, ok := links[p.Ino]
		if !ok {
			continue
		}
		root := find(procs[0])
		c := byRoot[root]
		if c == nil {
			c = &Chain{Procs: []ChainProc{}, Pipes: []uint64{}, StuckAt: []uint32{}, Findings: []int{}}
			byRoot[root] = c
			chains = append(chains, c)
		}
		c.Pipes = append(c.Pipes, p.Ino)
		for _, pid := range procs {
			if !containsPID(c.Procs, pid) {
				c.Procs = append(c.Procs, ChainProc{PID: pid, Comm: comm(pid)})
			}
		}
	}
	for i, f := range findings {
		var involved []uint32
		for _, t := range append(append([]Task{}, f.Blocked...), f.Idle...) {
			if !t.Outside {
				involved = appendNew(involved, t.PID)
			}
		}
		joined := false
		for _, c := range chains {
			if slices.ContainsFunc(involved, func(pid uint32) bool { return containsPID(c.Procs, pid) }) {
				c.Findings = append(c.Findings, i)
				if !slices.Contains(c.Pipes, f.Ino) {
					c.Pipes = append(c.Pipes, f.Ino)
				}
				joined = true
			}
		}
		if !joined {
			c := &Chain{Procs: []ChainProc{}, Pipes: []uint64{f.Ino}, StuckAt: []uint32{}, Findings: []int{i}}
			for _, pid := range involved {
				c.Procs = append(c.Procs, ChainProc{PID: pid, Comm: comm(pid)})
			}
			chains = append(chains, c)
		}
	}
	out := []Chain{}
	for _, c := range chains {
		c.Procs = flowOrder(c.Procs, edges)
		slices.Sort(c.Pipes)
		slices.Sort(c.Findings)
		c.Stuck = len(c.Findings) > 0
		c.StuckAt = stuckAt(c, findings)
		c.Summary = summary(c, findings)
		out = append(out, *c)
	}
	// Stuck chains first, then by their first process.
	slices.SortStableFunc(out, func(a, b Chain) int {
		if a.Stuck != b.Stuck {
			if a.Stuck {
				return -1
			}
			return 1
		}
		if len(a.Procs) == 0 || len(b.Procs) == 0 {
			return cmp.Compare(len(b.Procs), len(a.Procs))
		}
		return cmp.Compare(a.Procs[0].PID, b.Procs[0].PID)
	})
	return out
}

// flowOrder sorts processes so that writers come before their readers
// (Kahn's algorithm; ties and cycles by pid).
func flowOrder(procs []ChainProc, edges map[[2]uint32]bool) []ChainProc {
	slices.SortFunc(procs, func(a, b ChainProc) int { return cmp.Compare(a.PID, b.PID) })
	in := map[uint32]int{}
	for e := range edges {
		if containsPID(procs, e[0]) && containsPID(procs, e[1]) {
			in[e[1]]++
		}
	}
	var out []ChainProc
	done := map[uint32]bool{}
	for len(out) < len(procs) {
		next := -1
		for i, p := range procs {
			if !done[p.PID] && in[p.PID] == 0 {
				next = i
				break
			}
		}
		if next < 0 { // a cycle: take the lowest pid left
			for i, p := range procs {
				if !done[p.PID] {
					next = i
					break
				}
			}
		}
		p := procs[next]
		done[p.PID] = true
		out = append(out, p)
		for e := range edges {
			if e[0] == p.PID && !done[e[1]] {
				in[e[1]]--
			}
		}
	}
	return out
}

func containsPID(procs []ChainProc, pid uint32) bool {
	return slices.ContainsFunc(procs, func(p ChainProc) bool { return p.PID == pid })
}

// stuckAt picks the processes a chain's findings point at that are not
// blocked on a pipe themselves: where the chain stopped. When every one
// of them is blocked (a cycle, or a reader holding its own write end),
// those are the answer.
func stuckAt(c *Chain, findings []Finding) []uint32 {
	var free, blocked []uint32
	for _, i := range c.Findings {
		for _, t := range findings[i].Idle {
			if !containsPID(c.Procs, t.PID) {
				continue
			}
			if len(t.BlockedOn) == 0 {
				free = appendNew(free, t.PID)
			} else {
				blocked = appendNew(blocked, t.PID)
			}
		}
	}
	if len(free) > 0 {
		return free
	}
	if blocked == nil {
		return []uint32{}
	}
	return blocked
}

func appendNew(s []uint32, v uint32) []uint32 {
	if slices.Contains(s, v) {
		return s
	}
	return append(s, v)
}

func summary(c *Chain, findings []Finding) string {
	var names []string
	for _, p := range c.Procs {
		names = append(names, fmt.Sprintf("%s (%d)", p.Comm, p.PID))
	}
	s := strings.Join(names, " | ")
	if !c.Stuck {
		return s + ": not stuck"
	}
	if len(c.StuckAt) == 0 {
		return s + ": stuck outside the walked processes"
	}
	var at []string
	for _, pid := range c.StuckAt {
		for _, i := range c.Findings {
			if j := slices.IndexFunc(findings[i].Idle, func(t Task) bool { return t.PID == pid }); j >= 0 {
				t := findings[i].Idle[j]
				at = append(at, fmt.Sprintf("%s (pid %d), %s", t.Comm, t.PID, t.sleep()))
				break
			}
		}
	}
	return s + ": stuck at " + strings.Join(at, "; ")
}
