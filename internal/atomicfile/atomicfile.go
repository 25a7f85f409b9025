// Package atomicfile writes files so that readers see either the old file or
// the complete new one, never a torn one: data goes to a temporary name in
// the destination directory and is renamed over the target at the end.
// Temporary names share one marker so `nexcage check --repair` can find what
// a killed process left behind.
package atomicfile

import (
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strings"
)

// TempMarker is part of every temporary name nexcage writes.
const TempMarker = ".nexcage-tmp-"

// IsTemp reports whether a file name is one of nexcage's temporary names.
func IsTemp(name string) bool { return strings.Contains(filepath.Base(name), TempMarker) }

// File is a file being written under a temporary name.
type File struct {
	*os.File
	target string
	done   bool
	// written and queued count bytes written and bytes whose writeback
	// has been started.
	written, queued int64
}

// writebackChunk is how much is written before its writeback starts: a
// large file then goes to disk while it is being written, and Commit's
// fsync waits for the last chunk only, not for the whole file. At 8 MiB
// the template's fsync still took 60 ms at the end of a build (one chunk
// at this disk's speed); sync_file_range per MiB costs nothing to speak of.
const writebackChunk = 1 << 20

// Write writes p, starting the writeback of each full chunk.
func (f *File) Write(p []byte) (int, error) {
	n, err := f.File.Write(p)
	f.written += int64(n)
	if f.written-f.queued >= writebackChunk {
		startWriteback(f.File, f.queued, f.written-f.queued)
		f.queued = f.written
	}
	return n, err
}

// ReadFrom goes through Write, so the writeback starts as it should.
func (f *File) ReadFrom(r io.Reader) (int64, error) {
	return io.Copy(struct{ io.Writer }{f}, r)
}

// Create opens a temporary file beside target with mode perm.
func Create(target string, perm os.FileMode) (*File, error) {
	dir, base := filepath.Split(target)
	if dir == "" {
		dir = "."
	}
	f, err := os.CreateTemp(dir, "."+base+TempMarker+"*")
	if err != nil {
		return nil, fmt.Errorf("create a temporary file in %s: %w", dir, err)
	}
	if err := f.Chmod(perm); err != nil {
		f.Close()
		os.Remove(f.Name())
		return nil, err
	}
	return &File{File: f, target: target}, nil
}

// Commit flushes the file to disk and renames it over the target.
func (f *File) Commit() error {
	if f.done {
		return fmt.Errorf("%s: already committed or aborted", f.target)
	}
	f.done = true
	if err := f.Sync(); err != nil {
		f.File.Close()
		os.Remove(f.Name())
		return fmt.Errorf("write %s: %w", f.target, err)
	}
	if err := f.File.Close(); err != nil {
		os.Remove(f.Name())
		return fmt.Errorf("write %s: %w", f.target, err)
	}
	if err := os.Rename(f.Name(), f.target); err != nil {
		os.Remove(f.Name())
		return fmt.Errorf("put %s in place: %w", f.target, err)
	}
	return nil
}

// Abort removes the temporary file; after Commit it does nothing, so it can
// be deferred unconditionally.
func (f *File) Abort() {
	if f.done {
		return
	}
	f.done = true
	f.File.Close()
	os.Remove(f.Name())
}

// WriteFile is os.WriteFile done atomically.
func WriteFile(target string, data []byte, perm os.FileMode) error {
	f, err := Create(target, perm)
	if err != nil {
		return err
	}
	defer f.Abort()
	if _, err := f.Write(data); err != nil {
		return fmt.Errorf("write %s: %w", target, err)
	}
	return f.Commit()
}

// TempDir creates a temporary directory beside target, for outputs that are
// whole trees (bundles); the caller renames it into place.
func TempDir(target string) (string, error) {
	dir, base := filepath.Split(filepath.Clean(target))
	if dir == "" {
		dir = "."
	}
	return os.MkdirTemp(dir, "."+base+TempMarker+"*")
}
