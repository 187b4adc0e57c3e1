package pipestate

//go:generate go tool bpf2go -tags linux -target bpfel -cc clang-19 -strip llvm-strip-19 -cflags "-O2 -g -Wall -Werror -mcpu=v3" -type pst_fd -type pst_waiter -type pst_slot -type pst_task -type pst_kind -type pst_queue -type pst_wkind -type pst_status -type pst_open pipestate ../bpf/pipestate/pipestate.bpf.c -- -I../bpf/pipestate
