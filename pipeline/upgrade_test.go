package pipeline_test

import (
	"context"
	"errors"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	v1 "github.com/google/go-containerregistry/pkg/v1"

	"github.com/nexcage/nexcage/internal/pvetest"
	"github.com/nexcage/nexcage/internal/testimage"
	"github.com/nexcage/nexcage/lxc"
	"github.com/nexcage/nexcage/pct"
	"github.com/nexcage/nexcage/pipeline"
	"github.com/nexcage/nexcage/rootfs"
)

// appImage is Alpine with /app/run.sh (which traps SIGTERM) and a
// version file, the given environment and a VOLUME /data.
func appImage(t *testing.T, version string, env ...string) v1.Image {
	t.Helper()
	base, err := testimage.Alpine("amd64")
	if err != nil {
		t.Fatal(err)
	}
	layers, err := base.Layers()
	if err != nil {
		t.Fatal(err)
	}
	app, err := testimage.Layer([]testimage.Entry{
		testimage.Dir("app/", 0o755),
		testimage.File("app/run.sh", 0o755, "#!/bin/sh\ntrap 'exit 0' TERM\nwhile true; do sleep 1; done\n"),
		testimage.File("app/version", 0o644, version+"\n"),
	}, testimage.Gzip)
	if err != nil {
		t.Fatal(err)
	}
	img, err := testimage.Image(append(layers, app), v1.Config{
		Entrypoint: []string{"/app/run.sh"},
		Env:        append([]string{"PATH=/usr/sbin:/usr/bin:/sbin:/bin"}, env...),
		Volumes:    map[string]struct{}{"/data": {}},
		StopSignal: "SIGTERM",
	}, v1.Platform{OS: "linux", Architecture: "amd64"}, false)
	if err != nil {
		t.Fatal(err)
	}
	return img
}

// upgradeHost is a stand-in PVE 9.2 host for the test, which needs root
// and LXC (see pvetest.NewStandInHost).
func upgradeHost(t *testing.T) (*pvetest.StandIn, *pct.Host) {
	t.Helper()
	s := pvetest.NewStandInHost(t)
	t.Setenv("PVE_VERSION", "9.2.0")
	return s, pct.NewHost(s.Root)
}

// TestUpgradeRepullsItsOwnImage: a container created from oci:DIR:app is
// upgraded by name with no image given: the same reference, pulled again,
// now v2, is built and swapped in (data kept, user's env kept, new default
// applied); run again, it is "up to date" and the config file is not
// touched.
func TestUpgradeRepullsItsOwnImage(t *testing.T) {
	ctx := context.Background()
	s, h := upgradeHost(t)
	dir := t.TempDir()
	lay := filepath.Join(dir, "layout")
	if err := testimage.WriteLayout(lay, "app", testimage.Case{Name: "app", Image: appImage(t, "1", "GREETING=hello", "MODE=one")}); err != nil {
		t.Fatal(err)
	}
	store := newStore(t)
	ref := "oci:" + lay + ":app"
	build := pipeline.BuildOptions{Source: rootfs.SourceOptions{Platform: amd64}, Pull: rootfs.PullAlways}
	tdir := filepath.Join(dir, "templates")
	_, err := pipeline.Create(ctx, store, pipeline.CreateOptions{Name: "app", Image: ref, TemplateDir: tdir, Build: build,
		Deploy: pipeline.DeployOptions{Host: h, Options: pct.Options{VolumeSize: 1, RootfsSize: 1, Start: true}}})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := h.Run(ctx, "pct", "exec", "100", "--", "sh", "-c", "echo precious > /data/file"); err != nil {
		t.Fatal(err)
	}
	conf := s.ConfigPath("pve", 100)
	b, _ := os.ReadFile(conf)
	if err := os.WriteFile(conf, []byte(strings.Replace(string(b), "GREETING=hello", "GREETING=mine", 1)), 0o640); err != nil {
		t.Fatal(err)
	}

	// The same tag, now v2.
	if err := os.RemoveAll(lay); err != nil {
		t.Fatal(err)
	}
	if err := testimage.WriteLayout(lay, "app", testimage.Case{Name: "app", Image: appImage(t, "2", "GREETING=hello", "MODE=two")}); err != nil {
		t.Fatal(err)
	}
	// The old template stays as it was: the rollback and other CTs made
	// from it rely on it.
	oldVol := markerOf(t, h, 100).Template
	oldPath, err := h.TemplatePath(ctx, oldVol)
	if err != nil {
		t.Fatal(err)
	}
	oldBytes, err := os.ReadFile(oldPath)
	if err != nil {
		t.Fatal(err)
	}

	// An oci: layout is a path: taken from the marker it is refused
	// (TestUpgradeRefusesMarkerPath), so it is named.
	opts := pipeline.UpgradeOptions{Image: ref, TemplateDir: tdir, Build: build, Host: h}
	res, err := pipeline.Upgrade(ctx, store, "app", opts)
	if err != nil {
		t.Fatal(err)
	}
	if res.Plan.UpToDate || res.Result == nil || !res.Result.Started {
		t.Fatalf("upgrade to v2: %+v %+v", res.Plan, res.Result)
	}
	out, err := h.Run(ctx, "pct", "exec", "100", "--", "cat", "/data/file", "/app/version")
	if out != "precious\n2\n" || err != nil {
		t.Errorf("inside after the upgrade: %q %v", out, err)
	}
	if b, err := os.ReadFile(oldPath); err != nil || string(b) != string(oldBytes) {
		t.Errorf("the upgrade overwrote the old template %s (%v)", oldPath, err)
	}
	newVol := markerOf(t, h, 100).Template
	newPath, err := h.TemplatePath(ctx, newVol)
	if newVol == oldVol || err != nil {
		t.Errorf("the new template is %s (%v), want a name of its own beside %s", newVol, err, oldVol)
	} else if l, err := pct.LoadTemplate(ctx, h, newVol, pct.LoadOptions{}); err != nil || l.Image == "" || l.Config == nil {
		t.Errorf("the new template %s lacks its sidecars: %+v %v", newPath, l, err)
	}
	b, _ = os.ReadFile(conf)
	for _, l := range []string{"lxc.environment.runtime: GREETING=mine\n", "lxc.environment.runtime: MODE=two\n", "hostname: app\n"} {
		if !strings.Contains(string(b), l) {
			t.Errorf("config after the upgrade lacks %q:\n%s", l, b)
		}
	}

	// Nothing new: nothing touched.
	fi, _ := os.Stat(conf)
	res, err = pipeline.Upgrade(ctx, store, "100", opts)
	if err != nil {
		t.Fatal(err)
	}
	if !res.Plan.UpToDate || res.Result != nil {
		t.Errorf("upgrade with nothing new: %+v", res.Plan)
	}
	b2, _ := os.ReadFile(conf)
	if fi2, _ := os.Stat(conf); !fi2.ModTime().Equal(fi.ModTime()) || string(b2) != string(b) {
		t.Errorf("a no-op upgrade touched the config")
	}
	h.Run(ctx, "pct", "stop", "100")
}

// TestUpgradeRefusesMarkerPath: the marker is in the description, which
// any user allowed to edit the CT's options can change. An image there
// that is a file on the host (another CT's backup) or an oci: path is
// refused, asking for Image, before anything is read or uploaded.
func TestUpgradeRefusesMarkerPath(t *testing.T) {
	ctx := context.Background()
	s, h := upgradeHost(t)
	backup := filepath.Join(t.TempDir(), "vzdump-lxc-200-2026_01_01-00_00_00.tar.zst")
	if err := os.WriteFile(backup, []byte("another CT's data"), 0o600); err != nil {
		t.Fatal(err)
	}
	for _, img := range []string{backup, "oci:" + t.TempDir() + ":app", "local:vztmpl/other.tar.zst"} {
		// As PVE writes the marker: encode_text'ed.
		conf := "#" + lxc.EncodeText("nexcage: template=local:vztmpl/app.tar.zst image="+img) + "\narch: amd64\nhostname: app\nostype: unmanaged\nrootfs: local:100/vm-100-disk-0.raw,size=1G\nentrypoint: /bin/app\n"
		if err := os.MkdirAll(filepath.Dir(s.ConfigPath("pve", 100)), 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(s.ConfigPath("pve", 100), []byte(conf), 0o640); err != nil {
			t.Fatal(err)
		}
		_, err := pipeline.Upgrade(ctx, nil, "100", pipeline.UpgradeOptions{Host: h, DryRun: true})
		var pe *pct.Error
		if !errors.As(err, &pe) || pe.Kind != pct.ErrInvalidArgument || pe.Param != "image" || !slices.Contains(pe.Fields, "Image") {
			t.Errorf("marker image %s: %v, want an invalid-argument error asking for Image", img, err)
		}
	}
}

func markerOf(t *testing.T, h *pct.Host, vmid int) pct.Marker {
	t.Helper()
	ms, err := h.ListManaged(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	for _, m := range ms {
		if m.VMID == vmid {
			return m.Marker
		}
	}
	t.Fatalf("CT %d has no marker", vmid)
	return pct.Marker{}
}
