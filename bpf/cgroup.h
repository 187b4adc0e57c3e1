/* SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause) */
/*
 * cgroup.h: a process's cgroups as the kernel has them, read by both
 * components' fd walks once per process (struct cg_proc, after the
 * process's first fd record) and shared with Go (bpf2go -type cg_proc;
 * internal/kcgroup decodes it). Include after vmlinux.h, bpf_helpers.h,
 * bpf_core_read.h and compat.h.
 *
 * Two hierarchies: the unified one (task->cgroups->dfl_cgrp), and on
 * hybrid hosts one v1 hierarchy, the first of cpu, memory and pids that
 * is mounted on its own (a runtime's cgroupfs manager may name a
 * container or its monitor only there: podman's conmon is at / on v2 and
 * /libpod_parent/conmon on v1). Each is the cgroup's kernfs node id (its
 * cgroupfs directory's inode number, the cgroup id) and its path from the
 * hierarchy's root, whatever cgroup namespace pipesnap runs in: the walk
 * goes up the kernfs parents to the root. The path is written from the
 * end of its buffer backwards, so one that does not fit (deeper than
 * CG_DEPTH, or longer than CG_PATH_MAX bytes) keeps its innermost
 * components, the ones that name a container, and is marked truncated.
 * A name that cannot be read leaves the hierarchy unread: Go then reads
 * /proc/PID/cgroup.
 */
#ifndef PIPESNAP_CGROUP_H
#define PIPESNAP_CGROUP_H

#define CG_PATH_MAX 1024	/* bytes of a path's buffer (a power of two) */
#define CG_NAME_MAX 256		/* a kernfs name and its NUL (NAME_MAX + 1) */
#define CG_DEPTH 16		/* levels of a path read at most */

/* Hierarchies of cg_proc: its arrays' indexes. */
enum cg_hier {
	CG_V2 = 0,
	CG_V1 = 1,
};

/* cg_proc.flags: bits per hierarchy, (1 << hier) and (4 << hier). */
enum cg_flags {
	CG_READ_V2 = 1,		/* id[CG_V2] and its path were read */
	CG_READ_V1 = 2,
	CG_TRUNC_V2 = 4,	/* the path did not fit: its innermost components */
	CG_TRUNC_V1 = 8,
};

/* The v1 hierarchy read: named by its controller. */
enum cg_ctl {
	CG_CTL_NONE = 0,
	CG_CTL_CPU = 1,
	CG_CTL_MEMORY = 2,
	CG_CTL_PIDS = 3,
};

/*
 * struct cg_proc: path[h] holds hierarchy h's path, root first, in
 * path[h][off[h]] .. path[h][CG_PATH_MAX - 1] (no NUL); off[h] ==
 * CG_PATH_MAX is the root, "/".
 */
struct cg_proc {
	__u64 id[2];
	__u32 off[2];
	__u32 flags;	/* enum cg_flags */
	__u32 v1_ctl;	/* enum cg_ctl */
	char path[2][CG_PATH_MAX];
};

/* The record, and the scratch of the walk up a path. */
struct cg_scratch {
	struct cg_proc rec;
	char name[CG_NAME_MAX];
	__u64 task;	/* struct task_struct *: whose cgroups */
	__u64 kn;	/* struct kernfs_node *: the next node up */
	__u32 pos;	/* where the path starts so far */
	__u32 hier;
	__u32 state;	/* enum cg_state */
};

enum cg_state {
	CG_GOING = 0,
	CG_ROOT = 1,	/* the walk reached the root: the path is whole */
	CG_FULL = 2,	/* the next name did not fit */
	CG_FAULT = 3,	/* a name could not be read */
};

struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(max_entries, 1);
	__type(key, __u32);
	__type(value, struct cg_scratch);
} cg_scratch SEC(".maps");

/*
 * The process whose cg_proc the walk wrote last, and in which walk: the
 * next fd record of another process (or of another walk) carries its
 * own. Set only once both records are in the seq_file: output the kernel
 * drops (seq_file overflow, the element shown again on the next read) is
 * written again.
 */
__u32 cg_last_tgid = 0;
__u32 cg_last_gen = 0;

static __always_inline struct cg_scratch *cg_get(void)
{
	__u32 zero = 0;

	return bpf_map_lookup_elem(&cg_scratch, &zero);
}

/* kernfs_node.parent became __parent in Linux 6.15. */
struct kernfs_node___old {
	struct kernfs_node *parent;
} __attribute__((preserve_access_index));

static __always_inline struct kernfs_node *kn_parent(struct kernfs_node *kn)
{
	struct kernfs_node___old *old = (void *)kn;

	/* Each read behind its test (see sched_state in compat.h). */
	if (bpf_core_field_exists(kn->__parent)) {
		asm volatile("" : "+r"(kn));
		return BPF_CORE_READ(kn, __parent);
	}
	asm volatile("" : "+r"(old));
	return BPF_CORE_READ(old, parent);
}

/*
 * cg_step puts the name of the node s->kn in front of the path and goes
 * to its parent; it stops (1) at the root, or when a name does not fit
 * or cannot be read.
 */
static __always_inline long cg_step(__u32 i, void *unused)
{
	struct cg_scratch *s = cg_get();
	struct kernfs_node *kn, *parent;
	__u32 len, pos, at;
	char *buf;
	long n;

	if (!s)
		return 1;
	kn = (struct kernfs_node *)s->kn;
	parent = kn_parent(kn);
	if (!parent) {
		s->state = CG_ROOT;
		return 1;
	}
	n = bpf_probe_read_kernel_str(s->name, sizeof(s->name), BPF_CORE_READ(kn, name));
	if (n <= 1) {
		s->state = CG_FAULT;	/* or an empty name below the root */
		return 1;
	}
	len = n - 1;
	if (len + 1 > s->pos) {
		s->state = CG_FULL;
		return 1;
	}
	pos = s->pos - len - 1;
	/* Both hierarchies' buffers as one array: one bound for both. */
	buf = (char *)s->rec.path;
	at = s->hier * CG_PATH_MAX + pos;
	buf[at & (2 * CG_PATH_MAX - 1)] = '/';
	bpf_probe_read_kernel(buf + ((at + 1) & (2 * CG_PATH_MAX - 1)),
			      len & (CG_NAME_MAX - 1), s->name);
	s->pos = pos;
	s->kn = (__u64)parent;
	return 0;
}

LOOP_CB cg_cb(__u32 i, void *unused)
{
	return cg_step(i, unused);
}

CHUNK(cg_chunk, cg_step, cg_get, CG_DEPTH)

/* cg_path reads hierarchy hier's cgroup cg into s->rec. */
static __always_inline void cg_path(struct cg_scratch *s, __u32 hier, struct cgroup *cg)
{
	struct kernfs_node *kn = BPF_CORE_READ(cg, kn);

	if (!kn)
		return;
	s->rec.id[hier & 1] = BPF_CORE_READ(kn, id);
	s->kn = (__u64)kn;
	s->pos = CG_PATH_MAX;
	s->hier = hier & 1;
	s->state = CG_GOING;
	LOOP(CG_DEPTH, cg_cb, NULL, cg_chunk, CG_DEPTH, 1);
	if (s->state == CG_GOING)
		/* CG_DEPTH levels read: whole if the next node is the root */
		s->state = kn_parent((struct kernfs_node *)s->kn) ? CG_FULL : CG_ROOT;
	if (s->state == CG_FAULT)
		return;
	s->rec.off[hier & 1] = s->pos;
	s->rec.flags |= (CG_READ_V2 << hier) | (s->state == CG_FULL ? CG_TRUNC_V2 << hier : 0);
}

/* subsys_cgroup is the cgroup of cset on controller ssid's hierarchy. */
static __always_inline struct cgroup *subsys_cgroup(struct css_set *cset, __u32 ssid)
{
	struct cgroup_subsys_state *css = NULL;

	if (ssid >= bpf_core_field_size(cset->subsys) / sizeof(void *))
		return NULL;
	bpf_probe_read_kernel(&css, sizeof(css), (void *)cset +
			      bpf_core_field_offset(struct css_set, subsys) + ssid * sizeof(void *));
	return css ? BPF_CORE_READ(css, cgroup) : NULL;
}

/* A controller on a v1 hierarchy of its own: not on the unified root. */
#define CG_TRY_V1(ctl, id)								\
	if (bpf_core_enum_value_exists(enum cgroup_subsys_id, id)) {			\
		cg = subsys_cgroup(cset, bpf_core_enum_value(enum cgroup_subsys_id, id));	\
		if (cg && (__u64)BPF_CORE_READ(cg, root) != dfl_root) {			\
			s->rec.v1_ctl = ctl;						\
			cg_path(s, CG_V1, cg);						\
			return 1;							\
		}									\
	}

/*
 * read_cgroups fills the cg_scratch record with the cgroups of the
 * process of its task (as /proc/PID/cgroup: its thread group leader's).
 * A global function, verified once on its own whatever the caller's
 * state; it takes no arguments (the verifier passes a global function
 * scalars and, before Linux 5.12, nothing else). 0: no record.
 */
__attribute__((noinline)) int read_cgroups(void)
{
	struct cg_scratch *s = cg_get();
	struct task_struct *t;
	struct css_set *cset;
	struct cgroup *dfl, *cg;
	__u64 dfl_root = 0;

	if (!s)
		return 0;
	t = (struct task_struct *)s->task;
	s->rec.id[0] = s->rec.id[1] = 0;
	s->rec.off[0] = s->rec.off[1] = CG_PATH_MAX;
	s->rec.flags = 0;
	s->rec.v1_ctl = CG_CTL_NONE;
	if (!bpf_core_field_exists(t->cgroups))
		return 1;	/* a kernel without cgroups: nothing read */
	cset = BPF_CORE_READ(t, group_leader, cgroups);
	if (!cset)
		return 1;
	dfl = BPF_CORE_READ(cset, dfl_cgrp);
	if (dfl) {
		dfl_root = (__u64)BPF_CORE_READ(dfl, root);
		cg_path(s, CG_V2, dfl);
	}
	CG_TRY_V1(CG_CTL_CPU, cpu_cgrp_id)
	CG_TRY_V1(CG_CTL_MEMORY, memory_cgrp_id)
	CG_TRY_V1(CG_CTL_PIDS, pids_cgrp_id)
	return 1;
}

/* cg_due: the fd record of process tgid in walk gen carries a cg_proc. */
static __always_inline bool cg_due(__u32 tgid, __u32 gen)
{
	return tgid != cg_last_tgid || gen != cg_last_gen;
}

/*
 * cg_read tells whether the fd record of process tgid in walk gen is to
 * carry a cg_proc, and reads it if so: the record says so (its cgroup
 * field) and cg_write writes the cg_proc right after it.
 */
static __always_inline __u32 cg_read(struct task_struct *task, __u32 tgid, __u32 gen)
{
	struct cg_scratch *s;

	if (!cg_due(tgid, gen) || !(s = cg_get()))
		return 0;
	s->task = (__u64)task;
	return read_cgroups() != 0;
}

/*
 * cg_write writes the cg_proc after the fd record that said it follows,
 * and remembers it was written. A write that fails leaves the seq_file
 * overflowed: the kernel drops the element's output, records before
 * included, and shows it again.
 */
static __always_inline void cg_write(struct seq_file *seq, __u32 tgid, __u32 gen)
{
	struct cg_scratch *s = cg_get();

	if (!s || bpf_seq_write(seq, &s->rec, sizeof(s->rec)))
		return;
	cg_last_tgid = tgid;
	cg_last_gen = gen;
}

#endif
