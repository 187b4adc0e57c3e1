package loader

// bpf/pipes twice: with bpf_loop, and for kernels without it
// (PIPESNAP_NO_LOOP, bpf/compat.h), whose spec loads into the same
// pipesObjects (same programs, maps and variables).
//go:generate go tool bpf2go -tags linux -target bpfel -cc clang-19 -strip llvm-strip-19 -cflags "-O2 -g -Wall -Werror -mcpu=v3" -type ps_fd -type ps_pipe -type ps_buf -type ps_calib -type ps_compat -type ps_ring_type -type ps_calib_source -type ps_status -type ps_reason -type cg_proc -type cg_flags -type cg_ctl -type cg_hier pipes ../bpf/pipes/pipes.bpf.c -- -I../bpf/pipes
//go:generate go tool bpf2go -tags linux -target bpfel -cc clang-19 -strip llvm-strip-19 -cflags "-O2 -g -Wall -Werror -mcpu=v3 -DPIPESNAP_NO_LOOP" -no-global-types -output-stem pipes_noloop pipesNoLoop ../bpf/pipes/pipes.bpf.c -- -I../bpf/pipes
