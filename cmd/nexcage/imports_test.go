package main

import (
	"go/parser"
	"go/token"
	"os"
	"path/filepath"
	"slices"
	"sort"
	"strconv"
	"strings"
	"testing"
)

const modulePath = "github.com/nexcage/nexcage"

// stageImports are the arrows docs/architecture.md allows between the
// pipeline's stages ("Allowed imports"): down the pipeline only. cmd/nexcage
// may import every stage, so it is not listed.
var stageImports = map[string][]string{
	"rootfs":   nil,
	"lxc":      nil,
	"convert":  {"template", "lxc"},
	"generate": {"template", "lxc"},
	"pct":      {"template", "lxc"},
	"template": nil,
	// pipeline chains the stages: it alone may import every one.
	"pipeline": {"rootfs", "convert", "template", "generate", "pct", "lxc"},
}

// testSupport are the internal packages only tests may import; they alone
// among internal packages may import a stage.
var testSupport = map[string][]string{
	"internal/testenv":    nil,
	"internal/testimage":  nil,
	"internal/fstree":     nil,
	"internal/healthtest": nil,
	"internal/pvetest":    {"lxc"},
	"internal/testbundle": {"rootfs", "template"},
}

// TestAllowedImports holds the non-test code to the import rules of
// docs/architecture.md, so the page cannot drift from the code unnoticed:
// no stage imports against the pipeline, no shared internal package
// imports a stage, and only tests import the test-support packages.
func TestAllowedImports(t *testing.T) {
	root, err := filepath.Abs(filepath.Join("..", ".."))
	if err != nil {
		t.Fatal(err)
	}
	imports := moduleImports(t, root)
	if len(imports["rootfs"]) == 0 || len(imports["cmd/nexcage"]) == 0 {
		t.Fatalf("found no imports for rootfs or cmd/nexcage under %s: the walk is broken", root)
	}
	for pkg, deps := range imports {
		for _, dep := range deps {
			if why := forbidden(pkg, dep); why != "" {
				t.Errorf("%s imports %s: %s (docs/architecture.md, Allowed imports)", pkg, dep, why)
			}
		}
	}
}

func forbidden(pkg, dep string) string {
	if dep == "cmd/nexcage" {
		return "no package imports the command"
	}
	if _, ok := testSupport[dep]; ok {
		if _, from := testSupport[pkg]; !from {
			return "test-support packages are for tests only"
		}
		return ""
	}
	_, depIsStage := stageImports[dep]
	switch allowed, isStage := stageImports[pkg]; {
	case pkg == "cmd/nexcage":
		return ""
	case isStage:
		if depIsStage && !slices.Contains(allowed, dep) {
			return "an arrow against the pipeline"
		}
	case strings.HasPrefix(pkg, "internal/"):
		if depIsStage && !slices.Contains(testSupport[pkg], dep) {
			return "shared internal packages import no stage"
		}
	}
	return ""
}

// moduleImports maps each package directory (relative to root) to the
// module packages its non-test files import. testdata and examples hold
// programs outside the import rules.
func moduleImports(t *testing.T, root string) map[string][]string {
	t.Helper()
	out := map[string][]string{}
	err := filepath.WalkDir(root, func(path string, d os.DirEntry, err error) error {
		if err != nil {
			return err
		}
		if d.IsDir() {
			switch d.Name() {
			case "testdata", "examples", "build", "bin":
				return filepath.SkipDir
			}
			if strings.HasPrefix(d.Name(), ".") && path != root {
				return filepath.SkipDir
			}
			return nil
		}
		if !strings.HasSuffix(path, ".go") || strings.HasSuffix(path, "_test.go") {
			return nil
		}
		f, err := parser.ParseFile(token.NewFileSet(), path, nil, parser.ImportsOnly)
		if err != nil {
			return err
		}
		rel, err := filepath.Rel(root, filepath.Dir(path))
		if err != nil {
			return err
		}
		rel = filepath.ToSlash(rel)
		for _, spec := range f.Imports {
			p, err := strconv.Unquote(spec.Path.Value)
			if err != nil {
				return err
			}
			if dep, ok := strings.CutPrefix(p, modulePath+"/"); ok && !slices.Contains(out[rel], dep) {
				out[rel] = append(out[rel], dep)
			}
		}
		if _, ok := out[rel]; !ok {
			out[rel] = nil
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	for _, deps := range out {
		sort.Strings(deps)
	}
	return out
}
