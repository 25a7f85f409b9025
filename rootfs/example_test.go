package rootfs_test

import (
	"context"
	"fmt"
	"log"
	"os"
	"path/filepath"

	"github.com/nexcage/nexcage/internal/testimage"
	"github.com/nexcage/nexcage/rootfs"
)

func ExampleParseRef() {
	for _, s := range []string{
		"alpine:3.20",
		"docker://ghcr.io/acme/web:1.4",
		"oci:/srv/layouts/web:1.4",
		"docker-archive:/srv/web.tar",
	} {
		ref, err := rootfs.ParseRef(s)
		if err != nil {
			log.Fatal(err)
		}
		fmt.Printf("%s\n\ttransport %s, name %s, tag %q\n", ref, ref.Transport, ref.Name, ref.Tag)
	}
	// Output:
	// docker://index.docker.io/library/alpine:3.20
	// 	transport docker, name index.docker.io/library/alpine:3.20, tag ""
	// docker://ghcr.io/acme/web:1.4
	// 	transport docker, name ghcr.io/acme/web:1.4, tag ""
	// oci:/srv/layouts/web:1.4
	// 	transport oci, name /srv/layouts/web, tag "1.4"
	// docker-archive:/srv/web.tar
	// 	transport docker-archive, name /srv/web.tar, tag ""
}

// An image is pulled from an OCI layout on disk into a store, then
// flattened into the rootfs a template is written from, in memory.
func ExampleStore_Pull() {
	dir, err := os.MkdirTemp("", "example")
	if err != nil {
		log.Fatal(err)
	}
	defer os.RemoveAll(dir)
	// An OCI layout holding Alpine, tagged 3.20.
	layout := filepath.Join(dir, "layout")
	if err := testimage.WriteAlpineLayout(layout, "3.20"); err != nil {
		log.Fatal(err)
	}

	ctx := context.Background()
	store, err := rootfs.StoreAt(filepath.Join(dir, "store"))
	if err != nil {
		log.Fatal(err)
	}
	ref, err := rootfs.ParseRef("oci:" + layout + ":3.20")
	if err != nil {
		log.Fatal(err)
	}
	img, err := store.Pull(ctx, ref, rootfs.PullOptions{})
	if err != nil {
		log.Fatal(err)
	}
	fmt.Println("stored", img.Platform, img.Digest)

	flat, err := store.Flatten(ctx, img, rootfs.FlattenOptions{})
	if err != nil {
		log.Fatal(err)
	}
	defer flat.Close()
	release, err := flat.Tree.ReadFile("etc/alpine-release", 64)
	if err != nil {
		log.Fatal(err)
	}
	fmt.Printf("etc/alpine-release: %s", release)
	fmt.Println("entrypoint:", flat.Spec.Process.Args)
	// Output:
	// stored linux/amd64 sha256:dbfd4c7ac54b4b0f87aa7273c5e1f7f9304079804cfeee476b21d811a23e655e
	// etc/alpine-release: 3.20.3
	// entrypoint: [/bin/sh]
}
