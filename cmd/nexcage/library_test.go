package main

import (
	"crypto/sha256"
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"testing"

	"github.com/nexcage/nexcage/internal/testbundle"
	"github.com/nexcage/nexcage/internal/testenv"
	"github.com/nexcage/nexcage/internal/testimage"
)

// TestLibraryModule builds examples/library, a program in a module of its
// own that requires nexcage, and runs it on an OCI layout of the Alpine
// minirootfs: a Go program outside the module can build a template with
// the public API alone, reporting progress with a progress.Reporter of its
// own (an internal type anywhere on that path would not compile there).
// It runs offline: GOPROXY=off, every dependency from the module cache
// the main module's build has filled.
func TestLibraryModule(t *testing.T) {
	goTool := testenv.RequireTool(t, "go")
	root, err := filepath.Abs(filepath.Join("..", ".."))
	if err != nil {
		t.Fatal(err)
	}
	// A copy, so that the go command may complete its go.mod and go.sum
	// (from the main module's, which hold every hash it needs) without
	// touching the checkout, and so it finds nexcage at an absolute path.
	mod := filepath.Join(t.TempDir(), "nexcage-user")
	if err := os.CopyFS(mod, os.DirFS(filepath.Join(root, "examples", "library"))); err != nil {
		t.Fatal(err)
	}
	gomod, err := os.ReadFile(filepath.Join(mod, "go.mod"))
	if err != nil {
		t.Fatal(err)
	}
	replaced := strings.Replace(string(gomod), "=> ../..", "=> "+root, 1)
	if replaced == string(gomod) {
		t.Fatal("examples/library/go.mod has no `replace ... => ../..`: update this test with it")
	}
	sums, err := os.ReadFile(filepath.Join(root, "go.sum"))
	if err != nil {
		t.Fatal(err)
	}
	for name, data := range map[string]string{"go.mod": replaced, "go.sum": string(sums)} {
		if err := os.WriteFile(filepath.Join(mod, name), []byte(data), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	bin := filepath.Join(t.TempDir(), "nexcage-user")
	build := exec.Command(goTool, "build", "-o", bin, ".")
	build.Dir = mod
	build.Env = append(os.Environ(), "GOFLAGS=-mod=mod", "GOPROXY=off", "GOWORK=off", "GOSUMDB=off", "GOTOOLCHAIN=local")
	if out, err := build.CombinedOutput(); err != nil {
		t.Fatalf("go build of examples/library in its own module: %v\n%s", err, out)
	}

	img, err := testimage.Alpine("amd64")
	if err != nil {
		t.Fatal(err)
	}
	work := t.TempDir()
	layout := filepath.Join(work, "layout")
	if err := testimage.WriteAlpineLayout(layout, "3.20"); err != nil {
		t.Fatal(err)
	}
	outDir := filepath.Join(work, "templates")
	run := exec.Command(bin, "oci:"+layout+":3.20", filepath.Join(work, "store"), outDir)
	out, err := run.CombinedOutput()
	if err != nil {
		t.Fatalf("nexcage-user: %v\n%s", err, out)
	}
	t.Logf("nexcage-user:\n%s", out)

	// Its own reporter saw the steps and the layer's bytes.
	_, summary, _ := strings.Cut(string(out), "\nsteps ")
	var steps, items, warnings int
	var bytes int64
	if _, err := fmt.Sscanf(summary, "%d, items %d, bytes %d, warnings %d", &steps, &items, &bytes, &warnings); err != nil {
		t.Fatalf("no progress summary in the output (%v):\n%s", err, out)
	}
	layers, err := img.Layers()
	if err != nil {
		t.Fatal(err)
	}
	size, err := layers[0].Size()
	if err != nil {
		t.Fatal(err)
	}
	if steps == 0 || items == 0 || bytes < size {
		t.Errorf("the program's reporter counted %d steps, %d items, %d bytes: want steps, items, and at least the layer's %d bytes", steps, items, bytes, size)
	}

	// The template decompresses to the Alpine rootfs, and its .json
	// sidecar describes this very file.
	tmpl := regexp.MustCompile(`(?m)^template (\S+)$`).FindStringSubmatch(string(out))
	if tmpl == nil {
		t.Fatalf("no template line in the output:\n%s", out)
	}
	file := tmpl[1]
	if filepath.Dir(file) != outDir || !strings.HasSuffix(file, ".tar.zst") {
		t.Errorf("template %s, want a .tar.zst in %s", file, outDir)
	}
	found := false
	for _, h := range testbundle.Members(t, file) {
		found = found || h.Name == "./etc/alpine-release"
	}
	if !found {
		t.Error("the template has no ./etc/alpine-release")
	}
	data, err := os.ReadFile(file)
	if err != nil {
		t.Fatal(err)
	}
	sum := fmt.Sprintf("%x", sha256.Sum256(data))
	raw, err := os.ReadFile(strings.TrimSuffix(file, ".tar.zst") + ".json")
	if err != nil {
		t.Fatalf("the .json sidecar: %v", err)
	}
	var sidecar struct {
		Template struct {
			File, SHA256 string
			Size         int64
		}
		Arch string
	}
	if err := json.Unmarshal(raw, &sidecar); err != nil {
		t.Fatal(err)
	}
	if sidecar.Template.File != filepath.Base(file) || sidecar.Template.SHA256 != sum ||
		sidecar.Template.Size != int64(len(data)) || sidecar.Arch != "amd64" {
		t.Errorf("sidecar %+v does not describe %s (%d bytes, sha256 %s, amd64)", sidecar, file, len(data), sum)
	}
	if _, err := os.Stat(strings.TrimSuffix(file, ".tar.zst") + ".conf"); err != nil {
		t.Errorf("the .conf sidecar: %v", err)
	}
}
