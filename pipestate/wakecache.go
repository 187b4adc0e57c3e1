package pipestate

import (
	"bufio"
	"bytes"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
)

// The wake functions' addresses are fixed for a boot, and reading them
// from /proc/kallsyms costs ~17 ms: a sampler that read them leaves them,
// as root, in a file for the next one, keyed by the boot's id. The file
// is believed only when it and its directory are root's and writable by
// root alone, and its boot id is this boot's; anything else and kallsyms
// is read as before. (A wrong address would only make the program
// misname a wait queue entry: it compares pointers, it follows none of
// them.)

// wakeCachePath is where the addresses are kept ("": nowhere; a variable
// for tests).
var wakeCachePath = "/run/pipesnap/wake-funcs"

// bootIDPath names this boot.
var bootIDPath = "/proc/sys/kernel/random/boot_id"

func bootID() string {
	b, err := os.ReadFile(bootIDPath)
	if err != nil {
		return ""
	}
	return strings.TrimSpace(string(b))
}

// rootOnly tells whether fi is root's and writable by no one else.
func rootOnly(fi os.FileInfo) bool {
	st, ok := fi.Sys().(*syscall.Stat_t)
	return ok && st.Uid == 0 && fi.Mode().Perm()&0o022 == 0
}

// loadWakeCache returns the addresses this boot's file holds, if it is
// one to believe.
func loadWakeCache() (wakeFuncs, bool) {
	if wakeCachePath == "" {
		return wakeFuncs{}, false
	}
	boot := bootID()
	if boot == "" {
		return wakeFuncs{}, false
	}
	if di, err := os.Lstat(filepath.Dir(wakeCachePath)); err != nil || !di.IsDir() || !rootOnly(di) {
		return wakeFuncs{}, false
	}
	f, err := os.OpenFile(wakeCachePath, os.O_RDONLY|syscall.O_NOFOLLOW, 0)
	if err != nil {
		return wakeFuncs{}, false
	}
	defer f.Close()
	if fi, err := f.Stat(); err != nil || !fi.Mode().IsRegular() || !rootOnly(fi) || fi.Size() > 4096 {
		return wakeFuncs{}, false
	}
	w, id, err := parseWakeCache(f)
	if err != nil || id != boot || w.autoremove == 0 {
		return wakeFuncs{}, false
	}
	return w, true
}

// storeWakeCache keeps w for this boot's next samplers, when this
// process is root (only root's file is believed); quietly not otherwise.
func storeWakeCache(w wakeFuncs) {
	boot := bootID()
	if wakeCachePath == "" || boot == "" || os.Geteuid() != 0 || w.autoremove == 0 {
		return
	}
	dir := filepath.Dir(wakeCachePath)
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return
	}
	if di, err := os.Lstat(dir); err != nil || !di.IsDir() || !rootOnly(di) {
		return
	}
	f, err := os.CreateTemp(dir, ".wake-funcs-*")
	if err != nil {
		return
	}
	defer os.Remove(f.Name()) // after the rename, nothing is there
	_, err = fmt.Fprintf(f, "%s\n%x\n%x\n%x\n%x\n%x\n%x\n", boot, w.autoremove, w.dflt, w.woken, w.pollwake, w.epPoll, w.epAutoremove)
	if cerr := f.Close(); err != nil || cerr != nil {
		return
	}
	os.Rename(f.Name(), wakeCachePath)
}

// parseWakeCache reads the file storeWakeCache writes: the boot id, then
// the six addresses in hex, one a line.
func parseWakeCache(f *os.File) (wakeFuncs, string, error) {
	sc := bufio.NewScanner(f)
	var lines []string
	for sc.Scan() {
		lines = append(lines, string(bytes.TrimSpace(sc.Bytes())))
	}
	if err := sc.Err(); err != nil {
		return wakeFuncs{}, "", err
	}
	if len(lines) != 7 {
		return wakeFuncs{}, "", fmt.Errorf("%d lines, want 7", len(lines))
	}
	var w wakeFuncs
	for i, p := range []*uint64{&w.autoremove, &w.dflt, &w.woken, &w.pollwake, &w.epPoll, &w.epAutoremove} {
		v, err := strconv.ParseUint(lines[i+1], 16, 64)
		if err != nil {
			return wakeFuncs{}, "", err
		}
		*p = v
	}
	return w, lines[0], nil
}
