package pipestate

import (
	"bufio"
	"bytes"
	"fmt"
	"io"
	"os"
	"strconv"

	"github.com/pipesnap/pipesnap/pipemodel"
)

// The wake functions tell what a wait queue entry is: a task sleeping in
// wait_event*() (autoremove_wake_function and its kin), poll/select
// (pollwake), epoll (ep_poll_callback). The program compares each
// entry's function with their addresses, which only /proc/kallsyms
// gives, and reading it is costly: the kernel formats every line (~120,000
// here). When they were __ksym externs, cilium/ebpf read and parsed all of
// it at every load: ~70 ms of the ~125 ms CPU of a one-shot `pipesnap ls
// --pid` (measured; ~55 ms without). So the program starts with them
// unset, which costs nothing for the waiters that matter most, the
// walked processes' own blocked threads (matched by pointer, no symbol
// needed), and a Sampler reads kallsyms only when a walk leaves a waiter
// it cannot explain, at most once, then walks again. It reads only up to
// the wake functions, which the kernel lists early (~17 ms,
// BenchmarkReadWakeFuncs).

// wakeFuncs are the addresses of the wake functions; 0 where kallsyms
// does not list one.
type wakeFuncs struct {
	autoremove, dflt, woken, pollwake, epPoll, epAutoremove uint64
}

// wakeState is what a Sampler knows of the wake functions.
type wakeState int

const (
	wakeUnread      wakeState = iota // kallsyms not read yet: the program has them unset
	wakeSet                          // read and set in the program
	wakeUnavailable                  // kallsyms could not say (unreadable, addresses hidden): never read again
)

// kallsymsPath is where the kernel lists its symbols (a variable for tests).
var kallsymsPath = "/proc/kallsyms"

// readWakeFuncs reads the wake functions' addresses from /proc/kallsyms.
// It returns none (all 0) when kallsyms cannot say: unreadable, or
// addresses hidden (kptr_restrict, or a reader without CAP_SYSLOG).
func readWakeFuncs() wakeFuncs {
	f, err := os.Open(kallsymsPath)
	if err != nil {
		return wakeFuncs{}
	}
	defer f.Close()
	w, err := parseWakeFuncs(f)
	if err != nil {
		return wakeFuncs{}
	}
	return w
}

// parseWakeFuncs scans kallsyms lines ("ffffffff813d2580 T
// autoremove_wake_function") for the wake functions. It stops once it has
// all of them, at the first module symbol ("...\t[ext4]": the kernel
// lists its own symbols first, and these are all built in), or at the
// first function at address 0: addresses are hidden, and all are 0.
func parseWakeFuncs(r io.Reader) (wakeFuncs, error) {
	var w wakeFuncs
	want := map[string]*uint64{
		"autoremove_wake_function": &w.autoremove,
		"default_wake_function":    &w.dflt,
		"woken_wake_function":      &w.woken,
		"pollwake":                 &w.pollwake,
		"ep_poll_callback":         &w.epPoll,
		// Linux 6.x; before, epoll_wait sleeps with default_wake_function.
		"ep_autoremove_wake_function": &w.epAutoremove,
	}
	br := bufio.NewReaderSize(r, 64<<10)
	for left := len(want); left > 0; {
		line, err := br.ReadSlice('\n')
		if err != nil && (err != io.EOF || len(line) == 0) {
			if err == io.EOF {
				break
			}
			return wakeFuncs{}, err
		}
		line = bytes.TrimSuffix(line, []byte{'\n'})
		if bytes.IndexByte(line, '\t') >= 0 {
			break // a module's symbol: the kernel's own are behind us
		}
		a, rest, ok1 := bytes.Cut(line, []byte{' '})
		typ, name, ok2 := bytes.Cut(rest, []byte{' '})
		if !ok1 || !ok2 || len(typ) != 1 || (typ[0] != 't' && typ[0] != 'T') {
			continue
		}
		if len(bytes.Trim(a, "0")) == 0 {
			return wakeFuncs{}, nil // hidden addresses
		}
		p, ok := want[string(name)]
		if !ok || *p != 0 {
			continue
		}
		if addr, err := strconv.ParseUint(string(a), 16, 64); err == nil {
			*p = addr
			left--
		}
	}
	return w, nil
}

// setWakeFuncs writes the addresses into the loaded program's globals.
// autoremove_wake_function goes last: until it is set, the program takes
// no entry it could not match with a thread for a task, so a failure half
// way never has it read a task that is not one.
func (s *Sampler) setWakeFuncs(w wakeFuncs) error {
	for _, v := range []struct {
		name string
		set  func(any) error
		addr uint64
	}{
		{"default_wake_function", s.objs.WakeDefault.Set, w.dflt},
		{"woken_wake_function", s.objs.WakeWoken.Set, w.woken},
		{"pollwake", s.objs.WakePollwake.Set, w.pollwake},
		{"ep_poll_callback", s.objs.WakeEpPoll.Set, w.epPoll},
		{"ep_autoremove_wake_function", s.objs.WakeEpAutoremove.Set, w.epAutoremove},
		{"autoremove_wake_function", s.objs.WakeAutoremove.Set, w.autoremove},
	} {
		if err := v.set(v.addr); err != nil {
			return fmt.Errorf("setting the address of %s: %w", v.name, err)
		}
	}
	return nil
}

// unexplained tells whether a sample has a waiter that the wake
// functions would tell more about: an entry that is no thread of a walked
// process (a poll/select or epoll entry, a task of another process), as
// the program reports them while the wake functions are unset.
func unexplained(smp *pipemodel.Sample) bool {
	for _, p := range smp.Pipes {
		for _, w := range p.Waiters {
			if w.Kind == pipemodel.WaiterOther {
				return true
			}
		}
	}
	return false
}
