package loader

//go:generate go tool bpf2go -tags linux -target bpfel -cc clang-19 -strip llvm-strip-19 -cflags "-O2 -g -Wall -Werror -mcpu=v3" -type ps_fd -type ps_pipe -type ps_buf -type ps_calib pipes ../bpf/pipes/pipes.bpf.c -- -I../bpf/pipes
