package main

import (
	"slices"
	"strings"

	"github.com/pipesnap/pipesnap/internal/termsafe"
	"github.com/pipesnap/pipesnap/pipemodel"
)

// The CONTAINER and POD columns of the ls, watch and inspect tables.

// hasPods tells whether a process of s runs in a Kubernetes pod: the
// tables then have a POD column.
func hasPods(s *pipemodel.Sample) bool {
	for _, pr := range s.Procs {
		if pr.Container != nil && pr.Container.Pod != "" {
			return true
		}
	}
	return false
}

// containersText names the containers of a pipe's holders, "-" when
// none is in one.
func containersText(s *pipemodel.Sample, p *pipemodel.Pipe) string {
	return holdersList(s, p, func(c *pipemodel.Container) string { return c.Label() })
}

// podsText names the pods (namespace/pod) of a pipe's holders, "-"
// when none is in one.
func podsText(s *pipemodel.Sample, p *pipemodel.Pipe) string {
	return holdersList(s, p, podText)
}

// holdersList lists, each once, what name says of the containers of a
// pipe's holders ("" says nothing), "-" for none.
func holdersList(s *pipemodel.Sample, p *pipemodel.Pipe, name func(*pipemodel.Container) string) string {
	var out []string
	for _, h := range p.Holders {
		pr := s.Procs[h.PID]
		if pr == nil || pr.Container == nil {
			continue
		}
		if l := termsafe.String(name(pr.Container)); l != "" && !slices.Contains(out, l) {
			out = append(out, l)
		}
	}
	if len(out) == 0 {
		return "-"
	}
	return strings.Join(out, ",")
}

// podText is a container's pod as namespace/pod, "" outside one.
func podText(c *pipemodel.Container) string {
	switch {
	case c == nil || c.Pod == "":
		return ""
	case c.Namespace == "":
		return c.Pod
	}
	return c.Namespace + "/" + c.Pod
}
