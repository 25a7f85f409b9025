package generate_test

import (
	"context"
	"fmt"
	"log"
	"os"
	"path/filepath"

	"github.com/nexcage/nexcage/generate"
)

// Bundle makes an OCI runtime bundle of a rootfs directory (from
// debootstrap or a build script), ready for convert.
func ExampleBundle() {
	dir, err := os.MkdirTemp("", "example")
	if err != nil {
		log.Fatal(err)
	}
	defer os.RemoveAll(dir)
	rootfs := filepath.Join(dir, "rootfs")
	for name, body := range map[string]string{
		"etc/os-release": "ID=debian\nVERSION_ID=12\n",
		"usr/bin/app":    "#!/bin/sh\necho hello\n",
	} {
		if err := os.MkdirAll(filepath.Join(rootfs, filepath.Dir(name)), 0o755); err != nil {
			log.Fatal(err)
		}
		if err := os.WriteFile(filepath.Join(rootfs, name), []byte(body), 0o755); err != nil {
			log.Fatal(err)
		}
	}

	res, err := generate.Bundle(context.Background(), filepath.Join(dir, "bundle"), generate.Options{Rootfs: rootfs})
	if err != nil {
		log.Fatal(err)
	}
	fmt.Println("from:", res.From)
	fmt.Println("entries:", res.Entries)
	fmt.Println("process:", res.Process)
	if _, err := os.Stat(filepath.Join(res.Bundle, "rootfs", "usr", "bin", "app")); err != nil {
		log.Fatal(err)
	}
	fmt.Println("config:", filepath.Base(res.Config))
	// Output:
	// from: rootfs
	// entries: 6
	// process: [/bin/sh]
	// config: config.json
}
