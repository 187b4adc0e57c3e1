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

struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(max_entries, 1);
	__type(key, __u32);
	__type(value, struct pst_fd);
} rec_scratch SEC(".maps");

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
};

struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(max_entries, 1);
	__type(key, __u32);
	__type(value, struct work);
} work_scratch SEC(".maps");

/* Referenced so the record types are in BTF for bpf2go -type. */
const struct pst_fd *unused_pst_fd __attribute__((unused));
const struct pst_waiter *unused_pst_waiter __attribute__((unused));
const struct pst_slot *unused_pst_slot __attribute__((unused));
const struct pst_task *unused_pst_task __attribute__((unused));
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

static __always_inline struct pst_fd *scratch(void)
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

/* sum_one adds buffer i (ring index tail+i) and keeps the first slots. */
static __always_inline long sum_one(__u32 i, struct sum_ctx *c)
{
	struct pipe_buffer *b = (void *)c->bufs +
		(__u64)((c->tail + i) & c->mask) * bpf_core_type_size(struct pipe_buffer);
	__u32 len = BPF_CORE_READ(b, len);
	struct pst_fd *r;
	__u32 j = i;

	c->bytes += len;
	if (i < PST_SLOTS) {
		r = scratch();
		if (!r)
			return 1;
		/* Masked after clang can no longer prove it useless: a bound
		 * the verifier sees whichever register holds the index. */
		asm volatile("" : "+r"(j));
		j &= PST_SLOTS - 1;
		r->slots[j].offset = BPF_CORE_READ(b, offset);
		r->slots[j].len = len;
	}
	return 0;
}

LOOP_CB sum_cb(__u32 i, struct sum_ctx *c)
{
	return sum_one(i, c);
}

CHUNK(sum_chunk, sum_one, sum_scratch_ctx, PST_COMPAT_BUF_CHUNK)

/* read_ring fills head, tail, bytes and slots, again while they move. */
static __always_inline void read_ring(struct pst_fd *r, struct pipe_inode_info *pipe)
{
	struct sum_ctx cs = {}, *c = &cs;
	__u32 attempt, head = 0, tail = 0, nbufs, ring_size;

	if (!have_loop) {
		c = sum_scratch_ctx();
		if (!c) {
			r->status |= PST_STATUS_BAD_RING;
			return;
		}
	}
	c->bufs = (__u64)BPF_CORE_READ(pipe, bufs);
	ring_size = BPF_CORE_READ(pipe, ring_size);
	c->mask = ring_size - 1;
	for (attempt = 1; attempt <= 8; attempt++) {
		if (attempt > max_attempts)
			break;
		r->attempts = attempt;
		r->status &= ~(PST_STATUS_MOVED | PST_STATUS_BAD_RING);
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
		} else {
			LOOP(nbufs, sum_cb, c, sum_chunk, PST_COMPAT_BUF_CHUNK,
			     PST_COMPAT_BUFS / PST_COMPAT_BUF_CHUNK);
		}
		r->head = head;
		r->tail = tail;
		r->nbufs = nbufs;
		r->bytes = c->bytes;
		if (read_head(pipe) == head && read_tail(pipe) == tail)
			break;
		r->status |= PST_STATUS_MOVED;
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

static __always_inline void fill_task(struct pst_waiter *w, struct task_struct *t)
{
	struct work *k = work();
	__u32 level = reader_level();

	w->tid = ns_tid(t, level);
	w->tgid = ns_tgid(t, level);
	w->state = sched_state(t);
	w->wait_ns = k ? idle_since(t, k->now) : PST_IDLE_UNKNOWN;
	BPF_CORE_READ_STR_INTO(&w->comm, t, comm);
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
static __always_inline void epoll_entry(struct pst_waiter *w, struct wait_queue_entry *e)
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
	fill_task(w, (struct task_struct *)BPF_CORE_READ(s, private));
	w->sleeping = 1;
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

/*
 * queue_entry records one entry of a wait queue, classified by its wake
 * function where the sampler set them. An entry that may be a sleeping
 * task is left as a candidate for the comparison with the threads.
 */
static __always_inline long queue_entry(__u32 i, struct queue_ctx *c)
{
	struct wait_queue_entry *e;
	struct pst_waiter *w;
	struct pst_fd *r;
	struct work *k;
	__u64 priv, fn;
	__u32 n;

	if (!c->pos || c->pos == c->head)
		return 1;
	r = scratch();
	k = work();
	if (!r || !k)
		return 1;
	n = r->nwaiters;
	if (n >= PST_MAX_WAITERS) {
		r->status |= PST_STATUS_WAITERS_TRUNC;
		return 1;
	}
	w = &r->waiters[n];
	e = (void *)c->pos - bpf_core_field_offset(struct wait_queue_entry, entry);
	priv = (__u64)BPF_CORE_READ(e, private);
	fn = (__u64)BPF_CORE_READ(e, func);
	w->entry = (__u64)e;
	w->private = priv;
	w->flags = BPF_CORE_READ(e, flags);
	w->queue = c->queue;
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
		epoll_entry(w, e);
	} else if (priv && is_fn(fn, wake_pollwake)) {
		/* poll/select: the entry is in a poll_table_entry, whose key
		 * is the events asked for; private is the poll_wqueues. */
		struct poll_wqueues *pq = (void *)priv;
		struct poll_table_entry *pe = (void *)e -
			bpf_core_field_offset(struct poll_table_entry, wait);

		w->kind = PST_W_POLL;
		w->events = BPF_CORE_READ(pe, key);
		w->sleeping = !BPF_CORE_READ(pq, triggered);
		fill_task(w, BPF_CORE_READ(pq, polling_task));
	} else if (priv && (!k->known || is_task_wake(fn))) {
		w->kind = W_CANDIDATE;
		k->left++;
	} else {
		w->kind = PST_W_OTHER;
	}
	r->nwaiters = n + 1;
	c->pos = (__u64)BPF_CORE_READ(e, entry.next);
	return 0;
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

/*
 * match_thread compares one thread of the process with the candidates;
 * read_waiters fills in the task of each it marks (kept out of the walk
 * of the threads, whose every step the verifier may have to follow).
 */
static __always_inline long match_thread(__u32 i, void *unused)
{
	struct task_struct *t;
	struct pst_fd *r = scratch();
	struct work *k = work();
	__u32 j;

	if (!r || !k || !k->node || k->node == k->head || !k->left)
		return 1;
	t = (void *)k->node - bpf_core_field_offset(struct task_struct, thread_node);
	for (j = 0; j < PST_MAX_WAITERS; j++) {
		struct pst_waiter *w = &r->waiters[j];

		if (w->kind != W_CANDIDATE || w->private != (__u64)t || j >= r->nwaiters)
			continue;
		w->kind = PST_W_THREAD;
		k->left--;
	}
	k->node = (__u64)BPF_CORE_READ(t, thread_node.next);
	return 0;
}

LOOP_CB match_cb(__u32 i, void *unused)
{
	return match_thread(i, unused);
}

CHUNK(match_chunk, match_thread, work, PST_COMPAT_THREAD_CHUNK)

/*
 * read_waiters walks both wait queues, then the process's threads to find
 * which candidates are its own blocked threads. What is left is a task of
 * another process (when its wake function says it is a task) or unknown.
 */
static __always_inline void read_waiters(struct pst_fd *r, struct pipe_inode_info *pipe,
					 struct task_struct *task)
{
	struct signal_struct *sig = BPF_CORE_READ(task, signal);
	struct work *k = work();
	__u32 j;

	if (!k)
		return;
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
		r->status |= PST_STATUS_THREADS_TRUNC;
fill:
	for (j = 0; j < PST_MAX_WAITERS; j++) {
		struct pst_waiter *w = &r->waiters[j];

		if (j >= r->nwaiters)
			break;
		if (w->kind == PST_W_THREAD) {
			fill_task(w, (struct task_struct *)w->private);
		} else if (w->kind != W_CANDIDATE) {
			continue;
		} else if (k->known) {
			w->kind = PST_W_TASK;
			fill_task(w, (struct task_struct *)w->private);
		} else {
			w->kind = PST_W_OTHER;
		}
	}
}

SEC("iter/task_file")
int pipe_state(struct bpf_iter__task_file *ctx)
{
	struct seq_file *seq = ctx->meta->seq;
	struct task_struct *task = ctx->task;
	struct file *file = ctx->file;
	struct pipe_inode_info *pipe;
	struct inode *inode;
	struct pst_fd *r;
	__u32 tgid, gen, level;

	if (!task || !file)
		return 0;
	level = reader_level();
	tgid = ns_tgid(task, level);
	if (tgid == (skip_tgid ? skip_tgid : self_tgid))
		return 0;
	if (filter_tgids && !bpf_map_lookup_elem(&targets, &tgid))
		return 0;
	pipe = file_pipe(file, &inode);
	if (!pipe)
		return 0;
	r = scratch();
	if (!r)
		return 0;
	r->ino = BPF_CORE_READ(inode, i_ino);
	if (filter_inos && !bpf_map_lookup_elem(&inos, &r->ino))
		return 0;
	gen = walk_gen;
	bpf_map_update_elem(&seen, &tgid, &gen, BPF_ANY);

	r->tgid = tgid;
	r->tid = ns_tid(task, level);
	r->start_ns = BPF_CORE_READ(task, start_boottime);
	r->file_id = (__u64)file;
	r->fd = ctx->fd;
	r->f_flags = BPF_CORE_READ(file, f_flags);
	r->f_mode = BPF_CORE_READ(file, f_mode);
	r->kind = inode_is_fifo(inode) ? PST_KIND_FIFO : PST_KIND_PIPE;
	r->task_state = sched_state(BPF_CORE_READ(task, group_leader));
	r->nr_threads = BPF_CORE_READ(task, signal, nr_threads);
	r->ring_size = BPF_CORE_READ(pipe, ring_size);
	r->max_usage = BPF_CORE_READ(pipe, max_usage);
	r->readers = BPF_CORE_READ(pipe, readers);
	r->writers = BPF_CORE_READ(pipe, writers);
	r->status = 0;
	r->nwaiters = 0;
	r->path_len = 0;
	r->path[0] = 0;
	__builtin_memset(r->slots, 0, sizeof(r->slots));
	bpf_probe_read_kernel_str(r->comm, sizeof(r->comm), task->comm);
	if (have_d_path && r->kind == PST_KIND_FIFO) {
		long n = bpf_d_path((struct path *)&file->f_path, r->path, sizeof(r->path));

		if (n > 0)
			r->path_len = n - 1;
	}
	read_ring(r, pipe);
	read_waiters(r, pipe, task);
	bpf_seq_write(seq, r, sizeof(*r));
	return 0;
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

static __always_inline long onq_entry(__u32 i, struct onq_ctx *c)
{
	struct wait_queue_entry *e;

	if (!c->pos || c->pos == c->head)
		return 1;
	e = (void *)c->pos - bpf_core_field_offset(struct wait_queue_entry, entry);
	if ((__u64)BPF_CORE_READ(e, private) == c->task) {
		c->found = true;
		return 1;
	}
	c->pos = (__u64)BPF_CORE_READ(e, entry.next);
	return 0;
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
static __always_inline void open_wait(struct pst_task *r, struct task_struct *t)
{
	struct nameidata *nd = BPF_CORE_READ(t, nameidata);
	__u64 stack = (__u64)BPF_CORE_READ(t, stack);
	struct pipe_inode_info *pipe;
	struct filename *name;
	struct inode *inode;
	__u32 readers, writers;
	long n;

	r->open = PST_OPEN_NONE;
	if (!nd || !stack || (__u64)nd < stack || (__u64)nd >= stack + STACK_BOUND)
		return;
	inode = BPF_CORE_READ(nd, path.dentry, d_inode);
	if (!inode || (BPF_CORE_READ(inode, i_mode) & S_IFMT) != S_IFIFO)
		return;
	pipe = BPF_CORE_READ(inode, i_pipe);
	if (!pipe || !on_queue(&pipe->rd_wait, t))
		return;
	readers = BPF_CORE_READ(pipe, readers);
	writers = BPF_CORE_READ(pipe, writers);
	if (!writers)
		r->open = PST_OPEN_READ;
	else if (!readers)
		r->open = PST_OPEN_WRITE;
	else
		return; /* about to wake */
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
	__u32 tgid, level, zero = 0, *gen;

	if (!t)
		return 0;
	level = reader_level();
	tgid = ns_tgid(t, level);
	if (tgid == (skip_tgid ? skip_tgid : self_tgid))
		return 0;
	if (filter_tgids && !bpf_map_lookup_elem(&targets, &tgid))
		return 0;
	r = bpf_map_lookup_elem(&task_scratch, &zero);
	if (!r)
		return 0;
	open_wait(r, t);
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
