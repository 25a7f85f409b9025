package main

import (
	"encoding/json"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/mutate"

	"github.com/nexcage/nexcage/internal/pvetest"
	"github.com/nexcage/nexcage/internal/testimage"
)

// hostileDeploy builds the Alpine template with bin into a directory of
// its own, lets edit change its sidecars, and makes a fresh PVE stand-in
// this test's host (PATH and NEXCAGE_PVE_ROOT, which the harness passes
// on). It returns the template's path. When the test ends, the stand-in
// must have no container and the marker file a hostile hook would create
// ("MARKER" in a .conf line) must not exist: the hook never ran.
func hostileDeploy(t *testing.T, bin string, edit func(conf, manifest string, marker string)) string {
	t.Helper()
	dir := t.TempDir()
	if err := testimage.WriteAlpineLayout(filepath.Join(dir, "layout"), "alpine"); err != nil {
		t.Fatal(err)
	}
	out := filepath.Join(dir, "t")
	cmd := exec.Command(bin, "build", "-q", "oci:"+filepath.Join(dir, "layout")+":alpine", "-o", out+"/", "--name", "alpine", "--template-version", "1")
	cmd.Env = append(os.Environ(), "NEXCAGE_STORE="+filepath.Join(dir, "store"), "HOME="+dir)
	if b, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("build: %v\n%s", err, b)
	}
	base := filepath.Join(out, "alpine-3.20-alpine_1_amd64")
	marker := filepath.Join(dir, "pwned")
	edit(base+".conf", base+".json", marker)

	s := pvetest.NewStandInHost(t)
	t.Cleanup(func() {
		if _, err := os.Stat(marker); err == nil {
			t.Errorf("the template's hook ran on the host: %s exists", marker)
		}
		if _, err := os.Stat(s.ConfigPath("pve", 100)); err == nil {
			t.Errorf("a container was created from a hostile template")
		}
	})
	return base + ".tar.zst"
}

// appendConf adds a line to the template's .conf, MARKER replaced by the
// marker file's path.
func appendConf(line string) func(conf, manifest, marker string) {
	return func(conf, _, marker string) {
		f, err := os.OpenFile(conf, os.O_APPEND|os.O_WRONLY, 0)
		if err != nil {
			panic(err)
		}
		defer f.Close()
		f.WriteString(strings.ReplaceAll(line, "MARKER", marker) + "\n")
	}
}

// setVolumes replaces the image volumes the template's .json records.
func setVolumes(vols ...string) func(conf, manifest, marker string) {
	return func(_, manifest, _ string) {
		raw, err := os.ReadFile(manifest)
		if err != nil {
			panic(err)
		}
		var m map[string]any
		if err := json.Unmarshal(raw, &m); err != nil {
			panic(err)
		}
		m["volumes"] = vols
		raw, _ = json.Marshal(m)
		os.WriteFile(manifest, raw, 0o644)
	}
}

// hostileBundle writes a bundle whose config.json has the given mounts
// and an empty rootfs, for check to judge.
func hostileBundle(t *testing.T, mounts string) string {
	t.Helper()
	d := filepath.Join(t.TempDir(), "bundle")
	os.MkdirAll(filepath.Join(d, "rootfs"), 0o755)
	os.WriteFile(filepath.Join(d, "config.json"), []byte(`{"ociVersion": "1.2.0", "root": {"path": "rootfs"}, "mounts": `+mounts+`}`), 0o644)
	return d
}

// alpineWith is the Alpine image with its config changed by edit.
func alpineWith(t *testing.T, edit func(*v1.Config)) v1.Image {
	t.Helper()
	img, err := testimage.Alpine("amd64")
	if err != nil {
		t.Fatal(err)
	}
	cf, err := img.ConfigFile()
	if err != nil {
		t.Fatal(err)
	}
	cf = cf.DeepCopy()
	edit(&cf.Config)
	out, err := mutate.ConfigFile(img, cf)
	if err != nil {
		t.Fatal(err)
	}
	return out
}

// bigEnvImage is the Alpine image with an environment value too large
// for any CT config PVE can store.
func bigEnvImage(t *testing.T, n int) v1.Image {
	return alpineWith(t, func(c *v1.Config) {
		c.Env = append(c.Env, "BIG="+strings.Repeat("x", n))
		c.Entrypoint = []string{"/bin/sh", "-c", "sleep 1"}
	})
}

// volumeImage is the Alpine image with one more VOLUME.
func volumeImage(t *testing.T, vol string) v1.Image {
	return alpineWith(t, func(c *v1.Config) {
		if c.Volumes == nil {
			c.Volumes = map[string]struct{}{}
		}
		c.Volumes[vol] = struct{}{}
	})
}
