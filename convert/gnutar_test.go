package convert_test

import (
	"archive/tar"
	"context"
	"fmt"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	"github.com/nexcage/nexcage/convert"
	"github.com/nexcage/nexcage/health"
	"github.com/nexcage/nexcage/internal/healthtest"
	"github.com/nexcage/nexcage/internal/testbundle"
	"github.com/nexcage/nexcage/internal/testenv"
)

// TestTemplateMatchesGNUTar compares each corpus template, member by
// member and in order, with what GNU tar archives of the unpacked rootfs:
// the reference a PVE template made by hand is. Hard link groups (of
// regular files and of symlinks alike), which member of a group carries
// the content, types, link targets, modes and owners must all agree;
// only what a template leaves out or adds on purpose (/dev contents,
// device nodes, volume directories) is set aside.
func TestTemplateMatchesGNUTar(t *testing.T) {
	testenv.RequireRoot(t) // the unpack must own files as the image says
	testenv.RequireTool(t, "tar")
	for _, c := range cases(t) {
		t.Run(c.Name, func(t *testing.T) {
			b := unpack(t, c, false)
			res := convertTo(t, b, t.TempDir(), convert.Options{Privileged: true})
			ref := filepath.Join(t.TempDir(), "ref.tar")
			if out, err := exec.Command("tar", "--sort=name", "--numeric-owner", "--format=pax", "-C", b.Rootfs, "-cf", ref, ".").CombinedOutput(); err != nil {
				t.Fatalf("GNU tar: %v\n%s", err, out)
			}
			want := tarMembers(testbundle.Members(t, ref), func(h *tar.Header) bool {
				return !strings.HasPrefix(h.Name, "./dev/") && h.Typeflag != tar.TypeChar && h.Typeflag != tar.TypeBlock
			})
			wantSet := map[string]bool{}
			for _, m := range want {
				wantSet[strings.SplitN(m, "\t", 2)[0]] = true
			}
			got := tarMembers(testbundle.Members(t, res.Template), func(h *tar.Header) bool {
				// What convert adds: /dev and volume directories.
				return h.Typeflag != tar.TypeDir || wantSet[h.Name]
			})
			if g, w := strings.Join(got, "\n"), strings.Join(want, "\n"); g != w {
				t.Errorf("template members differ from GNU tar's:\n%s", lineDiff(want, got))
			}
			if c.Name == "hardlink-symlink" {
				// Links to symlinks are links like any other to check.
				out, err := convert.CheckTemplate(context.Background(), res.Template, health.Options{})
				if err != nil {
					t.Fatal(err)
				}
				healthtest.AllOK(t, out)
			}
		})
	}
}

// tarMembers lists the members that keep accepts, one line each with
// what the comparison covers.
func tarMembers(hs []*tar.Header, keep func(*tar.Header) bool) []string {
	var out []string
	for _, h := range hs {
		if keep(h) {
			out = append(out, fmt.Sprintf("%s\t%c link=%q mode=%o %d:%d size=%d", h.Name, h.Typeflag, h.Linkname, h.Mode, h.Uid, h.Gid, h.Size))
		}
	}
	return out
}

// lineDiff shows the lines only one side has, marked - (want) and + (got).
func lineDiff(want, got []string) string {
	in := func(l []string) map[string]bool {
		m := map[string]bool{}
		for _, s := range l {
			m[s] = true
		}
		return m
	}
	w, g := in(want), in(got)
	var sb strings.Builder
	for _, s := range want {
		if !g[s] {
			fmt.Fprintf(&sb, "- %s\n", s)
		}
	}
	for _, s := range got {
		if !w[s] {
			fmt.Fprintf(&sb, "+ %s\n", s)
		}
	}
	if sb.Len() == 0 {
		sb.WriteString("(the same members in another order)\n")
	}
	return sb.String()
}
