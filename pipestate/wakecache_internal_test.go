package pipestate

import (
	"os"
	"path/filepath"
	"testing"
)

// The other tests count kallsyms reads: no cache of the machine's may
// answer for them.
func init() { wakeCachePath = "" }

// TestWakeCache: addresses kept as root are found again on this boot,
// and not after another boot, nor from a file or directory someone else
// could have written.
func TestWakeCache(t *testing.T) {
	if os.Geteuid() != 0 {
		if os.Getenv("CI") != "" {
			t.Fatal("needs root, and CI is set")
		}
		t.Skip("needs root")
	}
	dir := filepath.Join(t.TempDir(), "run")
	defer func(p, b string) { wakeCachePath, bootIDPath = p, b }(wakeCachePath, bootIDPath)
	wakeCachePath = filepath.Join(dir, "wake-funcs")
	boot := filepath.Join(t.TempDir(), "boot_id")
	if err := os.WriteFile(boot, []byte("1111-aaaa\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	bootIDPath = boot
	w := wakeFuncs{autoremove: 0xffffffff81001000, dflt: 0xffffffff81002000, pollwake: 0xffffffff81003000}
	storeWakeCache(w)
	if fi, err := os.Stat(dir); err != nil || fi.Mode().Perm() != 0o700 {
		t.Fatalf("cache directory: %v, %v", err, fi)
	}
	if fi, err := os.Stat(wakeCachePath); err != nil || fi.Mode().Perm() != 0o600 {
		t.Fatalf("cache file: %v, %v", err, fi)
	}
	if got, ok := loadWakeCache(); !ok || got != w {
		t.Fatalf("loaded %+v, %v; want %+v", got, ok, w)
	}
	// Another boot.
	os.WriteFile(boot, []byte("2222-bbbb\n"), 0o644)
	if _, ok := loadWakeCache(); ok {
		t.Errorf("a cache of another boot was believed")
	}
	storeWakeCache(w)
	// A file others may write.
	os.Chmod(wakeCachePath, 0o666)
	if _, ok := loadWakeCache(); ok {
		t.Errorf("a world-writable cache file was believed")
	}
	os.Chmod(wakeCachePath, 0o600)
	// Not root's.
	os.Chown(wakeCachePath, 65534, 65534)
	if _, ok := loadWakeCache(); ok {
		t.Errorf("nobody's cache file was believed")
	}
	os.Chown(wakeCachePath, 0, 0)
	// A directory others may write.
	os.Chmod(dir, 0o777)
	if _, ok := loadWakeCache(); ok {
		t.Errorf("a cache in a world-writable directory was believed")
	}
	os.Chmod(dir, 0o700)
	// A symbolic link.
	os.Rename(wakeCachePath, wakeCachePath+".real")
	os.Symlink(wakeCachePath+".real", wakeCachePath)
	if _, ok := loadWakeCache(); ok {
		t.Errorf("a symbolic link was followed")
	}
	os.Remove(wakeCachePath)
	// Garbage.
	os.WriteFile(wakeCachePath, []byte("2222-bbbb\nzz\n"), 0o600)
	if _, ok := loadWakeCache(); ok {
		t.Errorf("a malformed cache was believed")
	}
}
