package pipeline_test

import (
	"context"
	"fmt"
	"os"
	"path/filepath"

	"github.com/nexcage/nexcage/convert"
	"github.com/nexcage/nexcage/internal/testimage"
	"github.com/nexcage/nexcage/pipeline"
	"github.com/nexcage/nexcage/rootfs"
)

// Build an OCI layout's image into a Proxmox VE template, then again: the
// second build finds the template up to date and writes nothing.
func ExampleBuild() {
	dir, err := os.MkdirTemp("", "example-")
	if err != nil {
		panic(err)
	}
	defer os.RemoveAll(dir)
	// An image to build: Alpine's minirootfs as oci:DIR:app.
	layout := filepath.Join(dir, "layout")
	if err := testimage.WriteAlpineLayout(layout, "app"); err != nil {
		panic(err)
	}

	store, err := rootfs.OpenStore(filepath.Join(dir, "store"))
	if err != nil {
		panic(err)
	}
	opts := pipeline.BuildOptions{
		Source:  rootfs.SourceOptions{Platform: rootfs.Platform{OS: "linux", Architecture: "amd64"}},
		Convert: convert.Options{Output: filepath.Join(dir, "templates") + "/"},
	}
	for range 2 {
		r, err := pipeline.Build(context.Background(), store, "oci:"+layout+":app", opts)
		if err != nil {
			panic(err)
		}
		m := r.Result.Sidecar
		fmt.Printf("%s up to date: %v (ostype %s, arch %s)\n", filepath.Base(r.Result.Template), r.UpToDate, m.OSType, m.Arch)
	}
	// Output:
	// alpine-3.20-layout_app_amd64.tar.zst up to date: false (ostype alpine, arch amd64)
	// alpine-3.20-layout_app_amd64.tar.zst up to date: true (ostype alpine, arch amd64)
}
