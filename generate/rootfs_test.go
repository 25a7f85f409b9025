package generate_test

import (
	"encoding/json"
	"net"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	rspec "github.com/opencontainers/runtime-spec/specs-go"
	"golang.org/x/sys/unix"

	"github.com/nexcage/nexcage/convert"
	"github.com/nexcage/nexcage/generate"
	"github.com/nexcage/nexcage/internal/fstree"
	"github.com/nexcage/nexcage/internal/pvetest"
	"github.com/nexcage/nexcage/internal/testenv"
	"github.com/nexcage/nexcage/internal/testimage"
)

func snapshot(t testing.TB, dir string) fstree.Tree {
	t.Helper()
	tree, err := fstree.Snapshot(dir, fstree.TemplateView)
	if err != nil {
		t.Fatal(err)
	}
	return tree
}

func loadSpec(t testing.TB, bundle string) *rspec.Spec {
	t.Helper()
	var s rspec.Spec
	if err := json.Unmarshal(readFile(t, filepath.Join(bundle, "config.json")), &s); err != nil {
		t.Fatal(err)
	}
	return &s
}

// TestRootfsRoundTripThroughPVE is the second proof: a rootfs
// directory (Alpine's, unpacked; a debootstrap tree would do the same, only
// slower) → generate --rootfs → convert → PVE's own extraction gives back
// the same tree, privileged and unprivileged, minus what a template leaves
// out on purpose (/dev contents, device nodes).
func TestRootfsRoundTripThroughPVE(t *testing.T) {
	testenv.RequireRoot(t)
	testenv.RequireTool(t, "tar")
	src := filepath.Join(unpack(t, corpusCase(t, "alpine-app")), "rootfs")
	want := snapshot(t, src)
	for p, e := range want {
		if e.Type == "char" || e.Type == "block" {
			delete(want, p)
		}
	}
	bundle, res := generateBundle(t, generate.Options{Rootfs: src})
	validateConfig(t, filepath.Join(bundle, "config.json"))
	if strings.Join(res.Process, " ") != "/sbin/init" || res.Arch != "amd64" {
		t.Errorf("process %v, arch %q: want Alpine's /sbin/init and amd64 from its /bin/sh", res.Process, res.Arch)
	}
	for _, unprivileged := range []bool{false, true} {
		name := map[bool]string{false: "privileged", true: "unprivileged"}[unprivileged]
		t.Run(name, func(t *testing.T) {
			if unprivileged {
				testenv.RequireTool(t, "lxc-usernsexec")
			}
			tmpl := convertBundle(t, bundle, convert.Options{Name: "alpine", Privileged: !unprivileged, SquashHighIDs: unprivileged, ToolVersion: "test"})
			if tmpl.Sidecar.Application || tmpl.Sidecar.OSType != "alpine" || tmpl.Sidecar.Source.Platform != "linux/amd64" {
				t.Errorf("convert made an application container %v, ostype %s, platform %q: want a system container, alpine, linux/amd64", tmpl.Sidecar.Application, tmpl.Sidecar.OSType, tmpl.Sidecar.Source.Platform)
			}
			got := pvetest.ExtractTree(t, tmpl.Template, unprivileged)
			expect := pvetest.Expected(want, unprivileged)
			// PVE makes the root directory itself and skips the "./"
			// member: its mtime is "now".
			expect["."].MTime = got["."].MTime
			for _, g := range got {
				if v, ok := g.Xattrs["security.capability"]; ok {
					g.Xattrs["security.capability"] = testimage.CapAsV2(v)
				}
			}
			for _, d := range fstree.Diff(expect, got) {
				t.Error(d)
			}
		})
	}
}

// capNetRaw is security.capability granting CAP_NET_RAW (v2, effective).
var capNetRaw = testimage.CapV2(13)

// oddTree makes a rootfs with every kind of entry and attribute a copy
// must keep. foreignSymlink gives one symlink a non-root owner, which a
// rootless copy cannot record.
func oddTree(t testing.TB, foreignSymlink bool) string {
	t.Helper()
	dir := filepath.Join(t.TempDir(), "rootfs")
	mkdir := func(rel string, mode os.FileMode) {
		testenv.Must(t, os.MkdirAll(filepath.Join(dir, rel), 0o755))
		testenv.Must(t, os.Chmod(filepath.Join(dir, rel), mode))
	}
	write := func(rel, body string, mode os.FileMode) {
		testenv.Must(t, os.WriteFile(filepath.Join(dir, rel), []byte(body), 0o600))
		testenv.Must(t, os.Chmod(filepath.Join(dir, rel), mode))
	}
	mkdir(".", 0o755)
	for _, d := range []string{"bin", "sbin", "etc", "dev", "usr/bin", "var/lib"} {
		mkdir(d, 0o755)
	}
	mkdir("tmp", 0o1777)
	mkdir("srv/shared", 0o2775)
	testenv.Must(t, os.Chown(filepath.Join(dir, "srv/shared"), 0, 50))
	mkdir("ro", 0o555)
	// /bin/sh: the ELF header of the host's shell is all the arch check reads.
	sh, err := os.ReadFile("/bin/sh")
	testenv.Must(t, err)
	write("bin/dash", string(sh[:64]), 0o755)
	testenv.Must(t, os.Symlink("dash", filepath.Join(dir, "bin/sh")))
	write("sbin/init", "#!/bin/sh\n", 0o755)
	write("usr/bin/su", "setuid\n", 0o4755)
	testenv.Must(t, os.Chown(filepath.Join(dir, "usr/bin/su"), 1000, 1000))
	testenv.Must(t, os.Chmod(filepath.Join(dir, "usr/bin/su"), 0o4755)) // chown cleared it
	write("etc/shadow", "root:*::0:::::\n", 0)
	write("etc/hosts", "127.0.0.1 localhost\n", 0o644)
	testenv.Must(t, os.Link(filepath.Join(dir, "etc/hosts"), filepath.Join(dir, "etc/hosts.link")))
	testenv.Must(t, os.Link(filepath.Join(dir, "etc/hosts"), filepath.Join(dir, "var/lib/hosts.too")))
	write("usr/bin/ping", "ping\n", 0o755)
	testenv.Must(t, unix.Setxattr(filepath.Join(dir, "usr/bin/ping"), "security.capability", []byte(capNetRaw), 0))
	testenv.Must(t, unix.Setxattr(filepath.Join(dir, "etc/hosts"), "user.note", []byte("kept"), 0))
	testenv.Must(t, unix.Setxattr(filepath.Join(dir, "var/lib"), "user.dir", []byte("dir xattr"), 0))
	testenv.Must(t, os.Symlink("/etc/hosts", filepath.Join(dir, "etc/abs")))
	testenv.Must(t, os.Symlink("../nowhere", filepath.Join(dir, "etc/dangling")))
	if foreignSymlink {
		testenv.Must(t, os.Lchown(filepath.Join(dir, "etc/dangling"), 1000, 1000))
	}
	testenv.Must(t, unix.Mkfifo(filepath.Join(dir, "var/lib/fifo"), 0o620))
	testenv.Must(t, unix.Mknod(filepath.Join(dir, "dev/null"), unix.S_IFCHR|0o666, int(unix.Mkdev(1, 3))))
	testenv.Must(t, unix.Mknod(filepath.Join(dir, "var/lib/blk"), unix.S_IFBLK|0o600, int(unix.Mkdev(7, 0))))
	write("ro/inside", "in a read-only directory\n", 0o444)
	testenv.Must(t, os.Chmod(filepath.Join(dir, "ro"), 0o555))
	// A socket is left out: a tar cannot hold one.
	l, err := net.Listen("unix", filepath.Join(dir, "var/lib/sock"))
	testenv.Must(t, err)
	l.(*net.UnixListener).SetUnlinkOnClose(false)
	l.Close()
	// Nanosecond mtimes, set last (everything above touched the directories).
	base := time.Unix(1700000000, 123456789)
	filepath.Walk(dir, func(p string, fi os.FileInfo, err error) error {
		if err == nil {
			ts := unix.NsecToTimespec(base.UnixNano())
			unix.UtimesNanoAt(unix.AT_FDCWD, p, []unix.Timespec{ts, ts}, unix.AT_SYMLINK_NOFOLLOW)
			base = base.Add(time.Second + 7)
		}
		return nil
	})
	return dir
}

// TestRootfsCopyKeepsEverything: the copy in BUNDLE/rootfs is the source
// entry by entry, to the nanosecond.
func TestRootfsCopyKeepsEverything(t *testing.T) {
	testenv.RequireRoot(t)
	src := oddTree(t, true)
	bundle, res := generateBundle(t, generate.Options{Rootfs: src})
	want, err := fstree.Snapshot(src, fstree.Options{XattrFilter: fstree.TemplateXattrs, MTime: true})
	if err != nil {
		t.Fatal(err)
	}
	delete(want, "var/lib/sock")
	got, err := fstree.Snapshot(filepath.Join(bundle, "rootfs"), fstree.Options{XattrFilter: fstree.TemplateXattrs, MTime: true})
	if err != nil {
		t.Fatal(err)
	}
	for _, d := range fstree.Diff(want, got) {
		t.Error(d)
	}
	for _, rel := range []string{".", "etc/hosts", "etc/abs", "ro", "var/lib/fifo"} {
		var a, b unix.Stat_t
		unix.Lstat(filepath.Join(src, rel), &a)
		unix.Lstat(filepath.Join(bundle, "rootfs", rel), &b)
		if a.Mtim != b.Mtim {
			t.Errorf("%s: mtime %v, want %v (to the nanosecond)", rel, b.Mtim, a.Mtim)
		}
	}
	if len(res.Warnings) != 1 || !strings.Contains(res.Warnings[0], "1 socket(s) were left out") {
		t.Errorf("warnings %q, want one about the socket", res.Warnings)
	}
	spec := loadSpec(t, bundle)
	if spec.Root.Path != "rootfs" || strings.Join(spec.Process.Args, " ") != "/sbin/init" ||
		spec.Annotations["org.opencontainers.image.architecture"] != "amd64" || spec.Annotations["org.opencontainers.image.os"] != "linux" {
		t.Errorf("config.json: root %q, args %v, annotations %v", spec.Root.Path, spec.Process.Args, spec.Annotations)
	}
	if fi, err := os.Stat(bundle); err != nil || fi.Mode().Perm() != 0o700 {
		t.Errorf("the bundle directory is %v, want 0700 (it may hold setuid binaries)", fi.Mode())
	}
	validateConfig(t, filepath.Join(bundle, "config.json"))
}

// TestRootfsCopyRootless: as an ordinary user the copy records owners in
// user.rootlesscontainers and maps the caller to root, and converts to the
// template a root copy gives.
func TestRootfsCopyRootless(t *testing.T) {
	testenv.RequireRoot(t) // to make a tree with foreign owners
	src := oddTree(t, false)
	rootBundle, _ := generateBundle(t, generate.Options{Rootfs: src})
	opts := generate.Options{Rootfs: src}
	generate.ForceRootless(&opts, true)
	bundle, res := generateBundle(t, opts)
	if !res.Rootless || len(res.Warnings) != 2 || !strings.Contains(res.Warnings[0], "2 device node(s) were not created") {
		t.Errorf("rootless %v, warnings %q: want the device nodes and the socket reported", res.Rootless, res.Warnings)
	}
	buf := make([]byte, 64)
	if n, err := unix.Lgetxattr(filepath.Join(bundle, "rootfs/usr/bin/su"), "user.rootlesscontainers", buf); err != nil || n == 0 {
		t.Errorf("usr/bin/su (owned by 1000) has no user.rootlesscontainers: %v", err)
	}
	validateConfig(t, filepath.Join(bundle, "config.json"))
	opt := convert.Options{Name: "odd", Privileged: true, ToolVersion: "test"}
	sameTemplate(t, convertBundle(t, rootBundle, opt), convertBundle(t, bundle, opt))
}

// TestRootfsLink references the directory instead of copying it.
func TestRootfsLink(t *testing.T) {
	testenv.RequireRoot(t)
	src := oddTree(t, true)
	bundle, res := generateBundle(t, generate.Options{Rootfs: src, Link: true, Spec: generate.SpecOptions{Args: []string{"/bin/sh", "-c", "echo hi"}}})
	if _, err := os.Lstat(filepath.Join(bundle, "rootfs")); !os.IsNotExist(err) {
		t.Errorf("--link copied the rootfs: %v", err)
	}
	spec := loadSpec(t, bundle)
	if spec.Root.Path != src || res.Rootfs != src || strings.Join(spec.Process.Args, "|") != "/bin/sh|-c|echo hi" {
		t.Errorf("root.path %q, rootfs %q, args %q; want %s and the --args", spec.Root.Path, res.Rootfs, spec.Process.Args, src)
	}
	linked := convertBundle(t, bundle, convert.Options{Name: "odd", Privileged: true, ToolVersion: "test"})
	copied, _ := generateBundle(t, generate.Options{Rootfs: src, Spec: generate.SpecOptions{Args: []string{"/bin/sh", "-c", "echo hi"}}})
	sameTemplate(t, convertBundle(t, copied, convert.Options{Name: "odd", Privileged: true, ToolVersion: "test"}), linked)
}
