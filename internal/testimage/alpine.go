package testimage

import (
	"archive/tar"
	"bufio"
	"compress/gzip"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"runtime"
	"strings"
	"sync"

	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/tarball"
	"github.com/google/go-containerregistry/pkg/v1/types"
)

// alpineTarballs maps the architectures Alpine accepts to their minirootfs
// in the images directory and the platform it is published as.
var alpineTarballs = map[string]struct {
	file     string
	platform v1.Platform
	apkArch  string // content of /etc/apk/arch in that tarball
}{
	"amd64": {"alpine-minirootfs-3.20.3-x86_64.tar.gz", v1.Platform{OS: "linux", Architecture: "amd64"}, "x86_64"},
	"arm64": {"alpine-minirootfs-3.20.3-aarch64.tar.gz", v1.Platform{OS: "linux", Architecture: "arm64", Variant: "v8"}, "aarch64"},
}

// ImagesDir is the repository's testdata/images directory, which holds the
// Alpine minirootfs tarballs and their SHA256SUMS. It is found from this
// source file's own path, fixed at compile time, so it never depends on the
// working directory and never looks outside the repository.
func ImagesDir() (string, error) {
	_, file, _, ok := runtime.Caller(0)
	if !ok || !filepath.IsAbs(file) {
		return "", fmt.Errorf("testimage: cannot locate the repository from %q (built with -trimpath?): run the tests from a checkout with go test", file)
	}
	dir := filepath.Join(filepath.Dir(file), "..", "..", "testdata", "images")
	if !hasSums(dir) {
		return "", fmt.Errorf("testimage: %s has no SHA256SUMS: the test images are missing from this checkout (git checkout -- testdata/images)", dir)
	}
	return dir, nil
}

func hasSums(dir string) bool {
	fi, err := os.Stat(filepath.Join(dir, "SHA256SUMS"))
	return err == nil && fi.Mode().IsRegular()
}

// Alpine returns the real Alpine 3.20.3 minirootfs for arch "amd64" or
// "arm64" as a one-layer gzip OCI image. The layer blob is the tarball's
// bytes as-is, read from ImagesDir on demand (never copied), so the
// layer digest is the SHA256SUMS entry; a mismatch is reported rather than
// served, since a swapped or truncated tarball would make every test using
// it misleading.
func Alpine(arch string) (v1.Image, error) {
	layer, err := alpineLayer(arch)
	if err != nil {
		return nil, err
	}
	return Image([]v1.Layer{layer}, alpineConfig(), alpineTarballs[arch].platform, false)
}

// WriteAlpineLayout writes Alpine amd64 (see Alpine) to an OCI layout at
// dir, tagged tag: the image "oci:DIR:TAG" a test pulls like any other.
func WriteAlpineLayout(dir, tag string) error {
	img, err := Alpine("amd64")
	if err != nil {
		return err
	}
	return WriteLayout(dir, tag, Case{Name: "alpine", Image: img})
}

// AlpineTar opens the Alpine minirootfs tarball for arch ("amd64" or
// "arm64") and returns its tar stream, gunzipped; Close closes the file.
// It is for tests that rewrite the archive (a PVE template's "./" names,
// extra members); a test wanting an image uses Alpine.
func AlpineTar(arch string) (io.ReadCloser, error) {
	dir, file, err := alpineFile(arch)
	if err != nil {
		return nil, err
	}
	f, err := os.Open(filepath.Join(dir, file))
	if err != nil {
		return nil, fmt.Errorf("testimage: %w", err)
	}
	zr, err := gzip.NewReader(f)
	if err != nil {
		f.Close()
		return nil, fmt.Errorf("testimage: %s: %w", file, err)
	}
	return gunzipped{zr, f}, nil
}

// gunzipped reads the decompressed stream and closes the file under it.
type gunzipped struct {
	*gzip.Reader
	f *os.File
}

func (g gunzipped) Close() error {
	g.Reader.Close()
	return g.f.Close()
}

// AlpineIndex returns an OCI index of Alpine amd64 and arm64.
func AlpineIndex() (v1.ImageIndex, error) {
	var images []v1.Image
	var platforms []v1.Platform
	for _, arch := range []string{"amd64", "arm64"} {
		img, err := Alpine(arch)
		if err != nil {
			return nil, err
		}
		images = append(images, img)
		platforms = append(platforms, alpineTarballs[arch].platform)
	}
	return imageIndex(images, platforms), nil
}

func alpineConfig() v1.Config {
	return v1.Config{Cmd: []string{"/bin/sh"}, Env: []string{pathEnv}}
}

// alpineLayers caches verified Alpine layers by tarball path. Building one
// hashes and gunzips a 4 MB file, which adds up when every test calls
// Corpus. Only the digests are cached: the layer still streams from the
// file, and the tarballs are read-only release artefacts.
var alpineLayers sync.Map // path -> v1.Layer

// alpineFile is the directory and name of arch's minirootfs tarball.
func alpineFile(arch string) (dir, file string, err error) {
	t, ok := alpineTarballs[arch]
	if !ok {
		return "", "", fmt.Errorf("testimage: no Alpine tarball for arch %q (have amd64, arm64)", arch)
	}
	dir, err = ImagesDir()
	return dir, t.file, err
}

func alpineLayer(arch string) (v1.Layer, error) {
	dir, file, err := alpineFile(arch)
	if err != nil {
		return nil, err
	}
	want, err := sumFor(dir, file)
	if err != nil {
		return nil, err
	}
	path := filepath.Join(dir, file)
	if l, ok := alpineLayers.Load(path); ok {
		return l.(v1.Layer), nil
	}
	// LayerFromOpener sniffs gzip and then serves the file itself as the
	// compressed blob: no recompression, so the digest is the file's sha256.
	layer, err := tarball.LayerFromOpener(func() (io.ReadCloser, error) { return os.Open(path) },
		tarball.WithMediaType(types.OCILayer))
	if err != nil {
		return nil, fmt.Errorf("testimage: alpine %s: %w", arch, err)
	}
	got, err := layer.Digest()
	if err != nil {
		return nil, err
	}
	if got.Hex != want {
		return nil, fmt.Errorf("testimage: %s has sha256 %s but SHA256SUMS says %s", path, got.Hex, want)
	}
	alpineLayers.Store(path, layer)
	return layer, nil
}

// sumFor reads file's hash from dir/SHA256SUMS (sha256sum output format).
func sumFor(dir, file string) (string, error) {
	f, err := os.Open(filepath.Join(dir, "SHA256SUMS"))
	if err != nil {
		return "", fmt.Errorf("testimage: %w", err)
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		fields := strings.Fields(sc.Text())
		// sha256sum marks binary mode with a leading '*' on the name.
		if len(fields) == 2 && strings.TrimPrefix(fields[1], "*") == file {
			return strings.ToLower(fields[0]), nil
		}
	}
	if err := sc.Err(); err != nil {
		return "", fmt.Errorf("testimage: reading SHA256SUMS: %w", err)
	}
	return "", errors.New("testimage: " + file + " is not listed in " + filepath.Join(dir, "SHA256SUMS"))
}

// alpineCorpus is the Alpine part of the corpus: the plain minirootfs and an
// "application" image on top of it whose config exercises every field the
// LXC conversion has to carry over.
func alpineCorpus() ([]Case, error) {
	base, err := alpineLayer("amd64")
	if err != nil {
		return nil, err
	}
	plain, err := Image([]v1.Layer{base}, alpineConfig(), alpineTarballs["amd64"].platform, false)
	if err != nil {
		return nil, err
	}
	alpineExpect := []Expect{
		{Path: "etc/alpine-release", Type: tar.TypeReg, Body: "3.20.3\n"},
		{Path: "etc/apk/arch", Type: tar.TypeReg, Body: "x86_64\n"},
		{Path: "bin/sh", Type: tar.TypeSymlink, Target: "/bin/busybox"},
		{Path: "bin/busybox", Type: tar.TypeReg, Mode: 0o755},
		{Path: "tmp", Type: tar.TypeDir, Mode: 0o1777},
	}

	app, err := Layer([]Entry{
		Dir("app/", 0o755),
		File("app/run.sh", 0o755, "#!/bin/sh\necho \"hello from app: $GREETING\"\nexec \"$@\"\n"),
	}, Gzip)
	if err != nil {
		return nil, err
	}
	appCfg := v1.Config{
		Entrypoint:   []string{"/app/run.sh"},
		Cmd:          []string{"sleep", "infinity"},
		Env:          []string{pathEnv, "GREETING=hello world", "APP_MODE=test"},
		WorkingDir:   "/app",
		User:         "1000:1000",
		Volumes:      map[string]struct{}{"/data": {}},
		ExposedPorts: map[string]struct{}{"8080/tcp": {}, "5353/udp": {}},
		StopSignal:   "SIGTERM",
		Labels: map[string]string{
			"org.opencontainers.image.title": "nexcage-test-app",
			"org.nexcage.testimage.case":     "alpine-app",
		},
	}
	appImg, err := Image([]v1.Layer{base, app}, appCfg, alpineTarballs["amd64"].platform, false)
	if err != nil {
		return nil, err
	}

	process, err := processCases(alpineExpect)
	if err != nil {
		return nil, err
	}
	return append([]Case{
		{
			Name: "alpine-amd64", Image: plain, Compression: Gzip,
			About:  "the real Alpine 3.20.3 x86_64 minirootfs, layer blob byte-identical to the release tarball",
			Expect: alpineExpect,
		},
		{
			Name: "alpine-app", Image: appImg, Compression: Gzip,
			About: "Alpine plus an app layer, with Entrypoint, Cmd, Env, WorkingDir /app, User 1000:1000, " +
				"Volumes /data, ExposedPorts, StopSignal and Labels set",
			Expect: append(append([]Expect(nil), alpineExpect...),
				Expect{Path: "app/run.sh", Type: tar.TypeReg, Mode: 0o755, Body: "#!/bin/sh\necho \"hello from app: $GREETING\"\nexec \"$@\"\n"}),
		},
	}, process...), nil
}
