package testimage

import (
	"fmt"

	v1 "github.com/google/go-containerregistry/pkg/v1"
)

// hostileLayers are layers a safe unpacker must refuse or confine to the
// rootfs. Names and link targets are written verbatim (Layer never cleans),
// which is the whole point.
func hostileLayers() map[string][]Entry {
	return map[string][]Entry{
		// Climbs out of the rootfs by name.
		"dotdot": {File("../escape", 0o644, "escaped via ..\n")},
		// Absolute name: must land inside the rootfs, never in the host's /etc.
		"absolute": {File("/etc/evil", 0o644, "absolute path\n")},
		// A symlink pointing outside, then a file written "through" it.
		"symlink-escape": {
			Symlink("evil", "../../../../tmp"),
			File("evil/pwned", 0o644, "written through a symlink\n"),
		},
		// Hard link to a host file outside the rootfs by climbing.
		"hardlink-escape": {Hardlink("h", "../../etc/passwd")},
		// Hard link to an absolute path that no layer of the image provides:
		// resolving it against the host would link the host's /etc/shadow.
		"hardlink-abs": {Hardlink("h", "/etc/shadow")},
		// Whiteouts whose target is "..", "." or empty: a naive
		// RemoveAll(dir/"..") deletes the directory holding the rootfs.
		"whiteout-dotdot": {File(".wh...", 0o644, "")},
		"whiteout-dot":    {Dir("usr/", 0o755), File("usr/.wh..", 0o644, "")},
		"whiteout-empty":  {File(".wh.", 0o644, "")},
		// A symlink through a missing directory that climbs out once
		// resolved as text, then a write through it.
		"symlink-missing-escape": {
			Symlink("a", "nonexist/../../../../tmp"),
			File("a/pwned", 0o644, "written through a symlink\n"),
		},
		// A hard link whose target path goes through such a symlink.
		"hardlink-via-symlink": {
			Symlink("s", "../../../etc"),
			Hardlink("h", "s/passwd"),
		},
	}
}

// Hostile returns named single-layer images whose layer is hostile:
// "dotdot" (entry "../escape"), "absolute" ("/etc/evil"), "symlink-escape"
// (symlink "evil" -> "../../../../tmp" then a file "evil/pwned"),
// "hardlink-escape" (hard link "h" -> "../../etc/passwd") and "hardlink-abs"
// (hard link "h" -> "/etc/shadow", a file absent from the image).
func Hostile() (map[string]v1.Image, error) {
	out := map[string]v1.Image{}
	for name, entries := range hostileLayers() {
		img, err := layersImage([][]Entry{entries}, Gzip, caseConfig("hostile-"+name), false)
		if err != nil {
			return nil, fmt.Errorf("testimage: hostile %s: %w", name, err)
		}
		out[name] = img
	}
	return out, nil
}
