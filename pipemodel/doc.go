// Package pipemodel is the one model of pipes that every view reads:
// pipes and FIFOs with their ring state, the processes holding each end
// (Holder), the processes and their threads (Proc, Thread), the tasks on
// each wait queue (Waiter), and the tasks blocked opening a FIFO
// (OpenWait). Two feeders fill it: pipestate from a live walk of the
// kernel, snapshot from a stream written by dump. It holds data and the
// rules that are facts about the data (when a poller waits for a pipe,
// how full a pipe is, what went through it between two samples), and
// nothing that touches the kernel, so diagnose, metrics and the views are
// tested on samples built by hand.
package pipemodel
