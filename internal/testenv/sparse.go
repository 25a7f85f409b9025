package testenv

import (
	"os"
	"path/filepath"
	"testing"
)

// SparseFile creates path as a file of size bytes that is all hole: its
// apparent size only, no disk is used.
func SparseFile(t testing.TB, path string, size int64) {
	t.Helper()
	f, err := os.Create(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	if err := f.Truncate(size); err != nil {
		t.Fatal(err)
	}
}

// SparseTar is an uncompressed PAX tar, written by GNU tar --sparse
// (archive/tar reads sparse files but cannot write them), holding one file
// called name of size bytes, all hole: a few KiB that claim size bytes.
// It needs GNU tar, as RequireTool.
func SparseTar(t testing.TB, name string, size int64) []byte {
	t.Helper()
	tarTool := RequireTool(t, "tar")
	dir := t.TempDir()
	SparseFile(t, filepath.Join(dir, name), size)
	out := filepath.Join(t.TempDir(), "sparse.tar")
	Run(t, tarTool, "--sparse", "--format=pax", "-cf", out, "-C", dir, name)
	raw, err := os.ReadFile(out)
	if err != nil {
		t.Fatal(err)
	}
	if len(raw) > 64<<10 {
		t.Fatalf("the sparse tar is %d bytes: tar did not write it sparse", len(raw))
	}
	return raw
}
