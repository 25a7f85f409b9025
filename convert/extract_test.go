package convert_test

import (
	"encoding/binary"
	"strings"
	"testing"

	"github.com/nexcage/nexcage/convert"
	"github.com/nexcage/nexcage/internal/annotation"
	"github.com/nexcage/nexcage/internal/fstree"
	"github.com/nexcage/nexcage/internal/pvetest"
	"github.com/nexcage/nexcage/internal/testenv"
)

// TestTemplateExtractsToTheRootfs is the template's contract with PVE:
// extracting it with PVE's exact tar command gives back the bundle's rootfs
// entry by entry (type, mode, owner, size, content, link target, xattrs,
// hard link groups, mtime), minus what a template leaves out on purpose
// (/dev contents, device nodes), for the whole corpus, privileged and
// unprivileged (inside lxc-usernsexec with the 100000 mapping).
func TestTemplateExtractsToTheRootfs(t *testing.T) {
	testenv.RequireRoot(t)
	testenv.RequireTool(t, "tar")
	testenv.RequireTool(t, "lxc-usernsexec")
	for _, c := range cases(t) {
		t.Run(c.Name, func(t *testing.T) {
			b := unpack(t, c, false)
			want, err := fstree.Snapshot(b.Rootfs, fstree.TemplateView)
			if err != nil {
				t.Fatal(err)
			}
			for p, e := range want {
				if e.Type == "char" || e.Type == "block" {
					delete(want, p)
				}
			}
			for _, unprivileged := range []bool{false, true} {
				name := map[bool]string{false: "privileged", true: "unprivileged"}[unprivileged]
				t.Run(name, func(t *testing.T) {
					opts := convert.Options{Privileged: !unprivileged, SquashHighIDs: unprivileged}
					res := convertTo(t, b, t.TempDir(), opts)
					got := pvetest.ExtractTree(t, res.Template, unprivileged)
					expect := pvetest.Expected(want, unprivileged)
					addedDirs(expect, got, b)
					for _, d := range fstree.Diff(expect, got) {
						t.Error(d)
					}
				})
			}
		})
	}
}

// addedDirs expects what convert adds: /dev when the rootfs has none, and
// directories for image volumes. Only directories may be added, and only
// those.
func addedDirs(expect, got fstree.Tree, b *convert.Bundle) {
	// PVE creates the root directory before extracting, and
	// --skip-old-files then skips the "./" member: its mtime is "now".
	if e, ok := expect["."]; ok && got["."] != nil {
		e.MTime = got["."].MTime
	}
	allowed := map[string]bool{"dev": true}
	for _, v := range strings.Split(b.Spec.Annotations[annotation.Volumes], ",") {
		allowed[strings.TrimPrefix(v, "/")] = true
	}
	for p, g := range got {
		if _, ok := expect[p]; !ok && allowed[p] && g.Type == "dir" {
			expect[p] = g
		}
	}
	// A security.capability written inside a user namespace is stored as
	// a v3 capability carrying the namespace's root id; its capabilities
	// are what must match.
	for _, g := range got {
		if v, ok := g.Xattrs["security.capability"]; ok {
			g.Xattrs["security.capability"] = capV2(v)
		}
	}
}

func capV2(v string) string {
	b := []byte(v)
	if len(b) != 24 || binary.LittleEndian.Uint32(b)>>24 != 3 {
		return v
	}
	magic := binary.LittleEndian.Uint32(b)&0x00ffffff | 2<<24
	binary.LittleEndian.PutUint32(b, magic)
	return string(b[:20])
}
