/* SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause) */
/*
 * What both BPF components need to find and read a pipe from a
 * (task, file) visit of an iter/task_file program. Include after
 * vmlinux.h, bpf_helpers.h and bpf_core_read.h.
 */
#ifndef PIPESNAP_PIPE_COMMON_H
#define PIPESNAP_PIPE_COMMON_H

#define S_IFMT 00170000
#define S_IFIFO 0010000
#define PIPEFS_MAGIC 0x50495045

/*
 * file_pipe returns the pipe behind file, or NULL when file is not a pipe
 * or a FIFO that has one, and its inode through *inode.
 */
static __always_inline struct pipe_inode_info *file_pipe(struct file *file, struct inode **inode)
{
	*inode = BPF_CORE_READ(file, f_inode);
	if ((BPF_CORE_READ(*inode, i_mode) & S_IFMT) != S_IFIFO)
		return NULL;
	return BPF_CORE_READ(*inode, i_pipe);
}

/* inode_is_fifo: a named FIFO, not an anonymous pipe (pipefs). */
static __always_inline bool inode_is_fifo(struct inode *inode)
{
	return BPF_CORE_READ(inode, i_sb, s_magic) != PIPEFS_MAGIC;
}

/* head and tail are pipe_index_t, whose size differs between kernels. */
static __always_inline __u32 read_head(struct pipe_inode_info *pipe)
{
	return BPF_CORE_READ_BITFIELD_PROBED(pipe, head);
}

static __always_inline __u32 read_tail(struct pipe_inode_info *pipe)
{
	return BPF_CORE_READ_BITFIELD_PROBED(pipe, tail);
}

/*
 * Pids as the reader's pid namespace sees them. A task iterator visits
 * only the tasks of the reader's active pid namespace, but task->tgid and
 * task->pid are the initial namespace's numbers: inside a container or
 * `unshare -p`, pipesnap would show host pids, miss the pids it was given
 * and not know itself. struct pid holds one upid per namespace level,
 * from the root down (numbers[]); the reader's level is that of its own
 * thread_pid. At level 0 (the host) the numbers are tgid and pid.
 */
static __always_inline __u32 reader_level(void)
{
	struct task_struct *me = (void *)bpf_get_current_task();

	return BPF_CORE_READ(me, thread_pid, level);
}

static __always_inline __u32 pid_nr_at(struct pid *p, __u32 level)
{
	__u32 nr = 0;
	__u64 at;

	if (!p || level > 32 || BPF_CORE_READ(p, level) < level)
		return 0;
	at = (__u64)p + bpf_core_field_offset(struct pid, numbers) +
	     (__u64)level * bpf_core_type_size(struct upid) + bpf_core_field_offset(struct upid, nr);
	bpf_probe_read_kernel(&nr, sizeof(nr), (void *)at);
	return nr;
}

/* ns_tgid and ns_tid: a task's process and thread ids in the reader's
 * pid namespace (0: not visible there). */
static __always_inline __u32 ns_tgid(struct task_struct *t, __u32 level)
{
	if (!level)
		return BPF_CORE_READ(t, tgid);
	return pid_nr_at(BPF_CORE_READ(t, group_leader, thread_pid), level);
}

static __always_inline __u32 ns_tid(struct task_struct *t, __u32 level)
{
	if (!level)
		return BPF_CORE_READ(t, pid);
	return pid_nr_at(BPF_CORE_READ(t, thread_pid), level);
}

#endif
