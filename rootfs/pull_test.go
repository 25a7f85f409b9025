package rootfs

import (
	"archive/tar"
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"github.com/nexcage/nexcage/internal/testenv"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"

	"github.com/google/go-containerregistry/pkg/name"
	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/tarball"
	"github.com/google/go-containerregistry/pkg/v1/types"
)

func TestPullMultiArchChoosesPlatform(t *testing.T) {
	rr := newRegistry(t)
	ref := rr.push(t, "multi:1", corpusCase(t, "multiarch"))
	s := newStore(t)
	ctx := context.Background()

	amd, err := s.Pull(ctx, ref, PullOptions{SourceOptions: amd64()})
	if err != nil {
		t.Fatal(err)
	}
	arm, err := s.Pull(ctx, ref, PullOptions{SourceOptions: SourceOptions{Platform: Platform{OS: "linux", Architecture: "arm64"}}})
	if err != nil {
		t.Fatal(err)
	}
	if amd.Digest == arm.Digest || amd.Platform != "linux/amd64" || arm.Platform != "linux/arm64/v8" {
		t.Fatalf("pulled %s %s and %s %s, want distinct amd64 and arm64/v8 images", amd.Platform, amd.Digest, arm.Platform, arm.Digest)
	}
	list, err := s.List()
	if err != nil || len(list) != 2 {
		t.Fatalf("store lists %v (%v), want both platforms", list, err)
	}
	if got, ok, _ := s.Find(ref, Platform{OS: "linux", Architecture: "arm64", Variant: "v8"}); !ok || got.Digest != arm.Digest {
		t.Fatalf("Find arm64/v8 = %v %v", got, ok)
	}
	// Each platform's content is its own: /etc/arch says which.
	for _, img := range []Image{amd, arm} {
		b := filepath.Join(t.TempDir(), "b")
		if _, err := s.Unpack(ctx, img, b, UnpackOptions{}); err != nil {
			t.Fatal(err)
		}
		got, _ := os.ReadFile(filepath.Join(b, "rootfs/etc/arch"))
		want := strings.Split(img.Platform, "/")[1]
		if !strings.Contains(string(got), want) {
			t.Errorf("%s: /etc/arch = %q, want %q", img.Platform, got, want)
		}
	}
}

func TestPullMissingPlatformListsOffered(t *testing.T) {
	rr := newRegistry(t)
	ref := rr.push(t, "multi:1", corpusCase(t, "multiarch"))
	_, err := newStore(t).Pull(context.Background(), ref, PullOptions{SourceOptions: SourceOptions{Platform: Platform{OS: "linux", Architecture: "s390x"}}})
	if !errors.Is(err, ErrPlatform) {
		t.Fatalf("err = %v, want ErrPlatform", err)
	}
	for _, w := range []string{"linux/s390x", "linux/amd64", "linux/arm64/v8", "ask for one of them"} {
		if !strings.Contains(err.Error(), w) {
			t.Errorf("error %q does not mention %q", err, w)
		}
	}
	// The platforms are fields too: a front end names its own way to ask
	// for one (the CLI's --platform), which the library does not.
	var pe *PlatformError
	if !errors.As(err, &pe) || pe.Single || strings.Join(pe.Offered, " ") != "linux/amd64 linux/arm64/v8" || strings.Contains(err.Error(), "--") {
		t.Errorf("err = %#v, want a *PlatformError offering linux/amd64 and linux/arm64/v8, naming no flag", err)
	}
}

func TestPullSinglePlatformMismatch(t *testing.T) {
	rr := newRegistry(t)
	ref := rr.push(t, "one:1", corpusCase(t, "modes"))
	_, err := newStore(t).Pull(context.Background(), ref, PullOptions{SourceOptions: SourceOptions{Platform: Platform{OS: "linux", Architecture: "arm64"}}})
	var pe *PlatformError
	if !errors.Is(err, ErrPlatform) || !errors.As(err, &pe) || !pe.Single || pe.Offered[0] != "linux/amd64" || !strings.Contains(err.Error(), "ask for linux/amd64") || strings.Contains(err.Error(), "--") {
		t.Fatalf("err = %v, want a single-platform *PlatformError suggesting linux/amd64, naming no flag", err)
	}
}

func TestPullNotFoundNamesReference(t *testing.T) {
	testenv.CheckLeaks(t)
	rr := newRegistry(t)
	rr.push(t, "there:1", corpusCase(t, "modes"))
	ref, _ := ParseRef(rr.host + "/there:2")
	s := newStore(t)
	_, err := s.Pull(context.Background(), ref, PullOptions{SourceOptions: amd64()})
	if !errors.Is(err, ErrNotFound) || !strings.Contains(err.Error(), ref.String()) {
		t.Fatalf("err = %v, want ErrNotFound naming %s", err, ref)
	}
	if list, _ := s.List(); len(list) != 0 {
		t.Fatalf("a failed pull recorded %v", list)
	}
}

func TestPullUnauthorizedSaysHowToLogIn(t *testing.T) {
	rr := newRegistry(t)
	rr.hook = func(w http.ResponseWriter, r *http.Request) bool {
		if r.URL.Path == "/v2/" {
			return false
		}
		w.WriteHeader(http.StatusUnauthorized)
		return true
	}
	ref, _ := ParseRef(rr.host + "/private:1")
	_, err := newStore(t).Pull(context.Background(), ref, PullOptions{SourceOptions: amd64()})
	if !errors.Is(err, ErrUnauthorized) || !strings.Contains(err.Error(), "login") {
		t.Fatalf("err = %v, want ErrUnauthorized with login advice", err)
	}
}

func TestPullDockerImageIsStoredAsOCI(t *testing.T) {
	rr := newRegistry(t)
	c := corpusCase(t, "docker-v2s2")
	ref := rr.push(t, "docker:1", c)
	s := newStore(t)
	img, err := s.Pull(context.Background(), ref, PullOptions{SourceOptions: amd64()})
	if err != nil {
		t.Fatal(err)
	}
	if img.SourceDigest != digestOf(t, c.Image) {
		t.Errorf("source digest %s, want the registry's %s", img.SourceDigest, digestOf(t, c.Image))
	}
	if img.Digest == img.SourceDigest {
		t.Error("a Docker manifest rewritten with OCI media types must have a new digest")
	}
	m, err := s.ociManifest(img.Digest)
	if err != nil {
		t.Fatal(err)
	}
	if m.MediaType != string(types.OCIManifestSchema1) || m.Config.MediaType != string(types.OCIConfigJSON) {
		t.Errorf("stored manifest %s with config %s, want OCI types", m.MediaType, m.Config.MediaType)
	}
	for _, l := range m.Layers {
		if l.MediaType != string(types.OCILayer) {
			t.Errorf("layer %s has media type %s, want %s", l.Digest, l.MediaType, types.OCILayer)
		}
	}
	// The config and layer bytes are the source's, so diff_ids still match.
	srcCfg, _ := c.Image.ConfigName()
	if m.Config.Digest.String() != srcCfg.String() {
		t.Errorf("config digest %s, want the source's %s", m.Config.Digest, srcCfg)
	}
	if _, err := s.Unpack(context.Background(), img, filepath.Join(t.TempDir(), "b"), UnpackOptions{}); err != nil {
		t.Fatalf("unpack of the converted image: %v", err)
	}
}

func TestPullOCIManifestKeepsDigest(t *testing.T) {
	rr := newRegistry(t)
	c := corpusCase(t, "modes")
	ref := rr.push(t, "oci:1", c)
	img, err := newStore(t).Pull(context.Background(), ref, PullOptions{SourceOptions: amd64()})
	if err != nil {
		t.Fatal(err)
	}
	if img.Digest != digestOf(t, c.Image) || img.SourceDigest != img.Digest {
		t.Fatalf("stored %s (source %s), want the registry's digest %s unchanged", img.Digest, img.SourceDigest, digestOf(t, c.Image))
	}
}

func TestPullReusesStoredBlobs(t *testing.T) {
	rr := newRegistry(t)
	ref := rr.push(t, "reuse:1", corpusCase(t, "whiteouts"))
	s := newStore(t)
	if _, err := s.Pull(context.Background(), ref, PullOptions{SourceOptions: amd64()}); err != nil {
		t.Fatal(err)
	}
	first := rr.blobGets()
	if first == 0 {
		t.Fatal("the first pull fetched no blobs")
	}
	if _, err := s.Pull(context.Background(), ref, PullOptions{SourceOptions: amd64()}); err != nil {
		t.Fatal(err)
	}
	// The config is read again to check the platform; layers are not.
	if again := rr.blobGets() - first; again > 1 {
		t.Fatalf("the second pull fetched %d blobs, want at most the config", again)
	}
}

func TestPullRefusesCorruptBlob(t *testing.T) {
	testenv.CheckLeaks(t)
	rr := newRegistry(t)
	c := corpusCase(t, "modes")
	ref := rr.push(t, "corrupt:1", c)
	layers, _ := c.Image.Layers()
	bad, _ := layers[len(layers)-1].Digest()
	rr.hook = func(w http.ResponseWriter, r *http.Request) bool {
		if r.Method != http.MethodGet || !strings.HasSuffix(r.URL.Path, bad.String()) {
			return false
		}
		rc, _ := layers[len(layers)-1].Compressed()
		b, _ := io.ReadAll(rc)
		b[len(b)/2] ^= 0xff
		w.Write(b)
		return true
	}
	s := newStore(t)
	_, err := s.Pull(context.Background(), ref, PullOptions{SourceOptions: amd64()})
	if !errors.Is(err, ErrDigestMismatch) || !strings.Contains(err.Error(), bad.String()) {
		t.Fatalf("err = %v, want a digest mismatch naming %s", err, bad)
	}
	if _, err := os.Stat(s.BlobPath(bad)); !os.IsNotExist(err) {
		t.Errorf("the corrupt blob was stored: %v", err)
	}
	noLeftovers(t, s.Dir)
	if list, _ := s.List(); len(list) != 0 {
		t.Fatalf("a failed pull recorded %v", list)
	}
}

func TestPullRetriesServerErrors(t *testing.T) {
	testenv.CheckLeaks(t)
	rr := newRegistry(t)
	ref := rr.push(t, "flaky:1", corpusCase(t, "modes"))
	var mu sync.Mutex
	failed := map[string]bool{}
	rr.hook = func(w http.ResponseWriter, r *http.Request) bool {
		mu.Lock()
		defer mu.Unlock()
		if strings.Contains(r.URL.Path, "/blobs/") && !failed[r.URL.Path] {
			failed[r.URL.Path] = true
			w.WriteHeader(http.StatusInternalServerError)
			return true
		}
		return false
	}
	if _, err := newStore(t).Pull(context.Background(), ref, PullOptions{SourceOptions: amd64()}); err != nil {
		t.Fatalf("a 500 followed by 200 must be retried: %v", err)
	}
	if len(failed) == 0 {
		t.Fatal("the hook never failed a request; the test proves nothing")
	}
}

func TestConcurrentPullsShareOneStore(t *testing.T) {
	rr := newRegistry(t)
	names := []string{"modes", "whiteouts", "opaque", "symlinks", "hardlink-lower"}
	refs := make([]Ref, len(names))
	for i, n := range names {
		refs[i] = rr.push(t, n+":1", corpusCase(t, n))
	}
	s := newStore(t)
	var wg sync.WaitGroup
	errs := make([]error, len(refs))
	for i := range refs {
		wg.Add(1)
		go func() {
			defer wg.Done()
			// A second Store value on the same directory, as a second
			// process would have.
			s2, err := OpenStore(s.Dir)
			if err == nil {
				_, err = s2.Pull(context.Background(), refs[i], PullOptions{SourceOptions: amd64()})
			}
			errs[i] = err
		}()
	}
	wg.Wait()
	for i, err := range errs {
		if err != nil {
			t.Errorf("pull %s: %v", refs[i], err)
		}
	}
	list, err := s.List()
	if err != nil || len(list) != len(names) {
		t.Fatalf("store lists %d images (%v), want %d", len(list), err, len(names))
	}
	noLeftovers(t, s.Dir)
}

// TestPullFromLayoutAndArchives pulls an image from each local transport
// (an OCI layout, the same as an oci-archive, a docker-archive with and
// without its tag) and refuses ambiguous or missing layout references.
func TestPullFromLayoutAndArchives(t *testing.T) {
	dir := t.TempDir()
	c := corpusCase(t, "symlinks")
	layoutRef := writeLayout(t, filepath.Join(dir, "layout"), "v1", c)
	writeLayout(t, filepath.Join(dir, "layout"), "v2", corpusCase(t, "modes"))

	// oci-archive: the same layout as a tar, as skopeo writes it.
	archive := filepath.Join(dir, "img.tar")
	tarDir(t, filepath.Join(dir, "layout"), archive)
	archiveRef, _ := ParseRef("oci-archive:" + archive + ":v1")

	// docker-archive: what `docker save` writes.
	dockerTar := filepath.Join(dir, "docker.tar")
	tag, _ := name.NewTag("example.com/app:1")
	if err := tarball.WriteToFile(dockerTar, tag, c.Image); err != nil {
		t.Fatal(err)
	}
	dockerRef, _ := ParseRef("docker-archive:" + dockerTar + ":example.com/app:1")
	dockerUntagged, _ := ParseRef("docker-archive:" + dockerTar)

	s := newStore(t)
	want := digestOf(t, c.Image)
	for _, tc := range []struct {
		name string
		ref  Ref
		// sameImage: the store holds the very image written (a docker
		// archive holds it converted to Docker's manifest; it must unpack).
		sameImage bool
	}{
		{"oci layout", layoutRef, true},
		{"oci-archive", archiveRef, true},
		{"docker-archive tagged", dockerRef, false},
		{"docker-archive untagged", dockerUntagged, false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			img, err := s.Pull(context.Background(), tc.ref, PullOptions{SourceOptions: amd64()})
			if err != nil {
				t.Fatalf("pull %s: %v", tc.ref, err)
			}
			if tc.sameImage && img.Digest != want {
				t.Errorf("pull %s stored %s, want %s", tc.ref, img.Digest, want)
			}
			if !tc.sameImage {
				if _, err := s.Unpack(context.Background(), img, filepath.Join(t.TempDir(), "b"), UnpackOptions{}); err != nil {
					t.Fatalf("unpack %s: %v", tc.ref, err)
				}
			}
		})
	}

	for _, tc := range []struct {
		name, ref string
		notFound  bool
		words     string
	}{
		// An untagged layout reference is ambiguous with two images.
		{"untagged, two images in the layout", "oci:" + filepath.Join(dir, "layout"), false, "v1, v2"},
		{"missing tag", "oci:" + filepath.Join(dir, "layout") + ":v9", true, "v9"},
		{"missing layout", "oci:" + dir + "/nowhere:v1", true, ""},
	} {
		t.Run(tc.name, func(t *testing.T) {
			ref, err := ParseRef(tc.ref)
			if err != nil {
				t.Fatal(err)
			}
			_, err = s.Pull(context.Background(), ref, PullOptions{SourceOptions: amd64()})
			if err == nil || (tc.notFound && !errors.Is(err, ErrNotFound)) || !strings.Contains(err.Error(), tc.words) {
				t.Errorf("pull: %v, want an error (ErrNotFound: %v) saying %q", err, tc.notFound, tc.words)
			}
		})
	}
}

func TestPullRecordsIndexAnnotations(t *testing.T) {
	dir := t.TempDir()
	ref := writeLayout(t, filepath.Join(dir, "layout"), "v1", corpusCase(t, "modes"))
	s := newStore(t)
	img, err := s.Pull(context.Background(), ref, PullOptions{SourceOptions: amd64()})
	if err != nil {
		t.Fatal(err)
	}
	raw, _ := os.ReadFile(filepath.Join(s.Dir, "index.json"))
	var idx v1.IndexManifest
	if err := json.Unmarshal(raw, &idx); err != nil {
		t.Fatal(err)
	}
	d := idx.Manifests[0]
	if d.Annotations[refNameAnnotation] != ref.String() || d.Platform == nil || d.Platform.Architecture != "amd64" || img.Size <= 0 || img.Pulled.IsZero() {
		t.Fatalf("index entry %+v / image %+v lacks reference, platform, size or time", d, img)
	}
}

// tarDir writes the directory src as a tar archive dst (an OCI layout as
// the oci-archive skopeo writes).
func tarDir(t testing.TB, src, dst string) {
	t.Helper()
	var b bytes.Buffer
	tw := tar.NewWriter(&b)
	if err := tw.AddFS(os.DirFS(src)); err != nil {
		t.Fatal(err)
	}
	if err := tw.Close(); err != nil {
		t.Fatal(fmt.Errorf("close %s: %w", dst, err))
	}
	if err := os.WriteFile(dst, b.Bytes(), 0o644); err != nil {
		t.Fatal(err)
	}
}

// Resolve reads an oci-archive's metadata only (its layers, here one over
// the size it copies out, are skipped) and still gives the digest a pull
// records, so a build can check a local archive every time.
func TestResolveLocalSources(t *testing.T) {
	defer func(old int64) { resolveMaxBlob = old }(resolveMaxBlob)
	resolveMaxBlob = 64 << 10 // under the Alpine layer, over every JSON blob
	dir := t.TempDir()
	c := corpusCase(t, "alpine-amd64")
	layoutRef := writeLayout(t, filepath.Join(dir, "layout"), "v1", c)
	archive := filepath.Join(dir, "img.tar")
	tarDir(t, filepath.Join(dir, "layout"), archive)
	archiveRef, _ := ParseRef("oci-archive:" + archive + ":v1")
	s := newStore(t)
	for _, ref := range []Ref{layoutRef, archiveRef} {
		img, err := s.Pull(context.Background(), ref, PullOptions{SourceOptions: amd64()})
		if err != nil {
			t.Fatal(err)
		}
		got, err := Resolve(context.Background(), ref, amd64())
		if err != nil {
			t.Fatalf("resolve %s: %v", ref, err)
		}
		if got != img.SourceDigest {
			t.Errorf("resolve %s = %s, the pull recorded %s", ref, got, img.SourceDigest)
		}
		// Without Resolve's fallback to reading everything.
		src, err := openSourceLimit(context.Background(), ref, amd64(), resolveMaxBlob)
		if err != nil {
			t.Fatalf("%s, metadata only: %v", ref, err)
		}
		if src.digest.String() != img.SourceDigest {
			t.Errorf("%s, metadata only: %s, the pull recorded %s", ref, src.digest, img.SourceDigest)
		}
		src.Close()
	}
	big := false
	filepath.Walk(filepath.Join(dir, "layout", "blobs"), func(_ string, fi os.FileInfo, err error) error {
		if err == nil && fi.Size() > resolveMaxBlob {
			big = true
		}
		return nil
	})
	if !big {
		t.Error("no blob over the size Resolve copies out: the test proves nothing")
	}
}

// TestRegistryTransportErrorsAreTyped: a plain-HTTP registry and an
// unverifiable certificate are sentinels a caller decides on, in words
// that name no command-line flag (the CLI adds --insecure).
func TestRegistryTransportErrorsAreTyped(t *testing.T) {
	for _, tc := range []struct {
		name string
		tls  bool
		kind error
		word string
	}{
		{"plain HTTP", false, ErrPlainHTTP, "speaks plain HTTP"},
		{"untrusted certificate", true, ErrUntrustedCert, "cannot be verified"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			ref, err := ParseRef(testenv.Registry404On127002(t, tc.tls) + "/x:1")
			if err != nil {
				t.Fatal(err)
			}
			_, err = newStore(t).Pull(context.Background(), ref, PullOptions{})
			if !errors.Is(err, tc.kind) || !strings.Contains(err.Error(), tc.word) || strings.Contains(err.Error(), "--") {
				t.Errorf("err = %v, want %v saying %q and naming no flag", err, tc.kind, tc.word)
			}
		})
	}
}

// TestStoreDirErrorIsTyped: a store that cannot be created is
// ErrStoreDir, naming no flag.
func TestStoreDirErrorIsTyped(t *testing.T) {
	file := filepath.Join(t.TempDir(), "file")
	if err := os.WriteFile(file, nil, 0o644); err != nil {
		t.Fatal(err)
	}
	_, err := OpenStore(filepath.Join(file, "store"))
	if !errors.Is(err, ErrStoreDir) || !strings.Contains(err.Error(), "not a directory") || strings.Contains(err.Error(), "--") {
		t.Errorf("err = %v, want ErrStoreDir with the cause, naming no flag", err)
	}
}
