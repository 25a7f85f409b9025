package testimage

import (
	"archive/tar"
	"bytes"
	"compress/gzip"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"testing"

	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/types"
	"github.com/klauspost/compress/zstd"

	"github.com/nexcage/nexcage/internal/testenv"
)

// Why not pkg/v1/validate: it imports github.com/google/go-cmp, which is
// neither required in go.mod nor summed in go.sum, so using it means editing
// both. validate would also reject the zstd and uncompressed cases (it
// gunzips every layer) and the duplicate case (it refuses repeated paths).
// validateImage/validateIndex below make the same consistency checks (and a
// few more), for every compression.

func corpus(t *testing.T) []Case {
	t.Helper()
	cases, err := Corpus()
	if err != nil {
		t.Fatal(err)
	}
	return cases
}

func caseByName(t *testing.T, cases []Case, name string) Case {
	t.Helper()
	for _, c := range cases {
		if c.Name == name {
			return c
		}
	}
	t.Fatalf("no case %q", name)
	return Case{}
}

func TestCorpusValidates(t *testing.T) {
	for _, c := range corpus(t) {
		t.Run(c.Name, func(t *testing.T) {
			var err error
			if c.Index != nil {
				err = validateIndex(c.Index)
			} else {
				err = validateImage(c.Image)
			}
			if err != nil {
				t.Fatal(err)
			}
		})
	}
}

func TestHostileValidates(t *testing.T) {
	imgs, err := Hostile()
	if err != nil {
		t.Fatal(err)
	}
	for name, img := range imgs {
		if err := validateImage(img); err != nil {
			t.Errorf("%s: %v", name, err)
		}
	}
}

func TestCorpusShape(t *testing.T) {
	cases := corpus(t)
	want := []string{
		"whiteouts", "opaque", "type-changes", "hardlink-lower", "devices", "modes", "xattrs", "ids",
		"longnames", "duplicate", "no-parents", "dot-prefixed", "symlinks", "docker-v2s2", "zstd",
		"uncompressed", "multiarch", "alpine-amd64", "alpine-app",
		"alpine-argv", "alpine-shell-form", "alpine-highid-user", "alpine-named-user", "alpine-system",
	}
	var got []string
	// Names become image tags and file names: lower-case tag grammar, no '/'.
	tagSafe := regexp.MustCompile(`^[a-z0-9][a-z0-9._-]{0,127}$`)
	rootOnly := map[string]bool{"devices": true, "xattrs": true, "ids": true, "alpine-highid-user": true}
	for _, c := range cases {
		got = append(got, c.Name)
		if !tagSafe.MatchString(c.Name) {
			t.Errorf("%s: not usable as a tag", c.Name)
		}
		if (c.Image == nil) == (c.Index == nil) {
			t.Errorf("%s: exactly one of Image and Index must be set", c.Name)
		}
		if c.RootOnly != rootOnly[c.Name] {
			t.Errorf("%s: RootOnly=%v", c.Name, c.RootOnly)
		}
		if c.About == "" {
			t.Errorf("%s: no About", c.Name)
		}
		if c.Index == nil && len(c.Expect) == 0 {
			t.Errorf("%s: no expectations", c.Name)
		}
		wantMT, err := c.Compression.MediaType()
		if err != nil {
			t.Fatal(err)
		}
		for _, img := range caseImages(t, c) {
			layers, err := img.Layers()
			if err != nil {
				t.Fatal(err)
			}
			for i, l := range layers {
				if mt, _ := l.MediaType(); mt != wantMT {
					t.Errorf("%s: layer %d is %s, Compression says %s", c.Name, i, mt, wantMT)
				}
			}
		}
	}
	if uniq := slices.Compact(slices.Sorted(slices.Values(got))); len(uniq) != len(got) {
		t.Errorf("duplicate case names in %v", got)
	}
	for _, name := range want {
		if !slices.Contains(got, name) {
			t.Errorf("missing case %q (have %v)", name, got)
		}
	}
}

func TestCorpusDeterministic(t *testing.T) {
	digests := func() map[string]v1.Hash {
		out := map[string]v1.Hash{}
		for _, c := range corpus(t) {
			var d v1.Hash
			var err error
			if c.Index != nil {
				d, err = c.Index.Digest()
			} else {
				d, err = c.Image.Digest()
			}
			if err != nil {
				t.Fatal(err)
			}
			out[c.Name] = d
		}
		return out
	}
	a, b := digests(), digests()
	for name, d := range a {
		if b[name] != d {
			t.Errorf("%s: digest %s then %s", name, d, b[name])
		}
	}
}

// The cases umoci cannot unpack directly must carry exactly the tars of
// their Gzip twin, or the twin is no oracle for them.
func TestTwinsShareDiffIDs(t *testing.T) {
	cases := corpus(t)
	n := 0
	for _, c := range cases {
		if c.SameDiffIDsAs == "" {
			continue
		}
		n++
		twin := caseByName(t, cases, c.SameDiffIDsAs)
		if twin.Compression != Gzip {
			t.Errorf("%s: twin %s is %s, want gzip", c.Name, twin.Name, twin.Compression)
		}
		got, want := diffIDs(t, c.Image), diffIDs(t, twin.Image)
		if !slices.Equal(got, want) {
			t.Errorf("%s: diff IDs %v, twin %s has %v", c.Name, got, twin.Name, want)
		}
		d1, _ := c.Image.Digest()
		d2, _ := twin.Image.Digest()
		if d1 == d2 {
			t.Errorf("%s: same manifest digest as its twin", c.Name)
		}
	}
	if n != 3 {
		t.Errorf("%d cases with twins, want 3 (docker-v2s2, zstd, uncompressed)", n)
	}
}

func TestMediaTypes(t *testing.T) {
	for _, c := range corpus(t) {
		docker := c.Name == "docker-v2s2"
		wantManifest, wantConfig := types.OCIManifestSchema1, types.OCIConfigJSON
		if docker {
			wantManifest, wantConfig = types.DockerManifestSchema2, types.DockerConfigJSON
		}
		for _, img := range caseImages(t, c) {
			m, err := img.Manifest()
			if err != nil {
				t.Fatal(err)
			}
			if mt, _ := img.MediaType(); mt != wantManifest || m.MediaType != wantManifest {
				t.Errorf("%s: manifest media type %s / %s, want %s", c.Name, mt, m.MediaType, wantManifest)
			}
			if m.Config.MediaType != wantConfig {
				t.Errorf("%s: config media type %s, want %s", c.Name, m.Config.MediaType, wantConfig)
			}
			for i, l := range m.Layers {
				if isDocker := l.MediaType == types.DockerLayer; isDocker != docker {
					t.Errorf("%s: layer %d media type %s", c.Name, i, l.MediaType)
				}
			}
		}
	}
	c := caseByName(t, corpus(t), "uncompressed")
	layers, _ := c.Image.Layers()
	for i, l := range layers {
		d, _ := l.Digest()
		id, _ := l.DiffID()
		if d != id {
			t.Errorf("uncompressed layer %d: digest %s != diff ID %s", i, d, id)
		}
	}
}

func TestMultiarch(t *testing.T) {
	c := caseByName(t, corpus(t), "multiarch")
	im, err := c.Index.IndexManifest()
	if err != nil {
		t.Fatal(err)
	}
	if im.MediaType != types.OCIImageIndex {
		t.Errorf("index media type %s", im.MediaType)
	}
	arch := map[string]string{}
	for _, d := range im.Manifests {
		if d.Platform == nil {
			t.Fatalf("descriptor %s has no platform", d.Digest)
		}
		img, err := c.Index.Image(d.Digest)
		if err != nil {
			t.Fatal(err)
		}
		cf, err := img.ConfigFile()
		if err != nil {
			t.Fatal(err)
		}
		if !cf.Platform().Equals(*d.Platform) {
			t.Errorf("descriptor platform %s, config platform %s", d.Platform, cf.Platform())
		}
		layers, _ := img.Layers()
		arch[d.Platform.String()] = string(fileInLayer(t, layers[len(layers)-1], "etc/arch"))
	}
	want := map[string]string{"linux/amd64": "amd64\n", "linux/arm64/v8": "arm64\n"}
	if fmt.Sprint(arch) != fmt.Sprint(want) {
		t.Errorf("platform -> /etc/arch = %q, want %q", arch, want)
	}
}

// layerChecks pins, per hand-made case, the tar-level property the case
// exists for, so an edit to the table cannot silently defeat its purpose.
var layerChecks = map[string]func(t *testing.T, layers [][]*tar.Header){
	"whiteouts": func(t *testing.T, layers [][]*tar.Header) {
		mustHave(t, layers[2], "wh/.wh.gone-file", "wh/.wh.gone-dir", "etc/.wh.hostname", "wh/.wh.never-existed")
		mustHave(t, layers[1], "wh/gone-dir/sub/deep")
	},
	"opaque": func(t *testing.T, layers [][]*tar.Header) {
		names := headerNames(layers[2])
		// One marker first, one after same-layer content: order is the point.
		if i, j := slices.Index(names, "op/.wh..wh..opq"), slices.Index(names, "op/new"); i < 0 || i > j {
			t.Errorf("op marker should precede op/new: %v", names)
		}
		if i, j := slices.Index(names, "op-late/.wh..wh..opq"), slices.Index(names, "op-late/new"); i < j {
			t.Errorf("op-late marker should follow op-late/new: %v", names)
		}
	},
	"type-changes": func(t *testing.T, layers [][]*tar.Header) {
		lower, upper := typesByName(layers[1]), typesByName(layers[2])
		for name, want := range map[string][2]byte{
			"tc/file2dir":  {tar.TypeReg, tar.TypeDir},
			"tc/dir2file":  {tar.TypeDir, tar.TypeReg},
			"tc/link2file": {tar.TypeSymlink, tar.TypeReg},
			"tc/file2link": {tar.TypeReg, tar.TypeSymlink},
			"tc/dir2link":  {tar.TypeDir, tar.TypeSymlink},
			"tc/link2dir":  {tar.TypeSymlink, tar.TypeDir},
		} {
			if got := [2]byte{lower[name], upper[name]}; got != want {
				t.Errorf("%s: types %q, want %q", name, got, want)
			}
		}
		if slices.ContainsFunc(layers[2], func(h *tar.Header) bool { return strings.Contains(h.Name, ".wh.") }) {
			t.Error("type changes must work without whiteouts")
		}
	},
	"hardlink-lower": func(t *testing.T, layers [][]*tar.Header) {
		h := byName(layers[2])["hl/link-to-lower"]
		if h == nil || h.Typeflag != tar.TypeLink || h.Linkname != "hl/lower-file" {
			t.Errorf("hl/link-to-lower = %+v", h)
		}
		mustHave(t, layers[1], "hl/lower-file")
		if slices.Contains(headerNames(layers[2]), "hl/lower-file") {
			t.Error("link target must live only in the lower layer")
		}
	},
	"devices": func(t *testing.T, layers [][]*tar.Header) {
		n := byName(layers[1])
		if h := n["devices/null"]; h.Typeflag != tar.TypeChar || h.Devmajor != 1 || h.Devminor != 3 {
			t.Errorf("null: %+v", h)
		}
		if h := n["devices/loop0"]; h.Typeflag != tar.TypeBlock || h.Devmajor != 7 || h.Devminor != 0 {
			t.Errorf("loop0: %+v", h)
		}
		if h := n["devices/fifo"]; h.Typeflag != tar.TypeFifo {
			t.Errorf("fifo: %+v", h)
		}
	},
	"modes": func(t *testing.T, layers [][]*tar.Header) {
		n := byName(layers[1])
		for name, mode := range map[string]int64{"modes/setuid": 0o4755, "modes/setgid": 0o2755, "modes/sticky/": 0o1777, "modes/private": 0o600} {
			if n[name].Mode != mode {
				t.Errorf("%s: mode %#o, want %#o", name, n[name].Mode, mode)
			}
		}
	},
	"xattrs": func(t *testing.T, layers [][]*tar.Header) {
		n := byName(layers[1])
		if got := n["xattrs/user"].PAXRecords["SCHILY.xattr.user.foo"]; got != "bar" {
			t.Errorf("user.foo = %q", got)
		}
		caps := n["xattrs/ping"].PAXRecords["SCHILY.xattr.security.capability"]
		want, _ := hex.DecodeString("0100000200200000000000000000000000000000")
		if caps != string(want) {
			t.Errorf("security.capability = %x, want %x", caps, want)
		}
	},
	"ids": func(t *testing.T, layers [][]*tar.Header) {
		n := byName(layers[1])
		if h := n["ids/uid70000-gid70001"]; h.Uid != 70000 || h.Gid != 70001 {
			t.Errorf("uid/gid %d:%d", h.Uid, h.Gid)
		}
		if h := n["ids/uid100000"]; h.Uid != 100000 || h.Uname != "" {
			t.Errorf("uid %d uname %q", h.Uid, h.Uname)
		}
	},
	"longnames": func(t *testing.T, layers [][]*tar.Header) {
		n := byName(layers[1])
		for _, name := range []string{long120, deepPath, name255, "café/日本語.txt"} {
			h := n[name]
			if h == nil || h.Format&tar.FormatPAX == 0 {
				t.Errorf("%q: not PAX-encoded: %+v", name, h)
			}
		}
		if len(deepPath) <= 255 || len(long120) <= 100+len("longnames/") {
			t.Error("long names are not long enough")
		}
		if h := n["longnames/long-target"]; len(h.Linkname) <= 100 || h.Format&tar.FormatPAX == 0 {
			t.Errorf("long symlink target: %+v", h)
		}
	},
	"duplicate": func(t *testing.T, layers [][]*tar.Header) {
		names := headerNames(layers[1])
		for _, dup := range []string{"dup/file", "dup/dir/"} {
			if c := countOf(names, dup); c != 2 {
				t.Errorf("%s appears %d times in one layer", dup, c)
			}
		}
	},
	"no-parents": func(t *testing.T, layers [][]*tar.Header) {
		names := headerNames(layers[1])
		for _, dir := range []string{"noparents/", "noparents/a/", "noparents/a/b/", "noparents/a/b/c/", "noparents/x/"} {
			if slices.Contains(names, dir) {
				t.Errorf("%s has an entry", dir)
			}
		}
		if names[len(names)-1] != "noparents/late/" {
			t.Errorf("explicit late dir should come last: %v", names)
		}
	},
	"dot-prefixed": func(t *testing.T, layers [][]*tar.Header) {
		names := headerNames(layers[1])
		if names[0] != "./" {
			t.Errorf("first entry %q, want ./", names[0])
		}
		for _, h := range layers[1] {
			if !strings.HasPrefix(h.Name, "./") || (h.Typeflag == tar.TypeLink && !strings.HasPrefix(h.Linkname, "./")) {
				t.Errorf("not ./-prefixed: %q -> %q", h.Name, h.Linkname)
			}
		}
	},
	"symlinks": func(t *testing.T, layers [][]*tar.Header) {
		n := byName(layers[1])
		if n["sl/absolute"].Linkname != "/etc/hostname" || n["sl/loop"].Linkname != "loop" {
			t.Errorf("targets: %q %q", n["sl/absolute"].Linkname, n["sl/loop"].Linkname)
		}
	},
}

// TestHandMadeLayers reads every hand-made layer back: entries are
// consistent (directories are TypeDir with a trailing slash, fixed mtime,
// root-owned outside "ids") and each case has its distinctive property.
func TestHandMadeLayers(t *testing.T) {
	cases := corpus(t)
	for name := range layerChecks {
		caseByName(t, cases, name) // every check belongs to a real case
	}
	for _, c := range cases {
		if strings.HasPrefix(c.Name, "alpine") {
			continue
		}
		t.Run(c.Name, func(t *testing.T) {
			for _, img := range caseImages(t, c) {
				layers := layerHeaders(t, img)
				base, want := headerNames(layers[0]), headerNames(entriesHeaders(baseEntries()))
				if c.Name == "runs" {
					// Its own lowest layer holds the base's entries among
					// its others, in archive order.
					base = slices.DeleteFunc(base, func(n string) bool { return n == "./" || strings.HasPrefix(n, "d") })
					slices.Sort(want)
				}
				if !slices.Equal(base, want) {
					t.Errorf("first layer is not the base: %.300v", base)
				}
				for li, hs := range layers {
					for _, h := range hs {
						if (h.Typeflag == tar.TypeDir) != strings.HasSuffix(h.Name, "/") {
							t.Errorf("layer %d %q: typeflag %q vs trailing slash", li, h.Name, h.Typeflag)
						}
						if !h.ModTime.Equal(epoch) {
							t.Errorf("layer %d %q: mtime %v", li, h.Name, h.ModTime)
						}
						if c.Name != "ids" && (h.Uid != 0 || h.Gid != 0) {
							t.Errorf("layer %d %q: owner %d:%d", li, h.Name, h.Uid, h.Gid)
						}
					}
				}
				if check := layerChecks[c.Name]; check != nil {
					check(t, layers)
				}
			}
		})
	}
}

func TestHostile(t *testing.T) {
	imgs, err := Hostile()
	if err != nil {
		t.Fatal(err)
	}
	type link struct{ name, linkname string }
	want := map[string][]link{
		"dotdot":                 {{"../escape", ""}},
		"absolute":               {{"/etc/evil", ""}},
		"symlink-escape":         {{"evil", "../../../../tmp"}, {"evil/pwned", ""}},
		"hardlink-escape":        {{"h", "../../etc/passwd"}},
		"hardlink-abs":           {{"h", "/etc/shadow"}},
		"whiteout-dotdot":        {{".wh...", ""}},
		"whiteout-dot":           {{"usr/", ""}, {"usr/.wh..", ""}},
		"whiteout-empty":         {{".wh.", ""}},
		"symlink-missing-escape": {{"a", "nonexist/../../../../tmp"}, {"a/pwned", ""}},
		"hardlink-via-symlink":   {{"s", "../../../etc"}, {"h", "s/passwd"}},
	}
	if len(imgs) != len(want) {
		t.Errorf("got %d hostile images, want %d", len(imgs), len(want))
	}
	for name, entries := range want {
		img := imgs[name]
		if img == nil {
			t.Errorf("missing %s", name)
			continue
		}
		layers := layerHeaders(t, img)
		if len(layers) != 1 {
			t.Errorf("%s: %d layers", name, len(layers))
			continue
		}
		var got []link
		for _, h := range layers[0] {
			got = append(got, link{h.Name, h.Linkname})
		}
		if !slices.Equal(got, entries) {
			t.Errorf("%s: entries %q, want %q verbatim", name, got, entries)
		}
	}
	if h := layerHeaders(t, imgs["hardlink-abs"])[0][0]; h.Typeflag != tar.TypeLink {
		t.Errorf("hardlink-abs: typeflag %q", h.Typeflag)
	}
}

func TestLayerIsVerbatim(t *testing.T) {
	entries := []Entry{
		File("z-last-alphabetically", 0o644, "1"),
		File("./a/../../up", 0o644, "2"),
		File("//double//slash", 0o644, "3"),
		Dir("a", 0o755), // Dir adds the slash
		File("z-last-alphabetically", 0o600, "4"),
	}
	wantNames := []string{"z-last-alphabetically", "./a/../../up", "//double//slash", "a/", "z-last-alphabetically"}
	for _, c := range []Compression{Uncompressed, Gzip, Zstd, DockerGzip} {
		l, err := Layer(entries, c)
		if err != nil {
			t.Fatal(err)
		}
		if mt, _ := l.MediaType(); mt != map[Compression]types.MediaType{
			Uncompressed: types.OCIUncompressedLayer, Gzip: types.OCILayer,
			Zstd: types.OCILayerZStd, DockerGzip: types.DockerLayer,
		}[c] {
			t.Errorf("%s: media type %s", c, mt)
		}
		if err := validateLayer(l); err != nil {
			t.Errorf("%s: %v", c, err)
		}
		if got := headerNames(readHeaders(t, l)); !slices.Equal(got, wantNames) {
			t.Errorf("%s: names %q, want %q", c, got, wantNames)
		}
	}

	gz, _ := Layer(entries[:1], Gzip)
	dk, _ := Layer(entries[:1], DockerGzip)
	if _, err := Image([]v1.Layer{gz}, v1.Config{}, hostPlatform, true); err == nil {
		t.Error("Docker manifest accepted an OCI layer")
	}
	if _, err := Image([]v1.Layer{dk}, v1.Config{}, hostPlatform, false); err == nil {
		t.Error("OCI manifest accepted a Docker layer")
	}
	if _, err := Layer([]Entry{{Hdr: tar.Header{Typeflag: tar.TypeReg, Name: "f", Size: 5}, Body: []byte("abc")}}, Gzip); err == nil {
		t.Error("body shorter than Size was accepted")
	}
}

func TestImageConfig(t *testing.T) {
	cfg := v1.Config{Entrypoint: []string{"/x"}, Env: []string{"A=b"}, User: "1:2"}
	p := v1.Platform{OS: "linux", Architecture: "arm64", Variant: "v8"}
	l, _ := Layer([]Entry{File("f", 0o644, "x")}, Gzip)
	img, err := Image([]v1.Layer{l}, cfg, p, false)
	if err != nil {
		t.Fatal(err)
	}
	cf, err := img.ConfigFile()
	if err != nil {
		t.Fatal(err)
	}
	if !cf.Platform().Equals(p) {
		t.Errorf("platform %s", cf.Platform())
	}
	if cf.Config.Entrypoint[0] != "/x" || cf.Config.User != "1:2" || cf.Config.Env[0] != "A=b" {
		t.Errorf("config %+v", cf.Config)
	}
	if len(cf.History) != 1 || !cf.Created.Equal(epoch) {
		t.Errorf("history %+v created %v", cf.History, cf.Created)
	}
	raw, _ := img.RawConfigFile()
	if !bytes.Contains(raw, []byte(`"created":"2023-11-14T22:13:20Z"`)) {
		t.Errorf("created not a fixed UTC time: %s", raw)
	}
}

func TestImagesDir(t *testing.T) {
	dir, err := ImagesDir()
	if err != nil {
		t.Fatal(err)
	}
	for _, f := range []string{"SHA256SUMS", alpineTarballs["amd64"].file, alpineTarballs["arm64"].file} {
		if _, err := os.Stat(filepath.Join(dir, f)); err != nil {
			t.Error(err)
		}
	}
	// The images are the repository's own, whatever the working directory.
	want, err := filepath.Abs(filepath.Join("..", "..", "testdata", "images"))
	if err != nil {
		t.Fatal(err)
	}
	t.Chdir(t.TempDir())
	got, err := ImagesDir()
	if err != nil || filepath.Clean(got) != want {
		t.Errorf("from elsewhere: got %q, %v; want %q", got, err, want)
	}
}

func TestAlpine(t *testing.T) {
	dir, err := ImagesDir()
	if err != nil {
		t.Fatal(err)
	}
	for arch, tb := range alpineTarballs {
		t.Run(arch, func(t *testing.T) {
			img, err := Alpine(arch)
			if err != nil {
				t.Fatal(err)
			}
			if err := validateImage(img); err != nil {
				t.Fatal(err)
			}
			layers, err := img.Layers()
			if err != nil || len(layers) != 1 {
				t.Fatalf("layers %d, %v", len(layers), err)
			}
			// The blob is the release tarball byte for byte.
			file, err := os.ReadFile(filepath.Join(dir, tb.file))
			if err != nil {
				t.Fatal(err)
			}
			blob := readAll(t, layers[0].Compressed)
			if !bytes.Equal(blob, file) {
				t.Errorf("layer blob (%d bytes) is not %s (%d bytes)", len(blob), tb.file, len(file))
			}
			sum, err := sumFor(dir, tb.file)
			if err != nil {
				t.Fatal(err)
			}
			if d, _ := layers[0].Digest(); d.Hex != sum {
				t.Errorf("digest %s, SHA256SUMS %s", d.Hex, sum)
			}
			// AlpineTar is the same release tarball, gunzipped.
			raw := readAll(t, func() (io.ReadCloser, error) { return AlpineTar(arch) })
			if !bytes.Equal(raw, readAll(t, layers[0].Uncompressed)) {
				t.Errorf("AlpineTar(%q) (%d bytes) is not the layer's tar", arch, len(raw))
			}
			if got := string(fileInLayer(t, layers[0], "./etc/apk/arch")); got != tb.apkArch+"\n" {
				t.Errorf("/etc/apk/arch = %q, want %q", got, tb.apkArch)
			}
			cf, _ := img.ConfigFile()
			if !cf.Platform().Equals(tb.platform) {
				t.Errorf("platform %s, want %s", cf.Platform(), tb.platform)
			}
			if !slices.Equal(cf.Config.Cmd, []string{"/bin/sh"}) || len(cf.Config.Env) == 0 || !strings.HasPrefix(cf.Config.Env[0], "PATH=") {
				t.Errorf("config %+v", cf.Config)
			}
		})
	}
	if _, err := Alpine("riscv64"); err == nil {
		t.Error("unknown arch accepted")
	}
	if _, err := AlpineTar("riscv64"); err == nil {
		t.Error("AlpineTar: unknown arch accepted")
	}

	idx, err := AlpineIndex()
	if err != nil {
		t.Fatal(err)
	}
	if err := validateIndex(idx); err != nil {
		t.Fatal(err)
	}
	im, _ := idx.IndexManifest()
	var plats []string
	for _, d := range im.Manifests {
		plats = append(plats, d.Platform.String())
	}
	if !slices.Equal(plats, []string{"linux/amd64", "linux/arm64/v8"}) {
		t.Errorf("index platforms %v", plats)
	}
}

func TestAlpineApp(t *testing.T) {
	cases := corpus(t)
	app, plain := caseByName(t, cases, "alpine-app"), caseByName(t, cases, "alpine-amd64")
	cf, err := app.Image.ConfigFile()
	if err != nil {
		t.Fatal(err)
	}
	c := cf.Config
	if c.WorkingDir != "/app" || c.User != "1000:1000" || c.StopSignal != "SIGTERM" ||
		len(c.Entrypoint) == 0 || len(c.Cmd) == 0 || len(c.Env) < 2 || len(c.Labels) == 0 || len(c.ExposedPorts) == 0 {
		t.Errorf("config %+v", c)
	}
	if _, ok := c.Volumes["/data"]; !ok {
		t.Errorf("volumes %v", c.Volumes)
	}
	// The app image must reuse the very same Alpine layer.
	if got, want := diffIDs(t, app.Image)[0], diffIDs(t, plain.Image)[0]; got != want {
		t.Errorf("alpine-app base %s, alpine-amd64 %s", got, want)
	}
}

// TestVerify shows Verify reports wrong trees, and accepts right ones.
func TestVerify(t *testing.T) {
	root := t.TempDir()
	testenv.Must(t, os.MkdirAll(filepath.Join(root, "d"), 0o755))
	testenv.Must(t, os.WriteFile(filepath.Join(root, "d/f"), []byte("body"), 0o644))
	testenv.Must(t, os.Chmod(filepath.Join(root, "d/f"), 0o755|os.ModeSetuid)) // Go spells setuid as a FileMode flag, not 04000
	testenv.Must(t, os.Link(filepath.Join(root, "d/f"), filepath.Join(root, "d/hard")))
	testenv.Must(t, os.Symlink("f", filepath.Join(root, "d/link")))
	testenv.Must(t, os.WriteFile(filepath.Join(root, "file"), nil, 0o644))

	ok := []Expect{
		{Path: "d", Type: tar.TypeDir},
		{Path: "d/f", Type: tar.TypeReg, Body: "body", Mode: 0o4755},
		{Path: "d/hard", SameAs: "d/f"},
		{Path: "d/link", Type: tar.TypeSymlink, Target: "f"},
		{Path: "gone", Absent: true},
		{Path: "file/child", Absent: true},
	}
	if err := Verify(root, ok); err != nil {
		t.Errorf("correct tree rejected: %v", err)
	}
	bad := []Expect{
		{Path: "d", Type: tar.TypeReg},
		{Path: "d/f", Body: "other"},
		{Path: "d/f", Mode: 0o755},
		{Path: "d/link", Target: "g"},
		{Path: "d/link", SameAs: "d/f"},
		{Path: "d/f", Absent: true},
		{Path: "missing"},
		{Path: "d/f", Dev: "1:3"},
	}
	err := Verify(root, bad)
	if err == nil {
		t.Fatal("wrong tree accepted")
	}
	if n := strings.Count(err.Error(), "\n") + 1; n != len(bad) {
		t.Errorf("%d errors for %d bad expectations:\n%v", n, len(bad), err)
	}
}

// TestExpectationsAgainstUmoci unpacks the corpus images with the umoci CLI,
// when installed, and checks the Expect tables against the result: the
// tables are only worth something if a reference unpacker agrees. Docker
// media types are refused by every umoci, and zstd by umoci < 0.5 (Debian
// ships 0.4.7); those cases are covered through their twins' diff IDs.
func TestExpectationsAgainstUmoci(t *testing.T) {
	umoci, err := exec.LookPath("umoci")
	if err != nil {
		t.Skip("umoci not installed")
	}
	if testing.Short() {
		t.Skip("-short")
	}
	root := os.Geteuid() == 0
	layout := &ociLayout{dir: t.TempDir()}
	var cases []Case
	for _, c := range corpus(t) {
		if c.Image == nil || c.Compression == DockerGzip || c.Compression == Zstd || (c.RootOnly && !root) {
			continue
		}
		cases = append(cases, c)
		if err := layout.add(c.Name, c.Image); err != nil {
			t.Fatal(err)
		}
	}
	if err := layout.finish(); err != nil {
		t.Fatal(err)
	}
	for _, c := range cases {
		t.Run(c.Name, func(t *testing.T) {
			bundle := filepath.Join(t.TempDir(), "bundle")
			args := []string{"unpack", "--image", layout.dir + ":" + c.Name, bundle}
			if !root {
				args = append([]string{"unpack", "--rootless"}, args[1:]...)
			}
			if out, err := exec.Command(umoci, args...).CombinedOutput(); err != nil {
				t.Fatalf("umoci %v: %v\n%s", args, err, out)
			}
			if err := Verify(filepath.Join(bundle, "rootfs"), c.Expect); err != nil {
				t.Error(err)
			}
		})
	}
}

// ---- helpers ----

func caseImages(t *testing.T, c Case) []v1.Image {
	t.Helper()
	if c.Image != nil {
		return []v1.Image{c.Image}
	}
	im, err := c.Index.IndexManifest()
	if err != nil {
		t.Fatal(err)
	}
	var imgs []v1.Image
	for _, d := range im.Manifests {
		img, err := c.Index.Image(d.Digest)
		if err != nil {
			t.Fatal(err)
		}
		imgs = append(imgs, img)
	}
	return imgs
}

func diffIDs(t *testing.T, img v1.Image) []v1.Hash {
	t.Helper()
	cf, err := img.ConfigFile()
	if err != nil {
		t.Fatal(err)
	}
	return cf.RootFS.DiffIDs
}

func readAll(t *testing.T, open func() (io.ReadCloser, error)) []byte {
	t.Helper()
	rc, err := open()
	if err != nil {
		t.Fatal(err)
	}
	defer rc.Close()
	b, err := io.ReadAll(rc)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// decompress undoes what the media type says was done to the blob.
func decompress(mt types.MediaType, blob []byte) ([]byte, error) {
	switch mt {
	case types.OCIUncompressedLayer, types.DockerUncompressedLayer:
		return blob, nil
	case types.OCILayer, types.DockerLayer:
		zr, err := gzip.NewReader(bytes.NewReader(blob))
		if err != nil {
			return nil, err
		}
		return io.ReadAll(zr)
	case types.OCILayerZStd:
		zr, err := zstd.NewReader(bytes.NewReader(blob))
		if err != nil {
			return nil, err
		}
		defer zr.Close()
		return io.ReadAll(zr)
	}
	return nil, fmt.Errorf("unknown layer media type %s", mt)
}

func sha(b []byte) v1.Hash {
	s := sha256.Sum256(b)
	return v1.Hash{Algorithm: "sha256", Hex: hex.EncodeToString(s[:])}
}

// validateLayer: Digest and Size describe Compressed(); DiffID describes
// both the decompressed blob and Uncompressed(); the tar is readable.
func validateLayer(l v1.Layer) error {
	var errs []error
	mt, err := l.MediaType()
	if err != nil {
		return err
	}
	blob, err := readCloser(l.Compressed)
	if err != nil {
		return err
	}
	d, _ := l.Digest()
	size, _ := l.Size()
	diffID, _ := l.DiffID()
	if sha(blob) != d {
		errs = append(errs, fmt.Errorf("digest %s, sha256(blob) %s", d, sha(blob)))
	}
	if int64(len(blob)) != size {
		errs = append(errs, fmt.Errorf("size %d, len(blob) %d", size, len(blob)))
	}
	raw, err := decompress(mt, blob)
	if err != nil {
		return fmt.Errorf("decompressing %s: %w", mt, err)
	}
	if sha(raw) != diffID {
		errs = append(errs, fmt.Errorf("diff ID %s, sha256(decompressed blob) %s", diffID, sha(raw)))
	}
	unc, err := readCloser(l.Uncompressed)
	if err != nil {
		return err
	}
	if sha(unc) != diffID {
		errs = append(errs, fmt.Errorf("diff ID %s, sha256(Uncompressed()) %s", diffID, sha(unc)))
	}
	tr := tar.NewReader(bytes.NewReader(raw))
	for {
		_, err := tr.Next()
		if err == io.EOF {
			break
		}
		if err != nil && !errors.Is(err, tar.ErrInsecurePath) {
			errs = append(errs, fmt.Errorf("reading tar: %w", err))
			break
		}
	}
	return errors.Join(errs...)
}

// validateImage checks what go-containerregistry's validate.Image checks:
// manifest and config digests and sizes, manifest/config round-trips, and
// every layer's digest, size, media type and diff ID against the manifest
// and the config's rootfs.
func validateImage(img v1.Image) error {
	var errs []error
	bad := func(format string, args ...any) { errs = append(errs, fmt.Errorf(format, args...)) }

	rawManifest, m, err := rawAndParsed(img.RawManifest, img.Manifest)
	if err != nil {
		return err
	}
	if d, _ := img.Digest(); d != sha(rawManifest) {
		bad("manifest digest %s, sha256(raw) %s", d, sha(rawManifest))
	}
	if s, _ := img.Size(); s != int64(len(rawManifest)) {
		bad("manifest size %d, len(raw) %d", s, len(rawManifest))
	}
	if mt, _ := img.MediaType(); mt != m.MediaType {
		bad("MediaType() %s, manifest says %s", mt, m.MediaType)
	}
	if err := sameJSON(m, rawManifest); err != nil {
		bad("manifest: %v", err)
	}

	rawConfig, cf, err := rawAndParsed(img.RawConfigFile, img.ConfigFile)
	if err != nil {
		return err
	}
	if m.Config.Digest != sha(rawConfig) || m.Config.Size != int64(len(rawConfig)) {
		bad("config descriptor %s/%d, raw config %s/%d", m.Config.Digest, m.Config.Size, sha(rawConfig), len(rawConfig))
	}
	if n, _ := img.ConfigName(); n != sha(rawConfig) {
		bad("ConfigName %s, sha256(raw config) %s", n, sha(rawConfig))
	}
	if err := sameJSON(cf, rawConfig); err != nil {
		bad("config: %v", err)
	}
	if cf.RootFS.Type != "layers" {
		bad("rootfs type %q", cf.RootFS.Type)
	}
	if p := cf.Platform(); p == nil || p.OS == "" || p.Architecture == "" {
		bad("config has no platform: %v", p)
	}

	layers, err := img.Layers()
	if err != nil {
		return err
	}
	if len(layers) != len(m.Layers) || len(layers) != len(cf.RootFS.DiffIDs) {
		return fmt.Errorf("%d layers, %d manifest layers, %d diff IDs", len(layers), len(m.Layers), len(cf.RootFS.DiffIDs))
	}
	if len(cf.History) != len(layers) {
		bad("%d history entries for %d layers", len(cf.History), len(layers))
	}
	for i, l := range layers {
		if err := validateLayer(l); err != nil {
			bad("layer %d: %v", i, err)
			continue
		}
		d, _ := l.Digest()
		size, _ := l.Size()
		mt, _ := l.MediaType()
		diffID, _ := l.DiffID()
		desc := m.Layers[i]
		if desc.Digest != d || desc.Size != size || desc.MediaType != mt {
			bad("layer %d: manifest %s/%d/%s, layer %s/%d/%s", i, desc.Digest, desc.Size, desc.MediaType, d, size, mt)
		}
		if cf.RootFS.DiffIDs[i] != diffID {
			bad("layer %d: config diff ID %s, layer %s", i, cf.RootFS.DiffIDs[i], diffID)
		}
		if _, err := img.LayerByDigest(d); err != nil {
			bad("layer %d: LayerByDigest: %v", i, err)
		}
		if _, err := img.LayerByDiffID(diffID); err != nil {
			bad("layer %d: LayerByDiffID: %v", i, err)
		}
	}
	return errors.Join(errs...)
}

// validateIndex checks the index manifest and each child image, including
// that the descriptor's media type, size and platform match the child.
func validateIndex(idx v1.ImageIndex) error {
	var errs []error
	raw, im, err := rawAndParsed(idx.RawManifest, idx.IndexManifest)
	if err != nil {
		return err
	}
	if d, _ := idx.Digest(); d != sha(raw) {
		errs = append(errs, fmt.Errorf("index digest %s, sha256(raw) %s", d, sha(raw)))
	}
	if err := sameJSON(im, raw); err != nil {
		errs = append(errs, fmt.Errorf("index manifest: %w", err))
	}
	if len(im.Manifests) == 0 {
		errs = append(errs, errors.New("empty index"))
	}
	for i, desc := range im.Manifests {
		img, err := idx.Image(desc.Digest)
		if err != nil {
			return err
		}
		if err := validateImage(img); err != nil {
			errs = append(errs, fmt.Errorf("manifest %d: %w", i, err))
			continue
		}
		mt, _ := img.MediaType()
		size, _ := img.Size()
		cf, _ := img.ConfigFile()
		if desc.MediaType != mt || desc.Size != size {
			errs = append(errs, fmt.Errorf("manifest %d: descriptor %s/%d, image %s/%d", i, desc.MediaType, desc.Size, mt, size))
		}
		if desc.Platform == nil || !cf.Platform().Equals(*desc.Platform) {
			errs = append(errs, fmt.Errorf("manifest %d: descriptor platform %v, config %v", i, desc.Platform, cf.Platform()))
		}
	}
	return errors.Join(errs...)
}

// sameJSON reports whether the parsed form v re-encodes to what raw
// decodes to: the object a client reads equals the bytes that are hashed.
// rawAndParsed reads a manifest or config both ways go-containerregistry
// gives it, raw and parsed, for checks that the two agree.
func rawAndParsed[T any](raw func() ([]byte, error), parsed func() (T, error)) ([]byte, T, error) {
	var zero T
	b, err := raw()
	if err != nil {
		return nil, zero, err
	}
	v, err := parsed()
	if err != nil {
		return nil, zero, err
	}
	return b, v, nil
}

func sameJSON(v any, raw []byte) error {
	enc, err := json.Marshal(v)
	if err != nil {
		return err
	}
	var a, b any
	if err := json.Unmarshal(enc, &a); err != nil {
		return err
	}
	if err := json.Unmarshal(raw, &b); err != nil {
		return err
	}
	ea, _ := json.Marshal(a)
	eb, _ := json.Marshal(b)
	if !bytes.Equal(ea, eb) {
		return fmt.Errorf("parsed form differs from raw bytes:\n%s\n%s", ea, eb)
	}
	return nil
}

func readCloser(open func() (io.ReadCloser, error)) ([]byte, error) {
	rc, err := open()
	if err != nil {
		return nil, err
	}
	defer rc.Close()
	return io.ReadAll(rc)
}

func readHeaders(t *testing.T, l v1.Layer) []*tar.Header {
	t.Helper()
	tr := tar.NewReader(bytes.NewReader(readAll(t, l.Uncompressed)))
	var hs []*tar.Header
	for {
		h, err := tr.Next()
		if err == io.EOF {
			return hs
		}
		// Hostile names trip ErrInsecurePath under GODEBUG=tarinsecurepath=0;
		// the header is still valid, and reading it verbatim is the point.
		if err != nil && !errors.Is(err, tar.ErrInsecurePath) {
			t.Fatal(err)
		}
		hs = append(hs, h)
	}
}

func layerHeaders(t *testing.T, img v1.Image) [][]*tar.Header {
	t.Helper()
	layers, err := img.Layers()
	if err != nil {
		t.Fatal(err)
	}
	var out [][]*tar.Header
	for _, l := range layers {
		out = append(out, readHeaders(t, l))
	}
	return out
}

func entriesHeaders(es []Entry) []*tar.Header {
	var hs []*tar.Header
	for _, e := range es {
		hs = append(hs, &e.Hdr)
	}
	return hs
}

func fileInLayer(t *testing.T, l v1.Layer, name string) []byte {
	t.Helper()
	tr := tar.NewReader(bytes.NewReader(readAll(t, l.Uncompressed)))
	for {
		h, err := tr.Next()
		if err == io.EOF {
			t.Fatalf("%s not in layer", name)
		}
		if err != nil {
			t.Fatal(err)
		}
		if h.Name == name {
			b, err := io.ReadAll(tr)
			if err != nil {
				t.Fatal(err)
			}
			return b
		}
	}
}

func headerNames(hs []*tar.Header) []string {
	var names []string
	for _, h := range hs {
		names = append(names, h.Name)
	}
	return names
}

// byName keeps the last header per name, as unpackers do.
func byName(hs []*tar.Header) map[string]*tar.Header {
	m := map[string]*tar.Header{}
	for _, h := range hs {
		m[h.Name] = h
	}
	return m
}

func typesByName(hs []*tar.Header) map[string]byte {
	m := map[string]byte{}
	for _, h := range hs {
		m[strings.TrimSuffix(h.Name, "/")] = h.Typeflag
	}
	return m
}

func mustHave(t *testing.T, hs []*tar.Header, names ...string) {
	t.Helper()
	have := headerNames(hs)
	for _, n := range names {
		if !slices.Contains(have, n) {
			t.Errorf("layer lacks %q: %v", n, have)
		}
	}
}

func countOf(names []string, name string) int {
	n := 0
	for _, x := range names {
		if x == name {
			n++
		}
	}
	return n
}

// ociLayout is a minimal OCI image layout writer: add stores an image's
// blobs under a tag, finish writes index.json. Hand-rolled so this test
// needs no module beyond what the package itself uses (ggcr's layout
// package pulls in golang.org/x/sync, which go.mod did not always have).
type ociLayout struct {
	dir  string
	refs []v1.Descriptor
}

func (o *ociLayout) put(b []byte) error {
	p := filepath.Join(o.dir, "blobs", "sha256", sha(b).Hex)
	if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
		return err
	}
	return os.WriteFile(p, b, 0o644)
}

func (o *ociLayout) add(ref string, img v1.Image) error {
	layers, err := img.Layers()
	if err != nil {
		return err
	}
	var m []byte
	blobs := []func() ([]byte, error){img.RawConfigFile, func() ([]byte, error) {
		m, err = img.RawManifest()
		return m, err
	}}
	for _, l := range layers {
		blobs = append(blobs, func() ([]byte, error) { return readCloser(l.Compressed) })
	}
	for _, blob := range blobs {
		b, err := blob()
		if err == nil {
			err = o.put(b)
		}
		if err != nil {
			return err
		}
	}
	mt, err := img.MediaType()
	if err != nil {
		return err
	}
	o.refs = append(o.refs, v1.Descriptor{
		MediaType: mt, Digest: sha(m), Size: int64(len(m)),
		Annotations: map[string]string{"org.opencontainers.image.ref.name": ref},
	})
	return nil
}

func (o *ociLayout) finish() error {
	idx, err := json.Marshal(v1.IndexManifest{SchemaVersion: 2, MediaType: types.OCIImageIndex, Manifests: o.refs})
	if err != nil {
		return err
	}
	if err := os.WriteFile(filepath.Join(o.dir, "index.json"), idx, 0o644); err != nil {
		return err
	}
	return os.WriteFile(filepath.Join(o.dir, "oci-layout"), []byte(`{"imageLayoutVersion":"1.0.0"}`), 0o644)
}
