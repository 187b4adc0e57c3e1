package diagnose

import (
	"cmp"
	"fmt"
	"slices"
	"strings"

	"github.com/pipesnap/pipesnap/pipemodel"
)

// maxLinkProcs bounds the processes holding a pipe that links
// processes into a chain. A pipe many processes hold (a shared stderr, a
// log pipe, a pipe every child inherited) is plumbing, not a stage of a
// pipeline: it would merge unrelated pipelines into one.
const maxLinkProcs = 4

// Chain is a set of processes connected by pipes (a shell pipeline is
// one), in the order data flows.
type Chain struct {
	Procs []ChainProc `json:"procs"` // in flow order
	// Stages group the processes that hold the same place in the flow
	// (a subshell and the command it runs both holding the write end).
	Stages [][]ChainProc `json:"stages"`
	Pipes  []uint64      `json:"pipes"`
	Stuck  bool          `json:"stuck"`
	// StuckAt are the culprits where the chain stopped: those of its
	// stalls that no other stall of the chain explains.
	StuckAt  []uint32 `json:"stuck_at"`
	Findings []int    `json:"findings"` // indexes into Report.Findings
	Summary  string   `json:"summary"`
}

// ChainProc is one process of a chain.
type ChainProc struct {
	PID     uint32 `json:"pid"`
	Comm    string `json:"comm"`
	Outside bool   `json:"outside,omitempty"` // not among the processes asked for
}

// chains links the processes that pipes connect, assembles the groups,
// attaches the findings and orders each chain the way data flows.
func (d *diagnosis) chains(s *pipemodel.Sample, ignore map[uint64]bool, findings []Finding) []Chain {
	l := link(s, ignore)
	chains := l.assemble(s)
	chains = attach(chains, findings, s)
	out := []Chain{}
	for _, c := range chains {
		c.Stages = flowStages(c.Procs, l.edges)
		c.Procs = c.Procs[:0]
		for _, st := range c.Stages {
			c.Procs = append(c.Procs, st...)
		}
		slices.Sort(c.Pipes)
		slices.Sort(c.Findings)
		c.StuckAt = stuckAt(c, findings)
		for _, i := range c.Findings {
			c.Stuck = c.Stuck || findings[i].Category == Stall
		}
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

type links struct {
	parent map[uint32]uint32
	edges  map[[2]uint32]bool  // writer -> reader
	pipes  map[uint64][]uint32 // linking pipe -> its processes
}

func (l *links) find(x uint32) uint32 {
	if _, ok := l.parent[x]; !ok {
		l.parent[x] = x
	}
	if l.parent[x] != x {
		l.parent[x] = l.find(l.parent[x])
	}
	return l.parent[x]
}

// link connects a writer and a reader of the same pipe (not plumbing).
func link(s *pipemodel.Sample, ignore map[uint64]bool) *links {
	l := &links{parent: map[uint32]uint32{}, edges: map[[2]uint32]bool{}, pipes: map[uint64][]uint32{}}
	for _, p := range s.Pipes {
		if ignore[p.Ino] {
			continue
		}
		var procs []uint32
		for _, h := range p.Holders {
			if procs = appendNew(procs, h.PID); len(procs) > maxLinkProcs {
				break // plumbing: looked at no further
			}
		}
		if len(procs) > maxLinkProcs {
			continue
		}
		// By process, not by fd: a process may hold thousands of fds
		// of one pipe.
		var writers, readers []uint32
		for _, h := range p.Holders {
			if h.End.Writes() {
				writers = appendNew(writers, h.PID)
			}
			if h.End.Reads() {
				readers = appendNew(readers, h.PID)
			}
		}
		for _, w := range writers {
			for _, r := range readers {
				if w != r {
					l.edges[[2]uint32{w, r}] = true
					l.parent[l.find(w)] = l.find(r)
					l.pipes[p.Ino] = procs
				}
			}
		}
	}
	return l
}

// assemble makes one chain per connected group, in inode order.
func (l *links) assemble(s *pipemodel.Sample) []*Chain {
	var chains []*Chain
	byRoot := map[uint32]*Chain{}
	for _, p := range s.Pipes {
		procs, ok := l.pipes[p.Ino]
		if !ok {
			continue
		}
		root := l.find(procs[0])
		c := byRoot[root]
		if c == nil {
			c = newChain()
			byRoot[root] = c
			chains = append(chains, c)
		}
		c.Pipes = append(c.Pipes, p.Ino)
		for _, pid := range procs {
			addProc(c, s, pid)
		}
	}
	return chains
}

func newChain() *Chain {
	return &Chain{Procs: []ChainProc{}, Pipes: []uint64{}, StuckAt: []uint32{}, Findings: []int{}}
}

func addProc(c *Chain, s *pipemodel.Sample, pid uint32) {
	if containsPID(c.Procs, pid) {
		return
	}
	addProcNew(c, s, pid)
}

// addProcNew adds a process known not to be in c yet.
func addProcNew(c *Chain, s *pipemodel.Sample, pid uint32) {
	cp := ChainProc{PID: pid, Comm: "?"}
	if pr := s.Procs[pid]; pr != nil {
		cp.Comm, cp.Outside = pr.Comm, pr.Outside
	}
	c.Procs = append(c.Procs, cp)
}

// attach adds each stall or idle finding to the chains of the processes
// it names, or makes a chain of its own. Warnings stand alone: a leaked
// pipe is no stage of anyone's pipeline.
func attach(chains []*Chain, findings []Finding, s *pipemodel.Sample) []*Chain {
	for i, f := range findings {
		if f.Category == Warning {
			continue
		}
		// The waiting tasks and the culprits place a finding; the whole
		// other end only when it is a few processes, not plumbing.
		var involved []uint32
		named := slices.Concat(f.Waiting, f.Culprits)
		if len(f.OtherEnd) <= maxLinkProcs {
			named = append(named, f.OtherEnd...)
		}
		in := map[uint32]bool{}
		for _, t := range named {
			if !in[t.PID] {
				in[t.PID] = true
				involved = append(involved, t.PID)
			}
		}
		joined := false
		for _, c := range chains {
			if slices.ContainsFunc(c.Procs, func(p ChainProc) bool { return in[p.PID] }) {
				c.Findings = append(c.Findings, i)
				if f.Ino != 0 && !slices.Contains(c.Pipes, f.Ino) {
					c.Pipes = append(c.Pipes, f.Ino)
				}
				joined = true
			}
		}
		if !joined {
			c := newChain()
			c.Findings = []int{i}
			if f.Ino != 0 {
				c.Pipes = []uint64{f.Ino}
			}
			for _, pid := range involved {
				addProcNew(c, s, pid)
			}
			for _, t := range f.Waiting {
				if i := slices.IndexFunc(c.Procs, func(p ChainProc) bool { return p.PID == t.PID }); i >= 0 && c.Procs[i].Comm == "?" {
					c.Procs[i].Comm = t.Comm
				}
			}
			chains = append(chains, c)
		}
	}
	return chains
}

// flowStages orders processes into stages the way data flows: a stage is
// every process at the same distance from the chain's sources (the
// longest path of writer -> reader edges), so processes that write into
// the same pipe side by side stand together. Cycles are broken at the
// lowest pid.
func flowStages(procs []ChainProc, edges map[[2]uint32]bool) [][]ChainProc {
	slices.SortFunc(procs, func(a, b ChainProc) int { return cmp.Compare(a.PID, b.PID) })
	in := map[uint32][]uint32{} // reader -> writers
	for e := range edges {
		if containsPID(procs, e[0]) && containsPID(procs, e[1]) {
			in[e[1]] = append(in[e[1]], e[0])
		}
	}
	level := map[uint32]int{}
	visiting := map[uint32]bool{}
	var depth func(pid uint32) int
	depth = func(pid uint32) int {
		if l, ok := level[pid]; ok {
			return l
		}
		if visiting[pid] {
			return 0 // a cycle: count this edge out
		}
		visiting[pid] = true
		l := 0
		for _, w := range in[pid] {
			l = max(l, depth(w)+1)
		}
		visiting[pid] = false
		level[pid] = l
		return l
	}
	var stages [][]ChainProc
	for _, p := range procs {
		l := depth(p.PID)
		for len(stages) <= l {
			stages = append(stages, nil)
		}
		stages[l] = append(stages[l], p)
	}
	return slices.DeleteFunc(stages, func(s []ChainProc) bool { return len(s) == 0 })
}

func containsPID(procs []ChainProc, pid uint32) bool {
	return slices.ContainsFunc(procs, func(p ChainProc) bool { return p.PID == pid })
}

// stuckAt picks the culprits of a chain's stalls that no other stall of
// the chain explains: a culprit that itself waits on a stalled pipe (a
// middle stage blocked writing into a full pipe) only passes the stall
// on. When every culprit passes it on (a cycle), they all are the answer.
func stuckAt(c *Chain, findings []Finding) []uint32 {
	stalled := map[uint64]bool{}
	for _, i := range c.Findings {
		if findings[i].Category == Stall {
			stalled[findings[i].Ino] = true
		}
	}
	var root, passing []uint32
	seen := map[uint32]bool{}
	for _, i := range c.Findings {
		f := findings[i]
		if f.Category != Stall {
			continue
		}
		for _, t := range f.Culprits {
			if seen[t.PID] {
				continue
			}
			seen[t.PID] = true
			if slices.ContainsFunc(t.BlockedOn, func(b Blocking) bool { return stalled[b.Ino] && b.Ino != f.Ino }) {
				passing = append(passing, t.PID)
			} else {
				root = append(root, t.PID)
			}
		}
	}
	switch {
	case len(root) > 0:
		return root
	case passing != nil:
		return passing
	}
	return []uint32{}
}

func appendNew(s []uint32, v uint32) []uint32 {
	if slices.Contains(s, v) {
		return s
	}
	return append(s, v)
}

func summary(c *Chain, findings []Finding) string {
	var stages []string
	for _, st := range c.Stages {
		var names []string
		for _, p := range st {
			names = append(names, fmt.Sprintf("%s (%d)", p.Comm, p.PID))
		}
		stages = append(stages, strings.Join(names, " + "))
	}
	s := strings.Join(stages, " | ")
	if !c.Stuck {
		for _, i := range c.Findings {
			if findings[i].Category == Idle {
				return s + ": idle, waiting for input (" + duration(findings[i].For) + ")"
			}
		}
		return s + ": not stuck"
	}
	if len(c.StuckAt) == 0 {
		for _, i := range c.Findings {
			f := findings[i]
			if f.Category != Stall {
				continue
			}
			switch f.Kind {
			case OpenNoReader:
				return s + ": stuck opening " + fifoName(f) + ": no reader has opened it"
			case OpenNoWriter:
				return s + ": stuck opening " + fifoName(f) + ": no writer has opened it"
			case DataNoReader:
				return s + fmt.Sprintf(": stuck: pipe %d has no reader left", f.Ino)
			}
		}
		return s + ": stuck, at a process pipesnap cannot see"
	}
	var at []string
	for n, pid := range c.StuckAt {
		if n == maxNamed {
			at = append(at, fmt.Sprintf("and %d more", len(c.StuckAt)-maxNamed))
			break
		}
		for _, i := range c.Findings {
			if j := slices.IndexFunc(findings[i].Culprits, func(t Task) bool { return t.PID == pid }); j >= 0 {
				t := findings[i].Culprits[j]
				at = append(at, fmt.Sprintf("%s (pid %d), %s", t.Comm, t.PID, t.sleep()))
				break
			}
		}
	}
	return s + ": stuck at " + strings.Join(at, "; ")
}

func fifoName(f Finding) string {
	if f.Path != "" {
		return "FIFO " + f.Path
	}
	return fmt.Sprintf("FIFO (inode %d)", f.Ino)
}
