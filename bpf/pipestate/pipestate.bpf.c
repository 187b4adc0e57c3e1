// SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause)
/*
 * pipestate.bpf.c: walk the open files of tasks (iter/task_file), keep
 * pipes and FIFOs, and report each (task, fd) with the pipe's state:
 * head, tail, how many bytes the buffers hold, who waits on its two wait
 * queues. Metadata only: no page is ever read, so a walk is cheap enough
 * to run every second.
 *
 * Blocked or not comes from the kernel, not from a guess. A task that
 * sleeps in pipe_read (or splice) waiting for data is on pipe->rd_wait,
 * one waiting for room in pipe_write on pipe->wr_wait, with an entry whose
 * private is its task_struct. So each entry of both queues (bounded) is
 * compared with the threads of the process whose fd is visited: the
 * iterator visits one task per files table, and the thread that sleeps
 * may be any thread of the process, so the process's thread list is
 * walked (bounded). A match is a blocked thread; poll/select and epoll
 * entries are told apart by their wake function and reported as such,
 * never as blocked.
 *
 * For kernels without bpf_loop this file is built again with
 * PIPESNAP_NO_LOOP (../compat.h): the same code in bounded loops, within
 * the bounds of enum pst_compat. Without bpf_d_path in iterators
 * (have_d_path), a FIFO's path is left to the sampler. Only what every
 * kernel has is used otherwise: bpf_get_current_task (not the _btf one of
 * 5.11), __state or state (5.14 renamed it) as the kernel has it.
 *
 * Cost, at every load and for every fd: the records are of variable
 * length (pipestate.h), a process's and a pipe's state written once per
 * process; what the verifier would follow once per path into it (the
 * ring's sum, the waiters, the threads) is global functions, verified
 * once. Every kernel read stays a probe read (BPF_CORE_READ), the fd's
 * own fields too: direct loads through the iterator's typed pointers
 * would take the per-fd cost from ~0.6 to ~0.25 µs, but a fault there
 * reads as 0, which would make an unreadable pipe look empty.
 */
#include "../vmlinux.h"
#include <bpf/bpf_helpers.h>
#include <bpf/bpf_core_read.h>
#include "../pipe_common.h"
#include "../compat.h"
#include "../cgroup.h"
#include "pipestate.h"

char LICENSE[] SEC("license") = "Dual BSD/GPL";


/* Configuration, fixed at load time. */
const volatile __u32 self_tgid = 0;		/* pipesnap itself: never reported */
const volatile __u32 max_threads = 4096;	/* threads compared per (task, fd) */
const volatile __u32 max_attempts = 3;		/* reads of a moving pipe */

/*
 * Wake functions' addresses, 0 until the sampler sets them (ordinary
 * globals in .bss, written by Go after the load). A task sleeping in
 * wait_event*() has autoremove_wake_function; poll/select entries have
 * pollwake, epoll's ep_poll_callback. While they are unset, only entries
 * whose private is one of the process's threads are known for what they
 * are. They are not __ksym externs on purpose: those make cilium/ebpf read
 * and parse all of /proc/kallsyms at every load (measured: ~70 of ~125 ms
 * CPU of a one-shot `pipesnap ls --pid`); the sampler reads kallsyms only
 * when a walk leaves a waiter unexplained, once per sampler, and walks
 * again (pipestate/wake.go).
 */
__u64 wake_autoremove = 0;
__u64 wake_default = 0;
__u64 wake_woken = 0;
__u64 wake_pollwake = 0;
__u64 wake_ep_poll = 0;
/* The wake function of a task in epoll_wait (6.x; 5.x: default_wake_function). */
__u64 wake_ep_autoremove = 0;

/*
 * What a walk reports, set from Go before each walk (ordinary globals):
 * only the tgids in targets, only the inodes in inos (the walk that finds
 * who holds the other end of a walked pipe), and the walk's number, which
 * the fd walk writes into seen for every process it reports so that the
 * task walk reports those processes' threads and no others. skip_tgid
 * is the process left out instead of pipesnap itself (a resident serve's
 * client: the serve is then walked like any other process, as the
 * client's own walk would; 0: pipesnap itself).
 */
bool filter_tgids = false;
__u32 skip_tgid = 0;
bool filter_inos = false;
__u32 walk_gen = 0;

struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, 4096);
	__type(key, __u64);
	__type(value, __u8);
} inos SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_LRU_HASH);
	__uint(max_entries, 65536);
	__type(key, __u32);
	__type(value, __u32);
} seen SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(max_entries, 1);
	__type(key, __u32);
	__type(value, struct pst_task);
} task_scratch SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, 4096);
	__type(key, __u32);
	__type(value, __u8);
} targets SEC(".maps");

/* A record being written: process, fd, pipe and slots in one piece. */
struct pst_scratch {
	struct pst_proc proc;
	struct pst_fd fd;
	struct pst_pipe pipe;
	struct pst_slot slots[PST_SLOTS];
	struct pst_waiter waiters[PST_MAX_WAITERS];
	char path[PST_PATH_LEN];
	/* What of it goes out: from proc or from fd, how much of the fd
	 * record's first piece, of its waiters and of its path. Kept here,
	 * unknown to the verifier, so that every path through pipe_state
	 * meets before the writes as one. */
	__u32 out_start;
	__u32 out_head;
	__u32 out_waiters;
	__u32 out_path;
	/* The task and pipe visited, for read_ring and read_waiters: a
	 * pointer stored is read back as a scalar (a global function takes
	 * no other), and the iterator's are typed pointers. */
	__u64 task_addr;
	__u64 pipe_addr;
};

struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(max_entries, 1);
	__type(key, __u32);
	__type(value, struct pst_scratch);
} rec_scratch SEC(".maps");

/*
 * The process of the last pst_proc written: in which iterator session,
 * for which task (and pid: an address alone could be a new task's), and
 * its serial, a count of pst_procs written that never repeats. Set only
 * once the element's whole output is in the seq_file: output the kernel
 * drops (seq_file overflow) is written again when the element is shown
 * again. Not per CPU: a session's reads may run on different CPUs.
 */
__u64 proc_session = 0;
__u64 proc_task = 0;
__u32 proc_pid = 0;
__u64 proc_serial = 0;

/*
 * The pipes whose state the current process's records carry already,
 * direct-mapped by address: a later fd of one of them is a bare pst_fd.
 * A collision only costs a full record again.
 */
#define PIPE_CACHE 256
struct pipe_seen {
	__u64 pipe;
	__u64 serial;	/* proc_serial of the process whose record carried it */
};
struct pipe_seen pipe_cache[PIPE_CACHE];

static __always_inline __u32 pipe_slot(__u64 ino)
{
	return ((ino * 0x9E3779B97F4A7C15ULL) >> 56) & (PIPE_CACHE - 1);
}

/*
 * Counters of a walk of the waiters, kept in a map value rather than on
 * the stack: the verifier does not follow their exact values, so the
 * loops below verify once instead of once per possible count.
 */
struct work {
	__u64 node;	/* the thread_node list_head of the next thread */
	__u64 head;	/* &signal->thread_head: the end of the list */
	__u64 now;	/* last_ran() of the walking task: now, on the same clock */
	__u32 left;	/* candidates not matched yet */
	__u32 known;	/* the wake functions were set when the record began */
	__u64 task;	/* task_state's task, for open_wait */
};

struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(max_entries, 1);
	__type(key, __u32);
	__type(value, struct work);
} work_scratch SEC(".maps");

/* Referenced so the record types are in BTF for bpf2go -type. */
const struct pst_proc *unused_pst_proc __attribute__((unused));
const struct pst_fd *unused_pst_fd __attribute__((unused));
const struct pst_pipe *unused_pst_pipe __attribute__((unused));
const struct pst_waiter *unused_pst_waiter __attribute__((unused));
const struct pst_slot *unused_pst_slot __attribute__((unused));
const struct pst_task *unused_pst_task __attribute__((unused));
const enum pst_rec *unused_pst_rec __attribute__((unused));
const enum pst_kind *unused_pst_kind __attribute__((unused));
const enum pst_queue *unused_pst_queue __attribute__((unused));
const enum pst_wkind *unused_pst_wkind __attribute__((unused));
const enum pst_status *unused_pst_status __attribute__((unused));
const enum pst_open *unused_pst_open __attribute__((unused));
const enum pst_compat *unused_pst_compat __attribute__((unused));
const struct cg_proc *unused_cg_proc __attribute__((unused));
const enum cg_flags *unused_cg_flags __attribute__((unused));
const enum cg_ctl *unused_cg_ctl __attribute__((unused));
const enum cg_hier *unused_cg_hier __attribute__((unused));

/* The kind of an entry still to be compared with the process's threads. */
#define W_CANDIDATE 0

/*
 * The steps below that the verifier would otherwise follow once per path
 * into them (per loop iteration, per branch of the caller) are global
 * functions: verified once, on their own, with unknown arguments. They
 * take scalars only (a kernel before 5.12 passes a global function
 * nothing else): pointers as __u64, read with probe reads, the record
 * through the per-CPU scratch.
 */

static __always_inline struct pst_scratch *scratch(void)
{
	__u32 zero = 0;

	return bpf_map_lookup_elem(&rec_scratch, &zero);
}

static __always_inline struct work *work(void)
{
	__u32 zero = 0;

	return bpf_map_lookup_elem(&work_scratch, &zero);
}

struct sum_ctx {
	__u64 bufs;	/* struct pipe_buffer *; a map value too (sum_scratch) */
	__u64 bytes;
	__u32 tail;
	__u32 mask;
};

/* Where sum_ctx lives without bpf_loop (chunks take no pointers). */
struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(max_entries, 1);
	__type(key, __u32);
	__type(value, struct sum_ctx);
} sum_scratch SEC(".maps");

static __always_inline struct sum_ctx *sum_scratch_ctx(void)
{
	__u32 zero = 0;

	return bpf_map_lookup_elem(&sum_scratch, &zero);
}

/* sum_buf is the length of buffer i (ring index tail+i); it keeps the
 * first PST_SLOTS in the record's slots. */
__attribute__((noinline)) __u64 sum_buf(__u32 i, __u64 bufs, __u32 tail, __u32 mask)
{
	struct pipe_buffer *b = (void *)bufs +
		(__u64)((tail + i) & mask) * bpf_core_type_size(struct pipe_buffer);
	__u32 len = BPF_CORE_READ(b, len);
	struct pst_scratch *r;

	if (i < PST_SLOTS && (r = scratch())) {
		r->slots[i & (PST_SLOTS - 1)].offset = BPF_CORE_READ(b, offset);
		r->slots[i & (PST_SLOTS - 1)].len = len;
	}
	return len;
}

static __always_inline long sum_one(__u32 i, struct sum_ctx *c)
{
	c->bytes += sum_buf(i, c->bufs, c->tail, c->mask);
	return 0;
}

LOOP_CB sum_cb(__u32 i, struct sum_ctx *c)
{
	return sum_one(i, c);
}

CHUNK(sum_chunk, sum_one, sum_scratch_ctx, PST_COMPAT_BUF_CHUNK)

/*
 * ring_attempt reads head, tail, bytes and slots of the record's pipe
 * once: 1 when head or tail moved meanwhile.
 */
__attribute__((noinline)) int ring_attempt(__u32 attempt)
{
	struct pipe_inode_info *pipe;
	struct sum_ctx cs = {}, *c = &cs;
	__u32 head, tail, nbufs, ring_size;
	struct pst_scratch *s = scratch();
	struct pst_pipe *r;

	if (!s)
		return 0;
	pipe = (void *)s->pipe_addr;
	r = &s->pipe;
	r->attempts = attempt;
	r->status &= ~(PST_STATUS_MOVED | PST_STATUS_BAD_RING);
	if (!have_loop) {
		c = sum_scratch_ctx();
		if (!c) {
			r->status |= PST_STATUS_BAD_RING;
			return 0;
		}
	}
	c->bufs = (__u64)BPF_CORE_READ(pipe, bufs);
	ring_size = BPF_CORE_READ(pipe, ring_size);
	c->mask = ring_size - 1;
	head = read_head(pipe);
	tail = read_tail(pipe);
	nbufs = head - tail;
	c->tail = tail;
	c->bytes = 0;
	if (!ring_size || nbufs > ring_size || ring_size & (ring_size - 1) ||
	    (!have_loop && nbufs > PST_COMPAT_BUFS)) {
		/* not a ring we know, or more buffers than we can sum */
		r->status |= PST_STATUS_BAD_RING;
		nbufs = 0;
	} else if (nbufs) {
		LOOP(nbufs, sum_cb, c, sum_chunk, PST_COMPAT_BUF_CHUNK,
		     PST_COMPAT_BUFS / PST_COMPAT_BUF_CHUNK);
	}
	r->head = head;
	r->tail = tail;
	r->nbufs = nbufs;
	r->nslots = nbufs < PST_SLOTS ? nbufs : PST_SLOTS;
	r->bytes = c->bytes;
	if (read_head(pipe) == head && read_tail(pipe) == tail)
		return 0;
	r->status |= PST_STATUS_MOVED;
	return 1;
}

/* read_ring reads the ring of the record's pipe, again while it moves. */
static __always_inline void read_ring(void)
{
	__u32 attempt;

	for (attempt = 1; attempt <= 8; attempt++) {
		if (attempt > max_attempts || !ring_attempt(attempt))
			break;
	}
}

static __always_inline bool is_fn(__u64 fn, __u64 sym)
{
	return sym && fn == sym;
}

/*
 * last_ran is when task t last stopped running, in nanoseconds of the
 * scheduler's clock (rq_clock: sched_clock_cpu, the same on every CPU):
 * sched_info.last_arrival, when it last got a CPU (CONFIG_SCHED_INFO,
 * kept whenever schedstats or delay accounting are built in, as in every
 * distribution kernel), plus how long it then ran (se.sum_exec_runtime
 * since se.prev_sum_exec_runtime, which the fair class sets when it
 * picks the task). Without sched_info: se.exec_start, the task clock of
 * the CPU it last ran on (it leaves out IRQ and steal time, so CPUs
 * differ a little). Comparing it with last_ran of the walking task, which
 * is running, gives how long t has not run with one clock: no clock
 * domain is crossed. 0: no timestamp.
 */
static __always_inline __u64 last_ran(struct task_struct *t)
{
	__u64 at, sum, prev;

	if (bpf_core_field_exists(t->sched_info.last_arrival)) {
		at = BPF_CORE_READ(t, sched_info.last_arrival);
		sum = BPF_CORE_READ(t, se.sum_exec_runtime);
		prev = BPF_CORE_READ(t, se.prev_sum_exec_runtime);
		/* A class that does not keep prev_sum_exec_runtime (rt) makes
		 * the difference the whole run time: not a slice. */
		if (at && sum > prev && sum - prev < 10ULL * 1000000000ULL)
			at += sum - prev;
		return at;
	}
	return BPF_CORE_READ(t, se.exec_start);
}

static __always_inline __u64 now_ns(void)
{
	return last_ran(current_task());
}

/* idle_since: how long t has not run at now; 0 for a task running now. */
static __always_inline __u64 idle_since(struct task_struct *t, __u64 now)
{
	__u64 at = last_ran(t);

	if (!at || !now)
		return PST_IDLE_UNKNOWN;
	if (sched_state(t) == 0 || at >= now)
		return 0;
	return now - at;
}

/* fill_task fills in waiter j's task. */
__attribute__((noinline)) int fill_task(__u32 j, __u64 task)
{
	struct task_struct *t = (void *)task;
	struct pst_scratch *r = scratch();
	struct work *k = work();
	struct pst_waiter *w;
	__u32 level;

	if (!r || !k)
		return 0;
	w = &r->waiters[j & (PST_MAX_WAITERS - 1)];
	level = reader_level();
	w->tid = ns_tid(t, level);
	w->tgid = ns_tgid(t, level);
	w->state = sched_state(t);
	w->wait_ns = idle_since(t, k->now);
	BPF_CORE_READ_STR_INTO(&w->comm, t, comm);
	return 0;
}

/* is_task_wake: a wake function whose entry's private is a task. */
static __always_inline bool is_task_wake(__u64 fn)
{
	return is_fn(fn, wake_autoremove) || is_fn(fn, wake_default) ||
	       is_fn(fn, wake_woken) || is_fn(fn, wake_ep_autoremove);
}

/*
 * epoll_entry reads an ep_poll_callback entry: the eppoll_entry around
 * it names the epitem (the registration: its events, the fd it names)
 * and the eventpoll, whose wq holds the tasks asleep in epoll_wait on it.
 * The first of them is the waiter: the instance wakes one at a time.
 */
static __always_inline void epoll_entry(struct pst_waiter *w, __u32 n, struct wait_queue_entry *e)
{
	struct eppoll_entry *pwq = (void *)e - bpf_core_field_offset(struct eppoll_entry, wait);
	struct epitem *epi = BPF_CORE_READ(pwq, base);
	struct eventpoll *ep;
	struct wait_queue_entry *s;
	__u64 head, next, fn;

	w->kind = PST_W_EPOLL;
	if (!epi)
		return;
	ep = BPF_CORE_READ(epi, ep);
	w->events = BPF_CORE_READ(epi, event.events);
	w->target_fd = BPF_CORE_READ(epi, ffd.fd);
	w->ep = (__u64)ep;
	if (!ep)
		return;
	head = (__u64)&ep->wq.head;
	next = (__u64)BPF_CORE_READ(ep, wq.head.next);
	if (!next || next == head)
		return;
	s = (void *)next - bpf_core_field_offset(struct wait_queue_entry, entry);
	fn = (__u64)BPF_CORE_READ(s, func);
	if (!is_task_wake(fn) || !BPF_CORE_READ(s, private))
		return;
	fill_task(n, (__u64)BPF_CORE_READ(s, private));
	w->sleeping = 1;
}

/*
 * queue_step records the entry of a wait queue at pos (a list_head; head
 * is the queue's), classified by its wake function where the sampler set
 * them: an entry that may be a sleeping task is left as a candidate for
 * the comparison with the threads. It returns the next entry's list_head,
 * 0 at the end of the queue or of the record's room.
 */
__attribute__((noinline)) __u64 queue_step(__u64 pos, __u64 head, __u32 queue)
{
	struct wait_queue_entry *e;
	struct pst_waiter *w;
	struct pst_scratch *r;
	struct work *k;
	__u64 priv, fn;
	__u32 n;

	if (!pos || pos == head)
		return 0;
	r = scratch();
	k = work();
	if (!r || !k)
		return 0;
	n = r->pipe.nwaiters;
	if (n >= PST_MAX_WAITERS) {
		r->pipe.status |= PST_STATUS_WAITERS_TRUNC;
		return 0;
	}
	w = &r->waiters[n & (PST_MAX_WAITERS - 1)];
	e = (void *)pos - bpf_core_field_offset(struct wait_queue_entry, entry);
	priv = (__u64)BPF_CORE_READ(e, private);
	fn = (__u64)BPF_CORE_READ(e, func);
	w->entry = (__u64)e;
	w->private = priv;
	w->flags = BPF_CORE_READ(e, flags);
	w->queue = queue;
	w->tid = 0;
	w->tgid = 0;
	w->state = 0;
	w->wait_ns = PST_IDLE_UNKNOWN;
	w->ep = 0;
	w->events = 0;
	w->target_fd = -1;
	w->sleeping = 0;
	w->comm[0] = 0;
	if (is_fn(fn, wake_ep_poll)) {
		epoll_entry(w, n, e);
	} else if (priv && is_fn(fn, wake_pollwake)) {
		/* poll/select: the entry is in a poll_table_entry, whose key
		 * is the events asked for; private is the poll_wqueues. */
		struct poll_wqueues *pq = (void *)priv;
		struct poll_table_entry *pe = (void *)e -
			bpf_core_field_offset(struct poll_table_entry, wait);

		w->kind = PST_W_POLL;
		w->events = BPF_CORE_READ(pe, key);
		w->sleeping = !BPF_CORE_READ(pq, triggered);
		fill_task(n, (__u64)BPF_CORE_READ(pq, polling_task));
	} else if (priv && (!k->known || is_task_wake(fn))) {
		w->kind = W_CANDIDATE;
		k->left++;
	} else {
		w->kind = PST_W_OTHER;
	}
	r->pipe.nwaiters = n + 1;
	return (__u64)BPF_CORE_READ(e, entry.next);
}

struct queue_ctx {
	__u64 head;	/* &wq->head: the end of the list */
	__u64 pos;	/* the next entry's list_head */
	__u8 queue;
};

/* Where queue_ctx lives without bpf_loop. */
struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(max_entries, 1);
	__type(key, __u32);
	__type(value, struct queue_ctx);
} queue_scratch SEC(".maps");

static __always_inline struct queue_ctx *queue_scratch_ctx(void)
{
	__u32 zero = 0;

	return bpf_map_lookup_elem(&queue_scratch, &zero);
}

static __always_inline long queue_entry(__u32 i, struct queue_ctx *c)
{
	c->pos = queue_step(c->pos, c->head, c->queue);
	return !c->pos;
}

LOOP_CB queue_cb(__u32 i, struct queue_ctx *c)
{
	return queue_entry(i, c);
}

CHUNK(queue_chunk, queue_entry, queue_scratch_ctx, PST_MAX_WAITERS + 1)

/* walk_queue records the entries of one wait queue. */
static __always_inline void walk_queue(struct wait_queue_head *wq, __u8 queue)
{
	struct queue_ctx cs = {}, *c = &cs;

	if (!have_loop) {
		c = queue_scratch_ctx();
		if (!c)
			return;
	}
	c->head = (__u64)&wq->head;
	c->pos = (__u64)BPF_CORE_READ(wq, head.next);
	c->queue = queue;
	LOOP(PST_MAX_WAITERS + 1, queue_cb, c, queue_chunk, PST_MAX_WAITERS + 1, 1);
}

/* match_waiter marks waiter j blocked when it is thread t's entry. */
__attribute__((noinline)) int match_waiter(__u32 j, __u64 t)
{
	struct pst_scratch *r = scratch();
	struct work *k = work();
	struct pst_waiter *w;

	if (!r || !k || j >= r->pipe.nwaiters)
		return 0;
	w = &r->waiters[j & (PST_MAX_WAITERS - 1)];
	if (w->kind != W_CANDIDATE || w->private != t)
		return 0;
	w->kind = PST_W_THREAD;
	k->left--;
	return 0;
}

/*
 * match_thread compares one thread of the process with the candidates;
 * read_waiters fills in the task of each it marks (kept out of the walk
 * of the threads, whose every step the verifier may have to follow).
 */
__attribute__((noinline)) int match_thread(void)
{
	struct pst_scratch *r = scratch();
	struct work *k = work();
	__u64 t;
	__u32 j, n;

	if (!r || !k || !k->node || k->node == k->head || !k->left)
		return 1;
	t = k->node - bpf_core_field_offset(struct task_struct, thread_node);
	n = r->pipe.nwaiters;
	for (j = 0; j < PST_MAX_WAITERS && j < n; j++)
		match_waiter(j, t);
	k->node = (__u64)BPF_CORE_READ((struct task_struct *)t, thread_node.next);
	return 0;
}

static __always_inline long match_one(__u32 i, void *unused)
{
	long stop = match_thread();

	/* A callback returns 0 or 1, and the verifier knows nothing of a
	 * global's result: hide from clang that it is 0 or 1 already. */
	asm volatile("" : "+r"(stop));
	return stop ? 1 : 0;
}

LOOP_CB match_cb(__u32 i, void *unused)
{
	return match_one(i, unused);
}

CHUNK(match_chunk, match_one, work, PST_COMPAT_THREAD_CHUNK)

/*
 * settle_waiter says what waiter j is once the threads were compared: a
 * blocked thread of the process, a task of another (when its wake
 * function says it is a task), or unknown; and fills in its task.
 */
__attribute__((noinline)) int settle_waiter(__u32 j)
{
	struct pst_scratch *r = scratch();
	struct work *k = work();
	struct pst_waiter *w;

	if (!r || !k)
		return 0;
	w = &r->waiters[j & (PST_MAX_WAITERS - 1)];
	if (w->kind == W_CANDIDATE)
		w->kind = k->known ? PST_W_TASK : PST_W_OTHER;
	if (w->kind == PST_W_THREAD || w->kind == PST_W_TASK)
		fill_task(j, w->private);
	return 0;
}

/*
 * read_waiters walks both wait queues of the record's pipe, then the
 * threads of the visited task's process to find which candidates are its own blocked threads. What is
 * left is a task of another process (when its wake function says it is a
 * task) or unknown.
 */
__attribute__((noinline)) int read_waiters(void)
{
	struct pipe_inode_info *pipe;
	struct pst_scratch *r = scratch();
	struct work *k = work();
	struct signal_struct *sig;
	struct task_struct *task;
	__u32 j, n;

	if (!r || !k)
		return 0;
	/* out of BPF_CORE_READ: pst_scratch is no kernel type to relocate */
	task = (void *)r->task_addr;
	pipe = (void *)r->pipe_addr;
	sig = BPF_CORE_READ(task, signal);
	k->left = 0;
	k->now = now_ns();
	/* Read once: one record classifies all its entries alike. */
	k->known = wake_autoremove != 0;
	walk_queue(&pipe->rd_wait, PST_QUEUE_READ);
	walk_queue(&pipe->wr_wait, PST_QUEUE_WRITE);
	if (!k->left)
		goto fill;
	k->head = (__u64)&sig->thread_head;
	k->node = (__u64)BPF_CORE_READ(sig, thread_head.next);
	LOOP(max_threads, match_cb, NULL, match_chunk, PST_COMPAT_THREAD_CHUNK,
	     PST_COMPAT_THREADS / PST_COMPAT_THREAD_CHUNK);
	if (k->left && k->node && k->node != k->head)
		r->pipe.status |= PST_STATUS_THREADS_TRUNC;
fill:
	n = r->pipe.nwaiters;
	for (j = 0; j < PST_MAX_WAITERS && j < n; j++)
		settle_waiter(j);
	return 0;
}

/* queue_busy: a wait queue with an entry. */
static __always_inline bool queue_busy(struct wait_queue_head *wq)
{
	__u64 next = (__u64)BPF_CORE_READ(wq, head.next);

	return next && next != (__u64)&wq->head;
}

/* proc_tgid is the visited task's process id in the reader's pid namespace. */
__attribute__((noinline)) __u32 proc_tgid(void)
{
	struct pst_scratch *s = scratch();

	if (!s)
		return 0;
	return ns_tgid((struct task_struct *)s->task_addr, reader_level());
}

/* fill_proc fills in the pst_proc of the visited task, of process tgid. */
__attribute__((noinline)) int fill_proc(__u32 tgid)
{
	struct pst_scratch *s = scratch();
	struct task_struct *task;
	struct pst_proc *p;

	if (!s)
		return 0;
	task = (void *)s->task_addr;
	p = &s->proc;
	p->type = PST_REC_PROC;
	p->len = sizeof(*p);
	p->tgid = tgid;
	p->tid = ns_tid(task, reader_level());
	p->start_ns = BPF_CORE_READ(task, start_boottime);
	p->task_state = sched_state(BPF_CORE_READ(task, group_leader));
	p->nr_threads = BPF_CORE_READ(task, signal, nr_threads);
	bpf_probe_read_kernel_str(p->comm, sizeof(p->comm), task->comm);
	return 0;
}

/*
 * fill_pipe fills in the state of pipe (inode's) for task's record. An
 * empty ring whose indices read the same twice is read here; one with
 * buffers, or moving, by read_ring.
 */
static __always_inline void fill_pipe(struct pst_scratch *s, struct pipe_inode_info *pipe,
				      struct inode *inode)
{
	struct pst_pipe *r = &s->pipe;
	__u32 head, tail, ring_size;

	r->kind = inode_is_fifo(inode) ? PST_KIND_FIFO : PST_KIND_PIPE;
	r->ring_size = ring_size = BPF_CORE_READ(pipe, ring_size);
	r->max_usage = BPF_CORE_READ(pipe, max_usage);
	r->readers = BPF_CORE_READ(pipe, readers);
	r->writers = BPF_CORE_READ(pipe, writers);
	r->status = 0;
	r->nwaiters = 0;
	r->nslots = 0;
	r->path_len = 0;
	s->pipe_addr = (__u64)pipe;
	head = read_head(pipe);
	tail = read_tail(pipe);
	if (head == tail && ring_size && !(ring_size & (ring_size - 1)) &&
	    read_head(pipe) == head && read_tail(pipe) == tail) {
		r->head = head;
		r->tail = tail;
		r->nbufs = 0;
		r->bytes = 0;
		r->attempts = 1;
	} else {
		read_ring();
	}
	if (queue_busy(&pipe->rd_wait) || queue_busy(&pipe->wr_wait))
		read_waiters();
}

/*
 * clamp is x, at most max, in a register the verifier knows the bound
 * of: clang may otherwise compare one copy and use another, whose bound
 * a verifier before 6.8 does not learn from the first (32-bit copies
 * keep no link).
 */
static __always_inline __u64 clamp(__u64 x, __u64 max)
{
	if (x > max)
		x = max;
	asm volatile("" : "+r"(x));
	return x;
}

SEC("iter/task_file")
int pipe_state(struct bpf_iter__task_file *ctx)
{
	struct seq_file *seq = ctx->meta->seq;
	__u64 session = ctx->meta->session_id;
	struct task_struct *task = ctx->task;
	struct file *file = ctx->file;
	struct pipe_inode_info *pipe;
	struct inode *inode;
	struct pst_scratch *s;
	__u64 serial, start, head_len, waiters_len, path_len;
	__u32 pid, tgid, gen, at;
	bool fresh;

	if (!task || !file)
		return 0;
	pipe = file_pipe(file, &inode);
	if (!pipe)
		return 0;
	s = scratch();
	if (!s)
		return 0;
	s->fd.ino = BPF_CORE_READ(inode, i_ino);
	if (filter_inos && !bpf_map_lookup_elem(&inos, &s->fd.ino))
		return 0;
	/* The process of the last record, which passed the filters, or a
	 * new one (a pst_proc first). */
	pid = BPF_CORE_READ(task, pid);
	s->task_addr = (__u64)task;
	fresh = session != proc_session || (__u64)task != proc_task || pid != proc_pid;
	serial = proc_serial;
	s->out_start = sizeof(s->proc);
	if (fresh) {
		tgid = proc_tgid();
		if (tgid == (skip_tgid ? skip_tgid : self_tgid))
			return 0;
		if (filter_tgids && !bpf_map_lookup_elem(&targets, &tgid))
			return 0;
		gen = walk_gen;
		bpf_map_update_elem(&seen, &tgid, &gen, BPF_ANY);
		fill_proc(tgid);
		serial++;
		s->out_start = 0;
	}
	/* by inode (a typed pointer takes no arithmetic), told apart by address */
	at = pipe_slot(s->fd.ino);

	s->fd.type = PST_REC_FD;
	s->fd.fd = ctx->fd;
	s->fd.file_id = (__u64)file;
	s->fd.f_flags = BPF_CORE_READ(file, f_flags);
	s->fd.f_mode = BPF_CORE_READ(file, f_mode);
	s->out_head = sizeof(s->fd);
	s->out_waiters = 0;
	s->out_path = 0;
	if (fresh || pipe_cache[at].pipe != (__u64)pipe || pipe_cache[at].serial != serial) {
		fill_pipe(s, pipe, inode);
		if (have_d_path && s->pipe.kind == PST_KIND_FIFO) {
			long got = bpf_d_path((struct path *)&file->f_path, s->path, sizeof(s->path));

			if (got > 1) {
				s->pipe.path_len = got - 1;
				/* with its NUL, padded (Go reads path_len bytes) */
				s->out_path = (got + 7) & ~7;
			}
		}
		s->out_head = sizeof(s->fd) + sizeof(s->pipe) + s->pipe.nslots * sizeof(s->slots[0]);
		s->out_waiters = s->pipe.nwaiters * sizeof(s->waiters[0]);
	}
	start = clamp(s->out_start, sizeof(s->proc));
	head_len = clamp(s->out_head, sizeof(s->fd) + sizeof(s->pipe) + sizeof(s->slots));
	waiters_len = clamp(s->out_waiters, sizeof(s->waiters));
	path_len = clamp(s->out_path, sizeof(s->path));
	s->fd.len = head_len + waiters_len + path_len;

	/* A write that does not fit leaves the seq_file overflowed: the
	 * element's output is dropped and the element shown again. */
	if (bpf_seq_write(seq, (void *)&s->proc + start, sizeof(s->proc) - start + head_len))
		return 0;
	if (waiters_len && bpf_seq_write(seq, s->waiters, waiters_len))
		return 0;
	if (path_len && bpf_seq_write(seq, s->path, path_len))
		return 0;
	/* All out: the process and the pipe are in the seq_file (stores
	 * of what they held already when neither is new). */
	proc_session = session;
	proc_task = (__u64)task;
	proc_pid = pid;
	proc_serial = serial;
	pipe_cache[at].pipe = (__u64)pipe;
	pipe_cache[at].serial = serial;
	return 0;
}

static __always_inline struct pst_task *task_rec(void)
{
	__u32 zero = 0;

	return bpf_map_lookup_elem(&task_scratch, &zero);
}

/* Bound of a kernel stack (THREAD_SIZE is 16 KiB, 32 KiB with KASAN). */
#define STACK_BOUND (32 << 10)

struct onq_ctx {
	__u64 head;
	__u64 pos;
	__u64 task;
	bool found;
};

/* Where onq_ctx lives without bpf_loop. */
struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(max_entries, 1);
	__type(key, __u32);
	__type(value, struct onq_ctx);
} onq_scratch SEC(".maps");

static __always_inline struct onq_ctx *onq_scratch_ctx(void)
{
	__u32 zero = 0;

	return bpf_map_lookup_elem(&onq_scratch, &zero);
}

#define ONQ_MAX 64

/* onq_next is the entry after the one at pos (a list_head of a queue
 * whose head is head): 0 at the end, 1 when the one at pos is task's. */
__attribute__((noinline)) __u64 onq_next(__u64 pos, __u64 head, __u64 task)
{
	struct wait_queue_entry *e;

	if (!pos || pos == head)
		return 0;
	e = (void *)pos - bpf_core_field_offset(struct wait_queue_entry, entry);
	if ((__u64)BPF_CORE_READ(e, private) == task)
		return 1;
	return (__u64)BPF_CORE_READ(e, entry.next);
}

static __always_inline long onq_entry(__u32 i, struct onq_ctx *c)
{
	__u64 next = onq_next(c->pos, c->head, c->task);

	c->found = next == 1;
	c->pos = next;
	return next <= 1;
}

LOOP_CB onq_cb(__u32 i, struct onq_ctx *c)
{
	return onq_entry(i, c);
}

CHUNK(onq_chunk, onq_entry, onq_scratch_ctx, ONQ_MAX)

/* on_queue tells whether task t has an entry on wait queue wq. */
static __always_inline bool on_queue(struct wait_queue_head *wq, struct task_struct *t)
{
	struct onq_ctx cs = {}, *c = &cs;

	if (!have_loop) {
		c = onq_scratch_ctx();
		if (!c)
			return false;
	}
	c->head = (__u64)&wq->head;
	c->pos = (__u64)BPF_CORE_READ(wq, head.next);
	c->task = (__u64)t;
	c->found = false;
	LOOP(ONQ_MAX, onq_cb, c, onq_chunk, ONQ_MAX, 1);
	return c->found;
}

/*
 * open_wait finds a task asleep in open(2) of a FIFO (fifo_open ->
 * wait_for_partner): it holds no fd of it yet, so the fd walk cannot see
 * it. During a path walk the task's nameidata (on its own kernel stack)
 * names the path; at the open of the last component, the FIFO. That is
 * taken as a fact only when it checks out: the pointer lies on the
 * task's stack, the inode is a FIFO with a pipe, and the task has an
 * entry on the pipe's rd_wait, where wait_for_partner sleeps whichever
 * end it opens. Which end: fifo_open counts the opener's end before it
 * sleeps, so a reader waits while there is no writer, a writer while
 * there is no reader.
 */
__attribute__((noinline)) int open_wait(void)
{
	struct pst_task *r = task_rec();
	struct work *k = work();
	struct task_struct *t;
	struct nameidata *nd;

	if (!r || !k)
		return 0;
	t = (void *)k->task;
	nd = BPF_CORE_READ(t, nameidata);
	__u64 stack = (__u64)BPF_CORE_READ(t, stack);
	struct pipe_inode_info *pipe;
	struct filename *name;
	struct inode *inode;
	__u32 readers, writers;
	long n;

	r->open = PST_OPEN_NONE;
	if (!nd || !stack || (__u64)nd < stack || (__u64)nd >= stack + STACK_BOUND)
		return 0;
	inode = BPF_CORE_READ(nd, path.dentry, d_inode);
	if (!inode || (BPF_CORE_READ(inode, i_mode) & S_IFMT) != S_IFIFO)
		return 0;
	pipe = BPF_CORE_READ(inode, i_pipe);
	if (!pipe || !on_queue(&pipe->rd_wait, t))
		return 0;
	readers = BPF_CORE_READ(pipe, readers);
	writers = BPF_CORE_READ(pipe, writers);
	if (!writers)
		r->open = PST_OPEN_READ;
	else if (!readers)
		r->open = PST_OPEN_WRITE;
	else
		return 0; /* about to wake */
	r->open_ino = BPF_CORE_READ(inode, i_ino);
	r->open_readers = readers;
	r->open_writers = writers;
	r->open_dfd = BPF_CORE_READ(nd, dfd);
	name = BPF_CORE_READ(nd, name);
	r->name_len = 0;
	r->name[0] = 0;
	if (name) {
		n = bpf_probe_read_kernel_str(r->name, sizeof(r->name), BPF_CORE_READ(name, name));
		if (n > 0)
			r->name_len = n - 1;
	}
	return 0;
}

/*
 * task_state reports the threads of the processes the fd walk reported
 * (seen in this walk), with their scheduling state and how long each has
 * not run, and any thread asleep opening a FIFO; and the cgroups of
 * those processes (../cgroup.h).
 */
SEC("iter/task")
int task_state(struct bpf_iter__task *ctx)
{
	struct seq_file *seq = ctx->meta->seq;
	struct task_struct *t = ctx->task;
	struct pst_task *r;
	struct work *k;
	__u32 tgid, level, *gen;

	if (!t)
		return 0;
	level = reader_level();
	tgid = ns_tgid(t, level);
	if (tgid == (skip_tgid ? skip_tgid : self_tgid))
		return 0;
	if (filter_tgids && !bpf_map_lookup_elem(&targets, &tgid))
		return 0;
	r = task_rec();
	k = work();
	if (!r || !k)
		return 0;
	k->task = (__u64)t;
	open_wait();
	gen = bpf_map_lookup_elem(&seen, &tgid);
	if (r->open == PST_OPEN_NONE && !(gen && *gen == walk_gen))
		return 0;
	if (r->open == PST_OPEN_NONE) {
		r->open_ino = 0;
		r->open_readers = 0;
		r->open_writers = 0;
		r->open_dfd = 0;
		r->name_len = 0;
		r->name[0] = 0;
	}
	r->tgid = tgid;
	r->tid = ns_tid(t, level);
	r->start_ns = BPF_CORE_READ(t, group_leader, start_boottime);
	r->state = sched_state(t);
	r->idle_ns = idle_since(t, now_ns());
	BPF_CORE_READ_STR_INTO(&r->comm, t, comm);
	/* Once per reported process, in the walk that visits each task
	 * once: its thread group leader's record carries its cgroups. */
	r->cgroup = 0;
	if (gen && *gen == walk_gen && BPF_CORE_READ(t, group_leader) == t)
		r->cgroup = cg_read(t, tgid, walk_gen);
	bpf_seq_write(seq, r, sizeof(*r));
	if (r->cgroup)
		cg_write(seq, tgid, walk_gen);
	return 0;
}
