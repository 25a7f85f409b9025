package tartree_test

import (
	"archive/tar"
	"fmt"
	"io"
	"strings"

	"github.com/nexcage/nexcage/tartree"
)

// A tree is built in any order and walked in the template's canonical
// order; symlinks resolve inside the rootfs, never above it.
func ExampleTree_Walk() {
	t := tartree.New()
	body := "ID=alpine\n"
	t.Put("usr/lib/os-release", &tartree.Node{Type: tar.TypeReg, Mode: 0o644, Size: int64(len(body)),
		Open: func() (io.ReadCloser, error) { return io.NopCloser(strings.NewReader(body)), nil }})
	t.Put("etc/os-release", &tartree.Node{Type: tar.TypeSymlink, Mode: 0o777, Linkname: "../../../usr/lib/os-release"})
	t.Put("bin", &tartree.Node{Type: tar.TypeDir, Mode: 0o755})

	t.Walk(func(p string, n *tartree.Node) error {
		fmt.Println(tartree.MemberName(p, n))
		return nil
	})
	b, err := t.ReadFile("etc/os-release", 1<<10)
	fmt.Printf("%q %v\n", b, err)
	// Output:
	// ./
	// ./bin/
	// ./etc/
	// ./etc/os-release
	// ./usr/
	// ./usr/lib/
	// ./usr/lib/os-release
	// "ID=alpine\n" <nil>
}
