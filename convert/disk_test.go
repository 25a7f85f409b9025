package convert_test

import (
	"bytes"
	"context"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"

	"github.com/nexcage/nexcage/convert"
	"github.com/nexcage/nexcage/internal/atomicfile"
	"github.com/nexcage/nexcage/internal/testenv"
)

// TestFullDiskKeepsTheOldTemplate converts into a 2 MiB tmpfs that cannot
// hold the new template: the error names the path and says to free space,
// the old template survives byte for byte, and no partial file remains.
func TestFullDiskKeepsTheOldTemplate(t *testing.T) {
	testenv.RequireRoot(t) // to mount a tmpfs
	out := t.TempDir()
	if err := syscall.Mount("tmpfs", out, "tmpfs", 0, "size=2m"); err != nil {
		t.Fatalf("mount a small tmpfs: %v", err)
	}
	t.Cleanup(func() { syscall.Unmount(out, 0) })
	target := filepath.Join(out, "app.tar.zst")

	small := convertTo(t, unpack(t, corpusCase(t, "modes"), false), t.TempDir(), convert.Options{})
	old := readFile(t, small.Template)
	if err := os.WriteFile(target, old, 0o644); err != nil {
		t.Fatal(err)
	}
	big := unpack(t, corpusCase(t, "alpine-amd64"), false) // 3.5 MiB compressed
	_, err := convert.Convert(context.Background(), big, convert.Options{Output: target})
	if err == nil || !strings.Contains(err.Error(), "no space left on device") || !strings.Contains(err.Error(), "free space in "+out) {
		t.Fatalf("err = %v, want ENOSPC naming %s", err, out)
	}
	if !bytes.Equal(readFile(t, target), old) {
		t.Fatal("the old template was damaged")
	}
	entries, _ := os.ReadDir(out)
	for _, e := range entries {
		if atomicfile.IsTemp(e.Name()) || e.Name() != "app.tar.zst" {
			t.Errorf("left behind: %s", e.Name())
		}
	}
}
