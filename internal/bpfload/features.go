package bpfload

import (
	"errors"
	"fmt"
	"os"
	"strings"
	"sync"

	"github.com/cilium/ebpf"
	"github.com/cilium/ebpf/asm"
	"github.com/cilium/ebpf/btf"
	"golang.org/x/sys/unix"
)

// Features are what the running kernel lets pipesnap's programs use
// where kernels differ (bpf/compat.h). Each is found out from the kernel
// itself, never from its version number; each missing one has a fallback
// in the programs or in the loader.
type Features struct {
	// Loop: the bpf_loop helper (Linux 5.17). Without it the programs
	// run bounded loops, chunk by chunk, within the bounds of their
	// enum ps_compat / pst_compat.
	Loop bool
	// DPath: bpf_d_path in iterator programs (Linux 5.12). Without it a
	// FIFO's path is read from /proc/PID/fd/N, which is the same d_path()
	// of the same open file. (A load-time switch of one object.)
	DPath bool
}

// All is what a kernel with everything the programs can use offers.
var All = Features{Loop: true, DPath: true}

// String names the variant for notes and logs, e.g. "bpf_loop, bpf_d_path"
// or "bounded loops, FIFO paths from /proc".
func (f Features) String() string {
	var parts []string
	if f.Loop {
		parts = append(parts, "bpf_loop")
	} else {
		parts = append(parts, "bounded loops (no bpf_loop)")
	}
	if f.DPath {
		parts = append(parts, "bpf_d_path")
	} else {
		parts = append(parts, "FIFO paths from /proc (no bpf_d_path in iterators)")
	}
	return strings.Join(parts, ", ")
}

// Without is the environment variable that makes pipesnap act as if the
// kernel lacked some features, to run the fallbacks on a kernel that has
// them: a comma-separated list of bpf_loop and bpf_d_path, or all.
const Without = "PIPESNAP_BPF_WITHOUT"

// Force, when set, replaces the features found (for tests).
var Force *Features

// Detect finds what the kernel offers: bpf_loop from the kernel's own
// list of helpers (enum bpf_func_id in its BTF, which is parsed for the
// load anyway), bpf_d_path in iterators, which leaves no such mark, with
// a probe program (ProbeIterDPath: a fraction of a millisecond, once per
// process). The environment variable Without, or Force, takes features
// away.
func Detect(cache *btf.Cache) (Features, error) {
	if Force != nil {
		return *Force, nil
	}
	f, err := kernelFeatures(cache)
	if err != nil {
		return f, err
	}
	without := os.Getenv(Without)
	for _, w := range strings.Split(without, ",") {
		switch strings.TrimSpace(w) {
		case "bpf_loop":
			f.Loop = false
		case "bpf_d_path":
			f.DPath = false
		case "all":
			f = Features{}
		case "":
		default:
			return f, fmt.Errorf("%s=%s: %q is none of bpf_loop, bpf_d_path, all", Without, without, w)
		}
	}
	return f, nil
}

// What the running kernel offers, found once per process.
var (
	detected     *Features
	detectedLock sync.Mutex
)

func kernelFeatures(cache *btf.Cache) (Features, error) {
	detectedLock.Lock()
	defer detectedLock.Unlock()
	if detected != nil {
		return *detected, nil
	}
	kernel, err := cache.Kernel()
	if err != nil {
		return Features{}, fmt.Errorf("kernel BTF: %w", err)
	}
	var fns *btf.Enum
	if err := kernel.TypeByName("bpf_func_id", &fns); err != nil {
		return Features{}, fmt.Errorf("kernel BTF: enum bpf_func_id: %w", err)
	}
	var f Features
	for _, v := range fns.Values {
		if v.Name == "BPF_FUNC_loop" {
			f.Loop = true
		}
	}
	f.DPath, err = ProbeIterDPath(cache)
	if errors.Is(err, unix.EPERM) && raiseMemlock() {
		f.DPath, err = ProbeIterDPath(cache)
	}
	if err != nil {
		return Features{}, fmt.Errorf("probing bpf_d_path in iterators: %w", err)
	}
	detected = &f
	return f, nil
}

// ProbeIterDPath tells whether an iterator program may call bpf_d_path
// (before Linux 5.12 it may not: only some fentry/LSM attach points can).
// It loads the smallest task_file iterator that calls it on a file's
// f_path, as the programs do. A refusal is an answer, not an error.
func ProbeIterDPath(cache *btf.Cache) (bool, error) {
	kernel, err := cache.Kernel()
	if err != nil {
		return false, err
	}
	fileAt, err := memberOffset(kernel, "bpf_iter__task_file", "file")
	if err != nil {
		return false, err
	}
	pathAt, err := memberOffset(kernel, "file", "f_path")
	if err != nil {
		return false, err
	}
	spec := &ebpf.CollectionSpec{Programs: map[string]*ebpf.ProgramSpec{"probe_d_path": {
		Name:       "probe_d_path",
		Type:       ebpf.Tracing,
		AttachType: ebpf.AttachTraceIter,
		AttachTo:   "task_file",
		License:    "GPL",
		Instructions: asm.Instructions{
			asm.LoadMem(asm.R6, asm.R1, int16(fileAt), asm.DWord), // ctx->file
			asm.JEq.Imm(asm.R6, 0, "out"),
			asm.StoreImm(asm.RFP, -8, 0, asm.Word), // the 8-byte buffer
			asm.StoreImm(asm.RFP, -4, 0, asm.Word),
			asm.Mov.Reg(asm.R1, asm.R6),
			asm.Add.Imm(asm.R1, int32(pathAt)), // &file->f_path
			asm.Mov.Reg(asm.R2, asm.RFP),
			asm.Add.Imm(asm.R2, -8),
			asm.Mov.Imm(asm.R3, 8),
			asm.FnDPath.Call(),
			asm.Mov.Imm(asm.R0, 0).WithSymbol("out"),
			asm.Return(),
		},
	}}}
	coll, err := ebpf.NewCollectionWithOptions(spec, ebpf.CollectionOptions{Cache: cache})
	if err == nil {
		coll.Close()
		return true, nil
	}
	var verr *ebpf.VerifierError
	if errors.As(err, &verr) || errors.Is(err, ebpf.ErrNotSupported) {
		return false, nil
	}
	return false, err
}

// memberOffset is the byte offset of member field in struct name,
// looked for in anonymous unions and structs too (bpf_iter__task_file's
// pointers sit in unions of one member).
func memberOffset(spec *btf.Spec, name, field string) (uint32, error) {
	var s *btf.Struct
	if err := spec.TypeByName(name, &s); err != nil {
		return 0, fmt.Errorf("kernel BTF: struct %s: %w", name, err)
	}
	if off, ok := findMember(s.Members, field); ok {
		return off.Bytes(), nil
	}
	return 0, fmt.Errorf("kernel BTF: struct %s has no %s", name, field)
}

func findMember(members []btf.Member, field string) (btf.Bits, bool) {
	for _, m := range members {
		if m.Name == field {
			return m.Offset, true
		}
		if m.Name != "" {
			continue
		}
		var inner []btf.Member
		switch t := btf.UnderlyingType(m.Type).(type) {
		case *btf.Union:
			inner = t.Members
		case *btf.Struct:
			inner = t.Members
		}
		if off, ok := findMember(inner, field); ok {
			return m.Offset + off, true
		}
	}
	return 0, false
}

// FDPath is where /proc/PID/fd/FD links to: for a FIFO, the d_path() of
// the open file, relative to the reader's root, as bpf_d_path gives it;
// "" when it cannot be read (the fd was closed, the process exited, or
// /proc hides its fds).
func FDPath(pid, fd uint32) string {
	p, err := os.Readlink(fmt.Sprintf("/proc/%d/fd/%d", pid, fd))
	if err != nil {
		return ""
	}
	return p
}
