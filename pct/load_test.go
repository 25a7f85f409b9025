package pct_test

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/nexcage/nexcage/lxc"
	"github.com/nexcage/nexcage/pct"
	"github.com/nexcage/nexcage/progress"
)

func TestIsVolumeID(t *testing.T) {
	for s, want := range map[string]bool{
		"local:vztmpl/alpine.tar.zst":   true,
		"nfs-1:vztmpl/a.tar.gz":         true,
		"local:iso/x.iso":               false,
		"./local:vztmpl/a.tar.zst":      false, // a file in a directory named local:vztmpl
		"/srv/local:vztmpl/a.tar.zst":   false,
		":vztmpl/a.tar.zst":             false,
		"t/alpine-3.20_1_amd64.tar.zst": false,
		"local:sub/vztmpl/a.tar.zst":    false,
	} {
		if got := pct.IsVolumeID(s); got != want {
			t.Errorf("IsVolumeID(%q) = %v, want %v", s, got, want)
		}
	}
}

type warnings struct{ got []string }

func (w *warnings) Step(string, ...any)                      {}
func (w *warnings) Warn(f string, a ...any)                  { w.got = append(w.got, fmt.Sprintf(f, a...)) }
func (w *warnings) Bytes(l string, n int64) progress.Counter { return progress.Discard.Bytes(l, n) }

// A template's .conf with a line nexcage does not write is refused with a
// typed error, or (AllowRawLXC) dropped with a warning; a missing file is
// pct.ErrNotFound.
func TestLoadTemplate(t *testing.T) {
	ctx := context.Background()
	h := pct.OfflineHost(pct.Version{Major: 9, Minor: 1}, "")
	dir := t.TempDir()
	tpl := filepath.Join(dir, "a_1_amd64.tar.zst")
	if err := os.WriteFile(tpl, nil, 0o644); err != nil {
		t.Fatal(err)
	}
	conf := filepath.Join(dir, "a_1_amd64.conf")
	if err := os.WriteFile(conf, []byte("arch: amd64\nostype: alpine\nlxc.hook.pre-start: /bin/true\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	_, err := pct.LoadTemplate(ctx, h, tpl, pct.LoadOptions{})
	var tce *pct.TemplateConfigError
	var unsafe *lxc.UnsafeConfigError
	if !errors.As(err, &tce) || tce.Unsafe == nil || tce.Path != conf || !errors.As(err, &unsafe) {
		t.Fatalf("err = %v (%T), want a *TemplateConfigError naming the unsafe lines", err, err)
	}
	if strings.Contains(err.Error(), "--") {
		t.Errorf("a library error names a flag: %v", err)
	}
	w := &warnings{}
	got, err := pct.LoadTemplate(ctx, h, tpl, pct.LoadOptions{AllowRawLXC: true, Progress: w})
	if err != nil {
		t.Fatal(err)
	}
	if got.File != tpl || got.Config == nil || len(got.Sidecars) != 1 || len(w.got) != 1 || !strings.Contains(w.got[0], "lxc.hook.pre-start") {
		t.Errorf("AllowRawLXC: %+v, warnings %q", got, w.got)
	}
	_, err = pct.LoadTemplate(ctx, h, filepath.Join(dir, "none.tar.zst"), pct.LoadOptions{})
	if !errors.Is(err, pct.ErrNotFound) {
		t.Errorf("missing template: err = %v, want pct.ErrNotFound", err)
	}
}
