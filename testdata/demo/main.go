// Command demo writes the demo image that `make demo` runs nexcage on: the
// real Alpine minirootfs from testdata/images plus a small application
// layer, as an OCI layout tagged "demo". No registry or network needed.
package main

import (
	"fmt"
	"os"
	"runtime"

	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/empty"
	"github.com/google/go-containerregistry/pkg/v1/layout"
	"github.com/google/go-containerregistry/pkg/v1/mutate"

	"github.com/nexcage/nexcage/internal/testimage"
)

func main() {
	if len(os.Args) != 2 {
		fmt.Fprintln(os.Stderr, "usage: demo LAYOUT_DIR")
		os.Exit(2)
	}
	if err := write(os.Args[1]); err != nil {
		fmt.Fprintln(os.Stderr, "demo:", err)
		os.Exit(1)
	}
}

func write(dir string) error {
	arch := runtime.GOARCH
	if arch != "arm64" {
		arch = "amd64"
	}
	base, err := testimage.Alpine(arch)
	if err != nil {
		return err
	}
	app, err := testimage.Layer([]testimage.Entry{
		testimage.Dir("srv/", 0o755),
		testimage.File("srv/hello.sh", 0o755, "#!/bin/sh\necho \"hello from $GREETING in $(pwd)\"\n"),
	}, testimage.Gzip)
	if err != nil {
		return err
	}
	img, err := mutate.AppendLayers(base, app)
	if err != nil {
		return err
	}
	cfg, err := img.ConfigFile()
	if err != nil {
		return err
	}
	cfg = cfg.DeepCopy()
	cfg.Config.Entrypoint = []string{"/srv/hello.sh"}
	cfg.Config.Cmd = nil
	cfg.Config.Env = append(cfg.Config.Env, "GREETING=nexcage")
	cfg.Config.WorkingDir = "/srv"
	cfg.Config.Labels = map[string]string{"org.opencontainers.image.title": "nexcage demo"}
	if img, err = mutate.ConfigFile(img, cfg); err != nil {
		return err
	}
	if err := os.RemoveAll(dir); err != nil {
		return err
	}
	p, err := layout.Write(dir, empty.Index)
	if err != nil {
		return err
	}
	return p.AppendImage(img, layout.WithAnnotations(map[string]string{"org.opencontainers.image.ref.name": "demo"}),
		layout.WithPlatform(v1.Platform{OS: "linux", Architecture: arch}))
}
