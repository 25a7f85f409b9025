package testenv_test

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"runtime"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/google/go-containerregistry/pkg/name"
	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/layout"
	"github.com/google/go-containerregistry/pkg/v1/random"
	"github.com/google/go-containerregistry/pkg/v1/remote"

	"github.com/nexcage/nexcage/internal/testenv"
)

// httpGet uses its own keep-alive-free client so the test leaves no idle
// connection goroutines behind.
func httpGet(t *testing.T, url string) (int, http.Header, string) {
	t.Helper()
	ctx, cancel := context.WithTimeout(t.Context(), 5*time.Second)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
	if err != nil {
		t.Fatal(err)
	}
	client := &http.Client{Transport: &http.Transport{DisableKeepAlives: true}}
	resp, err := client.Do(req)
	if err != nil {
		t.Fatalf("GET %s: %v", url, err)
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(io.LimitReader(resp.Body, 1<<20))
	if err != nil {
		t.Fatalf("GET %s: read body: %v", url, err)
	}
	return resp.StatusCode, resp.Header, string(body)
}

func catalog(t *testing.T, addr string) []string {
	t.Helper()
	code, _, body := httpGet(t, "http://"+addr+"/v2/_catalog")
	if code != http.StatusOK {
		t.Fatalf("GET /v2/_catalog: status %d, body %q", code, body)
	}
	var c struct {
		Repositories []string `json:"repositories"`
	}
	if err := json.Unmarshal([]byte(body), &c); err != nil {
		t.Fatalf("/v2/_catalog body %q: %v", body, err)
	}
	return c.Repositories
}

func diffIDs(t *testing.T, img v1.Image) []v1.Hash {
	t.Helper()
	cfg, err := img.ConfigFile()
	if err != nil {
		t.Fatalf("config file: %v", err)
	}
	return cfg.RootFS.DiffIDs
}

func sameHashes(a, b []v1.Hash) bool {
	if len(a) != len(b) {
		return false
	}
	for i := range a {
		if a[i] != b[i] {
			return false
		}
	}
	return true
}

func TestRegistryPushPullAndSkopeo(t *testing.T) {
	addr := testenv.Registry(t)
	if !strings.HasPrefix(addr, "127.0.0.1:") {
		t.Fatalf("Registry() = %q, want 127.0.0.1:PORT", addr)
	}

	code, hdr, body := httpGet(t, "http://"+addr+"/v2/")
	if code != http.StatusOK {
		t.Fatalf("GET /v2/: status %d, body %q", code, body)
	}
	if v := hdr.Get("Docker-Distribution-Api-Version"); v != "registry/2.0" {
		t.Fatalf("GET /v2/: Docker-Distribution-Api-Version = %q", v)
	}
	if repos := catalog(t, addr); len(repos) != 0 {
		t.Fatalf("fresh registry catalog = %v, want empty", repos)
	}

	ctx, cancel := context.WithTimeout(t.Context(), time.Minute)
	defer cancel()

	img, err := random.Image(512, 2)
	if err != nil {
		t.Fatal(err)
	}
	wantDigest, err := img.Digest()
	if err != nil {
		t.Fatal(err)
	}
	ref, err := name.ParseReference(addr+"/testenv/random:v1", name.Insecure)
	if err != nil {
		t.Fatal(err)
	}
	if err := remote.Write(ref, img, remote.WithContext(ctx)); err != nil {
		t.Fatalf("remote.Write %s: %v", ref, err)
	}

	desc, err := remote.Get(ref, remote.WithContext(ctx))
	if err != nil {
		t.Fatalf("remote.Get %s: %v", ref, err)
	}
	if desc.Digest != wantDigest {
		t.Fatalf("pulled digest %s, pushed %s", desc.Digest, wantDigest)
	}
	pulled, err := desc.Image()
	if err != nil {
		t.Fatal(err)
	}
	want := diffIDs(t, img)
	if got := diffIDs(t, pulled); !sameHashes(got, want) {
		t.Fatalf("pulled diff IDs %v, pushed %v", got, want)
	}
	if repos := catalog(t, addr); len(repos) != 1 || repos[0] != "testenv/random" {
		t.Fatalf("catalog after push = %v, want [testenv/random]", repos)
	}

	// Registry -> OCI layout: the direction the converter's fixtures take.
	ociDir := filepath.Join(t.TempDir(), "oci")
	testenv.SkopeoCopy(t, "docker://"+addr+"/testenv/random:v1", "oci:"+ociDir+":v1")
	lp, err := layout.FromPath(ociDir)
	if err != nil {
		t.Fatalf("skopeo did not write an OCI layout at %s: %v", ociDir, err)
	}
	idx, err := lp.ImageIndex()
	if err != nil {
		t.Fatal(err)
	}
	im, err := idx.IndexManifest()
	if err != nil {
		t.Fatal(err)
	}
	if len(im.Manifests) != 1 || im.Manifests[0].Annotations["org.opencontainers.image.ref.name"] != "v1" {
		t.Fatalf("OCI index manifests = %+v, want one tagged v1", im.Manifests)
	}
	local, err := lp.Image(im.Manifests[0].Digest)
	if err != nil {
		t.Fatal(err)
	}
	if got := diffIDs(t, local); !sameHashes(got, want) {
		t.Fatalf("OCI layout diff IDs %v, pushed %v", got, want)
	}
	layers, err := local.Layers()
	if err != nil {
		t.Fatal(err)
	}
	for _, l := range layers {
		d, err := l.Digest()
		if err != nil {
			t.Fatal(err)
		}
		if _, err := os.Stat(filepath.Join(ociDir, "blobs", d.Algorithm, d.Hex)); err != nil {
			t.Fatalf("layer blob %s missing from layout: %v", d, err)
		}
	}

	// OCI layout -> registry: how tests publish images they built.
	testenv.SkopeoCopy(t, "oci:"+ociDir+":v1", "docker://"+addr+"/testenv/copied:v2")
	ref2, err := name.ParseReference(addr+"/testenv/copied:v2", name.Insecure)
	if err != nil {
		t.Fatal(err)
	}
	copied, err := remote.Image(ref2, remote.WithContext(ctx))
	if err != nil {
		t.Fatalf("remote.Image %s: %v", ref2, err)
	}
	if got := diffIDs(t, copied); !sameHashes(got, want) {
		t.Fatalf("re-pushed diff IDs %v, want %v", got, want)
	}
}

func TestRegistryStopsAtCleanup(t *testing.T) {
	var addr string
	var skipped bool
	t.Run("inner", func(t *testing.T) {
		defer func() { skipped = t.Skipped() }()
		addr = testenv.Registry(t)
		if code, _, body := httpGet(t, "http://"+addr+"/v2/"); code != http.StatusOK {
			t.Fatalf("GET /v2/: %d %q", code, body)
		}
	})
	if skipped {
		t.Skip("the inner test skipped: no registry to stop (-short, or docker-registry missing)")
	}
	if addr == "" {
		t.Fatal("inner test did not start a registry")
	}
	client := &http.Client{Timeout: 2 * time.Second, Transport: &http.Transport{DisableKeepAlives: true}}
	resp, err := client.Get("http://" + addr + "/v2/")
	if err == nil {
		resp.Body.Close()
		t.Fatalf("registry at %s still answers after its test's cleanup", addr)
	}
}

func TestRegistriesAreIndependent(t *testing.T) {
	a, b := testenv.Registry(t), testenv.Registry(t)
	if a == b {
		t.Fatalf("two registries share %s", a)
	}
	img, err := random.Image(64, 1)
	if err != nil {
		t.Fatal(err)
	}
	ref, err := name.ParseReference(a+"/only/here:v1", name.Insecure)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(t.Context(), 30*time.Second)
	defer cancel()
	if err := remote.Write(ref, img, remote.WithContext(ctx)); err != nil {
		t.Fatalf("remote.Write %s: %v", ref, err)
	}
	if repos := catalog(t, b); len(repos) != 0 {
		t.Fatalf("push to %s showed up in %s: %v", a, b, repos)
	}
}

// fakeTB records what the helpers would report. Fatal and Skip end the
// calling goroutine just as testing.T does, so helpers that rely on that
// behave the same.
type fakeTB struct {
	testing.TB
	mu      sync.Mutex
	fatal   string
	skipped string
}

func (f *fakeTB) Helper() {}
func (f *fakeTB) Fatalf(format string, args ...any) {
	f.mu.Lock()
	f.fatal = fmt.Sprintf(format, args...)
	f.mu.Unlock()
	runtime.Goexit()
}
func (f *fakeTB) Skip(args ...any) {
	f.mu.Lock()
	f.skipped = fmt.Sprint(args...)
	f.mu.Unlock()
	runtime.Goexit()
}

// runFake runs fn against a fakeTB in its own goroutine, as Goexit needs.
func runFake(t *testing.T, fn func(tb testing.TB)) *fakeTB {
	t.Helper()
	f := &fakeTB{TB: t}
	done := make(chan struct{})
	go func() {
		defer close(done)
		fn(f)
	}()
	select {
	case <-done:
	case <-time.After(30 * time.Second):
		t.Fatal("helper under test did not return within 30s")
	}
	return f
}

func TestRequireTool(t *testing.T) {
	p := testenv.RequireTool(t, "sh")
	if !filepath.IsAbs(p) {
		t.Fatalf("RequireTool(sh) = %q, want an absolute path", p)
	}

	const missing = "nexcage-no-such-tool"
	t.Setenv(testenv.EnvRequireTools, "")
	f := runFake(t, func(tb testing.TB) { testenv.RequireTool(tb, missing) })
	if f.fatal != "" || !strings.Contains(f.skipped, missing) || !strings.Contains(f.skipped, "scripts/install-deps.sh") {
		t.Fatalf("without %s: skipped=%q fatal=%q; want a skip naming the tool and the install script",
			testenv.EnvRequireTools, f.skipped, f.fatal)
	}

	t.Setenv(testenv.EnvRequireTools, "1")
	f = runFake(t, func(tb testing.TB) { testenv.RequireTool(tb, missing) })
	if f.skipped != "" || !strings.Contains(f.fatal, missing) {
		t.Fatalf("with %s=1: skipped=%q fatal=%q; want a failure", testenv.EnvRequireTools, f.skipped, f.fatal)
	}

	f = runFake(t, func(tb testing.TB) { testenv.RequireTool(tb, "debootstrap") })
	if f.skipped == "" && f.fatal == "" {
		// Found even if /usr/sbin is not on PATH.
		t.Setenv("PATH", "/usr/bin:/bin")
		if p := testenv.RequireTool(t, "debootstrap"); !filepath.IsAbs(p) {
			t.Fatalf("RequireTool(debootstrap) with sbin off PATH = %q", p)
		}
	}
}

func TestRequireRoot(t *testing.T) {
	t.Setenv(testenv.EnvRequireRoot, "1")
	f := runFake(t, func(tb testing.TB) { testenv.RequireRoot(tb) })
	if os.Geteuid() == 0 {
		if f.fatal != "" || f.skipped != "" {
			t.Fatalf("as root: fatal=%q skipped=%q", f.fatal, f.skipped)
		}
	} else if f.fatal == "" {
		t.Fatalf("non-root with %s=1 did not fail", testenv.EnvRequireRoot)
	}
}

func TestRun(t *testing.T) {
	sh := testenv.RequireTool(t, "sh")
	out := testenv.Run(t, sh, "-c", "echo out; echo err >&2")
	if !strings.Contains(out, "out") || !strings.Contains(out, "err") {
		t.Fatalf("Run output %q lacks stdout or stderr", out)
	}

	f := runFake(t, func(tb testing.TB) { testenv.Run(tb, sh, "-c", "echo boom; exit 3", "arg with space") })
	if !strings.Contains(f.fatal, "boom") || !strings.Contains(f.fatal, "exit status 3") ||
		!strings.Contains(f.fatal, "'arg with space'") {
		t.Fatalf("failure message %q should carry the command line, exit status and output", f.fatal)
	}
}

func TestRunTimeoutKillsProcessTree(t *testing.T) {
	sh := testenv.RequireTool(t, "sh")
	pidFile := filepath.Join(t.TempDir(), "grandchild.pid")
	start := time.Now()
	// The background sleep is a grandchild holding the output pipe open: a
	// naive timeout would kill sh and then wait for the pipe forever.
	f := runFake(t, func(tb testing.TB) {
		testenv.RunTimeout(tb, 300*time.Millisecond, sh, "-c", "sleep 60 & echo $! >"+pidFile+"; wait")
	})
	if el := time.Since(start); el > 10*time.Second {
		t.Fatalf("RunTimeout returned after %v, want shortly after 300ms", el)
	}
	if !strings.Contains(f.fatal, "timeout") {
		t.Fatalf("failure message %q does not mention the timeout", f.fatal)
	}
	b, err := os.ReadFile(pidFile)
	if err != nil {
		t.Fatalf("grandchild pid: %v", err)
	}
	pid := strings.TrimSpace(string(b))
	deadline := time.Now().Add(5 * time.Second)
	for {
		// /proc/PID gone (or a zombie awaiting init's reaping) means killed.
		stat, err := os.ReadFile("/proc/" + pid + "/stat")
		if err != nil || strings.Contains(string(stat), ") Z ") {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("grandchild sleep %s survived the timeout", pid)
		}
		time.Sleep(20 * time.Millisecond)
	}
}
