// SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause)
/*
 * pipes.bpf.c: walk every task's open files (iter/task_file), keep pipes
 * and FIFOs, and copy each pipe's state and buffer bytes in kernel context,
 * without consuming anything.
 *
 * Two channels leave the kernel:
 *   - the iterator's seq_file carries one struct ps_fd per (task, fd),
 *     the first of each process followed by its cgroups (../cgroup.h);
 *   - a BPF ring buffer carries each pipe's contents (one struct ps_buf
 *     per pipe buffer, for every copy attempt, then one struct ps_pipe
 *     that says which attempt holds), in iteration order, ahead of the
 *     ps_fd of the element that copied it.
 * Page bytes are read straight into reserved ring records: the only copy
 * in the kernel. A copy that turns out to have moved cannot be taken
 * back, so every ps_buf carries its attempt number and the ps_pipe that
 * follows them is the verdict: the loader keeps the bufs of the attempt
 * it names and drops the others.
 * The loader drains the ring after every read of the iterator. When the
 * ring lacks room for every attempt at a pipe, the program returns 1
 * before copying anything: the kernel ends the read and visits the same
 * (task, fd) again on the next one, after the loader has made room.
 * Nothing is dropped for lack of space.
 *
 * Page bytes are read through the direct map: a struct page pointer is
 * turned into an address with bases the loader calibrated and verified
 * (see loader/calibrate.go). Every read is bpf_probe_read_kernel, and
 * every address is checked against those ranges first.
 *
 * For kernels without bpf_loop this file is built again with
 * PIPESNAP_NO_LOOP (../compat.h): the same code in bounded loops, a
 * pipe's copies chunk by chunk (at most PS_COMPAT_SLOTS buffers), the
 * calibration's search a window of candidates per run. Without bpf_d_path
 * in iterators (have_d_path), a FIFO's path is left to the loader.
 */
#include "../vmlinux.h"
#include <bpf/bpf_helpers.h>
#include <bpf/bpf_core_read.h>
#include "../pipe_common.h"
#include "../compat.h"
#include "../cgroup.h"
#include "pipes.h"

char LICENSE[] SEC("license") = "Dual BSD/GPL";

#define PIPE_BUF_FLAG_PACKET 0x08
#define GIB (1ULL << 30)
#define FMODE_READ 0x1

/* Configuration, fixed at load time. */
const volatile __u32 self_tgid = 0;	/* pipesnap itself: never dumped */
const volatile __u32 page_size = 4096;
const volatile __u32 scratch_slots = 256;	/* max buffers copied per pipe */
const volatile __u32 max_attempts = 4;	/* copies of a pipe before it is torn */
const volatile bool copy_data = true;	/* false: metadata only */

/*
 * Translation, set by the loader once calibration verified it. While the
 * spans are zero every page is refused: no byte is read unverified.
 */
__u64 vmemmap_start = 0;
__u64 vmemmap_span = 0;
__u64 direct_start = 0;
__u64 direct_span = 0;

/*
 * Per dump, set from Go before the walk (ordinary globals: a resident
 * serve loads once and dumps many times): only the tgids in the targets
 * map; and skip_tgid, the process left out instead of pipesnap itself
 * (a resident serve's client: the serve is then walked like any other
 * process, as the client's own walk would; 0: pipesnap itself).
 */
bool filter_tgids = false;
__u32 skip_tgid = 0;

/* Per run: seen[ino] == run_gen marks a pipe already copied this run. */
__u32 run_gen = 0;
/* Verification run: capture only this inode, in pipesnap's own task. */
__u64 only_ino = 0;
/* Calibration: the probe pipe's inode and the first 32 bytes it holds. */
__u64 calib_ino = 0;
__u64 calib_pattern[4] = {};
/* GiB steps below the probe's pipe pointer to try as direct-map base. */
__u32 calib_steps = 64;
/* Without bpf_loop: the first candidate of this run's window. */
__u32 calib_first = 0;
/*
 * Addresses of the kernel's vmemmap_base and page_offset_base variables,
 * where the loader found them in /proc/kallsyms; 0 otherwise. (Read by
 * the loader only when the search fails: parsing kallsyms costs more than
 * the rest of a dump.)
 */
__u64 ksym_vmemmap_base = 0;
__u64 ksym_page_offset_base = 0;

struct slot {
	__u64 page;
	__u64 ops;
	__u32 offset;
	__u32 len;
};

/* What each copied slot held, for the check after the copy. */
struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(max_entries, 256);	/* = scratch_slots, set by the loader */
	__type(key, __u32);
	__type(value, struct slot);
} slots SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(max_entries, 1);
	__type(key, __u32);
	__type(value, struct ps_pipe);
} pipe_scratch SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, 65536);
	__uint(map_flags, BPF_F_NO_PREALLOC);	/* most runs meet few pipes */
	__type(key, __u64);
	__type(value, __u32);
} seen SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, 4096);
	__type(key, __u32);
	__type(value, __u8);
} targets SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_RINGBUF);
	__uint(max_entries, 4 << 20);	/* set by the loader */
} ring SEC(".maps");

/* Referenced so the record types are in BTF for bpf2go -type. */
const struct ps_fd *unused_ps_fd __attribute__((unused));
const struct ps_pipe *unused_ps_pipe __attribute__((unused));
const struct ps_buf *unused_ps_buf __attribute__((unused));
const struct ps_calib *unused_ps_calib __attribute__((unused));
const struct cg_proc *unused_cg_proc __attribute__((unused));
const enum cg_flags *unused_cg_flags __attribute__((unused));
const enum cg_ctl *unused_cg_ctl __attribute__((unused));
const enum cg_hier *unused_cg_hier __attribute__((unused));
const enum ps_compat *unused_ps_compat __attribute__((unused));
const enum ps_ring_type *unused_ps_ring_type __attribute__((unused));
const enum ps_calib_source *unused_ps_calib_source __attribute__((unused));
const enum ps_status *unused_ps_status __attribute__((unused));
const enum ps_reason *unused_ps_reason __attribute__((unused));

/*
 * page_to_addr turns a struct page pointer into its direct-map address,
 * refusing anything outside the calibrated vmemmap and direct-map ranges.
 * The same affine map serves x86_64's direct map and arm64's linear map;
 * the bases come from the loader (loader/layout.go).
 */
static __always_inline int page_to_addr(__u64 page, __u64 *addr)
{
	__u64 sz = bpf_core_type_size(struct page);
	__u64 off, pfn, phys;

	if (!vmemmap_span || !direct_span || !sz)
		return -1;
	if (page < vmemmap_start || page - vmemmap_start >= vmemmap_span)
		return -1;
	off = page - vmemmap_start;
	if (off % sz)
		return -1;
	pfn = off / sz;
	phys = pfn * page_size;
	if (phys >= direct_span)
		return -1;
	*addr = direct_start + phys;
	return 0;
}

static __always_inline struct pipe_buffer *slot_ptr(struct pipe_buffer *bufs,
						    __u32 idx, __u32 mask)
{
	return (void *)bufs + (__u64)(idx & mask) * bpf_core_type_size(struct pipe_buffer);
}

/* Pointers as __u64: the struct is a map value too (copy_scratch). */
struct copy_ctx {
	__u64 pipe;	/* struct pipe_inode_info * */
	__u64 bufs;	/* struct pipe_buffer * */
	__u64 ino;
	__u32 ring_size;
	__u32 mask;
	__u32 head;
	__u32 tail;
	__u32 done;	/* buffers copied */
	__u32 reason;	/* why the copy stopped early */
	__u32 status;
	__u32 attempt;
	__u64 bytes;
};

/* Where copy_ctx lives without bpf_loop (chunks take no pointers). */
struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(max_entries, 1);
	__type(key, __u32);
	__type(value, struct copy_ctx);
} copy_scratch SEC(".maps");

static __always_inline struct copy_ctx *copy_scratch_ctx(void)
{
	__u32 zero = 0;

	return bpf_map_lookup_elem(&copy_scratch, &zero);
}

/*
 * copy_one copies buffer i (ring index tail+i) into a ring record of its
 * own, and keeps what the slot held for check_one.
 */
static __always_inline long copy_one(__u32 i, struct copy_ctx *c)
{
	__u32 key = i;
	struct slot *s = bpf_map_lookup_elem(&slots, &key);
	struct pipe_buffer *b;
	struct ps_buf *out;
	__u64 page, ops, addr;
	__u32 off, len, flags;
	long err;

	if (!s) {
		c->reason = PS_REASON_TOO_LARGE;
		return 1;
	}
	b = slot_ptr((struct pipe_buffer *)c->bufs, c->tail + i, c->mask);
	page = (__u64)BPF_CORE_READ(b, page);
	ops = (__u64)BPF_CORE_READ(b, ops);
	off = BPF_CORE_READ(b, offset);
	len = BPF_CORE_READ(b, len);
	flags = BPF_CORE_READ(b, flags);
	s->page = page;
	s->ops = ops;
	s->offset = off;
	s->len = len;

	/* A released slot has no ops: a writer is still filling it in. */
	if (!ops) {
		c->reason = PS_REASON_MOVED;
		return 1;
	}
	if (off > page_size || len > page_size - off || len > PS_PAGE_MAX) {
		c->reason = PS_REASON_BOUNDS;
		return 1;
	}
	if (page_to_addr(page, &addr)) {
		c->reason = PS_REASON_PAGE_RANGE;
		return 1;
	}
	len &= 2 * PS_PAGE_MAX - 1;
	if (len > PS_PAGE_MAX)
		return 1;
	/*
	 * capture() made sure the ring has room for every attempt. Straight
	 * line while the record is held: a fault is said in the record (the
	 * loader drops it) and acted on once it is submitted.
	 */
	out = bpf_ringbuf_reserve(&ring, sizeof(*out), 0);
	if (!out) {
		c->reason = PS_REASON_CHANNEL;
		return 1;
	}
	out->type = PS_RING_BUF;
	out->index = c->tail + i;
	out->offset = off;
	out->len = len;
	out->flags = flags;
	out->attempt = c->attempt;
	out->ino = c->ino;
	err = bpf_probe_read_kernel(out->data, len, (void *)(addr + off));
	out->fault = err;
	bpf_ringbuf_submit(out, BPF_RB_NO_WAKEUP);
	if (err) {
		c->reason = PS_REASON_FAULT;
		return 1;
	}
	if (flags & PIPE_BUF_FLAG_PACKET)
		c->status |= PS_STATUS_PACKET;
	c->bytes += len;
	c->done = i + 1;
	return 0;
}

/* check_one tells whether slot i still holds what copy_one saw. */
static __always_inline long check_one(__u32 i, struct copy_ctx *c)
{
	__u32 key = i;
	struct slot *s = bpf_map_lookup_elem(&slots, &key);
	struct pipe_buffer *b;

	if (!s)
		return 1;
	b = slot_ptr((struct pipe_buffer *)c->bufs, c->tail + i, c->mask);
	if ((__u64)BPF_CORE_READ(b, page) != s->page ||
	    (__u64)BPF_CORE_READ(b, ops) != s->ops ||
	    BPF_CORE_READ(b, offset) != s->offset ||
	    BPF_CORE_READ(b, len) != s->len) {
		c->reason = PS_REASON_MOVED;
		return 1;
	}
	return 0;
}

/* The same as bpf_loop callbacks, and as chunks (compat.h). */
LOOP_CB copy_cb(__u32 i, struct copy_ctx *c)
{
	return copy_one(i, c);
}

LOOP_CB check_cb(__u32 i, struct copy_ctx *c)
{
	return check_one(i, c);
}

CHUNK(copy_chunk, copy_one, copy_scratch_ctx, PS_COMPAT_CHUNK)
CHUNK(check_chunk, check_one, copy_scratch_ctx, PS_COMPAT_CHUNK)

#define COPY_LOOP(n, cb, chunk_fn, c) \
	LOOP(n, cb, c, chunk_fn, PS_COMPAT_CHUNK, PS_COMPAT_SLOTS / PS_COMPAT_CHUNK)

/*
 * ring_moved tells whether the pipe's buffer array was replaced since the
 * copy began (F_SETPIPE_SZ frees the old one): slots read from a freed
 * array prove nothing, even if they read back the same.
 */
static __always_inline bool ring_moved(struct copy_ctx *c)
{
	/* Through a local: CO-RE must not relocate copy_ctx's own field. */
	struct pipe_inode_info *pipe = (struct pipe_inode_info *)c->pipe;

	return (__u64)BPF_CORE_READ(pipe, bufs) != c->bufs ||
	       BPF_CORE_READ(pipe, ring_size) != c->ring_size;
}

/*
 * attempt_one makes copy attempt i+1 of the pipe: returns 1 (stop) when
 * the copy holds, or cannot get better by trying again.
 */
static __always_inline long attempt_one(__u32 i, struct copy_ctx *c)
{
	__u32 nbufs;

	c->attempt = i + 1;
	c->head = read_head((struct pipe_inode_info *)c->pipe);
	c->tail = read_tail((struct pipe_inode_info *)c->pipe);
	nbufs = c->head - c->tail;
	c->done = 0;
	c->reason = PS_REASON_NONE;
	c->status = 0;
	c->bytes = 0;
	if (nbufs > c->ring_size || c->ring_size & (c->ring_size - 1)) {
		/* head/tail read mid-update, or not a ring we know */
		c->reason = PS_REASON_MOVED;
		return 0;
	}
	if (nbufs > scratch_slots) {
		c->reason = PS_REASON_TOO_LARGE;
		COPY_LOOP(scratch_slots, copy_cb, copy_chunk, c);
	} else {
		COPY_LOOP(nbufs, copy_cb, copy_chunk, c);
	}
	/*
	 * Keep the copy only if what was copied did not move: same tail, and
	 * every copied slot still holds the page, ops, offset and len it had.
	 * A writer that only added buffers after head changed nothing that
	 * was copied (a merge into the last buffer changes its len), so head
	 * may move: the copy is the pipe as it was when head was read. A slot
	 * that failed may have been caught half set up by a writer: try
	 * again, unless the pipe is simply too large.
	 */
	if (read_tail((struct pipe_inode_info *)c->pipe) != c->tail ||
	    COPY_LOOP(c->done, check_cb, check_chunk, c) != c->done ||
	    ring_moved(c)) {
		c->reason = PS_REASON_MOVED;
		return 0;
	}
	if (c->reason != PS_REASON_NONE && c->reason != PS_REASON_TOO_LARGE)
		return 0;
	return 1;
}

LOOP_CB attempt_cb(__u32 i, struct copy_ctx *c)
{
	return attempt_one(i, c);
}

/* Ring buffer bytes a record of n bytes takes: 8-byte header, 8-aligned. */
static __always_inline __u64 ring_cost(__u64 n)
{
	return 8 + ((n + 7) & ~7ULL);
}

enum { CAPTURED = 0, RETRY_LATER = 1 };

/*
 * capture copies one pipe into the ring: up to max_attempts copies, each
 * checked after the fact, then the ps_pipe naming the attempt that holds.
 * Returns RETRY_LATER, having emitted nothing, when the ring has no room
 * yet for every attempt.
 */
static __always_inline int capture(struct file *file, struct pipe_inode_info *pipe,
				   __u64 ino, __u32 kind, __u32 *nrecs)
{
	__u32 zero = 0;
	struct ps_pipe *p = bpf_map_lookup_elem(&pipe_scratch, &zero);
	struct copy_ctx cs = {}, *c = &cs;
	__u32 ring_size, most, i;
	__u64 need, avail, size;

	if (!p)
		return CAPTURED;
	p->type = PS_RING_PIPE;
	p->ino = ino;
	p->readers = BPF_CORE_READ(pipe, readers);
	p->writers = BPF_CORE_READ(pipe, writers);
	p->max_usage = BPF_CORE_READ(pipe, max_usage);
	ring_size = BPF_CORE_READ(pipe, ring_size);
	p->ring_size = ring_size;
	p->path_len = 0;
	p->path[0] = 0;
	if (have_d_path && kind == PS_KIND_FIFO) {
		long n = bpf_d_path((struct path *)&file->f_path, p->path, sizeof(p->path));
		if (n > 0)
			p->path_len = n - 1;
	}
	size = offsetof(struct ps_pipe, path) + (__u64)p->path_len + 1;
	if (size > sizeof(*p))
		size = sizeof(*p);

	/*
	 * Room for every attempt at the most buffers the pipe can hold, and
	 * the verdict, or come back once the loader drained the ring (the
	 * loader sizes the ring so that an empty one always has room).
	 */
	most = ring_size < scratch_slots ? ring_size : scratch_slots;
	need = copy_data ? (__u64)max_attempts * most * ring_cost(sizeof(struct ps_buf)) : 0;
	need += ring_cost(size);
	avail = bpf_ringbuf_query(&ring, BPF_RB_RING_SIZE) - bpf_ringbuf_query(&ring, BPF_RB_AVAIL_DATA);
	/* The kernel refuses a reservation that would fill the ring exactly. */
	if (need >= avail)
		return RETRY_LATER;

	if (!have_loop) {
		c = copy_scratch_ctx();
		if (!c)
			return CAPTURED;	/* the loader finds no verdict and says so */
		__builtin_memset(c, 0, sizeof(*c));
	}
	c->pipe = (__u64)pipe;
	c->bufs = (__u64)BPF_CORE_READ(pipe, bufs);
	c->ino = ino;
	c->ring_size = ring_size;
	c->mask = ring_size - 1;
	if (!copy_data) {
		c->attempt = 1;
		c->head = read_head(pipe);
		c->tail = read_tail(pipe);
		c->reason = PS_REASON_NOT_CAPTURED;
	} else if (have_loop) {
		bpf_loop(max_attempts, attempt_cb, c, 0);
	} else {
		for (i = 0; i < PS_MAX_ATTEMPTS && i < max_attempts; i++)
			if (attempt_one(i, c))
				break;
	}
	p->attempts = c->attempt;
	p->head = c->head;
	p->tail = c->tail;
	p->nbufs = c->done;
	p->bytes = c->bytes;
	p->reason = c->reason;
	p->status = c->status;
	if (c->reason == PS_REASON_MOVED)
		p->status |= PS_STATUS_TORN;
	else if (c->reason != PS_REASON_NONE)
		p->status |= PS_STATUS_INCOMPLETE;

	if (bpf_ringbuf_output(&ring, p, size, BPF_RB_NO_WAKEUP))
		return CAPTURED;	/* the loader finds no verdict and says so */
	*nrecs = c->done + 1;
	return CAPTURED;
}

static __always_inline int is_cloexec(struct task_struct *task, __u32 fd)
{
	unsigned long *bits = BPF_CORE_READ(task, files, fdt, close_on_exec);
	unsigned long word = 0;

	bpf_probe_read_kernel(&word, sizeof(word), bits + fd / 64);
	return (word >> (fd % 64)) & 1;
}

SEC("iter/task_file")
int dump_pipes(struct bpf_iter__task_file *ctx)
{
	struct seq_file *seq = ctx->meta->seq;
	struct task_struct *task = ctx->task;
	struct file *file = ctx->file;
	struct pipe_inode_info *pipe;
	struct inode *inode;
	struct ps_fd rec = {};
	__u32 tgid, level, *gen;
	__u64 ino;

	if (!task || !file)
		return 0;
	level = reader_level();
	tgid = ns_tgid(task, level);
	if (only_ino) {
		if (tgid != self_tgid)
			return 0;
	} else {
		if (tgid == (skip_tgid ? skip_tgid : self_tgid))
			return 0;
		if (filter_tgids && !bpf_map_lookup_elem(&targets, &tgid))
			return 0;
	}
	pipe = file_pipe(file, &inode);
	if (!pipe)
		return 0;
	ino = BPF_CORE_READ(inode, i_ino);
	if (only_ino && ino != only_ino)
		return 0;

	rec.tgid = tgid;
	rec.tid = ns_tid(task, level);
	rec.start_ns = BPF_CORE_READ(task, start_boottime);
	rec.uid = BPF_CORE_READ(task, cred, uid.val);
	rec.ino = ino;
	rec.file_id = (__u64)file;
	rec.fd = ctx->fd;
	rec.f_flags = BPF_CORE_READ(file, f_flags);
	rec.f_mode = BPF_CORE_READ(file, f_mode);
	rec.cloexec = is_cloexec(task, ctx->fd);
	rec.kind = inode_is_fifo(inode) ? PS_KIND_FIFO : PS_KIND_PIPE;
	bpf_probe_read_kernel_str(rec.comm, sizeof(rec.comm), task->comm);

	gen = bpf_map_lookup_elem(&seen, &ino);
	if (!gen || *gen != run_gen) {
		if (capture(file, pipe, ino, rec.kind, &rec.nrecs) == RETRY_LATER)
			return 1;
		rec.first = 1;
		bpf_map_update_elem(&seen, &ino, &run_gen, BPF_ANY);
	}
	rec.cgroup = cg_read(task, tgid, run_gen);
	bpf_seq_write(seq, &rec, sizeof(rec));
	if (rec.cgroup)
		cg_write(seq, tgid, run_gen);
	return 0;
}

struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(max_entries, 1);
	__type(key, __u32);
	__type(value, __u32);
} calib_scratch SEC(".maps");

struct calib_ctx {
	__u64 page;
	__u64 pipe;
	__u32 offset;
	/*
	 * Search candidates that read back the probe, counted in the map
	 * value pointed to: a count on the stack would be followed exactly
	 * by the verifier, each count a state of its own in every iteration.
	 */
	__u32 *matched;
	struct seq_file *seq;
};

/* try_pair reads the probe's bytes through one candidate translation. */
static __always_inline int try_pair(struct calib_ctx *c, __u64 vm, __u64 dm)
{
	__u64 sz = bpf_core_type_size(struct page);
	__u64 got[4] = {};
	__u64 off;

	if (!sz || c->page < vm)
		return 0;
	off = c->page - vm;
	if (off % sz || off / sz * page_size >= (1ULL << 46))
		return 0;
	if (bpf_probe_read_kernel(got, sizeof(got),
				  (void *)(dm + off / sz * page_size + c->offset)))
		return 0;
	return got[0] == calib_pattern[0] && got[1] == calib_pattern[1] &&
	       got[2] == calib_pattern[2] && got[3] == calib_pattern[3];
}

static __always_inline long candidate(__u32 i, struct calib_ctx *c)
{
	/*
	 * x86_64's layout (loader/layout.go): vmemmap: the page's GiB or the
	 * one below; direct map: calib_steps GiB down.
	 */
	__u64 vm = (c->page & ~(GIB - 1)) - (__u64)(i & 1) * GIB;
	__u64 dm = (c->pipe & ~(GIB - 1)) - (__u64)(i >> 1) * GIB;
	struct ps_calib rec = {};

	if (!try_pair(c, vm, dm))
		return 0;
	rec.vmemmap_start = vm;
	rec.direct_start = dm;
	rec.page = c->page;
	rec.pipe = c->pipe;
	rec.source = PS_CALIB_SEARCH;
	rec.matched = 1;
	bpf_seq_write(c->seq, &rec, sizeof(rec));
	return ++*c->matched >= 8;
}

LOOP_CB candidate_cb(__u32 i, struct calib_ctx *c)
{
	return candidate(i, c);
}

SEC("iter/task_file")
int calibrate(struct bpf_iter__task_file *ctx)
{
	struct task_struct *task = ctx->task;
	struct file *file = ctx->file;
	struct pipe_inode_info *pipe;
	struct pipe_buffer *b;
	struct inode *inode;
	struct calib_ctx c = {};
	__u32 ring_size, i, zero = 0;

	if (!task || !file || ns_tgid(task, reader_level()) != self_tgid || !calib_ino)
		return 0;
	inode = BPF_CORE_READ(file, f_inode);
	if (BPF_CORE_READ(inode, i_ino) != calib_ino)
		return 0;
	pipe = BPF_CORE_READ(inode, i_pipe);
	if (!pipe || !(BPF_CORE_READ(file, f_mode) & FMODE_READ))
		return 0;
	ring_size = BPF_CORE_READ(pipe, ring_size);
	b = slot_ptr(BPF_CORE_READ(pipe, bufs), read_tail(pipe), ring_size - 1);
	c.page = (__u64)BPF_CORE_READ(b, page);
	c.offset = BPF_CORE_READ(b, offset) & (PS_PAGE_MAX - 1);
	c.pipe = (__u64)pipe;
	c.seq = ctx->meta->seq;
	c.matched = bpf_map_lookup_elem(&calib_scratch, &zero);
	if (!c.matched)
		return 0;
	*c.matched = 0;

	if (ksym_vmemmap_base && ksym_page_offset_base && !calib_first) {
		__u64 vm = 0, dm = 0;

		bpf_probe_read_kernel(&vm, sizeof(vm), (void *)ksym_vmemmap_base);
		bpf_probe_read_kernel(&dm, sizeof(dm), (void *)ksym_page_offset_base);
		if (try_pair(&c, vm, dm)) {
			struct ps_calib rec = {
				.vmemmap_start = vm,
				.direct_start = dm,
				.page = c.page,
				.pipe = c.pipe,
				.source = PS_CALIB_KALLSYMS,
				.matched = 1,
			};
			bpf_seq_write(c.seq, &rec, sizeof(rec));
		}
	}
	if (!calib_first) {
		/* The probe's own pointers, for the loader's search (arm64's). */
		struct ps_calib rec = {
			.page = c.page,
			.pipe = c.pipe,
			.source = PS_CALIB_PROBE,
		};

		bpf_seq_write(c.seq, &rec, sizeof(rec));
	}
	if (have_loop) {
		bpf_loop(2 * calib_steps, candidate_cb, &c, 0);
		return 0;
	}
	/* A window of candidates: the loader runs as many as it takes. */
	for (i = 0; i < PS_CALIB_WINDOW; i++) {
		if (calib_first + i >= 2 * calib_steps || candidate(calib_first + i, &c))
			break;
	}
	return 0;
}
