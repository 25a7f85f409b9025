package convert_test

import (
	"archive/tar"
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"log"
	"os"
	"path/filepath"
	"strings"
	"time"

	rspec "github.com/opencontainers/runtime-spec/specs-go"

	"github.com/nexcage/nexcage/convert"
	"github.com/nexcage/nexcage/tartree"
)

// exampleTree is a tiny rootfs built in memory: what rootfs.Flatten or a
// rootfs directory gives in real use.
func exampleTree() *tartree.Tree {
	mtime := time.Date(2024, 1, 2, 3, 4, 5, 0, time.UTC)
	file := func(body string) *tartree.Node {
		return &tartree.Node{Type: tar.TypeReg, Mode: 0o644, ModTime: mtime, Size: int64(len(body)),
			Open: func() (io.ReadCloser, error) { return io.NopCloser(strings.NewReader(body)), nil }}
	}
	t := tartree.New()
	t.Root.ModTime = mtime
	t.Put("etc/os-release", file("ID=debian\nVERSION_ID=12\n"))
	t.Put("usr/bin/app", file("#!/bin/sh\necho hello\n"))
	t.Get("usr/bin/app").Mode = 0o755
	t.Put("bin", &tartree.Node{Type: tar.TypeSymlink, Mode: 0o777, ModTime: mtime, Linkname: "usr/bin"})
	return t
}

// WriteTar serialises a tree in the template's canonical form: "./" first,
// depth first, entries sorted bytewise, PAX headers.
func ExampleWriteTar() {
	var buf bytes.Buffer
	if err := convert.WriteTar(context.Background(), &buf, exampleTree(), time.Time{}); err != nil {
		log.Fatal(err)
	}
	tr := tar.NewReader(&buf)
	for {
		h, err := tr.Next()
		if errors.Is(err, io.EOF) {
			break
		} else if err != nil {
			log.Fatal(err)
		}
		fmt.Printf("%c %04o %s", h.Typeflag, h.Mode, h.Name)
		if h.Linkname != "" {
			fmt.Print(" -> ", h.Linkname)
		}
		fmt.Println()
	}
	// Output:
	// 5 0755 ./
	// 2 0777 ./bin -> usr/bin
	// 5 0755 ./etc/
	// 0 0644 ./etc/os-release
	// 5 0755 ./usr/
	// 5 0755 ./usr/bin/
	// 0 0755 ./usr/bin/app
}

// Write turns a rootfs tree and its runtime spec into a template named by
// convention from its os-release, with its .conf and .json sidecars.
func ExampleWrite() {
	dir, err := os.MkdirTemp("", "example")
	if err != nil {
		log.Fatal(err)
	}
	defer os.RemoveAll(dir)

	spec := &rspec.Spec{
		Process:     &rspec.Process{Args: []string{"/usr/bin/app"}, Cwd: "/", Env: []string{"PATH=/usr/bin:/bin"}},
		Annotations: map[string]string{"org.opencontainers.image.architecture": "amd64"},
	}
	res, err := convert.Write(context.Background(), exampleTree(), spec, convert.Options{
		Output:          dir + "/",
		Name:            "app",
		Version:         "1.0",
		SourceDateEpoch: time.Date(2024, 6, 1, 0, 0, 0, 0, time.UTC),
	})
	if err != nil {
		log.Fatal(err)
	}
	fmt.Println(filepath.Base(res.Template))
	fmt.Println(filepath.Base(res.Config))
	fmt.Println(filepath.Base(res.SidecarJSON))
	conf, err := os.ReadFile(res.Config)
	if err != nil {
		log.Fatal(err)
	}
	fmt.Print(string(conf))
	// Output:
	// debian-12-app_1.0_amd64.tar.zst
	// debian-12-app_1.0_amd64.conf
	// debian-12-app_1.0_amd64.json
	// #nexcage template debian-12-app_1.0_amd64.tar.zst
	// arch: amd64
	// cmode: console
	// entrypoint: /usr/bin/app
	// ostype: unmanaged
	// unprivileged: 1
	// lxc.environment.runtime: PATH=/usr/bin:/bin
}
