package main

import (
	"archive/tar"
	"bytes"
	"encoding/json"
	"os"
	"path/filepath"
	"strings"
	"testing"

	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/empty"
	"github.com/google/go-containerregistry/pkg/v1/layout"
	"github.com/google/go-containerregistry/pkg/v1/mutate"

	"github.com/nexcage/nexcage/internal/testimage"
)

// warningsLayout writes an OCI layout with "dev": Alpine plus device nodes
// outside /dev and a VOLUME /data the rootfs lacks; and "high": the same
// plus a file owned by 200000, which fails the build after the warning.
func warningsLayout(t *testing.T) string {
	t.Helper()
	base, err := testimage.Alpine("amd64")
	if err != nil {
		t.Fatal(err)
	}
	devs, err := testimage.Layer([]testimage.Entry{
		testimage.Dir("srv/", 0o755),
		testimage.CharDev("srv/null", 0o666, 1, 3),
		testimage.BlockDev("srv/loop0", 0o660, 7, 0),
	}, testimage.Gzip)
	if err != nil {
		t.Fatal(err)
	}
	img, err := mutate.AppendLayers(base, devs)
	if err != nil {
		t.Fatal(err)
	}
	cf, err := img.ConfigFile()
	if err != nil {
		t.Fatal(err)
	}
	cfg := cf.Config
	cfg.Volumes = map[string]struct{}{"/data": {}}
	if img, err = mutate.Config(img, cfg); err != nil {
		t.Fatal(err)
	}
	high, err := testimage.Layer([]testimage.Entry{testimage.File("srv/high", 0o644, "x").Owner(200000, 200000)}, testimage.Gzip)
	if err != nil {
		t.Fatal(err)
	}
	highImg, err := mutate.AppendLayers(img, high)
	if err != nil {
		t.Fatal(err)
	}
	dir := filepath.Join(t.TempDir(), "layout")
	p, err := layout.Write(dir, empty.Index)
	if err != nil {
		t.Fatal(err)
	}
	for tag, i := range map[string]v1.Image{"dev": img, "high": highImg} {
		if err := p.AppendImage(i, layout.WithAnnotations(map[string]string{"org.opencontainers.image.ref.name": tag})); err != nil {
			t.Fatal(err)
		}
	}
	return dir
}

const devWarning = "warning: dropped 2 device node(s) outside /dev (e.g. /srv/loop0)"

// jsonResult decodes a --json result, failing the test when stdout is not
// exactly one object.
func jsonResult(t *testing.T, stdout string) map[string]any {
	t.Helper()
	var m map[string]any
	dec := json.NewDecoder(strings.NewReader(stdout))
	if err := dec.Decode(&m); err != nil || dec.More() {
		t.Fatalf("stdout is not one JSON object (%v):\n%s", err, stdout)
	}
	return m
}

func jsonWarnings(t *testing.T, m map[string]any) []string {
	t.Helper()
	raw, ok := m["warnings"].([]any)
	if !ok {
		t.Fatalf("the JSON result has no warnings array: %v", m)
	}
	var out []string
	for _, w := range raw {
		s, ok := w.(string)
		if !ok {
			t.Fatalf("warning %v is not a string", w)
		}
		out = append(out, s)
	}
	return out
}

func hasWarning(ws []string, prefix string) bool {
	for _, w := range ws {
		if strings.HasPrefix("warning: "+w, prefix) {
			return true
		}
	}
	return false
}

// TestWarningsSurviveQuietAndJSON (issue 16 item 2): the device nodes
// build drops outside /dev were reported on stderr in text mode only; -q
// and --json lost them. Now -q keeps warnings (and only them) on stderr,
// and --json carries them in the result's "warnings" array, on success and
// on failure, for build, unpack and convert alike.
func TestWarningsSurviveQuietAndJSON(t *testing.T) {
	dir := warningsLayout(t)
	store := filepath.Join(t.TempDir(), "store")
	out := t.TempDir()

	t.Run("build", func(t *testing.T) {
		code, stdout, stderr := runCLI(t, "build", "--store", store, "oci:"+dir+":dev", "-o", out+"/text/")
		if code != 0 || !strings.Contains(stderr, devWarning) || !strings.Contains(stderr, "pulling") {
			t.Fatalf("build: exit %d, want the warning among the progress on stderr:\n%s%s", code, stdout, stderr)
		}
	})
	t.Run("build -q", func(t *testing.T) {
		code, _, stderr := runCLI(t, "build", "-q", "--store", store, "oci:"+dir+":dev", "-o", out+"/quiet/")
		if code != 0 || !strings.HasPrefix(stderr, devWarning) || strings.Count(stderr, "\n") != 1 {
			t.Errorf("build -q: exit %d, stderr %q: want the warning alone", code, stderr)
		}
	})
	t.Run("build --json", func(t *testing.T) {
		code, stdout, stderr := runCLI(t, "build", "--json", "--store", store, "oci:"+dir+":dev", "-o", out+"/json/")
		if code != 0 || stderr != "" {
			t.Fatalf("build --json: exit %d, stderr %q: want 0 and nothing on stderr", code, stderr)
		}
		if !strings.HasPrefix(stdout, "{\n  \"image\": ") {
			t.Errorf("build --json no longer starts with the result's own first key:\n%s", stdout)
		}
		if ws := jsonWarnings(t, jsonResult(t, stdout)); len(ws) != 1 || !hasWarning(ws, devWarning) {
			t.Errorf("build --json warnings %q, want the dropped device nodes", ws)
		}
	})
	// cmd's own warnings take the same path: an old flag spelling.
	t.Run("build --json, cmd's own warning", func(t *testing.T) {
		code, stdout, stderr := runCLI(t, "build", "--json", "--version", "8", "--store", store, "oci:"+dir+":dev", "-o", out+"/dep/")
		if ws := jsonWarnings(t, jsonResult(t, stdout)); code != 0 || stderr != "" || !hasWarning(ws, "warning: --version is now --template-version") {
			t.Errorf("build --json --version: exit %d, stderr %q, warnings %q: want the note in the array", code, stderr, ws)
		}
	})
	// Several images at once: one array, each warning naming its image.
	t.Run("build --json of several images", func(t *testing.T) {
		code, stdout, stderr := runCLI(t, "build", "--json", "--store", store, "oci:"+dir+":dev", "oci:"+dir+":high", "--squash-high-ids", "-o", out+"/batch/")
		ws := jsonWarnings(t, jsonResult(t, stdout))
		for _, tag := range []string{"dev", "high"} {
			if !hasWarning(ws, "warning: oci:"+dir+":"+tag+": dropped 2 device node(s) outside /dev") {
				t.Errorf("batch build --json: exit %d, stderr %q, warnings %q: want the %s image's warning naming it", code, stderr, ws, tag)
			}
		}
	})
	// A failure after the warning: the {"ok": false} object keeps it.
	t.Run("failed build --json", func(t *testing.T) {
		code, stdout, stderr := runCLI(t, "build", "--json", "--store", store, "oci:"+dir+":high", "-o", out+"/high/")
		m := jsonResult(t, stdout)
		if code != exitFailure || m["ok"] != false || !hasWarning(jsonWarnings(t, m), devWarning) {
			t.Errorf("failed build --json: exit %d, result %v: want ok false with the warning", code, m)
		}
		if strings.Contains(stderr, "warning:") {
			t.Errorf("failed build --json printed the warning on stderr too:\n%s", stderr)
		}
	})
	// unpack then convert: the warning comes from convert reading the
	// bundle's real device nodes (root only: others cannot create them).
	t.Run("unpack then convert", func(t *testing.T) {
		if code, _, stderr := runCLI(t, "unpack", "-q", "--store", store, "oci:"+dir+":dev", out+"/bundle"); code != 0 {
			t.Fatalf("unpack: exit %d\n%s", code, stderr)
		}
		code, stdout, stderr := runCLI(t, "convert", "--json", out+"/bundle", "-o", out+"/conv/")
		if code != 0 || stderr != "" {
			t.Fatalf("convert --json: exit %d, stderr %q", code, stderr)
		}
		if ws := jsonWarnings(t, jsonResult(t, stdout)); isRoot() && !hasWarning(ws, devWarning) {
			t.Errorf("convert --json warnings %q, want the dropped device nodes", ws)
		}
		code, _, stderr = runCLI(t, "convert", "-q", out+"/bundle", "-o", out+"/convq/")
		if code != 0 || (isRoot() && !strings.HasPrefix(stderr, devWarning)) {
			t.Errorf("convert -q: exit %d, stderr %q: want the warning", code, stderr)
		}
	})
}

// TestWriteResultNeverDropsWarnings: a result that is not an object, or
// none, cannot carry the array; its warnings go to stderr instead, and an
// own "warnings" key (unpack's, generate's) is replaced, not duplicated.
func TestWriteResultNeverDropsWarnings(t *testing.T) {
	var stdout, stderr bytes.Buffer
	writeResult(&stdout, &stderr, nil, []string{"w1"})
	if stdout.Len() != 0 || stderr.String() != "warning: w1\n" {
		t.Errorf("nil result: stdout %q, stderr %q", stdout.String(), stderr.String())
	}
	stdout.Reset()
	stderr.Reset()
	writeResult(&stdout, &stderr, []string{"a"}, []string{"w2"})
	if stdout.String() != "[\n  \"a\"\n]\n" || stderr.String() != "warning: w2\n" {
		t.Errorf("array result: stdout %q, stderr %q", stdout.String(), stderr.String())
	}
	stdout.Reset()
	stderr.Reset()
	writeResult(&stdout, &stderr, struct {
		B        int      `json:"b"`
		Warnings []string `json:"warnings"`
		A        string   `json:"a"`
	}{1, []string{"old"}, "<x>"}, nil)
	if want := "{\n  \"b\": 1,\n  \"a\": \"\\u003cx\\u003e\",\n  \"warnings\": []\n}\n"; stdout.String() != want || stderr.Len() != 0 {
		t.Errorf("object result:\n%s\nwant\n%s", stdout.String(), want)
	}
}

// TestMissingVolumeDirIsAnnounced (issue 16 item 3): a VOLUME the rootfs
// lacks became a root 0755 directory in the template without a word. Now a
// progress line names it and --json lists it in added_volume_dirs.
func TestMissingVolumeDirIsAnnounced(t *testing.T) {
	dir := warningsLayout(t)
	store := filepath.Join(t.TempDir(), "store")
	out := t.TempDir()
	const note = "image volume /data is not in the rootfs: added as an empty directory (root:root 0755)"
	code, stdout, stderr := runCLI(t, "build", "--store", store, "oci:"+dir+":dev", "-o", out+"/")
	if code != 0 || !strings.Contains(stderr, note) {
		t.Fatalf("build: exit %d, stderr lacks %q:\n%s%s", code, note, stdout, stderr)
	}
	code, stdout, stderr = runCLI(t, "build", "--json", "--force", "--store", store, "oci:"+dir+":dev", "-o", out+"/")
	if code != 0 {
		t.Fatalf("build --json: exit %d\n%s", code, stderr)
	}
	res, _ := jsonResult(t, stdout)["result"].(map[string]any)
	added, _ := res["added_volume_dirs"].([]any)
	if len(added) != 1 || added[0] != "/data" {
		t.Errorf("result.added_volume_dirs %v, want [/data]", res["added_volume_dirs"])
	}
	tpl, _ := res["template"].(string)
	if typ, ok := templateMembers(t, tpl)["./data/"]; !ok || typ != tar.TypeDir {
		t.Errorf("the template has no ./data/ directory (%v, %q)", ok, typ)
	}
}

func isRoot() bool { return os.Geteuid() == 0 }
