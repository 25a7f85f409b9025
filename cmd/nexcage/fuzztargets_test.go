package main

import (
	"io/fs"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"testing"
)

// TestFuzzTargetsListed: make fuzz runs every fuzz target in the tree,
// and docs/testing.md names each, so a new one is not left out unnoticed.
func TestFuzzTargetsListed(t *testing.T) {
	root := filepath.Join("..", "..")
	fuzzRE := regexp.MustCompile(`(?m)^func (Fuzz\w+)\(`)
	var have []string
	err := filepath.WalkDir(root, func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		if d.IsDir() && (d.Name() == "testdata" || strings.HasPrefix(d.Name(), ".")) && p != root {
			return filepath.SkipDir
		}
		if d.IsDir() || !strings.HasSuffix(p, "_test.go") {
			return nil
		}
		b, err := os.ReadFile(p)
		if err != nil {
			return err
		}
		rel, _ := filepath.Rel(root, filepath.Dir(p))
		for _, m := range fuzzRE.FindAllStringSubmatch(string(b), -1) {
			have = append(have, filepath.ToSlash(rel)+":"+m[1])
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	if len(have) == 0 {
		t.Fatal("found no fuzz targets in the tree")
	}
	mk, err := os.ReadFile(filepath.Join(root, "Makefile"))
	if err != nil {
		t.Fatal(err)
	}
	m := regexp.MustCompile(`(?m)^FUZZ_TARGETS :=((?:.*\\\n)*.*)$`).FindSubmatch(mk)
	if m == nil {
		t.Fatal("the Makefile has no FUZZ_TARGETS")
	}
	listed := strings.Fields(strings.ReplaceAll(string(m[1]), "\\\n", " "))
	doc, err := os.ReadFile(filepath.Join(root, "docs", "testing.md"))
	if err != nil {
		t.Fatal(err)
	}
	for _, f := range have {
		if !slices.Contains(listed, f) {
			t.Errorf("make fuzz does not run %s (FUZZ_TARGETS: %q)", f, listed)
		}
		if name := f[strings.Index(f, ":")+1:]; !strings.Contains(string(doc), "`"+name+"`") {
			t.Errorf("docs/testing.md does not name %s", name)
		}
	}
	for _, f := range listed {
		if !slices.Contains(have, f) {
			t.Errorf("FUZZ_TARGETS lists %s, which is no fuzz target", f)
		}
	}
}
