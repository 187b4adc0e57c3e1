package pipestate

// bpf/pipestate twice: with bpf_loop, and for kernels without it
// (PIPESNAP_NO_LOOP, bpf/compat.h), whose spec loads into the same
// pipestateObjects (same programs, maps and variables).
//go:generate go tool bpf2go -tags linux -target amd64,arm64 -cc clang-19 -strip llvm-strip-19 -cflags "-O2 -g -Wall -Werror -mcpu=v3" -type pst_proc -type pst_fd -type pst_pipe -type pst_rec -type pst_waiter -type pst_slot -type pst_task -type pst_kind -type pst_queue -type pst_wkind -type pst_status -type pst_open -type pst_compat -type cg_proc -type cg_flags -type cg_ctl -type cg_hier pipestate ../bpf/pipestate/pipestate.bpf.c -- -I../bpf/pipestate
//go:generate go tool bpf2go -tags linux -target amd64,arm64 -cc clang-19 -strip llvm-strip-19 -cflags "-O2 -g -Wall -Werror -mcpu=v3 -DPIPESNAP_NO_LOOP" -no-global-types -output-stem pipestate_noloop pipestateNoLoop ../bpf/pipestate/pipestate.bpf.c -- -I../bpf/pipestate
