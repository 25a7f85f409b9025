package generate_test

import (
	"bytes"
	"context"
	"fmt"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"testing"

	"github.com/xeipuuv/gojsonschema"

	"github.com/nexcage/nexcage/convert"
	"github.com/nexcage/nexcage/generate"
	"github.com/nexcage/nexcage/internal/testbundle"
	"github.com/nexcage/nexcage/internal/testimage"
	"github.com/nexcage/nexcage/rootfs"
)

// Generate's tests share the corpus and file helpers of every stage.
var (
	readFile   = testbundle.ReadFile
	cases      = testbundle.Cases
	corpusCase = testbundle.Case
	leftovers  = testbundle.DirNames // what a failed generate left in a directory
)

// build is `nexcage build`: the case's layers flattened straight into a
// template in a fresh directory.
func build(t testing.TB, c testimage.Case, opts convert.Options) *convert.Result {
	t.Helper()
	return buildAs(t, c, c.Name, opts)
}

func buildAs(t testing.TB, c testimage.Case, tag string, opts convert.Options) *convert.Result {
	t.Helper()
	s, img := testbundle.Store(t, c, tag)
	f, err := s.Flatten(context.Background(), img, rootfs.FlattenOptions{})
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	opts.Output = t.TempDir() + "/"
	res, err := convert.Write(context.Background(), f.Tree, f.Spec, opts)
	if err != nil {
		t.Fatal(err)
	}
	return res
}

// unpack is `nexcage unpack` as root into a fresh bundle.
func unpack(t testing.TB, c testimage.Case) string {
	t.Helper()
	return testbundle.Unpack(t, c, rootfs.UnpackOptions{})
}

// convertBundle is `nexcage convert BUNDLE -o DIR/`.
func convertBundle(t testing.TB, bundle string, opts convert.Options) *convert.Result {
	t.Helper()
	b, err := convert.LoadBundle(bundle)
	if err != nil {
		t.Fatal(err)
	}
	opts.Output = t.TempDir() + "/"
	res, err := convert.Convert(context.Background(), b, opts)
	if err != nil {
		t.Fatal(err)
	}
	return res
}

// generateBundle is generate.Bundle into a fresh directory, removed when
// the test ends.
func generateBundle(t testing.TB, opts generate.Options) (string, *generate.Result) {
	t.Helper()
	bundle := filepath.Join(t.TempDir(), "bundle")
	res, err := generate.Bundle(context.Background(), bundle, opts)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { rootfs.RemoveBundle(bundle) })
	return bundle, res
}

// sameTemplate fails unless two conversions wrote the same three files,
// naming the first members that differ.
func sameTemplate(t *testing.T, want, got *convert.Result) {
	t.Helper()
	if filepath.Base(want.Template) != filepath.Base(got.Template) {
		t.Errorf("template names differ: %s, want %s", filepath.Base(got.Template), filepath.Base(want.Template))
	}
	if !bytes.Equal(readFile(t, want.Template), readFile(t, got.Template)) {
		testbundle.DiffMembers(t, want.Template, got.Template)
	}
	for _, f := range [][2]string{{want.Config, got.Config}, {want.SidecarJSON, got.SidecarJSON}} {
		a, b := string(readFile(t, f[0])), string(readFile(t, f[1]))
		if a != b {
			t.Errorf("%s differs:\nwant:\n%s\ngot:\n%s", filepath.Base(f[0]), a, b)
		}
	}
}

var (
	schemaOnce sync.Once
	schema     *gojsonschema.Schema
	schemaErr  error
)

// validateConfig checks a config.json against the runtime-spec JSON
// schema that ships with the runtime-spec module this build uses.
func validateConfig(t testing.TB, path string) {
	t.Helper()
	schemaOnce.Do(func() {
		cmd := exec.Command("go", "list", "-m", "-f", "{{.Dir}}", "github.com/opencontainers/runtime-spec")
		var stderr bytes.Buffer
		cmd.Stderr = &stderr
		out, err := cmd.Output()
		if err != nil {
			schemaErr = fmt.Errorf("find the runtime-spec module with go list: %v: %s", err, stderr.Bytes())
			return
		}
		dir := filepath.Join(strings.TrimSpace(string(out)), "schema")
		schema, schemaErr = gojsonschema.NewSchema(gojsonschema.NewReferenceLoader("file://" + filepath.Join(dir, "config-schema.json")))
	})
	if schemaErr != nil {
		t.Fatalf("runtime-spec schema: %v", schemaErr)
	}
	abs, _ := filepath.Abs(path)
	res, err := schema.Validate(gojsonschema.NewReferenceLoader("file://" + abs))
	if err != nil {
		t.Fatalf("validate %s: %v", path, err)
	}
	for _, e := range res.Errors() {
		t.Errorf("%s: not valid against the runtime-spec schema: %s", path, e)
	}
}
