package convert_test

import (
	"archive/tar"
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"flag"
	"os"
	"path/filepath"
	"regexp"
	"runtime"
	"strings"
	"testing"
	"time"

	rspec "github.com/opencontainers/runtime-spec/specs-go"

	"github.com/nexcage/nexcage/convert"
	"github.com/nexcage/nexcage/internal/testbundle"
	"github.com/nexcage/nexcage/internal/testenv"
	"github.com/nexcage/nexcage/lxc"
	"github.com/nexcage/nexcage/template"
)

var update = flag.Bool("update", false, "rewrite the golden files")

func TestConvertIsDeterministic(t *testing.T) {
	testenv.CheckLeaks(t)
	b := unpack(t, corpusCase(t, "alpine-amd64"), false)
	prev := runtime.GOMAXPROCS(2)
	a := convertTo(t, b, t.TempDir(), convert.Options{})
	runtime.GOMAXPROCS(4)
	c := convertTo(t, b, t.TempDir(), convert.Options{})
	runtime.GOMAXPROCS(prev)
	if a.Sidecar.Template.SHA256 != c.Sidecar.Template.SHA256 {
		t.Fatalf("two conversions of one bundle differ: %s vs %s", a.Sidecar.Template.SHA256, c.Sidecar.Template.SHA256)
	}
	if !bytes.Equal(readFile(t, a.Template), readFile(t, c.Template)) {
		t.Fatal("templates differ byte for byte")
	}
	if !bytes.Equal(readFile(t, a.SidecarJSON), readFile(t, c.SidecarJSON)) || !bytes.Equal(readFile(t, a.Config), readFile(t, c.Config)) {
		t.Fatal("sidecars differ")
	}
	for _, comp := range []template.Compression{template.Gzip, template.XZ} {
		x := convertTo(t, b, t.TempDir(), convert.Options{Compression: comp})
		y := convertTo(t, b, t.TempDir(), convert.Options{Compression: comp})
		if x.Sidecar.Template.SHA256 != y.Sidecar.Template.SHA256 || !strings.HasSuffix(x.Template, comp.Suffix()) {
			t.Errorf("%s: not reproducible or wrongly named: %s", comp, x.Template)
		}
	}
}

func TestSourceDateEpochClampsMtimes(t *testing.T) {
	b := unpack(t, corpusCase(t, "alpine-amd64"), false)
	epoch := time.Unix(1700000000, 0)
	res := convertTo(t, b, t.TempDir(), convert.Options{SourceDateEpoch: epoch})
	later := 0
	for _, h := range testbundle.Members(t, res.Template) {
		if h.ModTime.After(epoch) {
			t.Fatalf("%s has mtime %s, after SOURCE_DATE_EPOCH", h.Name, h.ModTime)
		}
		if h.ModTime.Equal(epoch) {
			later++
		}
	}
	// Alpine 3.20.3's files are from 2024: all of them must be clamped.
	if later == 0 {
		t.Fatal("no mtime was clamped; the test image has no files after the epoch")
	}
	if res.Sidecar.Recipe.SourceDateEpoch != epoch.Unix() {
		t.Errorf("the manifest does not record the epoch: %+v", res.Sidecar.Recipe)
	}
}

// TestTemplateFormat checks the archive against the design's contract.
func TestTemplateFormat(t *testing.T) {
	testenv.RequireRoot(t) // the hardlink and xattr cases need a root unpack
	for _, name := range []string{"alpine-amd64", "hardlink-lower", "xattrs", "longnames", "devices"} {
		t.Run(name, func(t *testing.T) {
			b := unpack(t, corpusCase(t, name), false)
			res := convertTo(t, b, t.TempDir(), convert.Options{})
			hdrs := testbundle.Members(t, res.Template)
			if hdrs[0].Name != "./" || hdrs[0].Typeflag != tar.TypeDir {
				t.Fatalf("first member %q, want ./", hdrs[0].Name)
			}
			seen := map[string]bool{}
			prev := ""
			for _, h := range hdrs {
				if !strings.HasPrefix(h.Name, "./") {
					t.Errorf("%q is not ./-prefixed", h.Name)
				}
				if seen[h.Name] {
					t.Errorf("%q appears twice", h.Name)
				}
				seen[h.Name] = true
				if h.Typeflag == tar.TypeLink && !seen[h.Linkname] {
					t.Errorf("hard link %q comes before its target %q", h.Name, h.Linkname)
				}
				if dir := parentOf(h.Name); dir != "" && !seen[dir] {
					t.Errorf("%q comes before its directory %q", h.Name, dir)
				}
				if h.Uname != "" || h.Gname != "" || !h.AccessTime.IsZero() || !h.ChangeTime.IsZero() {
					t.Errorf("%q carries names or atime/ctime", h.Name)
				}
				if h.Typeflag == tar.TypeChar || h.Typeflag == tar.TypeBlock {
					t.Errorf("%q is a device node", h.Name)
				}
				if strings.HasPrefix(h.Name, "./dev/") && h.Name != "./dev/" {
					t.Errorf("%q: /dev must be empty", h.Name)
				}
				for k := range h.PAXRecords {
					if strings.HasPrefix(k, "SCHILY.xattr.") && !strings.HasPrefix(k, "SCHILY.xattr.user.") && k != "SCHILY.xattr.security.capability" {
						t.Errorf("%q carries xattr %s, which PVE drops", h.Name, k)
					}
				}
				if prev != "" && treeLess(h.Name, prev) {
					t.Errorf("%q comes after %q: not in tar --sort=name order", h.Name, prev)
				}
				prev = h.Name
			}
			if !seen["./dev/"] {
				t.Error("./dev/ is missing")
			}
		})
	}
}

// treeLess orders paths the way tar --sort=name walks a tree: component by
// component, bytewise.
func treeLess(a, b string) bool {
	pa := strings.Split(strings.TrimSuffix(a, "/"), "/")
	pb := strings.Split(strings.TrimSuffix(b, "/"), "/")
	for i := 0; i < len(pa) && i < len(pb); i++ {
		if pa[i] != pb[i] {
			return pa[i] < pb[i]
		}
	}
	return len(pa) < len(pb)
}

func parentOf(name string) string {
	n := strings.TrimSuffix(name, "/")
	i := strings.LastIndex(n, "/")
	if i <= 1 {
		if n == "." {
			return ""
		}
		return "./"
	}
	return n[:i+1]
}

// TestRootlessBundleGivesTheSameTemplate: owners restored from
// user.rootlesscontainers make a rootless unpack convert to the very bytes
// of a root unpack.
func TestRootlessBundleGivesTheSameTemplate(t *testing.T) {
	testenv.RequireRoot(t)
	// "ids" is left out: it has a symlink owned by 1000, and Linux allows
	// no user.* xattr on a symlink to record that in a rootless unpack.
	for _, name := range []string{"modes", "alpine-amd64", "hardlink-lower", "hardlink-symlink", "xattrs"} {
		c := corpusCase(t, name)
		root := convertTo(t, unpack(t, c, false), t.TempDir(), convert.Options{SquashHighIDs: true})
		rootless := convertTo(t, unpack(t, c, true), t.TempDir(), convert.Options{SquashHighIDs: true})
		if root.Sidecar.Template.SHA256 != rootless.Sidecar.Template.SHA256 {
			t.Errorf("%s: rootless bundle gives %s, root bundle %s", name, rootless.Sidecar.Template.SHA256, root.Sidecar.Template.SHA256)
		}
		// umoci's rootless config binds /sys and the host's resolv.conf;
		// neither may become a mount point.
		if a, b := normalise(string(readFile(t, root.Config))), normalise(string(readFile(t, rootless.Config))); a != b {
			t.Errorf("%s: rootless conf differs:\n%s\nroot conf:\n%s", name, b, a)
		}
	}
}

// appBundle is alpine-app with the mounts a bundle (not an image) carries.
func appBundle(t testing.TB) *convert.Bundle {
	t.Helper()
	b := unpack(t, corpusCase(t, "alpine-app"), false)
	b.Spec.Hostname = "app"
	b.Spec.Mounts = append(b.Spec.Mounts,
		rspec.Mount{Destination: "/srv/data", Type: "bind", Source: "/srv/appdata", Options: []string{"rbind", "ro"}},
		rspec.Mount{Destination: "/run/app", Type: "tmpfs", Source: "tmpfs", Options: []string{"mode=1777", "size=16m"}},
	)
	writeSpec(t, b)
	return b
}

func writeSpec(t testing.TB, b *convert.Bundle) {
	t.Helper()
	raw, err := json.MarshalIndent(b.Spec, "", "\t")
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(b.ConfigPath, raw, 0o644); err != nil {
		t.Fatal(err)
	}
}

// TestSidecarsGolden pins the .conf and .json a template gets. Paths,
// digests and sizes vary per run and are normalised.
func TestSidecarsGolden(t *testing.T) {
	testenv.RequireRoot(t) // user 1000 in alpine-app is resolved as root unpacks it
	for name, b := range map[string]*convert.Bundle{
		"alpine-app":    appBundle(t),
		"alpine-system": unpack(t, corpusCase(t, "alpine-amd64"), false),
	} {
		t.Run(name, func(t *testing.T) {
			res := convertTo(t, b, t.TempDir(), convert.Options{ToolVersion: "test"})
			if !strings.HasPrefix(filepath.Base(res.Template), "alpine-3.20-") || !strings.HasSuffix(res.Template, "_amd64.tar.zst") {
				t.Errorf("template name %s does not follow <os>-<osversion>-<name>_<version>_<arch>.tar.zst", filepath.Base(res.Template))
			}
			for _, f := range []struct{ path, golden string }{
				{res.Config, name + ".conf"},
				{res.SidecarJSON, name + ".json"},
			} {
				got := normalise(string(readFile(t, f.path)))
				golden := filepath.Join("testdata", f.golden)
				if *update {
					os.MkdirAll("testdata", 0o755)
					os.WriteFile(golden, []byte(got), 0o644)
				}
				want, err := os.ReadFile(golden)
				if err != nil {
					t.Fatalf("%v (run go test ./convert -update to create it)", err)
				}
				if got != string(want) {
					t.Errorf("%s differs from %s:\n%s", filepath.Base(f.path), golden, got)
				}
			}
			// The conf is valid PVE syntax.
			if _, err := lxc.Parse(string(readFile(t, res.Config))); err != nil {
				t.Errorf("the conf does not parse: %v", err)
			}
		})
	}
}

var (
	tmpPath   = regexp.MustCompile(`/tmp/[^",:@ \n]*`)
	sha256Hex = regexp.MustCompile(`sha256:[0-9a-f]{64}|"sha256": "[0-9a-f]{64}"`)
	sizeField = regexp.MustCompile(`"size": \d+`)
)

func normalise(s string) string {
	s = tmpPath.ReplaceAllString(s, "TMP")
	s = sha256Hex.ReplaceAllString(s, "SHA256")
	return sizeField.ReplaceAllString(s, `"size": N`)
}

func TestConvertRefusesBadInput(t *testing.T) {
	testenv.CheckLeaks(t)
	good := unpack(t, corpusCase(t, "modes"), false)
	for _, tc := range []struct {
		name  string
		setup func(t *testing.T) string // returns the bundle argument
		opts  convert.Options
		want  []string
		kind  error
	}{
		{name: "no bundle", setup: func(t *testing.T) string { return filepath.Join(t.TempDir(), "nothing") },
			want: []string{"no OCI bundle at", "does not exist", "config.json"}},
		{name: "no config", setup: func(t *testing.T) string { return t.TempDir() },
			want: []string{"tried", "config.json, which does not exist", "a bundle is a directory holding config.json"}},
		{name: "config not JSON", setup: func(t *testing.T) string {
			d := t.TempDir()
			os.WriteFile(filepath.Join(d, "config.json"), []byte("{\n  \"ociVersion\": \"1.2.0\",\n  oops\n}"), 0o644)
			return d
		}, want: []string{"not a valid OCI runtime config", "line 3"}},
		{name: "rootfs missing", setup: func(t *testing.T) string {
			d := t.TempDir()
			os.WriteFile(filepath.Join(d, "config.json"), []byte(`{"ociVersion":"1.2.0","root":{"path":"gone"}}`), 0o644)
			return d
		}, want: []string{"has no rootfs", "root.path is gone", filepath.Join("gone")}},
		{name: "relative bind source", setup: mutated(good, rspec.Mount{Destination: "/data", Type: "bind", Source: "data"}),
			want: []string{"mounts[", "].source", "relative"}},
		{name: "unknown mount type", setup: mutated(good, rspec.Mount{Destination: "/data", Type: "nfs", Source: "srv:/x"}),
			want: []string{"].type", "nfs"}},
		{name: "dotdot destination", setup: mutated(good, rspec.Mount{Destination: "/a/../etc", Type: "tmpfs"}),
			want: []string{"].destination", ".."}},
		// LXC creates a missing tmpfs mount point before pivot_root,
		// following the rootfs's symlinks on the host: refused, not left
		// to LXC (the .conf no longer says create=dir).
		{name: "tmpfs through a symlink", setup: func(t *testing.T) string {
			if err := os.Symlink("/etc", filepath.Join(good.Rootfs, "hostlink")); err != nil && !os.IsExist(err) {
				t.Fatal(err)
			}
			return mutated(good, rspec.Mount{Destination: "/hostlink/x", Type: "tmpfs", Source: "tmpfs"})(t)
		}, want: []string{"tmpfs mount /hostlink/x goes through the symlink /hostlink"}},
		{name: "bad suffix", setup: func(t *testing.T) string { return good.Dir }, opts: convert.Options{Output: "x.tar"},
			want: []string{"must end in .tar.zst, .tar.gz or .tar.xz"}},
		{name: "suffix and compression disagree", setup: func(t *testing.T) string { return good.Dir },
			opts: convert.Options{Output: "x.tar.gz", Compression: template.Zstd}, want: []string{"make them agree"}},
		{name: "level out of range", setup: func(t *testing.T) string { return good.Dir },
			opts: convert.Options{Level: 30}, want: []string{"Level 30 is out of range"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			arg := tc.setup(t)
			out := t.TempDir()
			opts := tc.opts
			if opts.Output == "" {
				opts.Output = out + "/"
			} else {
				opts.Output = filepath.Join(out, opts.Output)
			}
			b, err := convert.LoadBundle(arg)
			if err == nil {
				_, err = convert.Convert(context.Background(), b, opts)
			}
			if err == nil {
				t.Fatal("accepted")
			}
			for _, w := range tc.want {
				if !strings.Contains(err.Error(), w) {
					t.Errorf("error %q does not mention %q", err, w)
				}
			}
			if left := entries(t, out); len(left) != 0 {
				t.Errorf("a failed convert left %v", left)
			}
		})
	}
}

// mutated copies a bundle's config with one more mount.
func mutated(b *convert.Bundle, m rspec.Mount) func(t *testing.T) string {
	return func(t *testing.T) string {
		d := t.TempDir()
		spec := *b.Spec
		spec.Mounts = append(append([]rspec.Mount{}, spec.Mounts...), m)
		spec.Root = &rspec.Root{Path: b.Rootfs}
		raw, _ := json.Marshal(spec)
		os.WriteFile(filepath.Join(d, "config.json"), raw, 0o644)
		return d
	}
}

func TestHighIDsNeedAChoice(t *testing.T) {
	testenv.RequireRoot(t)
	b := unpack(t, corpusCase(t, "ids"), false)
	out := t.TempDir()
	_, err := convert.Convert(context.Background(), b, convert.Options{Output: out + "/"})
	if !errors.Is(err, convert.ErrHighIDs) {
		t.Fatalf("err = %v, want ErrHighIDs", err)
	}
	for _, w := range []string{"/ids/uid100000 (100000:100000)", "/ids/uid70000-gid70001 (70000:70001)", "privileged-only template", "squashing"} {
		if !strings.Contains(err.Error(), w) {
			t.Errorf("error %q does not mention %q", err, w)
		}
	}
	// The CLI names its flags (--privileged, --squash-high-ids); the
	// library only says what each choice does.
	if strings.Contains(err.Error(), "--") || errors.Is(err, convert.ErrProcessUser) {
		t.Errorf("error %q names a flag, or claims the process user is at fault", err)
	}
	if left := entries(t, out); len(left) != 0 {
		t.Errorf("refused convert left %v", left)
	}
	priv := convertTo(t, b, t.TempDir(), convert.Options{Privileged: true})
	if !priv.Sidecar.Privileged || !strings.Contains(string(readFile(t, priv.Config)), "unprivileged: 0\n") {
		t.Error("a --privileged template is not marked privileged-only")
	}
	squashed := convertTo(t, b, t.TempDir(), convert.Options{SquashHighIDs: true})
	for _, h := range testbundle.Members(t, squashed.Template) {
		if h.Uid > 65535 || h.Gid > 65535 {
			t.Errorf("%s kept id %d:%d", h.Name, h.Uid, h.Gid)
		}
		if h.Name == "./ids/uid100000" && (h.Uid != 65534 || h.Gid != 65534) {
			t.Errorf("%s is %d:%d, want 65534:65534", h.Name, h.Uid, h.Gid)
		}
	}
}

func TestFailedConvertKeepsTheOldTemplate(t *testing.T) {
	testenv.CheckLeaks(t)
	b := unpack(t, corpusCase(t, "modes"), false)
	out := t.TempDir()
	first := convertTo(t, b, out, convert.Options{})
	before := readFile(t, first.Template)
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	_, err := convert.Convert(ctx, b, convert.Options{Output: out + "/"})
	if !errors.Is(err, context.Canceled) {
		t.Fatalf("err = %v, want context.Canceled", err)
	}
	if !bytes.Equal(before, readFile(t, first.Template)) {
		t.Fatal("a cancelled convert changed the existing template")
	}
	if got := entries(t, out); len(got) != 3 {
		t.Fatalf("output dir holds %v, want only the template and its two sidecars", got)
	}
}

// TestUnnamedBundleToFile: a bundle recording no image (as from generate
// --rootfs) converts to an explicit file; only a directory output needs
// the name the bundle cannot give.
func TestUnnamedBundleToFile(t *testing.T) {
	good := unpack(t, corpusCase(t, "modes"), false)
	d := t.TempDir()
	spec := *good.Spec
	spec.Annotations = map[string]string{}
	for k, v := range good.Spec.Annotations {
		if k == "org.opencontainers.image.architecture" || k == "org.opencontainers.image.os" {
			spec.Annotations[k] = v // what generate --rootfs records
		}
	}
	spec.Root = &rspec.Root{Path: good.Rootfs}
	raw, _ := json.Marshal(spec)
	if err := os.WriteFile(filepath.Join(d, "config.json"), raw, 0o644); err != nil {
		t.Fatal(err)
	}
	b, err := convert.LoadBundle(d)
	if err != nil {
		t.Fatal(err)
	}
	out := filepath.Join(t.TempDir(), "mine.tar.zst")
	res, err := convert.Convert(context.Background(), b, convert.Options{Output: out})
	if err != nil {
		t.Fatalf("convert -o FILE: %v", err)
	}
	if res.Template != out {
		t.Errorf("template written to %s, want %s", res.Template, out)
	}
	if _, err := os.Stat(filepath.Join(filepath.Dir(out), "mine.conf")); err != nil {
		t.Errorf("no .conf beside the template: %v", err)
	}
	_, err = convert.Convert(context.Background(), b, convert.Options{Output: t.TempDir() + "/"})
	if err == nil || !strings.Contains(err.Error(), "cannot name the template") {
		t.Errorf("a directory output without a name: %v, want it refused for want of a name", err)
	}
}

// TestTmpfsMountPointInTemplate: a tmpfs destination the rootfs lacks is
// carried by the template as a directory, since the .conf no longer asks
// LXC to create it (create=dir follows symlinks on the host).
func TestTmpfsMountPointInTemplate(t *testing.T) {
	testenv.CheckLeaks(t)
	b := appBundle(t) // tmpfs on /run/app, which alpine-app lacks
	if _, err := os.Lstat(filepath.Join(b.Rootfs, "run", "app")); err == nil {
		t.Fatal("the fixture already has /run/app")
	}
	res := convertTo(t, b, t.TempDir(), convert.Options{})
	if strings.Contains(string(readFile(t, res.Config)), "create=dir") {
		t.Error("the .conf still asks LXC to create=dir")
	}
	members := tarMembers(testbundle.Members(t, res.Template), func(h *tar.Header) bool { return h.Name == "./run/app/" || h.Name == "./run/app" })
	if len(members) != 1 || !strings.Contains(members[0], "\t5 ") {
		t.Errorf("template members for /run/app: %q, want one directory", members)
	}
}
