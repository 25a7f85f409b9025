package generate_test

import (
	"bytes"
	"compress/gzip"
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/klauspost/compress/zstd"

	"github.com/nexcage/nexcage/convert"
	"github.com/nexcage/nexcage/generate"
	"github.com/nexcage/nexcage/internal/limits"
	"github.com/nexcage/nexcage/internal/testbundle"
	"github.com/nexcage/nexcage/internal/testenv"
)

func zstdOf(t testing.TB, raw []byte) []byte {
	t.Helper()
	var buf bytes.Buffer
	zw, err := zstd.NewWriter(&buf, zstd.WithEncoderConcurrency(1))
	if err != nil {
		t.Fatal(err)
	}
	zw.Write(raw)
	zw.Close()
	return buf.Bytes()
}

func gzipOf(raw []byte) []byte {
	var buf bytes.Buffer
	zw := gzip.NewWriter(&buf)
	zw.Write(raw)
	zw.Close()
	return buf.Bytes()
}

// writeTemplate puts content at DIR/name in a fresh directory.
func writeTemplate(t testing.TB, name string, content []byte) string {
	t.Helper()
	p := filepath.Join(t.TempDir(), name)
	if err := os.WriteFile(p, content, 0o644); err != nil {
		t.Fatal(err)
	}
	return p
}

// TestTemplateRefusesUnsafeMembers: a member that would land outside the
// bundle is refused, naming it; nothing is written, anywhere.
func TestTemplateRefusesUnsafeMembers(t *testing.T) {
	chain := []testbundle.Member{testbundle.DirM("./"), testbundle.DirM("./c0/")}
	for i := 1; i <= 41; i++ {
		chain = append(chain, testbundle.SymlinkM(fmt.Sprintf("./c%d", i), fmt.Sprintf("c%d", i-1)))
	}
	for _, tc := range []struct {
		name    string
		members []testbundle.Member
		want    string
		limit   string // the limits.Error's, for a refusal over the kernel's bounds
	}{
		{"dotdot", []testbundle.Member{testbundle.DirM("./"), testbundle.FileM("./../escape", "x")}, `member "./../escape" contains '..'`, ""},
		{"absolute", []testbundle.Member{testbundle.DirM("./"), testbundle.FileM("/escape", "x")}, `member "/escape" has an absolute name`, ""},
		{"symlink", []testbundle.Member{testbundle.DirM("./"), testbundle.SymlinkM("./up", "../../.."), testbundle.FileM("./up/escape", "x")}, `member "./up/escape" is written through a symlink that points outside the root`, ""},
		{"symlink-chain", []testbundle.Member{testbundle.DirM("./"), testbundle.DirM("./a/"), testbundle.SymlinkM("./a/b", ".."), testbundle.SymlinkM("./c", "a/b/.."), testbundle.FileM("./c/escape", "x")}, `member "./c/escape" is written through a symlink that points outside the root`, ""},
		{"hardlink", []testbundle.Member{testbundle.DirM("./"), testbundle.HardlinkM("./passwd", "../../../../etc/passwd")}, `hard link "./passwd" -> "../../../../etc/passwd" points outside the root`, ""},
		{"hardlink-absolute", []testbundle.Member{testbundle.DirM("./"), testbundle.HardlinkM("./passwd", "/etc/passwd")}, `hard link "./passwd" -> "/etc/passwd" points outside the root`, ""},
		{"hardlink-through-symlink", []testbundle.Member{testbundle.DirM("./"), testbundle.SymlinkM("./up", "../.."), testbundle.HardlinkM("./passwd", "./up/etc/passwd")}, `member "./passwd" is written through a symlink that points outside the root`, ""},
		{"root-replaced", []testbundle.Member{testbundle.FileM(".", "")}, `would replace the root directory`, ""},
		{"41-links", append(chain, testbundle.FileM("./c41/x", "x")), `member "./c41/x": too many levels of symbolic links`, limits.SymlinkHops},
		{"links-past-PATH_MAX", []testbundle.Member{testbundle.DirM("./"), testbundle.DirM("./b/"), testbundle.SymlinkM("./l1", "b/"+strings.Repeat("b/", 1500)), testbundle.SymlinkM("./l2", "l1/"+strings.Repeat("b/", 1500)), testbundle.FileM("./l2/x", "x")},
			`member "./l2/x" resolves through symlinks to a path longer than Linux's PATH_MAX`, limits.PathLength},
	} {
		t.Run(tc.name, func(t *testing.T) {
			tmpl := writeTemplate(t, "evil.tar.zst", zstdOf(t, testbundle.Tar(t, tc.members...)))
			out := t.TempDir()
			_, err := generate.Bundle(context.Background(), filepath.Join(out, "bundle"), generate.Options{Template: tmpl})
			if err == nil || !strings.Contains(err.Error(), tc.want) || !strings.Contains(err.Error(), tmpl) {
				t.Fatalf("error %v, want one naming %s and saying %s", err, tmpl, tc.want)
			}
			if !errors.Is(err, generate.ErrUnsafeMember) {
				t.Errorf("errors.Is(err, ErrUnsafeMember) is false for %v", err)
			}
			if le, ok := limits.As(err); tc.limit != "" && (!ok || le.Limit != tc.limit || le.Value <= le.Max) {
				t.Errorf("err = %#v, want a limits.Error on %s", err, tc.limit)
			}
			if l := leftovers(t, out); len(l) != 0 {
				t.Errorf("left behind: %v", l)
			}
			for _, p := range []string{filepath.Join(out, "escape"), filepath.Join(filepath.Dir(out), "escape")} {
				if _, err := os.Lstat(p); err == nil {
					t.Errorf("%s was written outside the bundle", p)
				}
			}
		})
	}
}

// TestTemplateSymlinksStayInside: absolute symlinks are the container's
// (/var/run -> /run): writing through one lands inside the rootfs.
func TestTemplateSymlinksStayInside(t *testing.T) {
	testenv.RequireRoot(t)
	tmpl := writeTemplate(t, "ok.tar.zst", zstdOf(t, testbundle.Tar(t, testbundle.DirM("./"), testbundle.DirM("./run/"), testbundle.DirM("./var/"), testbundle.SymlinkM("./var/run", "/run"),
		testbundle.FileM("./var/run/pid", "1\n"), testbundle.FileM("./bin/sh", "no ELF"), testbundle.HardlinkM("./pid2", "./var/run/pid"))))
	bundle, _ := generateBundle(t, generate.Options{Template: tmpl})
	if b, err := os.ReadFile(filepath.Join(bundle, "rootfs/run/pid")); err != nil || string(b) != "1\n" {
		t.Errorf("var/run/pid did not land in the rootfs's /run: %q %v", b, err)
	}
	var a, b os.FileInfo
	a, _ = os.Stat(filepath.Join(bundle, "rootfs/run/pid"))
	b, _ = os.Stat(filepath.Join(bundle, "rootfs/pid2"))
	if a == nil || b == nil || !os.SameFile(a, b) {
		t.Error("the hard link through the symlink is not the same file")
	}
	// bin/ had no member: made as tar makes it, 0755 with mtime 0.
	if fi, err := os.Stat(filepath.Join(bundle, "rootfs/bin")); err != nil || fi.Mode().Perm() != 0o755 || fi.ModTime().Unix() != 0 {
		t.Errorf("implicit bin/: %v %v", fi.Mode(), err)
	}
}

// TestTemplateRefusesBadFiles: what is not a template, or a damaged one,
// fails naming the file and the fix, and leaves nothing.
func TestTemplateRefusesBadFiles(t *testing.T) {
	good := testbundle.Tar(t, testbundle.DirM("./"), testbundle.DirM("./etc/"), testbundle.FileM("./etc/big", strings.Repeat("nexcage ", 200000)), testbundle.FileM("./etc/last", "end\n"))
	z := zstdOf(t, good)
	flipped := append([]byte(nil), z...)
	flipped[len(flipped)/2] ^= 0xff
	gz := gzipOf(good)
	for _, tc := range []struct {
		name    string
		content []byte
		want    string
	}{
		{"t1.tar.zst", nil, "is empty"},
		{"t2.tar.zst", []byte("hello, I am not a template\n"), "is not a template: it is neither a zstd, gzip or xz compressed tar nor a plain tar"},
		{"t3.tar.zst", zstdOf(t, []byte(strings.Repeat("not a tar ", 100))), "is not a template: it does not hold a tar archive"},
		{"t4.tar.zst", z[:len(z)/2], "is truncated or corrupt in member \"./etc/big\" (unexpected EOF): build or download the template again"},
		{"t5.tar.zst", flipped, "is truncated or corrupt in member \"./etc/big\""},
		{"t6.tar.gz", gz[:len(gz)-20], "is truncated or corrupt in member \"./etc/last\""},
		{"t7.tar.zst", zstdOf(t, testbundle.Tar(t)), "holds no files"},
		{"t8.tar.zst", zstdOf(t, testbundle.Tar(t, testbundle.DirM("./"), testbundle.HardlinkM("./a", "./b"))), `hard link "./a" -> "./b": the target is not a file that an earlier member made`},
	} {
		t.Run(tc.name, func(t *testing.T) {
			tmpl := writeTemplate(t, tc.name, tc.content)
			out := t.TempDir()
			_, err := generate.Bundle(context.Background(), filepath.Join(out, "b"), generate.Options{Template: tmpl})
			if err == nil || !strings.Contains(err.Error(), tc.want) || !strings.Contains(err.Error(), tmpl) {
				t.Fatalf("error %v, want one naming %s and saying %q", err, tmpl, tc.want)
			}
			if l := leftovers(t, out); len(l) != 0 {
				t.Errorf("left behind: %v", l)
			}
		})
	}
	// The intact ones extract, whatever the name says about compression.
	for name, content := range map[string][]byte{"good.tar.zst": z, "good.tar.gz": gz, "gzip-named.tar.zst": gz, "plain.tar": good} {
		generateBundle(t, generate.Options{Template: writeTemplate(t, name, content), Spec: generate.SpecOptions{Arch: "amd64"}})
	}
}

func TestBadSourcesAndTargets(t *testing.T) {
	dir := t.TempDir()
	file := filepath.Join(dir, "file")
	os.WriteFile(file, []byte("x"), 0o644)
	rootfsDir := filepath.Join(dir, "rootfs")
	os.MkdirAll(filepath.Join(rootfsDir, "etc"), 0o755)
	nonEmpty := filepath.Join(dir, "full")
	os.MkdirAll(nonEmpty, 0o755)
	os.WriteFile(filepath.Join(nonEmpty, "keep"), []byte("old"), 0o644)
	for _, tc := range []struct {
		name   string
		bundle string
		opts   generate.Options
		want   string
		kind   error
	}{
		{"rootfs is a file", filepath.Join(dir, "b"), generate.Options{Rootfs: file}, "rootfs " + file + " is not a directory: give the directory that holds the root file system", generate.ErrRootfsNotDir},
		{"rootfs missing", filepath.Join(dir, "b"), generate.Options{Rootfs: filepath.Join(dir, "nowhere")}, "does not exist: give the directory", nil},
		{"template missing", filepath.Join(dir, "b"), generate.Options{Template: filepath.Join(dir, "nowhere.tar.zst")}, "template " + filepath.Join(dir, "nowhere.tar.zst") + " does not exist", nil},
		{"template is a directory", filepath.Join(dir, "b"), generate.Options{Template: rootfsDir}, "is not a file", nil},
		{"bundle inside rootfs", filepath.Join(rootfsDir, "b"), generate.Options{Rootfs: rootfsDir}, "is inside the rootfs", nil},
		{"rootfs inside bundle", dir, generate.Options{Rootfs: rootfsDir, Link: true, Force: true}, "is inside the bundle " + dir + ", which generate replaces: for a rootfs already in place, write its config.json alone (Spec)", nil},
		{"non-empty bundle", nonEmpty, generate.Options{Rootfs: rootfsDir}, "bundle directory " + nonEmpty + " is not empty: choose a new directory, or force the write", generate.ErrBundleExists},
		{"bundle is a file", file, generate.Options{Rootfs: rootfsDir}, "exists and is not a directory", generate.ErrBundleExists},
	} {
		t.Run(tc.name, func(t *testing.T) {
			before := leftovers(t, dir)
			_, err := generate.Bundle(context.Background(), tc.bundle, tc.opts)
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("error %v, want %q", err, tc.want)
			}
			if tc.kind != nil && !errors.Is(err, tc.kind) {
				t.Errorf("errors.Is(%v, %v) is false", err, tc.kind)
			}
			if after := leftovers(t, dir); strings.Join(after, " ") != strings.Join(before, " ") {
				t.Errorf("left behind: %v (before: %v)", after, before)
			}
		})
	}
	if b, _ := os.ReadFile(filepath.Join(nonEmpty, "keep")); string(b) != "old" {
		t.Error("the refused bundle was changed")
	}
}

// TestForceReplacesOnlyWhenComplete: --force swaps a finished bundle in;
// a failed one leaves the old bundle as it was.
func TestForceReplacesOnlyWhenComplete(t *testing.T) {
	testenv.RequireRoot(t)
	built := build(t, corpusCase(t, "modes"), convert.Options{Privileged: true, ToolVersion: "test"})
	out := t.TempDir()
	bundle := filepath.Join(out, "bundle")
	os.MkdirAll(bundle, 0o755)
	os.WriteFile(filepath.Join(bundle, "old"), []byte("old"), 0o644)
	bad := writeTemplate(t, "bad.tar.zst", []byte("garbage"))
	if _, err := generate.Bundle(context.Background(), bundle, generate.Options{Template: bad, Force: true}); err == nil {
		t.Fatal("a bad template was accepted")
	}
	if b, _ := os.ReadFile(filepath.Join(bundle, "old")); string(b) != "old" || len(leftovers(t, out)) != 1 {
		t.Fatalf("a failed --force damaged the old bundle or left files: %v", leftovers(t, out))
	}
	if _, err := generate.Bundle(context.Background(), bundle, generate.Options{Template: built.Template, Force: true}); err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(filepath.Join(bundle, "old")); !os.IsNotExist(err) || len(leftovers(t, out)) != 1 {
		t.Errorf("--force did not replace the old bundle cleanly: %v", leftovers(t, out))
	}
	os.RemoveAll(bundle)
}

// TestCancelledLeavesNothing: an interrupt mid-way removes the partial
// bundle.
func TestCancelledLeavesNothing(t *testing.T) {
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	tmpl := writeTemplate(t, "ok.tar.zst", zstdOf(t, testbundle.Tar(t, testbundle.DirM("./"), testbundle.FileM("./a", "a"))))
	out := t.TempDir()
	_, err := generate.Bundle(ctx, filepath.Join(out, "b"), generate.Options{Template: tmpl})
	if !errors.Is(err, context.Canceled) {
		t.Errorf("error %v, want context.Canceled", err)
	}
	if l := leftovers(t, out); len(l) != 0 {
		t.Errorf("left behind: %v", l)
	}
}
