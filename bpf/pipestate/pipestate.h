/* SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause) */
/*
 * Record layouts shared by pipestate.bpf.c and the Go package pipestate
 * (bpf2go -type). Metadata only: nothing here carries a page's bytes.
 */
#ifndef PIPESNAP_PIPESTATE_H
#define PIPESNAP_PIPESTATE_H

#define PST_COMM_LEN 16
#define PST_PATH_LEN 256
/* Wait queue entries reported per record, both queues together. */
#define PST_MAX_WAITERS 16
/* Buffers whose offset and length are reported, from the tail on. */
#define PST_SLOTS 16

/*
 * Bounds of the program on kernels without bpf_loop (../compat.h), where
 * every loop has one the verifier can see: a pipe of more buffers than
 * PST_COMPAT_BUFS is reported PST_STATUS_BAD_RING (its bytes are not
 * summed), a process of more threads than PST_COMPAT_THREADS is compared
 * with a pipe's waiters as far as that (PST_STATUS_THREADS_TRUNC).
 */
enum pst_compat {
	PST_COMPAT_BUF_CHUNK = 64,
	PST_COMPAT_BUFS = 4096,		/* 64 chunks */
	PST_COMPAT_THREAD_CHUNK = 32,
	PST_COMPAT_THREADS = 1024,	/* 32 chunks */
};

enum pst_kind {
	PST_KIND_PIPE = 1,
	PST_KIND_FIFO = 2,
};

/* Which wait queue of the pipe an entry sleeps on. */
enum pst_queue {
	PST_QUEUE_READ = 0,	/* pipe->rd_wait: waiting for data */
	PST_QUEUE_WRITE = 1,	/* pipe->wr_wait: waiting for room */
};

/* What a wait queue entry is. */
enum pst_wkind {
	/* private is a thread of the record's own process: it is blocked on
	 * this pipe (pipe_read, pipe_write, splice). */
	PST_W_THREAD = 1,
	/* private is a task of another process, sleeping (task wake function). */
	PST_W_TASK = 2,
	/* poll(2)/select(2): private is the poller's poll_wqueues. */
	PST_W_POLL = 3,
	/* an epoll instance watches the pipe (no task behind it). */
	PST_W_EPOLL = 4,
	/* anything else: an unknown wake function. */
	PST_W_OTHER = 5,
};

/* What a task asleep in open(2) of a FIFO waits for. */
enum pst_open {
	PST_OPEN_NONE = 0,
	PST_OPEN_READ = 1,	/* opening for reading: waits for a writer */
	PST_OPEN_WRITE = 2,	/* opening for writing: waits for a reader */
};

/* idle_ns and wait_ns when the kernel keeps no timestamp pipesnap reads. */
#define PST_IDLE_UNKNOWN 0xffffffffffffffffULL

enum pst_status {
	PST_STATUS_MOVED = 1,		/* head/tail moved during every read */
	PST_STATUS_WAITERS_TRUNC = 2,	/* more wait entries than reported */
	PST_STATUS_THREADS_TRUNC = 4,	/* the thread list was not walked to its end */
	PST_STATUS_BAD_RING = 8,	/* head/tail/ring_size not a ring we know */
};

struct pst_waiter {
	__u64 entry;	/* the wait_queue_entry: its identity across records */
	__u64 private;	/* the entry's private; compared, never shown */
	__u64 wait_ns;	/* since the task last ran (PST_IDLE_UNKNOWN) */
	__u64 ep;	/* epoll: the eventpoll, an identity */
	__u32 tid;	/* the task's thread id, when there is a task */
	__u32 tgid;
	__u32 state;	/* the task's __state */
	__u32 events;	/* poll/epoll: the events waited for */
	__s32 target_fd;	/* epoll: the fd the registration names */
	__u8 queue;	/* enum pst_queue */
	__u8 kind;	/* enum pst_wkind */
	__u8 sleeping;	/* poll/epoll: a task sleeps in the call right now */
	__u8 _pad;
	__u16 flags;	/* the entry's flags (WQ_FLAG_EXCLUSIVE...) */
	__u16 _pad2;
	__u32 _pad3;
	char comm[PST_COMM_LEN];
};

struct pst_slot {
	__u32 offset;
	__u32 len;
};

/*
 * The fd walk writes records of variable length, each starting with its
 * type and its length in bytes (a multiple of 8): a struct pst_proc for
 * the process of the fd records that follow it (once per process and
 * iterator session), then one struct pst_fd per (task, fd) holding a pipe
 * or FIFO. The first fd of a pipe in a process carries the pipe's state
 * after it: a struct pst_pipe, its nslots slots, its nwaiters waiters and,
 * when path_len is not 0, its path with a NUL, padded to 8 bytes. A later
 * fd of the same pipe in the same process (the state would be the same)
 * is a bare struct pst_fd.
 */
enum pst_rec {
	PST_REC_PROC = 1,
	PST_REC_FD = 2,
};

struct pst_proc {
	__u16 type;		/* PST_REC_PROC */
	__u16 len;
	__u32 tgid;
	__u32 tid;		/* the task the iterator visited for this files table */
	__u32 task_state;	/* the thread group leader's __state */
	__u64 start_ns;		/* its start time (boot clock) */
	__u32 nr_threads;
	__u32 _pad;
	char comm[PST_COMM_LEN];
};

struct pst_fd {
	__u16 type;		/* PST_REC_FD */
	__u16 len;		/* the whole record's, the pipe's state included */
	__u32 fd;
	__u64 ino;
	__u64 file_id;		/* the struct file: fds sharing it share an open file */
	__u32 f_flags;
	__u32 f_mode;
};

struct pst_pipe {
	__u32 kind;		/* enum pst_kind */
	__u32 head;
	__u32 tail;
	__u32 ring_size;
	__u32 max_usage;
	__u32 readers;
	__u32 writers;
	__u32 nbufs;		/* head - tail */
	__u32 status;		/* enum pst_status bits */
	__u32 attempts;
	__u64 bytes;		/* sum of the buffers' lengths: bytes queued */
	__u16 nslots;		/* slots that follow: buffers tail, tail+1, ... */
	__u16 nwaiters;		/* waiters that follow them */
	__u32 path_len;		/* 0 for anonymous pipes (no path follows) */
};

/*
 * struct pst_task: one thread of a process the fd walk reported (or any
 * thread asleep in open(2) of a FIFO), with its scheduling state. The
 * thread group leader's of a reported process is followed by the
 * process's cgroups.
 */
struct pst_task {
	__u32 tgid;
	__u32 tid;
	__u64 start_ns;		/* the process's start time (boot clock) */
	__u64 idle_ns;		/* since the thread last ran (PST_IDLE_UNKNOWN) */
	__u32 state;		/* __state */
	__u32 open;		/* enum pst_open */
	__u64 open_ino;		/* the FIFO's inode */
	__u32 open_readers;	/* the FIFO's open ends, the waiter's own included */
	__u32 open_writers;
	__s32 open_dfd;		/* the directory fd the path is relative to (AT_FDCWD) */
	__u32 name_len;		/* of name, the path as given to open(2) */
	__u32 cgroup;		/* a struct cg_proc (../cgroup.h) follows */
	char comm[PST_COMM_LEN];
	char name[PST_PATH_LEN];
};

#endif
