/* SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause) */
/* Record layouts shared by pipes.bpf.c and the Go loader (bpf2go -type). */
#ifndef PIPESNAP_PIPES_H
#define PIPESNAP_PIPES_H

#define PS_COMM_LEN 16
#define PS_PATH_LEN 4096
/* One scratch slot holds one page; the loader refuses other page sizes. */
#define PS_PAGE_MAX 4096

/*
 * Bounds of the programs on kernels without bpf_loop (../compat.h), where
 * every loop has one the verifier can see. The loader caps scratch_slots
 * at PS_COMPAT_SLOTS there (a larger pipe is copied in part and marked
 * incomplete, too large), and runs the calibration's search a window of
 * candidates at a time.
 */
enum ps_compat {
	PS_COMPAT_CHUNK = 64,	/* buffers one chunk copies or checks */
	PS_COMPAT_SLOTS = 1024,	/* buffers of one pipe copied at most: 16 chunks */
	PS_MAX_ATTEMPTS = 8,	/* max_attempts is at most this */
	PS_CALIB_WINDOW = 32,	/* candidate translations tried per run */
};

/* Kinds of file, as in the stream (format.Kind). */
enum ps_kind {
	PS_KIND_PIPE = 1,
	PS_KIND_FIFO = 2,
};

/* Status bits and reasons, as in the stream (format.Status, format.Reason). */
enum ps_status {
	PS_STATUS_TORN = 1,
	PS_STATUS_INCOMPLETE = 2,
	PS_STATUS_PACKET = 4,
};

enum ps_reason {
	PS_REASON_NONE = 0,
	PS_REASON_MOVED = 1,
	PS_REASON_PAGE_RANGE = 2,
	PS_REASON_BOUNDS = 3,
	PS_REASON_FAULT = 4,
	PS_REASON_TOO_LARGE = 5,
	PS_REASON_CHANNEL = 6,
	PS_REASON_EXCLUDED = 7,
	PS_REASON_NOT_CAPTURED = 8,
};

/* Ring buffer record types. */
enum ps_ring_type {
	PS_RING_PIPE = 1,
	PS_RING_BUF = 2,
};

/* Where a calibration candidate came from. */
enum ps_calib_source {
	PS_CALIB_KALLSYMS = 1,	/* the bases kallsyms gave */
	PS_CALIB_SEARCH = 2,	/* the search down from the probe's pointers */
};

/*
 * struct ps_fd: one per (task, pipe or FIFO fd), written to the iterator's
 * seq_file in iteration order; the first of a process is followed by its
 * cgroups (cgroup set). When first is set, the pipe's contents were
 * put in the ring buffer just before: the ps_buf of every copy attempt,
 * then the ps_pipe that names the attempt that holds.
 */
struct ps_fd {
	__u32 tgid;
	__u32 tid;
	__u64 start_ns;
	__u64 ino;
	__u64 file_id;	/* identity of the open file, for dedup only */
	__u32 uid;
	__u32 fd;
	__u32 f_flags;
	__u32 f_mode;
	__u32 cloexec;
	__u32 kind;
	__u32 first;
	__u32 nrecs;	/* when first: ps_buf of the attempt that holds, + 1 */
	__u32 cgroup;	/* a struct cg_proc (../cgroup.h) follows: the process's first */
	char comm[PS_COMM_LEN];
};

/*
 * struct ps_pipe: pipe state, after the ps_buf records of a captured pipe:
 * its nbufs buffers are the ps_buf whose attempt equals attempts.
 */
struct ps_pipe {
	__u32 type;	/* PS_RING_PIPE */
	__u32 status;
	__u64 ino;
	__u32 reason;
	__u32 attempts;
	__u32 head;
	__u32 tail;
	__u32 ring_size;
	__u32 max_usage;
	__u32 readers;
	__u32 writers;
	__u32 nbufs;	/* ps_buf records that follow */
	__u32 path_len;	/* bytes of path, NUL excluded; 0 for anonymous pipes */
	__u64 bytes;
	char path[PS_PATH_LEN];
};

/*
 * struct ps_buf: one pipe buffer as one copy attempt saw it, header then
 * len bytes of data. Always reserved whole (ring reservations have a
 * size fixed at load time); bytes after len are not data.
 */
struct ps_buf {
	__u32 type;	/* PS_RING_BUF */
	__u32 index;	/* ring index (tail + k) */
	__u32 offset;
	__u32 len;
	__u32 flags;
	__u32 attempt;	/* 1-based; see ps_pipe.attempts */
	__u64 ino;
	__s64 fault;	/* the read of the page failed: not data */
	__u8 data[PS_PAGE_MAX];
};

/* struct ps_calib: one candidate translation that read back the probe. */
struct ps_calib {
	__u64 vmemmap_start;
	__u64 direct_start;
	__u64 page;	/* the probe's page pointer */
	__u64 pipe;	/* the probe's pipe_inode_info pointer */
	__u32 source;	/* enum ps_calib_source */
	__u32 matched;
};

#endif
