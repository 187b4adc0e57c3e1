// Package pipestate reads the state of pipes and FIFOs from the kernel
// with a BPF iterator (bpf/pipestate): who holds which end, how full each
// pipe is, and which tasks sleep on its wait queues, blocked reading or
// writing. Metadata only: no page is read, nothing is copied out of a
// pipe, no process is stopped. A Sampler loads the program once and can
// then walk as often as wanted (ls, watch, serve).
package pipestate

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"strconv"
	"strings"
	"time"
	"unsafe"

	"github.com/cilium/ebpf"
	"github.com/cilium/ebpf/link"
	"golang.org/x/sys/unix"

	"github.com/pipesnap/pipesnap/internal/taskiter"
)

// Sentinels for what stops a sampler before it starts.
var (
	ErrNoProcess  = errors.New("no such process")
	ErrNoBTF      = errors.New("kernel BTF not found at /sys/kernel/btf/vmlinux")
	ErrPermission = errors.New("reading pipe state needs root, or CAP_BPF and CAP_PERFMON")
)

// Options says which processes to walk.
type Options struct {
	PIDs []int // processes to walk; a thread id stands for its process
	All  bool  // every task in pipesnap's pid namespace but pipesnap
	// MaxThreads bounds the threads of one process compared with a
	// pipe's waiters; 0 means 4096.
	MaxThreads int
}

// Sampler owns what it puts in the kernel: the program, its maps, and
// the iterator link of unscoped walks. Nothing is pinned; Close releases
// all of it. A Sampler is not safe for concurrent use.
type Sampler struct {
	objs     pipestateObjects
	all      *link.Iter
	targets  []uint32
	starts   map[uint32]uint64 // requested tgid -> start time, clock ticks
	unscoped bool              // the kernel cannot scope iterators
	pageSize uint64
	seq      []byte
}

var recSize = int(unsafe.Sizeof(pipestatePstFd{}))

// Open checks privileges and BTF, loads the program and attaches it.
func Open(opts Options) (_ *Sampler, err error) {
	targets, err := Preflight(opts)
	if err != nil {
		return nil, err
	}
	spec, err := loadPipestate()
	if err != nil {
		return nil, fmt.Errorf("reading BPF object: %w", err)
	}
	maxThreads := opts.MaxThreads
	if maxThreads <= 0 {
		maxThreads = 4096
	}
	consts := map[string]any{
		pipestateVarSelfTgid:    uint32(os.Getpid()),
		pipestateVarFilterTgids: len(targets) > 0,
		pipestateVarMaxThreads:  uint32(maxThreads),
		pipestateVarMaxAttempts: uint32(3),
	}
	for name, v := range consts {
		if err := spec.Variables[name].Set(v); err != nil {
			return nil, fmt.Errorf("setting %s: %w", name, err)
		}
	}
	s := &Sampler{
		targets:  targets,
		starts:   startTimes(targets),
		pageSize: uint64(os.Getpagesize()),
		seq:      make([]byte, 64<<10),
	}
	if err := spec.LoadAndAssign(&s.objs, nil); err != nil {
		var verr *ebpf.VerifierError
		if errors.As(err, &verr) {
			return nil, fmt.Errorf("loading BPF program: verifier refused it: %+v", verr)
		}
		return nil, fmt.Errorf("loading BPF program: %w", explainLoad(err))
	}
	defer func() {
		if err != nil {
			s.Close()
		}
	}()
	for _, tgid := range targets {
		if err := s.objs.Targets.Put(tgid, uint8(1)); err != nil {
			return nil, fmt.Errorf("adding pid %d to the target map: %w", tgid, err)
		}
	}
	if s.all, err = link.AttachIter(link.IterOptions{Program: s.objs.PipeState}); err != nil {
		return nil, fmt.Errorf("attaching iterator: %w", explainLoad(err))
	}
	return s, nil
}

// Close releases the program, its maps and links.
func (s *Sampler) Close() error {
	var errs []error
	if s.all != nil {
		errs = append(errs, s.all.Close())
		s.all = nil
	}
	errs = append(errs, s.objs.Close())
	return errors.Join(errs...)
}

// Targets are the processes the sampler walks; none means every process.
func (s *Sampler) Targets() []uint32 { return s.targets }

// Sample walks the processes once and returns what their pipes look like.
func (s *Sampler) Sample(ctx context.Context) (*Sample, error) {
	b := newBuilder(s.pageSize, s.starts)
	start := time.Now()
	if err := s.walk(ctx, b.add); err != nil {
		return nil, err
	}
	out := b.finish()
	out.Time, out.Took = start, time.Since(start)
	for _, tgid := range s.targets {
		if !b.seen[tgid] && !processAlive(tgid, s.starts[tgid]) {
			out.Gone = append(out.Gone, tgid)
		}
	}
	return out, nil
}

// walk runs the program over the targets: one pid-scoped walk per process
// where the kernel allows it (the cost follows their fds, not the
// machine's), else one walk of every task, filtered in the program.
func (s *Sampler) walk(ctx context.Context, fn func(*pipestatePstFd) error) error {
	if len(s.targets) == 0 || s.unscoped {
		return s.read(ctx, s.all, fn)
	}
	for _, tgid := range s.targets {
		l, err := taskiter.AttachProcess(s.objs.PipeState, tgid)
		switch {
		case errors.Is(err, taskiter.ErrNoScope):
			s.unscoped = true
			return s.read(ctx, s.all, fn)
		case errors.Is(err, unix.ESRCH) || errors.Is(err, unix.ENOENT):
			continue // exited: Sample notes it
		case err != nil:
			return fmt.Errorf("attaching iterator to pid %d: %w", tgid, err)
		}
		err = s.read(ctx, l, fn)
		l.Close()
		if err != nil {
			return err
		}
	}
	return nil
}

// read runs one walk of an iterator, handing fn each record.
func (s *Sampler) read(ctx context.Context, l *link.Iter, fn func(*pipestatePstFd) error) error {
	r, err := l.Open()
	if err != nil {
		return fmt.Errorf("opening iterator: %w", err)
	}
	defer r.Close()

	var pending []byte
	for again := 0; ; {
		if err := ctx.Err(); err != nil {
			return err
		}
		n, err := r.Read(s.seq)
		if n > 0 {
			again = 0
			data := s.seq[:n]
			if len(pending) > 0 {
				data = append(pending, data...)
			}
			for len(data) >= recSize {
				// Records are 8-byte multiples in an 8-byte aligned
				// buffer: read in place, valid until the next read.
				if err := fn((*pipestatePstFd)(unsafe.Pointer(&data[0]))); err != nil {
					return err
				}
				data = data[recSize:]
			}
			pending = append(pending[:0], data...)
		}
		switch {
		case err == nil && n > 0:
		case err == nil || errors.Is(err, io.EOF):
			if len(pending) > 0 {
				return fmt.Errorf("iterator output ends inside a record (%d bytes left)", len(pending))
			}
			return nil
		case errors.Is(err, unix.EAGAIN):
			// The kernel visited many objects without output yet.
			if again++; again > 1000 {
				return fmt.Errorf("reading iterator: no progress after %d tries: %w", again, err)
			}
		default:
			return fmt.Errorf("reading iterator: %w", err)
		}
	}
}

// Preflight checks what a walk needs before anything is loaded: something
// to walk, processes that exist, privileges, kernel BTF. It returns the
// processes to walk (none: every process).
func Preflight(opts Options) ([]uint32, error) {
	if !opts.All && len(opts.PIDs) == 0 {
		return nil, errors.New("nothing to walk: give pids or all")
	}
	var targets []uint32
	if !opts.All {
		var err error
		if targets, err = resolveTgids(opts.PIDs); err != nil {
			return nil, err
		}
	}
	if err := checkPrivileges(); err != nil {
		return nil, err
	}
	if _, err := os.Stat("/sys/kernel/btf/vmlinux"); err != nil {
		return nil, fmt.Errorf("%w (pipesnap needs a kernel built with CONFIG_DEBUG_INFO_BTF)", ErrNoBTF)
	}
	return targets, nil
}

func explainLoad(err error) error {
	if errors.Is(err, unix.EPERM) || errors.Is(err, unix.EACCES) {
		return fmt.Errorf("%w (run as root, or with CAP_BPF and CAP_PERFMON)", err)
	}
	return err
}

func checkPrivileges() error {
	hdr := unix.CapUserHeader{Version: unix.LINUX_CAPABILITY_VERSION_3}
	var data [2]unix.CapUserData
	if err := unix.Capget(&hdr, &data[0]); err != nil {
		return nil // cannot tell: let the load say
	}
	has := func(c int) bool { return data[c/32].Effective&(1<<(c%32)) != 0 }
	if has(unix.CAP_SYS_ADMIN) || has(unix.CAP_BPF) && has(unix.CAP_PERFMON) {
		return nil
	}
	return fmt.Errorf("%w: run it as root (sudo)", ErrPermission)
}

// resolveTgids maps pids (or thread ids) to their processes.
func resolveTgids(pids []int) ([]uint32, error) {
	var out []uint32
	seen := map[uint32]bool{}
	for _, pid := range pids {
		if pid <= 0 {
			return nil, fmt.Errorf("pid %d: %w", pid, ErrNoProcess)
		}
		b, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", pid))
		if err != nil {
			return nil, fmt.Errorf("pid %d: %w", pid, ErrNoProcess)
		}
		tgid := pid
		for _, line := range strings.Split(string(b), "\n") {
			if v, ok := strings.CutPrefix(line, "Tgid:"); ok {
				if n, err := strconv.Atoi(strings.TrimSpace(v)); err == nil {
					tgid = n
				}
			}
		}
		if !seen[uint32(tgid)] {
			seen[uint32(tgid)] = true
			out = append(out, uint32(tgid))
		}
	}
	return out, nil
}

// clockTicks is USER_HZ, the unit of start times in /proc/PID/stat.
const clockTicks = 100

// startTimes reads when each process started, to tell pid reuse.
func startTimes(tgids []uint32) map[uint32]uint64 {
	out := map[uint32]uint64{}
	for _, tgid := range tgids {
		if n, ok := startTime(tgid); ok {
			out[tgid] = n
		}
	}
	return out
}

func startTime(tgid uint32) (uint64, bool) {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", tgid))
	if err != nil {
		return 0, false
	}
	i := bytes.LastIndexByte(b, ')')
	if i < 0 {
		return 0, false
	}
	// Fields after the comm: state is field 3, starttime field 22.
	f := strings.Fields(string(b[i+1:]))
	if len(f) <= 19 {
		return 0, false
	}
	n, err := strconv.ParseUint(f[19], 10, 64)
	return n, err == nil
}

// processAlive tells whether tgid still names the process that started
// at start (clock ticks; 0: unknown, any process will do).
func processAlive(tgid uint32, start uint64) bool {
	now, ok := startTime(tgid)
	return ok && (start == 0 || now == start)
}
