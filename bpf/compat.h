/* SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause) */
/*
 * compat.h: what both BPF components do differently on kernels that lack
 * something newer ones have. The loader (internal/bpfload) finds out what
 * the running kernel offers, from its BTF and with probe programs, never
 * from its version number, and picks the variant:
 *
 *   bpf_loop     the helper (Linux 5.17). Each component is built twice
 *                (its gen.go): with bpf_loop, and with PIPESNAP_NO_LOOP,
 *                where every loop is a bounded loop the verifier walks to
 *                the end (5.3+). Two objects, not a switch: a kernel
 *                before 5.13 refuses a program that so much as names a
 *                callback function (BPF_PSEUDO_FUNC), dead code or not.
 *                The loader loads the one object or the other.
 *   have_d_path  bpf_d_path allowed in iterator programs (Linux 5.12), a
 *                load-time switch. Without it a FIFO's path is left empty
 *                here and the loader reads it from /proc/PID/fd/N, which
 *                gives the same d_path() of the same open file.
 *
 * have_d_path is const volatile: the verifier knows its value (a frozen,
 * read-only map) and never looks at the branch not taken, so a kernel
 * never sees a helper call it would refuse.
 *
 * Without bpf_loop, the verifier walks every iteration of every loop and
 * keeps, along the path it follows, each branch it has yet to explore:
 * more than 8192 of them (BPF_COMPLEXITY_LIMIT_JMP_SEQ) or a million
 * instructions and it refuses the program. So long loops run chunk by
 * chunk: a chunk is a global (not static) function, which the verifier
 * checks once, on its own, with unknown arguments; its callers see one
 * call and an unknown result. Before Linux 5.12 a global function takes
 * scalars only, so the state a chunk works on is in a per-CPU map value
 * (a program runs on one CPU from start to end) or in its arguments.
 */
#ifndef PIPESNAP_COMPAT_H
#define PIPESNAP_COMPAT_H

#ifdef PIPESNAP_NO_LOOP
#define have_loop 0
#else
#define have_loop 1
#endif

const volatile bool have_d_path = true;

/* A bpf_loop callback: unused, and dropped, in the PIPESNAP_NO_LOOP build. */
#define LOOP_CB static long __attribute__((unused))

/* A chunk's result: calls made, with CHUNK_STOP when one returned 1. */
#define CHUNK_STOP (1U << 31)

/*
 * LOOP calls cb(i, ctx) for i = 0 .. n-1 until one returns 1, and is the
 * number of calls made, that one included, as bpf_loop's result is. With
 * bpf_loop; in the PIPESNAP_NO_LOOP build through chunk_fn(first, n), a
 * global function that makes the calls for i = first .. at most
 * first+chunk-1 and returns how many (| CHUNK_STOP when one returned 1),
 * at most chunks times: chunk * chunks calls at most.
 */
#ifndef PIPESNAP_NO_LOOP
#define LOOP(n, cb, ctx, chunk_fn, chunk, chunks) bpf_loop((n), cb, ctx, 0)
#else
#define LOOP(n, cb, ctx, chunk_fn, chunk, chunks) ({			\
	__u32 __n = (n);						\
	long __done = 0;						\
	__u32 __k, __got;						\
	for (__k = 0; __k < (chunks); __k++) {				\
		__got = chunk_fn(__done, __n);				\
		__done += __got & ~CHUNK_STOP;				\
		if ((__got & CHUNK_STOP) || __got < (chunk))		\
			break;						\
	}								\
	__done; })
#endif

/*
 * CHUNK defines chunk_fn for LOOP (in the PIPESNAP_NO_LOOP build only):
 * name(first, n) calls body(i, ctx) for i = first .. min(first+chunk, n)-1,
 * ctx being what get_ctx() returns (a pointer into a map; NULL stops the
 * loop).
 */
#ifndef PIPESNAP_NO_LOOP
#define CHUNK(name, body, get_ctx, chunk)
#else
#define CHUNK(name, body, get_ctx, chunk)				\
__attribute__((noinline)) __u32 name(__u32 first, __u32 n)		\
{									\
	__typeof__(get_ctx()) __c = get_ctx();				\
	__u32 __i;							\
	if (!__c)							\
		return CHUNK_STOP;					\
	_Pragma("clang loop unroll(disable)")				\
	for (__i = 0; __i < (chunk); __i++) {				\
		if (first + __i >= n)					\
			break;						\
		if (body(first + __i, __c))				\
			return (__i + 1) | CHUNK_STOP;			\
	}								\
	return __i;							\
}
#endif

/*
 * sched_state is a task's scheduler state: task_struct.__state since Linux
 * 5.14, a long named state before.
 */
struct task_struct___long_state {
	long state;
} __attribute__((preserve_access_index));

static __always_inline __u32 sched_state(struct task_struct *t)
{
	struct task_struct___long_state *old = (void *)t;

	/*
	 * Each read stays behind its test: a field the kernel lacks is a
	 * poisoned instruction, and clang would otherwise compute t + offset
	 * ahead of the test (out of a loop, even) for both.
	 */
	if (bpf_core_field_exists(t->__state)) {
		asm volatile("" : "+r"(t));
		return BPF_CORE_READ(t, __state);
	}
	asm volatile("" : "+r"(old));
	return BPF_CORE_READ(old, state);
}

/*
 * current_task is the task running the program, for probe reads only
 * (BPF_CORE_READ): bpf_get_current_task, which every kernel has, rather
 * than bpf_get_current_task_btf (5.11), whose typed pointer would only
 * matter for direct loads.
 */
static __always_inline struct task_struct *current_task(void)
{
	return (struct task_struct *)bpf_get_current_task();
}

#endif
