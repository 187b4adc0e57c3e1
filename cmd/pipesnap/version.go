package main

import (
	"runtime/debug"
	"strings"
)

// version is stamped by a release build (make release:
// -ldflags "-X main.version=v1.2.3"); otherwise it comes from the build
// info Go records: the module version (go install ...@v1.2.3) or "devel",
// with the VCS revision of a build from a checkout.
var version = ""

// buildInfo is what --version prints and pipesnap_build_info exports.
type buildInfo struct {
	Version   string // v1.2.3, or devel
	Revision  string // the VCS revision, +dirty when the tree had changes; "" unknown
	GoVersion string
}

func readBuildInfo() buildInfo {
	out := buildInfo{Version: version}
	bi, ok := debug.ReadBuildInfo()
	if !ok {
		if out.Version == "" {
			out.Version = "devel"
		}
		return out
	}
	out.GoVersion = bi.GoVersion
	if out.Version == "" {
		out.Version = bi.Main.Version
		if out.Version == "" || out.Version == "(devel)" {
			out.Version = "devel"
		}
	}
	var modified bool
	for _, s := range bi.Settings {
		switch s.Key {
		case "vcs.revision":
			out.Revision = s.Value
		case "vcs.modified":
			modified = s.Value == "true"
		}
	}
	if modified && out.Revision != "" {
		out.Revision += "+dirty"
	}
	return out
}

// String: "v1.2.3 (revision 2cb98e1..., go1.26.8)".
func (b buildInfo) String() string {
	var extra []string
	if b.Revision != "" {
		extra = append(extra, "revision "+b.Revision)
	}
	if b.GoVersion != "" {
		extra = append(extra, b.GoVersion)
	}
	if len(extra) == 0 {
		return b.Version
	}
	return b.Version + " (" + strings.Join(extra, ", ") + ")"
}
