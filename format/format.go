// Package format reads and writes pipesnap streams: Linux-CR style
// checkpoint images of pipe and FIFO buffers. FORMAT.md in this directory
// is the byte-level specification; this package is its reference
// implementation.
package format

import (
	"errors"
	"fmt"
	"math"
	"strings"
	"time"
)

// Revision is the stream format revision this package writes. The
// decoder reads it and every earlier one (MinRevision up).
const Revision = 3

// MinRevision is the oldest revision the decoder reads. Revision 1 has
// no PS_TASK_STATE, PS_WAITER or PS_OPEN_WAIT records, revision 2 no
// PS_CONTAINER or PS_PROC.
const MinRevision = 1

// Magic values of the HEADER and TAIL records (as in Linux-CR).
const (
	HeadMagic uint64 = 0x00feed0cc0a2d200
	TailMagic uint64 = 0x002d2a0cc0deef00
)

// Record types. The Linux-CR numbers are those of the v14 patch series;
// the pipesnap types live in their own range (20001-20999).
const (
	TypeHeader   = 1
	TypeBuffer   = 3
	TypeString   = 4
	TypeFDEnt    = 302
	TypeFile     = 303
	TypeFilePipe = 304
	TypeTail     = 5001

	TypeTask    = 20001
	TypePipe    = 20002
	TypeBuf     = 20003
	TypeNote    = 20004
	TypeTrailer = 20005

	// Revision 2: who waits (section 4, after the last task section).
	TypeTaskState = 20006
	TypeWaiter    = 20007
	TypeOpenWait  = 20008

	// Revision 3: which container each process runs in.
	TypeContainer = 20009
	TypeProc      = 20010
)

// Payload sizes of the fixed-size records, pre-header excluded.
const (
	sizeHeader    = 40
	sizeFDEnt     = 16
	sizeFile      = 40
	sizeFilePipe  = 8
	sizeTail      = 8
	sizeTask      = 40
	sizePipe      = 72
	sizeBuf       = 16
	sizeNote      = 8
	sizeTrailer   = 16
	sizeTaskState = 32
	sizeWaiter    = 56
	sizeOpenWait  = 56
	sizeContainer = 8
	sizeProc      = 40

	maxFixed  = max(sizeHeader, sizePipe, sizeWaiter, sizeOpenWait)
	preHeader = 8
)

// Limits on variable-size payloads.
const (
	MaxString    = 4096    // STRING payload, trailing NUL included
	MaxBuffer    = 1 << 20 // BUFFER payload inside a pipe
	MaxUTSBuffer = 256     // each of the HEADER's three BUFFERs
	commLen      = 16      // comm fields (PS_TASK, PS_WAITER, PS_OPEN_WAIT), NUL padded
)

// Header is the HEADER record and its three uts BUFFERs.
type Header struct {
	Arch                uint16 // ArchX86_64, ArchARM64, or another id: not checked
	Major, Minor, Patch uint16 // kernel version
	Revision            uint16 // format revision; 0 means Revision when encoding
	Time                time.Time
	Flags               uint64
	Release             string // uts release, version, machine (raw bytes, no NUL)
	Version             string
	Machine             string
}

// Architecture ids (pipesnap's own numbering, not the kernel's).
const (
	ArchX86_64 uint16 = 1
	ArchARM64  uint16 = 2
)

// HeaderFrozen is set in Header.Flags when the target tasks were frozen
// during the capture, so the cut is consistent across pipes.
const HeaderFrozen uint64 = 1

// Task is a PS_TASK record: it opens the section of one task's fds.
type Task struct {
	PID, TID uint32
	StartNS  uint64 // task start time, ns since boot: tells pid reuse apart
	UID      uint32
	Comm     string // at most 15 bytes, no NUL
}

// FDEnt is an FD_ENT record: one file descriptor of the current task.
type FDEnt struct {
	FD      int32
	FileRef int32 // objref of the open file
	Cloexec bool
}

// File is a FILE record: the open file an FD_ENT defines.
type File struct {
	Ref     int32 // the FDEnt.FileRef it defines; not encoded in FILE itself
	Type    uint32
	Mode    uint32 // ModeRead | ModeWrite
	Flags   uint32 // file status flags as the kernel holds them
	Pos     uint64
	Version uint64
	PipeRef int32
}

// FileTypePipe is File.Type for pipes and FIFOs, the only type in rev 1.
const FileTypePipe uint32 = 2

// File.Mode bits (the kernel's FMODE_READ, FMODE_WRITE).
const (
	ModeRead  uint32 = 1
	ModeWrite uint32 = 2
)

// Kind tells an anonymous pipe from a FIFO.
type Kind uint32

const (
	KindPipe Kind = 1
	KindFIFO Kind = 2
)

func (k Kind) String() string {
	switch k {
	case KindPipe:
		return "pipe"
	case KindFIFO:
		return "fifo"
	}
	return fmt.Sprintf("kind %d", uint32(k))
}

// Status bits of a pipe's capture.
type Status uint32

const (
	StatusTorn       Status = 1 // the ring moved during every copy attempt
	StatusIncomplete Status = 2 // some bytes were not captured
	StatusPacket     Status = 4 // a buffer carried PIPE_BUF_FLAG_PACKET

	statusKnown = StatusTorn | StatusIncomplete | StatusPacket
)

// Reason says why a pipe is torn or incomplete.
type Reason uint32

const (
	ReasonNone        Reason = 0
	ReasonMoved       Reason = 1 // head/tail/offset moved during every copy attempt
	ReasonPageRange   Reason = 2 // page pointer outside the vmemmap range
	ReasonBounds      Reason = 3 // offset+len beyond the page
	ReasonFault       Reason = 4 // a kernel read failed
	ReasonTooLarge    Reason = 5 // more buffers than the capture can hold
	ReasonChannel     Reason = 6 // the capture channel lost data
	ReasonExcluded    Reason = 7 // the pipe is the snapshot's own output
	ReasonNotCaptured Reason = 8 // metadata only
)

var reasonNames = [...]string{
	ReasonNone:        "none",
	ReasonMoved:       "moved during copy",
	ReasonPageRange:   "page out of range",
	ReasonBounds:      "buffer out of bounds",
	ReasonFault:       "read fault",
	ReasonTooLarge:    "too large",
	ReasonChannel:     "channel lost data",
	ReasonExcluded:    "excluded",
	ReasonNotCaptured: "not captured",
}

func (r Reason) String() string {
	if int(r) < len(reasonNames) {
		return reasonNames[r]
	}
	return fmt.Sprintf("reason %d", uint32(r))
}

// Pipe is a FILE_PIPE + PS_PIPE (+ STRING path) group: the first
// encounter of a pipe or FIFO. Its NrBufs buffers follow as Buffers.
type Pipe struct {
	Ref      int32 // the pipe objref it defines (= File.PipeRef)
	Ino      uint64
	Kind     Kind
	Status   Status
	Reason   Reason
	Attempts uint32
	RingSize uint32
	MaxUsage uint32
	Capacity uint32 // bytes, max_usage * page_size
	PageSize uint32
	Head     uint32
	Tail     uint32
	Readers  uint32
	Writers  uint32
	NrBufs   uint32
	Bytes    uint64 // sum of the buffers' Len
	Path     string // FIFO path, "" if none
}

// Buffer is a PS_BUF + BUFFER pair: one pipe buffer, in ring order.
type Buffer struct {
	Index  uint32 // ring index (tail + k)
	Offset uint32 // offset of the data in its page
	Len    uint32
	Flags  uint32 // the kernel's pipe_buffer flags (BufLRU...)
	Data   []byte
}

// Buffer.Flags bits, as the kernel defines them (PIPE_BUF_FLAG_*).
const (
	BufLRU      uint32 = 0x01
	BufAtomic   uint32 = 0x02
	BufGift     uint32 = 0x04
	BufPacket   uint32 = 0x08
	BufCanMerge uint32 = 0x10
	BufWhole    uint32 = 0x20
	BufLoss     uint32 = 0x40
)

// Note is a PS_NOTE + STRING pair: a remark about the capture.
type Note struct {
	PID  uint32 // 0 if not about a task
	Code uint32
	Msg  string
}

// TaskState is a PS_TASK_STATE + STRING pair (revision 2): the scheduler
// state of one thread, for telling what a stuck pipeline waits for.
type TaskState struct {
	PID, TID  uint32
	State     byte          // the /proc state letter (see ValidState); 0 if unknown
	Wait      time.Duration // since the thread last ran; 0 when running or unknown
	WaitKnown bool          // Wait was measured (a running thread: true, 0)
	Wchan     string        // kernel function it sleeps in; "" if running or unknown
}

// Queue is the pipe wait queue a waiter sleeps on.
type Queue uint8

const (
	QueueRead  Queue = 0 // the read queue: waiting for data (or for writers to appear)
	QueueWrite Queue = 1 // the write queue: waiting for room (or for readers)
)

func (q Queue) String() string {
	switch q {
	case QueueRead:
		return "read"
	case QueueWrite:
		return "write"
	}
	return fmt.Sprintf("queue %d", uint8(q))
}

// Via is how a waiter came to sleep on the pipe's queue.
type Via uint8

const (
	ViaDirect Via = 0 // in read, write, splice... on the pipe itself
	ViaPoll   Via = 1 // in poll, ppoll, select or pselect
	ViaEpoll  Via = 2 // in epoll_wait, through an epoll instance watching the pipe
	ViaOther  Via = 3 // something else, or not known

	viaMax = ViaOther
)

func (v Via) String() string {
	switch v {
	case ViaDirect:
		return "direct"
	case ViaPoll:
		return "poll"
	case ViaEpoll:
		return "epoll"
	case ViaOther:
		return "other"
	}
	return fmt.Sprintf("via %d", uint8(v))
}

// Waiter is a PS_WAITER record (revision 2): one task sleeping on a wait
// queue of a pipe defined earlier in the stream.
type Waiter struct {
	PipeRef   int32 // objref of the pipe (a File.PipeRef)
	PID, TID  uint32
	Queue     Queue
	Via       Via
	State     byte          // as TaskState.State
	EpollFD   int32         // with ViaEpoll: the epoll fd in the waiter, -1 if unknown; else -1
	Events    uint32        // poll/epoll events waited for (POLLIN...); 0 with ViaDirect
	Wait      time.Duration // as TaskState.Wait
	WaitKnown bool
	Outside   bool   // the task is not one of the dumped processes
	Comm      string // at most 15 bytes, no NUL; "" if unknown
}

// OpenWait.End values: the end of a FIFO a task is blocked opening.
const (
	OpenRead  uint8 = 1 // open(O_RDONLY): waits for a writer
	OpenWrite uint8 = 2 // open(O_WRONLY): waits for a reader
)

// OpenWait is a PS_OPEN_WAIT + STRING pair (revision 2): a task blocked
// in open(2) of a FIFO, which holds no fd on it yet.
type OpenWait struct {
	PID, TID  uint32
	End       uint8  // OpenRead or OpenWrite
	State     byte   // as TaskState.State
	Ino       uint64 // the FIFO's inode, 0 if unknown
	Wait      time.Duration
	WaitKnown bool
	Comm      string // at most 15 bytes, no NUL
	Path      string // the FIFO's path, "" if unknown
}

// Container is a PS_CONTAINER + six STRINGs (revision 3): a container
// processes of the stream run in, as its cgroup and its runtime name it.
type Container struct {
	Ref       uint32 // 1 for the stream's first, then the next number
	Runtime   string // "docker", "containerd", "cri-o", "podman", ...; "" unknown
	ID        string // the runtime's full id: not empty
	Name      string // the runtime's name; "" when it did not answer
	Pod       string // Kubernetes pod, namespace and container name; "" outside
	Namespace string
	KubeName  string
}

// Proc is a PS_PROC + STRING pair (revision 3): what a process is
// outside its fds, for one process of the stream (a dumped one, or one
// a PS_WAITER names as outside).
type Proc struct {
	PID       uint32 // not 0; at most one Proc a pid
	NSPID     uint32 // its pid in its own, innermost pid namespace; 0 when the same or unknown
	CgroupID  uint64 // its cgroup's id on the unified hierarchy; 0 unknown
	Container uint32 // Ref of a Container written before it; 0 for none
	Monitor   bool   // the runtime's monitor of Container (conmon), not in it
	Comm      string // at most 15 bytes, no NUL; "" if unknown
	Cgroup    string // its cgroup path from the hierarchy's root; "" unknown
}

// Flag bits of the revision 2 and 3 records.
const (
	waitKnownFlag = 1 // PS_TASK_STATE, PS_WAITER, PS_OPEN_WAIT: wait_ns was measured
	outsideFlag   = 2 // PS_WAITER: the task is not one of the dumped processes
	monitorFlag   = 1 // PS_PROC: the runtime's monitor of its container
)

// stateLetters are the task states /proc/<pid>/stat shows (fs/proc/array.c).
const stateLetters = "RSDTtXZPI"

// ValidState reports whether s may be a State field: one of the /proc
// state letters R S D T t X Z P I, or 0 for unknown.
func ValidState(s byte) bool {
	return s == 0 || strings.IndexByte(stateLetters, s) >= 0
}

// Trailer is the PS_TRAILER record. The encoder fills it in; the decoder
// checks it and does not return it.
type Trailer struct {
	CRC32C  uint32 // of every byte before the trailer
	Records uint32 // records before the trailer
	Bytes   uint64 // bytes before the trailer
}

// Decoding errors. The decoder wraps them in *Error; test with errors.Is.
var (
	ErrTruncated = errors.New("truncated")
	ErrMagic     = errors.New("bad magic")
	ErrRevision  = errors.New("unsupported revision")
	ErrChecksum  = errors.New("checksum mismatch")
	ErrMalformed = errors.New("malformed")
)

// Error locates a decoding error in the stream.
type Error struct {
	Offset int64  // offset of the offending record, or where input ended
	Record string // e.g. "FILE" or "type 999"; "" between records
	Err    error
}

func (e *Error) Error() string {
	if e.Record == "" {
		return fmt.Sprintf("offset %d: %v", e.Offset, e.Err)
	}
	return fmt.Sprintf("offset %d: %s record: %v", e.Offset, e.Record, e.Err)
}

func (e *Error) Unwrap() error { return e.Err }

// RecordName names a record type as FORMAT.md does ("type N" if unknown).
func RecordName(typ uint32) string {
	switch typ {
	case TypeHeader:
		return "HEADER"
	case TypeBuffer:
		return "BUFFER"
	case TypeString:
		return "STRING"
	case TypeFDEnt:
		return "FD_ENT"
	case TypeFile:
		return "FILE"
	case TypeFilePipe:
		return "FILE_PIPE"
	case TypeTail:
		return "TAIL"
	case TypeTask:
		return "PS_TASK"
	case TypePipe:
		return "PS_PIPE"
	case TypeBuf:
		return "PS_BUF"
	case TypeNote:
		return "PS_NOTE"
	case TypeTrailer:
		return "PS_TRAILER"
	case TypeTaskState:
		return "PS_TASK_STATE"
	case TypeWaiter:
		return "PS_WAITER"
	case TypeOpenWait:
		return "PS_OPEN_WAIT"
	case TypeContainer:
		return "PS_CONTAINER"
	case TypeProc:
		return "PS_PROC"
	}
	return fmt.Sprintf("type %d", typ)
}

// Objref kinds. Objrefs are dense from 1, so a slice indexed by objref
// is the whole table.
const (
	refFile = 1
	refPipe = 2
)

type objrefs []uint8 // [i] is the kind of objref i+1

func (o objrefs) next() int64 { return int64(len(o)) + 1 }

func (o objrefs) kind(ref int32) uint8 {
	if ref < 1 || int64(ref) > int64(len(o)) {
		return 0
	}
	return o[ref-1]
}

func kindName(k uint8) string {
	if k == refPipe {
		return "pipe"
	}
	return "file"
}

// checkRef tells whether ref, where an object of kind want is expected,
// names a new object (the next objref) or an existing one of that kind.
func (o objrefs) checkRef(ref int32, want uint8) (isNew bool, err error) {
	switch k := o.kind(ref); {
	case int64(ref) == o.next():
		return true, nil
	case k == want:
		return false, nil
	case k != 0:
		return false, fmt.Errorf("objref %d is a %s, not a %s", ref, kindName(k), kindName(want))
	case ref < 1:
		return false, fmt.Errorf("objref %d is not defined (objrefs start at 1)", ref)
	default:
		return false, fmt.Errorf("objref %d is not defined and is not the next new objref %d", ref, o.next())
	}
}

// checkString tells whether s can be a STRING payload (with its NUL).
func checkString(s string) error {
	if len(s)+1 > MaxString {
		return fmt.Errorf("string of %d bytes: at most %d", len(s), MaxString-1)
	}
	for i := 0; i < len(s); i++ {
		if s[i] == 0 {
			return fmt.Errorf("string has a NUL at byte %d", i)
		}
	}
	return nil
}

// timeNS maps Header.Time to the stream: 0 stands for the zero Time.
func timeNS(t time.Time) uint64 {
	if t.IsZero() {
		return 0
	}
	return uint64(t.UnixNano())
}

func nsTime(ns uint64) time.Time {
	if ns == 0 {
		return time.Time{}
	}
	return time.Unix(0, int64(ns))
}

// checkComm tells whether s fits a comm field: at most 15 bytes, no NUL.
func checkComm(s string) error {
	if len(s) >= commLen {
		return fmt.Errorf("comm %q: at most %d bytes", s, commLen-1)
	}
	return checkString(s)
}

// checkWait tells whether a wait fits wait_ns and flags: not negative,
// and 0 unless known.
func checkWait(d time.Duration, known bool) error {
	switch {
	case d < 0:
		return fmt.Errorf("wait %v is negative", d)
	case d != 0 && !known:
		return fmt.Errorf("wait %v but WaitKnown is false", d)
	}
	return nil
}

// waitNS maps a wait to the stream (checkWait passed).
func waitNS(d time.Duration) uint64 { return uint64(d) }

// waitFlag is bit 0 of the revision 2 flags.
func waitFlag(known bool) uint32 {
	if known {
		return waitKnownFlag
	}
	return 0
}

// nsWait checks wait_ns against its flags and maps it to a Duration.
func nsWait(ns uint64, flags uint32) (time.Duration, error) {
	switch {
	case ns > math.MaxInt64:
		return 0, fmt.Errorf("wait_ns %d does not fit in an int64", ns)
	case ns != 0 && flags&waitKnownFlag == 0:
		return 0, fmt.Errorf("wait_ns %d but flags bit 0 (wait known) is clear", ns)
	}
	return time.Duration(ns), nil
}

// containerStrings are the STRINGs after a PS_CONTAINER, in order.
var containerStrings = [...]string{"runtime", "id", "name", "pod", "namespace", "kube container"}

func (c *Container) strings() [len(containerStrings)]*string {
	return [...]*string{&c.Runtime, &c.ID, &c.Name, &c.Pod, &c.Namespace, &c.KubeName}
}

// checkProc tells whether a process's fields agree: a pid, and a
// monitor only of a container.
func checkProc(p Proc) error {
	switch {
	case p.PID == 0:
		return fmt.Errorf("pid 0: want a process id")
	case p.Monitor && p.Container == 0:
		return fmt.Errorf("monitor of no container: want container set")
	}
	return checkComm(p.Comm)
}

// checkWaiter tells whether a waiter's queue, via, epoll_fd and events
// are known values that agree with each other.
func checkWaiter(q Queue, v Via, epollFD int32, events uint32) error {
	switch {
	case q > QueueWrite:
		return fmt.Errorf("queue %d: want 0 (read) or 1 (write)", uint8(q))
	case v > viaMax:
		return fmt.Errorf("via %d: want 0 (direct) to 3 (other)", uint8(v))
	case v == ViaEpoll && epollFD < -1:
		return fmt.Errorf("epoll_fd %d: want an fd, or -1 if unknown", epollFD)
	case v != ViaEpoll && epollFD != -1:
		return fmt.Errorf("epoll_fd %d with via %v: want -1 (only epoll waiters have one)", epollFD, v)
	case v == ViaDirect && events != 0:
		return fmt.Errorf("events %#x with via direct: want 0 (only poll and epoll waiters wait for events)", events)
	}
	return nil
}
