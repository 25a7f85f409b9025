package convert_test

import (
	"context"
	"errors"
	"strings"
	"testing"

	"github.com/nexcage/nexcage/convert"
	"github.com/nexcage/nexcage/rootfs"
)

// UpToDate asks for the source's digest only when a template of the same
// reference and options is there: a first build must not wait on the
// registry for a digest it cannot use.
func TestUpToDateAsksForTheDigestOnlyWhenItMatters(t *testing.T) {
	out := t.TempDir() + "/"
	opts := convert.Options{Output: out, Privileged: true, ToolVersion: "test"}
	calls := 0
	digest := func(d string, err error) func() (string, error) {
		return func() (string, error) { calls++; return d, err }
	}
	if _, ok := convert.UpToDate(opts, "oci:x:modes", digest("", nil)); ok || calls != 0 {
		t.Fatalf("empty output directory: up to date %v after %d digest lookups, want false after none", ok, calls)
	}

	s, img := storeCase(t, corpusCase(t, "modes"))
	f, err := s.Flatten(context.Background(), img, rootfs.FlattenOptions{})
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	res, err := convert.Write(context.Background(), f.Tree, f.Spec, opts)
	if err != nil {
		t.Fatal(err)
	}
	ref, built := res.Sidecar.Source.Reference, res.Sidecar.Source.SourceDigest
	if ref == "" || built == "" {
		t.Fatalf("the manifest records no source: %+v", res.Sidecar.Source)
	}

	for _, tc := range []struct {
		name   string
		opts   convert.Options
		ref    string
		lookup func() (string, error)
		want   bool
		calls  int
	}{
		{"same digest", opts, ref, digest(built, nil), true, 1},
		{"the tag moved", opts, ref, digest("sha256:"+strings.Repeat("0", 64), nil), false, 1},
		{"the registry cannot be asked", opts, ref, digest("", errors.New("offline")), false, 1},
		{"another reference", opts, ref + "-other", digest(built, nil), false, 0},
		{"other options", convert.Options{Output: out, Privileged: true, SquashHighIDs: true, ToolVersion: "test"}, ref, digest(built, nil), false, 0},
	} {
		calls = 0
		got, ok := convert.UpToDate(tc.opts, tc.ref, tc.lookup)
		if ok != tc.want || calls != tc.calls {
			t.Errorf("%s: up to date %v after %d digest lookups, want %v after %d", tc.name, ok, calls, tc.want, tc.calls)
		}
		if ok && got.Template != res.Template {
			t.Errorf("%s: found %s, built %s", tc.name, got.Template, res.Template)
		}
	}
}
