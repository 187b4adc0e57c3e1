// Package diagnose says where pipelines are stuck, who the culprit is and
// for how long, from samples of the pipe model (package pipemodel), live
// or from a snapshot. classify.go holds the rule (a stall is a wait that
// nothing moved for at least the minimum wait, of one of a few kinds; an
// idle reader waiting for a writer that waits itself is not one), words.go
// the English, chains.go how processes are linked into pipelines and
// ordered the way data flows, observe.go how the live system is watched
// (two walks, then more while a stall-shaped wait is too young). The
// package reads only /proc/PID/wchan and stack (Procfs), through an
// interface a snapshot answers too.
package diagnose
