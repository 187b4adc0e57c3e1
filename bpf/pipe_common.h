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

#endif
