package template_test

import (
	"archive/tar"
	"bytes"
	"debug/elf"
	"encoding/binary"
	"encoding/json"
	"errors"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/klauspost/compress/gzip"
	"github.com/klauspost/compress/zstd"
	"github.com/ulikunitz/xz"

	"github.com/nexcage/nexcage/internal/limits"
	"github.com/nexcage/nexcage/internal/testenv"
	"github.com/nexcage/nexcage/tartree"
	"github.com/nexcage/nexcage/template"
)

func TestName(t *testing.T) {
	alpine := template.NameParts{OSID: "alpine", OSVersion: "3.20.3", Arch: "amd64", Compression: template.Zstd}
	with := func(f func(p *template.NameParts)) template.NameParts {
		p := alpine
		f(&p)
		return p
	}
	for _, tc := range []struct {
		name string
		in   template.NameParts
		want string
	}{
		{"reference tag, os major.minor", with(func(p *template.NameParts) { p.Reference = "docker://docker.io/library/alpine:3.20" }),
			"alpine-3.20-alpine_3.20_amd64.tar.zst"},
		{"latest is no version: the creation date is", with(func(p *template.NameParts) {
			p.Reference, p.Created = "docker://ghcr.io/org/app:latest", "2024-05-01T23:30:00+02:00"
		}), "alpine-3.20-app_20240501_amd64.tar.zst"},
		{"no version at all: 1", with(func(p *template.NameParts) { p.Reference = "docker://ghcr.io/org/app@sha256:0123" }),
			"alpine-3.20-app_1_amd64.tar.zst"},
		{"a creation time at or before 1970 is no date", with(func(p *template.NameParts) {
			p.Reference, p.Created = "docker://x/app", "1970-01-01T00:00:00Z"
		}), "alpine-3.20-app_1_amd64.tar.zst"},
		{"the image name an archive records beats its file name", with(func(p *template.NameParts) {
			p.Reference, p.ImageName = "oci-archive:/tmp/export.tar:ignored", "localhost/web:1.0"
		}), "alpine-3.20-web_1.0_amd64.tar.zst"},
		{"an archive path loses its extension", with(func(p *template.NameParts) { p.Reference = "oci-archive:/tmp/export.tar" }),
			"alpine-3.20-export_1_amd64.tar.zst"},
		{"an oci layout's tag", with(func(p *template.NameParts) { p.Reference = "oci:/srv/layouts/tools:2.1" }),
			"alpine-3.20-tools_2.1_amd64.tar.zst"},
		{"the version label beats the tag", with(func(p *template.NameParts) {
			p.Reference, p.LabelVersion = "docker://x/app:3", "3.1.4"
		}), "alpine-3.20-app_3.1.4_amd64.tar.zst"},
		{"explicit name and version win", with(func(p *template.NameParts) {
			p.Reference, p.LabelVersion, p.Name, p.Version = "docker://x/app:3", "3.1.4", "mine", "7"
		}), "alpine-3.20-mine_7_amd64.tar.zst"},
		{"the title when nothing else names it", with(func(p *template.NameParts) { p.Title = "My Service" }),
			"alpine-3.20-My-Service_1_amd64.tar.zst"},
		{"no os-release: unmanaged", with(func(p *template.NameParts) { p.OSID, p.OSVersion, p.Name = "", "", "app" }),
			"unmanaged-app_1_amd64.tar.zst"},
		{"unsafe characters and '_' become '-', ends trimmed", with(func(p *template.NameParts) {
			p.Name, p.Version, p.OSID = "../my_app/", "v1 beta", "Weird OS"
		}), "Weird-OS-3.20-my-app_v1-beta_amd64.tar.zst"},
		{"each part at most 64 characters", with(func(p *template.NameParts) { p.Name = strings.Repeat("n", 100) }),
			"alpine-3.20-" + strings.Repeat("n", 64) + "_1_amd64.tar.zst"},
		{"the suffix follows the compression", with(func(p *template.NameParts) { p.Name, p.Compression, p.Arch = "app", template.XZ, "arm64" }),
			"alpine-3.20-app_1_arm64.tar.xz"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			got, err := template.Name(tc.in)
			if err != nil || got != tc.want {
				t.Errorf("Name(%+v) = %q, %v; want %q", tc.in, got, err, tc.want)
			}
		})
	}

	if _, err := template.Name(alpine); !errors.Is(err, template.ErrUnnamed) {
		t.Errorf("nothing names the image: %v, want ErrUnnamed", err)
	}
	for _, p := range []template.NameParts{
		with(func(p *template.NameParts) { p.Name = "___" }),
		with(func(p *template.NameParts) { p.Name, p.Version = "app", "..." }),
		with(func(p *template.NameParts) { p.Name, p.Arch = "app", "" }),
	} {
		var ne *template.NameError
		if _, err := template.Name(p); !errors.As(err, &ne) || ne.Name != p.Name {
			t.Errorf("Name(%+v): %v, want a *NameError naming %q", p, err, p.Name)
		}
	}
}

func TestCompression(t *testing.T) {
	for _, tc := range []struct {
		c             template.Compression
		suffix        string
		level, lo, hi int
		parsed        []string
	}{
		{template.Zstd, ".tar.zst", 3, 1, 22, []string{"zstd", "zst", "ZSTD"}},
		{template.Gzip, ".tar.gz", 6, 1, 9, []string{"gzip", "gz", "GZip"}},
		{template.XZ, ".tar.xz", 6, 1, 9, []string{"xz", "XZ"}},
	} {
		if tc.c.Suffix() != tc.suffix || tc.c.DefaultLevel() != tc.level {
			t.Errorf("%s: suffix %q level %d, want %q %d", tc.c, tc.c.Suffix(), tc.c.DefaultLevel(), tc.suffix, tc.level)
		}
		if lo, hi := tc.c.Levels(); lo != tc.lo || hi != tc.hi {
			t.Errorf("%s: levels %d..%d, want %d..%d", tc.c, lo, hi, tc.lo, tc.hi)
		}
		for _, s := range tc.parsed {
			if c, err := template.ParseCompression(s); err != nil || c != tc.c {
				t.Errorf("ParseCompression(%q) = %q, %v; want %q", s, c, err, tc.c)
			}
		}
		if c, ok := template.CompressionFromName("dir.tar.zst/x" + tc.suffix); !ok || c != tc.c {
			t.Errorf("CompressionFromName(x%s) = %q, %v", tc.suffix, c, ok)
		}
	}
	for _, s := range []string{"bzip2", "", "zstd "} {
		if _, err := template.ParseCompression(s); !errors.Is(err, template.ErrCompression) {
			t.Errorf("ParseCompression(%q): %v, want ErrCompression", s, err)
		}
	}
	// What a name says and whether nexcage and PVE accept it differ: an
	// upper-case suffix or .tgz is recognised (a check can say what the
	// file is) but does not end in the compression's Suffix, which is
	// how writers and the command line refuse it.
	for name, want := range map[string]template.Compression{"A.TAR.ZST": template.Zstd, "a.Tar.Gz": template.Gzip, "a.tgz": template.Gzip, "a.TAR.XZ": template.XZ} {
		c, ok := template.CompressionFromName(name)
		if !ok || c != want {
			t.Errorf("CompressionFromName(%q) = %q, %v; want %q", name, c, ok, want)
		}
		if strings.HasSuffix(name, c.Suffix()) {
			t.Errorf("%q ends in %s: a name PVE refuses would be accepted", name, c.Suffix())
		}
	}
	for _, name := range []string{"a.tar", "a.zst", "a.tar.bz2", "a.tar.zst.json", "tar.zst", ""} {
		if c, ok := template.CompressionFromName(name); ok && name != "tar.zst" {
			t.Errorf("CompressionFromName(%q) = %q: not a template name", name, c)
		}
	}
}

func TestSidecarPaths(t *testing.T) {
	for in, want := range map[string][2]string{
		"/t/alpine_1_amd64.tar.zst": {"/t/alpine_1_amd64.conf", "/t/alpine_1_amd64.json"},
		"x.tar.gz":                  {"x.conf", "x.json"},
		"x.TAR.XZ":                  {"x.conf", "x.json"},
		"x.tgz":                     {"x.conf", "x.json"},
		"oci/app.tar":               {"oci/app.conf", "oci/app.json"},
		"noext":                     {"noext.conf", "noext.json"},
	} {
		if conf, js := template.SidecarPaths(in); conf != want[0] || js != want[1] {
			t.Errorf("SidecarPaths(%q) = %q, %q; want %q", in, conf, js, want)
		}
	}
}

func TestReadSidecar(t *testing.T) {
	dir := t.TempDir()
	write := func(name string, b []byte) string {
		p := filepath.Join(dir, name)
		if err := os.WriteFile(p, b, 0o644); err != nil {
			t.Fatal(err)
		}
		return p
	}
	env := []string{"A=1"}
	want := template.Sidecar{
		NexcageVersion: "test",
		Template:       template.TemplateInfo{File: "a.tar.zst", SHA256: strings.Repeat("ab", 32), Size: 42, Compression: "zstd"},
		Source:         template.Source{Reference: "docker://x/a:1", Platform: "linux/amd64"},
		OS:             template.OSInfo{ID: "alpine", OSType: "alpine"},
		Mounts:         []template.Mount{{Destination: "/data", Type: "tmpfs", PVE: "lxc.mount.entry"}},
		Recipe:         template.Recipe{Compression: "zstd", Level: 3, Process: &template.ProcessOverrides{Env: env}},
	}
	raw, err := json.Marshal(want)
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Contains(raw, []byte(`"options":{"compression":"zstd"`)) {
		t.Fatalf("the recipe is not recorded under \"options\", as sidecars always had it: %s", raw)
	}
	got, err := template.ReadSidecar(write("good.json", raw))
	if err != nil || !reflect.DeepEqual(*got, want) {
		t.Fatalf("ReadSidecar = %+v, %v; want %+v", got, err, want)
	}
	if got.Recipe.Process.IsZero() || (*template.ProcessOverrides)(nil).IsZero() == false {
		t.Error("IsZero: the recorded override is empty, or nil is not")
	}

	if _, err := template.ReadSidecar(filepath.Join(dir, "missing.json")); !errors.Is(err, fs.ErrNotExist) {
		t.Errorf("a missing sidecar: %v, want fs.ErrNotExist", err)
	}
	for _, tc := range []struct {
		name, content, msg string
	}{
		{"syntax.json", "{\n  \"template\": {,\n}", "syntax.json is not a nexcage .json sidecar: line 2, column 16"},
		{"type.json", `{"template": {"size": "big"}}`, "type.json is not a nexcage .json sidecar: line 1, column 27"},
		{"nosha.json", `{"template": {"file": "a.tar.zst"}}`, "nosha.json records no template sha256"},
		{"array.json", `[]`, "array.json is not a nexcage .json sidecar"},
	} {
		_, err := template.ReadSidecar(write(tc.name, []byte(tc.content)))
		if !errors.Is(err, template.ErrNotSidecar) || !strings.Contains(err.Error(), tc.msg) {
			t.Errorf("%s: %v, want ErrNotSidecar saying %q", tc.name, err, tc.msg)
		}
	}

	// Hostile files: huge (sparse, so the test writes nothing), a FIFO
	// that would block a reader forever, a directory.
	huge := write("huge.json", nil)
	if err := os.Truncate(huge, limits.MaxMetadata+1); err != nil {
		t.Fatal(err)
	}
	if _, err := template.ReadSidecar(huge); err == nil {
		t.Error("an oversized sidecar was read")
	} else if _, ok := limits.As(err); !ok {
		t.Errorf("an oversized sidecar: %v, want a limits.Error", err)
	}
	fifo := filepath.Join(dir, "fifo.json")
	if err := syscall.Mkfifo(fifo, 0o644); err != nil {
		t.Fatal(err)
	}
	done := make(chan error, 1)
	go func() { _, err := template.ReadSidecar(fifo); done <- err }()
	select {
	case err := <-done:
		if !errors.Is(err, template.ErrNotSidecar) {
			t.Errorf("a FIFO: %v, want ErrNotSidecar", err)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("ReadSidecar blocks on a FIFO")
	}
	sub := filepath.Join(dir, "dir.json")
	if err := os.Mkdir(sub, 0o755); err != nil {
		t.Fatal(err)
	}
	if _, err := template.ReadSidecar(sub); !errors.Is(err, template.ErrNotSidecar) {
		t.Errorf("a directory: %v, want ErrNotSidecar", err)
	}
}

// tarBytes is a small tar with one file.
func tarBytes(t *testing.T) []byte {
	var b bytes.Buffer
	tw := tar.NewWriter(&b)
	for _, h := range []*tar.Header{
		{Name: "./", Typeflag: tar.TypeDir, Mode: 0o755},
		{Name: "./etc/hostname", Typeflag: tar.TypeReg, Mode: 0o644, Size: 5},
	} {
		if err := tw.WriteHeader(h); err != nil {
			t.Fatal(err)
		}
	}
	tw.Write([]byte("host\n"))
	if err := tw.Close(); err != nil {
		t.Fatal(err)
	}
	return b.Bytes()
}

func compress(t *testing.T, c template.Compression, in []byte) []byte {
	var b bytes.Buffer
	var w io.WriteCloser
	var err error
	switch c {
	case template.Zstd:
		w, err = zstd.NewWriter(&b)
	case template.Gzip:
		w = gzip.NewWriter(&b)
	case template.XZ:
		w, err = xz.NewWriter(&b)
	default:
		return in
	}
	if err != nil {
		t.Fatal(err)
	}
	w.Write(in)
	if err := w.Close(); err != nil {
		t.Fatal(err)
	}
	return b.Bytes()
}

func readMembers(t *testing.T, r io.Reader) []string {
	var out []string
	for h, body := range testenv.TarMembers(t, r) {
		b, _ := io.ReadAll(body)
		out = append(out, h.Name+"="+string(b))
	}
	return out
}

func TestOpenTar(t *testing.T) {
	plain := tarBytes(t)
	want := []string{"./=", "./etc/hostname=host\n"}
	dir := t.TempDir()
	for _, c := range []template.Compression{template.Zstd, template.Gzip, template.XZ, ""} {
		// The name lies: the content says what the file is.
		file := filepath.Join(dir, "t"+string(c)+".tar.zst")
		if err := os.WriteFile(file, compress(t, c, plain), 0o644); err != nil {
			t.Fatal(err)
		}
		rc, got, err := template.OpenTar(file)
		if err != nil || got != c {
			t.Fatalf("OpenTar(%s) = %q, %v; want %q", c, got, err, c)
		}
		if m := readMembers(t, rc); !reflect.DeepEqual(m, want) {
			t.Errorf("%q: members %q, want %q", c, m, want)
		}
		if err := rc.Close(); err != nil {
			t.Errorf("%q: close: %v", c, err)
		}
		// Decompress trusts what it is told, as the check does with the
		// name's compression.
		raw, _ := os.ReadFile(file)
		zr, err := template.Decompress(bytes.NewReader(raw), c)
		if err != nil {
			t.Fatal(err)
		}
		if m := readMembers(t, zr); !reflect.DeepEqual(m, want) {
			t.Errorf("Decompress(%q): members %q", c, m)
		}
		zr.Close()
		if c != "" {
			// Cut short, the stream fails by the end, not silently.
			zr, err := template.Decompress(bytes.NewReader(raw[:len(raw)-8]), c)
			if err == nil {
				_, err = io.Copy(io.Discard, zr)
				zr.Close()
			}
			if err == nil {
				t.Errorf("%q: a truncated stream read without an error", c)
			}
		}
	}

	for _, tc := range []struct {
		name    string
		content []byte
		is      error
	}{
		{"empty", nil, template.ErrEmpty},
		{"text", []byte("hello, I am not a tar"), template.ErrUnknownFormat},
		{"short tar", plain[:100], template.ErrUnknownFormat},
	} {
		file := filepath.Join(dir, tc.name)
		os.WriteFile(file, tc.content, 0o644)
		if _, _, err := template.OpenTar(file); !errors.Is(err, tc.is) {
			t.Errorf("%s: %v, want %v", tc.name, err, tc.is)
		}
	}
	// gzip's magic with a broken header: the decompressor refuses it.
	file := filepath.Join(dir, "badgz")
	os.WriteFile(file, []byte{0x1f, 0x8b, 0xff, 0, 0, 0, 0, 0, 0, 0}, 0o644)
	var fe *template.FormatError
	if _, c, err := template.OpenTar(file); !errors.As(err, &fe) || fe.Compression != template.Gzip || c != template.Gzip {
		t.Errorf("a broken gzip header: %v (%q), want a *FormatError for gzip", err, c)
	}
	if _, _, err := template.OpenTar(filepath.Join(dir, "nope")); !errors.Is(err, fs.ErrNotExist) {
		t.Errorf("a missing file: %v", err)
	}
	if _, err := template.Decompress(bytes.NewReader(plain), "bzip2"); !errors.Is(err, template.ErrCompression) {
		t.Errorf("Decompress with an unknown compression: %v", err)
	}
}

func TestDebianArch(t *testing.T) {
	for _, tc := range []struct{ arch, variant, want string }{
		{"amd64", "", "amd64"}, {"arm64", "v8", "arm64"}, {"386", "", "i386"},
		{"arm", "", "armhf"}, {"arm", "v7", "armhf"}, {"arm", "v6", "armhf"}, {"riscv64", "", "riscv64"},
	} {
		if got, err := template.DebianArch(tc.arch, tc.variant); err != nil || got != tc.want {
			t.Errorf("DebianArch(%s, %s) = %q, %v; want %q", tc.arch, tc.variant, got, err, tc.want)
		}
	}
	for _, tc := range [][2]string{{"arm", "v5"}, {"s390x", ""}, {"ppc64le", ""}, {"", ""}} {
		if got, err := template.DebianArch(tc[0], tc[1]); !errors.Is(err, template.ErrArch) {
			t.Errorf("DebianArch(%s, %s) = %q: PVE cannot run it", tc[0], tc[1], got)
		}
	}
}

func elfHeader(order binary.ByteOrder, class byte, m elf.Machine) []byte {
	b := make([]byte, 64)
	copy(b, "\x7fELF")
	b[4] = class
	b[5] = 1
	if order == binary.BigEndian {
		b[5] = 2
	}
	order.PutUint16(b[18:], uint16(m))
	return b
}

func TestArchFromELF(t *testing.T) {
	for _, tc := range []struct {
		name string
		sh   []byte
		link bool // /bin/sh is a symlink to /bin/busybox
		want string
	}{
		{"x86_64", elfHeader(binary.LittleEndian, 2, elf.EM_X86_64), false, "amd64"},
		{"aarch64 through a symlink", elfHeader(binary.LittleEndian, 2, elf.EM_AARCH64), true, "arm64"},
		{"i386", elfHeader(binary.LittleEndian, 1, elf.EM_386), false, "i386"},
		{"arm", elfHeader(binary.LittleEndian, 1, elf.EM_ARM), false, "armhf"},
		{"riscv", elfHeader(binary.LittleEndian, 2, elf.EM_RISCV), false, "riscv64"},
		{"big-endian s390", elfHeader(binary.BigEndian, 2, elf.EM_S390), false, ""},
		{"big-endian byte order read", elfHeader(binary.BigEndian, 2, elf.EM_X86_64), false, "amd64"},
		{"a script", []byte("#!/bin/busybox sh\nexec busybox\n"), false, ""},
		{"too short", []byte("\x7fELF"), false, ""},
		{"no shell", nil, false, ""},
	} {
		t.Run(tc.name, func(t *testing.T) {
			tree := tartree.New()
			if tc.sh != nil {
				content := tc.sh
				file := &tartree.Node{Type: tar.TypeReg, Mode: 0o755, Size: int64(len(content)),
					Open: func() (io.ReadCloser, error) { return io.NopCloser(bytes.NewReader(content)), nil }}
				if tc.link {
					tree.Put("bin/busybox", file)
					tree.Put("bin/sh", &tartree.Node{Type: tar.TypeSymlink, Linkname: "/bin/busybox"})
				} else {
					tree.Put("bin/sh", file)
				}
			}
			if got := template.ArchFromELF(tree); got != tc.want {
				t.Errorf("ArchFromELF = %q, want %q", got, tc.want)
			}
		})
	}
}
