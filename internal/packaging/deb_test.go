package packaging

import (
	"archive/tar"
	"bufio"
	"bytes"
	"compress/gzip"
	"context"
	"debug/elf"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"sort"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/nexcage/nexcage/internal/testenv"
)

func TestMain(m *testing.M) { testenv.Main(m) }

// The files every package must hold, besides one man page per docs/man/*.1.
var wantFiles = []string{
	"/usr/bin/nexcage",
	"/usr/share/bash-completion/completions/nexcage",
	"/usr/share/zsh/vendor-completions/_nexcage",
	"/usr/share/fish/vendor_completions.d/nexcage.fish",
	"/usr/share/doc/nexcage/copyright",
	"/usr/share/doc/nexcage/changelog.gz",
}

// chrootSuite is what the cached chroot is made of; its name is in the
// cache file's so that changing it makes a new one.
const (
	chrootSuite = "bookworm"
	// man-db to ask `man -w`, bash-completion to ask bash where it loads
	// completions from: the admin's view, not our idea of the paths.
	chrootInclude = "man-db,bash-completion"
)

type builtDebs struct {
	dir          string
	amd64, arm64 string
	err          error
}

var (
	debsOnce sync.Once
	debs     builtDebs
)

// buildDebs runs scripts/deb.sh once per test binary, into a temporary
// directory rather than build/deb, so a test never overwrites (or races
// with) what `make deb` made.
func buildDebs(t *testing.T) (amd64, arm64 string) {
	t.Helper()
	if testing.Short() {
		t.Skip("builds the amd64 and arm64 binaries and packages: not under -short")
	}
	testenv.RequireTool(t, "dpkg-deb")
	debsOnce.Do(func() {
		debs.err = func() error {
			root, err := repoRoot()
			if err != nil {
				return err
			}
			dir, err := os.MkdirTemp("", "debs-")
			if err != nil {
				return err
			}
			debs.dir = dir
			testenv.AtExit(func() { os.RemoveAll(dir) })
			out, err := runEnv(t, 15*time.Minute, root, []string{"OUT=" + dir, "GO=" + goTool()}, "scripts/deb.sh")
			if err != nil {
				return fmt.Errorf("scripts/deb.sh: %v\n%s", err, out)
			}
			for _, p := range []*string{&debs.amd64, &debs.arm64} {
				arch := "amd64"
				if p == &debs.arm64 {
					arch = "arm64"
				}
				m, _ := filepath.Glob(filepath.Join(dir, "nexcage_*_"+arch+".deb"))
				if len(m) != 1 {
					return fmt.Errorf("want one nexcage_*_%s.deb in %s, have %v; deb.sh said:\n%s", arch, dir, m, out)
				}
				*p = m[0]
			}
			return nil
		}()
	})
	if debs.err != nil {
		t.Fatal(debs.err)
	}
	return debs.amd64, debs.arm64
}

// TestDebContents checks both packages as dpkg sees them: control fields
// right for a PVE host, every file root-owned in its place, one binary
// per architecture that is static and for that architecture (the arm64
// one cannot run here, so its ELF header is the proof).
func TestDebContents(t *testing.T) {
	amd64, arm64 := buildDebs(t)
	pages := manPages(t)

	var version string
	var listing []string
	for _, c := range []struct {
		arch, deb string
		machine   elf.Machine
	}{{"amd64", amd64, elf.EM_X86_64}, {"arm64", arm64, elf.EM_AARCH64}} {
		t.Run(c.arch, func(t *testing.T) {
			f := fields(t, c.deb)
			for k, want := range map[string]string{
				"Package": "nexcage", "Architecture": c.arch, "Section": "admin", "Priority": "optional",
			} {
				if f[k] != want {
					t.Errorf("%s: %s is %q, want %q", c.deb, k, f[k], want)
				}
			}
			// Static: nothing to depend on. The PVE tools deploy runs are
			// recommended; building templates works without them.
			if f["Depends"] != "" || f["Pre-Depends"] != "" {
				t.Errorf("a static binary should depend on nothing, have Depends %q Pre-Depends %q", f["Depends"], f["Pre-Depends"])
			}
			if !strings.Contains(f["Recommends"], "pve-manager") {
				t.Errorf("Recommends %q lacks pve-manager (pct, pvesm, pvesh)", f["Recommends"])
			}
			if f["Maintainer"] == "" || f["Description"] == "" || f["Installed-Size"] == "" {
				t.Errorf("Maintainer, Description or Installed-Size missing: %v", f)
			}
			if out, err := exec.Command("dpkg", "--validate-version", f["Version"]).CombinedOutput(); err != nil {
				t.Errorf("Version %q: %v %s", f["Version"], err, out)
			}
			if !strings.HasSuffix(c.deb, "nexcage_"+f["Version"]+"_"+c.arch+".deb") {
				t.Errorf("file name %s does not match Version %s", c.deb, f["Version"])
			}
			if version == "" {
				version = f["Version"]
			} else if f["Version"] != version {
				t.Errorf("versions differ between architectures: %s and %s", version, f["Version"])
			}

			files, bin, texts := contents(t, c.deb)
			if z := texts["/usr/share/zsh/vendor-completions/_nexcage"]; !bytes.HasPrefix(z, []byte("#compdef nexcage")) {
				t.Errorf("zsh completion does not start with #compdef nexcage, so compinit would not load it: %.60q", z)
			}
			if !bytes.Contains(texts["/usr/share/doc/nexcage/copyright"], []byte("Files: vendor/github.com/spf13/pflag/*")) {
				t.Errorf("copyright names no linked module (pflag): the notices of static dependencies must ship")
			}
			var paths []string
			for p := range files {
				paths = append(paths, p)
			}
			sort.Strings(paths)
			for _, want := range append(append([]string{}, wantFiles...), pages...) {
				h, ok := files[want]
				if !ok {
					t.Errorf("%s lacks %s; it has:\n%s", c.deb, want, strings.Join(paths, "\n"))
					continue
				}
				mode := int64(0o644)
				if want == "/usr/bin/nexcage" {
					mode = 0o755
				}
				if h.Mode&0o7777 != mode {
					t.Errorf("%s has mode %o, want %o", want, h.Mode&0o7777, mode)
				}
			}
			for p, h := range files {
				if h.Uid != 0 || h.Gid != 0 {
					t.Errorf("%s is owned by %d:%d, want root", p, h.Uid, h.Gid)
				}
			}
			if listing == nil {
				listing = paths
			} else if strings.Join(listing, "\n") != strings.Join(paths, "\n") {
				t.Errorf("amd64 and arm64 packages hold different files:\n%s\n---\n%s", strings.Join(listing, "\n"), strings.Join(paths, "\n"))
			}

			e, err := elf.NewFile(bytes.NewReader(bin))
			if err != nil {
				t.Fatalf("/usr/bin/nexcage is not ELF: %v", err)
			}
			defer e.Close()
			if e.Machine != c.machine {
				t.Errorf("/usr/bin/nexcage is for %v, want %v", e.Machine, c.machine)
			}
			for _, p := range e.Progs {
				if p.Type == elf.PT_INTERP || p.Type == elf.PT_DYNAMIC {
					t.Errorf("/usr/bin/nexcage is dynamically linked (%v): it must run on any host without libc", p.Type)
				}
			}
		})
	}
}

// TestDebLintian holds the packages to Debian's own checker: no error.
func TestDebLintian(t *testing.T) {
	amd64, arm64 := buildDebs(t)
	lintian := testenv.RequireTool(t, "lintian")
	// lintian leaves files in TMPDIR; the test's own directory is removed.
	out, err := runEnv(t, 10*time.Minute, "", []string{"TMPDIR=" + t.TempDir()},
		lintian, "--fail-on", "error", "--tag-display-limit", "0", amd64, arm64)
	if err != nil {
		t.Fatalf("lintian: %v\n%s", err, out)
	}
	t.Logf("lintian:\n%s", out)
}

// TestDebInstallInChroot installs the amd64 package with dpkg in a fresh
// Debian, uses it the way an admin would (the command, its man pages, bash
// completion) and removes it, checking that nothing of it is left.
func TestDebInstallInChroot(t *testing.T) {
	if testing.Short() {
		t.Skip("debootstraps a Debian chroot (once, cached in build/) and installs the package in it: not under -short")
	}
	testenv.RequireRoot(t)
	debootstrap := testenv.RequireTool(t, "debootstrap")
	for _, tool := range []string{"tar", "unshare", "chroot"} {
		testenv.RequireTool(t, tool)
	}
	amd64, _ := buildDebs(t)
	pages := manPages(t)
	files, _, _ := contents(t, amd64)

	base := chrootBase(t, debootstrap)
	root := unpackChroot(t, base)

	// Directories already in Debian must stay after removal; the ones the
	// package brought (/usr/share/doc/nexcage) must go.
	existed := map[string]bool{}
	for p := range files {
		if _, err := os.Lstat(filepath.Join(root, p)); err == nil {
			existed[p] = true
		}
	}
	copyFile(t, amd64, filepath.Join(root, "tmp/nexcage.deb"))
	inChroot(t, root, "dpkg", "-i", "/tmp/nexcage.deb")
	if err := os.Remove(filepath.Join(root, "tmp/nexcage.deb")); err != nil {
		t.Fatal(err)
	}

	var installed []string
	for _, l := range strings.Split(strings.TrimSpace(inChroot(t, root, "dpkg", "-L", "nexcage")), "\n") {
		if l != "/." && l != "" {
			installed = append(installed, l)
		}
	}
	if len(installed) != len(files) {
		t.Errorf("dpkg -L nexcage lists %d paths, the package holds %d:\n%s", len(installed), len(files), strings.Join(installed, "\n"))
	}
	for _, p := range installed {
		if _, ok := files[p]; !ok {
			t.Errorf("dpkg -L lists %s, which the package does not hold", p)
		}
		if _, err := os.Lstat(filepath.Join(root, p)); err != nil {
			t.Errorf("installed path missing: %v", err)
		}
	}

	if got := strings.TrimSpace(inChroot(t, root, "sh", "-c", "command -v nexcage")); got != "/usr/bin/nexcage" {
		t.Errorf("nexcage on PATH is %q, want /usr/bin/nexcage", got)
	}
	if out := inChroot(t, root, "nexcage", "version"); !strings.HasPrefix(out, "nexcage ") || !strings.Contains(out, "linux/amd64") {
		t.Errorf("nexcage version printed %q", out)
	}
	for _, page := range pages {
		name := strings.TrimSuffix(filepath.Base(page), ".1.gz")
		if got := strings.TrimSpace(inChroot(t, root, "man", "-w", name)); got != page {
			t.Errorf("man -w %s = %q, want %s", name, got, page)
		}
	}
	if out := inChroot(t, root, "man", "-P", "cat", "nexcage"); !strings.Contains(out, "NAME") {
		t.Errorf("man nexcage does not render a NAME section:\n%s", out)
	}
	// bash-completion loads a command's completion on demand from the
	// directories it knows; ask it rather than trust the path.
	out := inChroot(t, root, "bash", "-c",
		". /usr/share/bash-completion/bash_completion && __load_completion nexcage && complete -p nexcage")
	if !strings.Contains(out, "nexcage") {
		t.Errorf("bash-completion loaded no completion for nexcage: %q", out)
	}

	inChroot(t, root, "dpkg", "-r", "nexcage")
	for _, p := range installed {
		_, err := os.Lstat(filepath.Join(root, p))
		switch {
		case existed[p] && err != nil:
			t.Errorf("dpkg -r removed %s, which was there before: %v", p, err)
		case !existed[p] && err == nil:
			t.Errorf("dpkg -r nexcage left %s behind", p)
		}
	}
	// No conffiles: removal leaves nothing for a purge to do.
	status, _ := inChrootErr(t, root, "dpkg-query", "-W", "-f", "${db:Status-Status}", "nexcage")
	if s := strings.TrimSpace(status); s != "not-installed" && !strings.Contains(s, "no packages found") {
		t.Errorf("after dpkg -r, nexcage's status is %q, want not-installed", s)
	}
}

// chrootBase returns the tar of a minbase Debian with man-db, made with
// debootstrap the first time and kept in build/ (ignored by git) so later
// runs take seconds instead of minutes.
func chrootBase(t *testing.T, debootstrap string) string {
	t.Helper()
	buildDir := buildDir(t)
	cache := filepath.Join(buildDir, "chroot-"+chrootSuite+"-minbase.tar")
	if _, err := os.Stat(cache); err == nil {
		return cache
	}
	work, err := os.MkdirTemp(buildDir, "debootstrap-")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { removeTree(t, work) })
	target := filepath.Join(work, "root")
	mirror := debianMirror()
	t.Logf("no %s yet: debootstrap --variant=minbase %s from %s (a few minutes, once)", cache, chrootSuite, mirror)
	start := time.Now()
	if out, err := runEnv(t, 30*time.Minute, "", nil, debootstrap, "--variant=minbase", "--include="+chrootInclude,
		chrootSuite, target, mirror); err != nil {
		t.Fatalf("debootstrap: %v\n%s", err, out)
	}
	t.Logf("debootstrap took %v", time.Since(start).Round(time.Second))
	// The downloaded .debs are half the size and of no use afterwards.
	debs, _ := filepath.Glob(filepath.Join(target, "var/cache/apt/archives/*.deb"))
	for _, d := range debs {
		os.Remove(d)
	}
	tmp := filepath.Join(work, "base.tar")
	if out, err := runEnv(t, 10*time.Minute, "", nil, "tar", "--numeric-owner", "-cpf", tmp, "-C", target, "."); err != nil {
		t.Fatalf("tar: %v\n%s", err, out)
	}
	// Renamed into place whole: an interrupted run leaves no half a cache.
	if err := os.Rename(tmp, cache); err != nil {
		t.Fatal(err)
	}
	return cache
}

// unpackChroot makes a fresh copy of the base for one test; it is removed
// when the test ends.
func unpackChroot(t *testing.T, base string) string {
	t.Helper()
	dir, err := os.MkdirTemp(buildDir(t), "chroot-test-")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		removeTree(t, dir)
		if _, err := os.Stat(dir); !errors.Is(err, os.ErrNotExist) {
			t.Errorf("chroot copy %s was not removed: %v", dir, err)
		}
	})
	if out, err := runEnv(t, 10*time.Minute, "", nil, "tar", "--numeric-owner", "-xpf", base, "-C", dir); err != nil {
		t.Fatalf("tar: %v\n%s", err, out)
	}
	return dir
}

// removeTree removes a chroot, but never while anything is mounted inside
// it: RemoveAll would walk into the mount and delete the host's files.
func removeTree(t *testing.T, dir string) {
	t.Helper()
	if m := mountsUnder(dir); len(m) > 0 {
		t.Errorf("not removing %s: still mounted inside: %v", dir, m)
		return
	}
	if err := os.RemoveAll(dir); err != nil {
		t.Errorf("remove %s: %v", dir, err)
	}
}

func mountsUnder(dir string) []string {
	f, err := os.Open("/proc/self/mountinfo")
	if err != nil {
		return []string{"cannot read /proc/self/mountinfo: " + err.Error()}
	}
	defer f.Close()
	var out []string
	s := bufio.NewScanner(f)
	for s.Scan() {
		if fs := strings.Fields(s.Text()); len(fs) > 4 && (fs[4] == dir || strings.HasPrefix(fs[4], dir+"/")) {
			out = append(out, fs[4])
		}
	}
	return out
}

// inChroot runs a command inside the chroot with a clean environment, in
// a mount and PID namespace of its own with a fresh /proc: the mount
// disappears with the namespace, so no test ending (even a crash) leaves
// it mounted on the host.
func inChroot(t *testing.T, root string, args ...string) string {
	t.Helper()
	out, err := inChrootErr(t, root, args...)
	if err != nil {
		t.Fatalf("in chroot: %s: %v\n%s", strings.Join(args, " "), err, out)
	}
	return out
}

func inChrootErr(t *testing.T, root string, args ...string) (string, error) {
	t.Helper()
	argv := append([]string{"--mount", "--pid", "--fork", "--mount-proc=" + filepath.Join(root, "proc"),
		"chroot", root, "/usr/bin/env", "-i",
		"PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin",
		"HOME=/root", "LC_ALL=C.UTF-8", "DEBIAN_FRONTEND=noninteractive"}, args...)
	return runEnv(t, 5*time.Minute, "", nil, "unshare", argv...)
}

// runEnv runs a command in dir with extra environment, bounded by timeout
// and by the test binary's deadline; it returns stdout and stderr together.
func runEnv(t *testing.T, timeout time.Duration, dir string, env []string, name string, args ...string) (string, error) {
	t.Helper()
	if d, ok := t.Deadline(); ok {
		timeout = min(timeout, time.Until(d)-10*time.Second)
	}
	ctx, cancel := context.WithTimeout(context.Background(), timeout)
	defer cancel()
	cmd := exec.CommandContext(ctx, name, args...)
	cmd.Dir = dir
	cmd.Env = append(os.Environ(), env...)
	var buf bytes.Buffer
	cmd.Stdout, cmd.Stderr = &buf, &buf
	cmd.WaitDelay = 5 * time.Second
	err := cmd.Run()
	if ctx.Err() != nil {
		err = fmt.Errorf("%w (timeout %v)", err, timeout)
	}
	return buf.String(), err
}

// fields reads a package's control fields with dpkg-deb.
func fields(t *testing.T, deb string) map[string]string {
	t.Helper()
	out, err := runEnv(t, time.Minute, "", nil, "dpkg-deb", "-f", deb)
	if err != nil {
		t.Fatalf("dpkg-deb -f %s: %v\n%s", deb, err, out)
	}
	f := map[string]string{}
	var last string
	for _, l := range strings.Split(out, "\n") {
		if strings.HasPrefix(l, " ") && last != "" {
			f[last] += "\n" + l
			continue
		}
		if k, v, ok := strings.Cut(l, ":"); ok {
			last = k
			f[k] = strings.TrimSpace(v)
		}
	}
	return f
}

// contents lists a package's files as dpkg installs them (absolute paths,
// directories without a trailing slash) and returns the binary's bytes and
// the other plain files' text.
func contents(t *testing.T, deb string) (map[string]*tar.Header, []byte, map[string][]byte) {
	t.Helper()
	cmd := exec.Command("dpkg-deb", "--fsys-tarfile", deb)
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	out, err := cmd.Output()
	if err != nil {
		t.Fatalf("dpkg-deb --fsys-tarfile %s: %v\n%s", deb, err, stderr.String())
	}
	files := map[string]*tar.Header{}
	texts := map[string][]byte{}
	var bin []byte
	for h, tr := range testenv.TarMembers(t, bytes.NewReader(out)) {
		p := "/" + strings.Trim(strings.TrimPrefix(h.Name, "./"), "/")
		if p == "/" {
			continue
		}
		files[p] = h
		switch {
		case p == "/usr/bin/nexcage":
			if bin, err = io.ReadAll(tr); err != nil {
				t.Fatal(err)
			}
		case strings.HasSuffix(p, ".gz"):
			// gzip -n: no name or time stamp, so rebuilds are identical.
			z, err := gzip.NewReader(tr)
			if err != nil {
				t.Errorf("%s: %v", p, err)
				continue
			}
			if z.Name != "" || !z.ModTime.IsZero() {
				t.Errorf("%s is gzipped with name %q and time %v: not reproducible", p, z.Name, z.ModTime)
			}
			z.Close()
		case h.Typeflag == tar.TypeReg:
			if texts[p], err = io.ReadAll(tr); err != nil {
				t.Fatal(err)
			}
		}
	}
	if bin == nil {
		t.Fatalf("%s holds no /usr/bin/nexcage", deb)
	}
	return files, bin, texts
}

// manPages are where docs/man/*.1 must end up; the pages are generated
// from the CLI, so the package must hold exactly those.
func manPages(t *testing.T) []string {
	t.Helper()
	root, err := repoRoot()
	if err != nil {
		t.Fatal(err)
	}
	src, _ := filepath.Glob(filepath.Join(root, "docs/man/*.1"))
	if len(src) == 0 {
		t.Fatal("no docs/man/*.1: the man pages are generated and committed, and every package must ship them")
	}
	var out []string
	for _, s := range src {
		out = append(out, "/usr/share/man/man1/"+filepath.Base(s)+".gz")
	}
	return out
}

// debianMirror is the mirror apt uses here (deb822 or one-line format),
// since it is the one known to be reachable.
func debianMirror() string {
	if b, err := os.ReadFile("/etc/apt/sources.list.d/debian.sources"); err == nil {
		for _, l := range strings.Split(string(b), "\n") {
			if v, ok := strings.CutPrefix(strings.TrimSpace(l), "URIs:"); ok {
				if u := strings.Fields(v); len(u) > 0 && !strings.Contains(u[0], "security") {
					return u[0]
				}
			}
		}
	}
	if b, err := os.ReadFile("/etc/apt/sources.list"); err == nil {
		for _, l := range strings.Split(string(b), "\n") {
			if f := strings.Fields(l); len(f) >= 3 && f[0] == "deb" && !strings.Contains(f[1], "security") && !strings.HasPrefix(f[1], "[") {
				return f[1]
			}
		}
	}
	return "http://deb.debian.org/debian"
}

func copyFile(t *testing.T, src, dst string) {
	t.Helper()
	b, err := os.ReadFile(src)
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(dst, b, 0o644); err != nil {
		t.Fatal(err)
	}
}

func buildDir(t *testing.T) string {
	t.Helper()
	root, err := repoRoot()
	if err != nil {
		t.Fatal(err)
	}
	dir := filepath.Join(root, "build")
	if err := os.MkdirAll(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	return dir
}

// repoRoot is two levels up from this package; go.mod proves it.
func repoRoot() (string, error) {
	dir, err := filepath.Abs(filepath.Join("..", ".."))
	if err != nil {
		return "", err
	}
	if _, err := os.Stat(filepath.Join(dir, "go.mod")); err != nil {
		return "", fmt.Errorf("repository root not found: %w", err)
	}
	return dir, nil
}

// goTool is the go command running these tests, so deb.sh builds with the
// same toolchain.
func goTool() string {
	if p := filepath.Join(runtime.GOROOT(), "bin", "go"); fileExists(p) {
		return p
	}
	return "go"
}

func fileExists(p string) bool {
	_, err := os.Stat(p)
	return err == nil
}
