package rootfs

import (
	"io"
	"log"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"

	"github.com/google/go-containerregistry/pkg/name"
	"github.com/google/go-containerregistry/pkg/registry"
	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/empty"
	"github.com/google/go-containerregistry/pkg/v1/layout"
	"github.com/google/go-containerregistry/pkg/v1/remote"
	rspec "github.com/opencontainers/runtime-spec/specs-go"

	"github.com/nexcage/nexcage/internal/atomicfile"
	"github.com/nexcage/nexcage/internal/testenv"
	"github.com/nexcage/nexcage/internal/testimage"
)

var (
	corpusOnce sync.Once
	corpus     map[string]testimage.Case
	corpusErr  error
)

func corpusCase(t testing.TB, name string) testimage.Case {
	t.Helper()
	corpusOnce.Do(func() {
		cases, err := testimage.Corpus()
		corpus, corpusErr = map[string]testimage.Case{}, err
		for _, c := range cases {
			corpus[c.Name] = c
		}
	})
	if corpusErr != nil {
		t.Fatal(corpusErr)
	}
	c, ok := corpus[name]
	if !ok {
		t.Fatalf("no corpus case %q", name)
	}
	return c
}

func allCases(t testing.TB) []testimage.Case {
	t.Helper()
	corpusCase(t, "whiteouts")
	cases, _ := testimage.Corpus()
	return cases
}

// recordingRegistry is go-containerregistry's in-process registry with a
// hook in front, so tests can count or break requests.
type recordingRegistry struct {
	host string
	mu   sync.Mutex
	hook func(w http.ResponseWriter, r *http.Request) bool // true: handled
	gets map[string]int                                    // blob GETs by path
}

func newRegistry(t testing.TB) *recordingRegistry {
	t.Helper()
	rr := &recordingRegistry{gets: map[string]int{}}
	inner := registry.New(registry.Logger(log.New(io.Discard, "", 0)))
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		rr.mu.Lock()
		hook := rr.hook
		if r.Method == http.MethodGet && strings.Contains(r.URL.Path, "/blobs/") {
			rr.gets[r.URL.Path]++
		}
		rr.mu.Unlock()
		if hook != nil && hook(w, r) {
			return
		}
		inner.ServeHTTP(w, r)
	}))
	t.Cleanup(srv.Close)
	rr.host = strings.TrimPrefix(srv.URL, "http://")
	return rr
}

func (rr *recordingRegistry) blobGets() int {
	rr.mu.Lock()
	defer rr.mu.Unlock()
	n := 0
	for _, c := range rr.gets {
		n += c
	}
	return n
}

func (rr *recordingRegistry) push(t testing.TB, repoTag string, c testimage.Case) Ref {
	t.Helper()
	ref, err := name.ParseReference(rr.host + "/" + repoTag)
	if err != nil {
		t.Fatal(err)
	}
	// A transport of its own, closed after the push: the default one would
	// keep sockets that leak checks count against the code under test.
	tr := http.DefaultTransport.(*http.Transport).Clone()
	defer tr.CloseIdleConnections()
	if c.Index != nil {
		err = remote.WriteIndex(ref, c.Index, remote.WithTransport(tr))
	} else {
		err = remote.Write(ref, c.Image, remote.WithTransport(tr))
	}
	if err != nil {
		t.Fatalf("push %s: %v", repoTag, err)
	}
	r, err := ParseRef("docker://" + rr.host + "/" + repoTag)
	if err != nil {
		t.Fatal(err)
	}
	return r
}

// writeLayout stores a case as an OCI layout tagged tag and returns its ref.
func writeLayout(t testing.TB, dir, tag string, c testimage.Case) Ref {
	t.Helper()
	p, err := layout.FromPath(dir)
	if err != nil {
		if p, err = layout.Write(dir, empty.Index); err != nil {
			t.Fatal(err)
		}
	}
	ann := layout.WithAnnotations(map[string]string{refNameAnnotation: tag})
	if c.Index != nil {
		err = p.AppendIndex(c.Index, ann)
	} else {
		err = p.AppendImage(c.Image, ann)
	}
	if err != nil {
		t.Fatal(err)
	}
	r, err := ParseRef("oci:" + dir + ":" + tag)
	if err != nil {
		t.Fatal(err)
	}
	return r
}

func newStore(t testing.TB) *Store {
	t.Helper()
	s, err := OpenStore(filepath.Join(t.TempDir(), "store"))
	if err != nil {
		t.Fatal(err)
	}
	return s
}

// leakCheckedStore is newStore for a test that checks it leaks nothing
// (testenv.CheckLeaks, called first): the store lives in the test's own
// TMPDIR, so what the store leaves behind counts too.
func leakCheckedStore(t *testing.T) *Store {
	t.Helper()
	testenv.CheckLeaks(t)
	return newStore(t)
}

// specOf is readSpec for a test: a config.json that is missing or not
// JSON fails it.
func specOf(t testing.TB, path string) *rspec.Spec {
	t.Helper()
	spec, err := readSpec(path)
	if err != nil {
		t.Fatalf("config.json unusable: %v", err)
	}
	return spec
}

func amd64() SourceOptions {
	return SourceOptions{Platform: Platform{OS: "linux", Architecture: "amd64"}}
}

// noLeftovers fails when a directory holds nexcage temporary names.
func noLeftovers(t testing.TB, dir string) {
	t.Helper()
	filepath.Walk(dir, func(p string, fi os.FileInfo, err error) error {
		if err == nil && atomicfile.IsTemp(p) {
			t.Errorf("temporary file left behind: %s", p)
		}
		return nil
	})
}

func digestOf(t testing.TB, img v1.Image) string {
	t.Helper()
	d, err := img.Digest()
	if err != nil {
		t.Fatal(err)
	}
	return d.String()
}
