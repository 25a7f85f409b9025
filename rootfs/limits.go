package rootfs

import (
	"archive/tar"
	"strings"
	"sync"

	"github.com/nexcage/nexcage/internal/limits"
)

// LimitError is every refusal of input over one of nexcage's limits: its
// Limit says which (the limits.* names), Value what the input has or
// claims, Max the bound. Refusals that existed before it also match their
// old sentinel (ErrTooLarge, ErrHostileLayer) with errors.Is.
type LimitError = limits.Error

// Limits a caller may set, and their defaults.
const (
	// DefaultMaxEntries bounds the members of an image's layers, all
	// layers together: every member costs memory until the tree is
	// written (about 1 KiB), and the largest real images (CUDA, texlive,
	// node_modules-heavy apps) hold a few hundred thousand.
	DefaultMaxEntries = 1 << 20

	// MaxMetadataSize bounds a manifest, index or image config (see
	// limits.MaxMetadata).
	MaxMetadataSize = limits.MaxMetadata

	// nameMax is Linux's NAME_MAX: no path component can be longer.
	nameMax = 255
)

// entryBudget counts the members of an image's layers, read in parallel,
// against the limit.
type entryBudget struct {
	mu   sync.Mutex
	n    int64
	max  int64
	disk *limits.Disk // where the layers' file contents go
}

func newEntryBudget(max int64, dir string) *entryBudget {
	if max <= 0 {
		max = DefaultMaxEntries
	}
	return &entryBudget{max: max, disk: &limits.Disk{Dir: dir}}
}

// add counts one member; nil budgets count nothing.
func (b *entryBudget) add(name string) error {
	if b == nil {
		return nil
	}
	b.mu.Lock()
	defer b.mu.Unlock()
	if b.n++; b.n > b.max {
		return limits.Errorf(nil, limits.Entries, b.n, b.max, "the image's layers hold more than %d entries (at %s): refusing it, since every entry costs memory and real images hold far fewer", b.max, quoteName(name))
	}
	return nil
}

// reserve checks that n bytes of file content fit on the disk holding
// the layers' contents.
func (b *entryBudget) reserve(n int64, name string) error {
	if b == nil {
		return nil
	}
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.disk.Reserve(n, "entry "+quoteName(name))
}

// checkLinkTarget refuses a symlink target no file system can store:
// symlink(2) fails with ENAMETOOLONG past PATH_MAX-1 bytes, and a longer
// one would make every path resolved through it cost its length.
func checkLinkTarget(hdr *tar.Header) error {
	if hdr.Typeflag == tar.TypeSymlink && len(hdr.Linkname) >= pathMax {
		return limits.Errorf(ErrHostileLayer, limits.PathLength, int64(len(hdr.Linkname)), pathMax-1, "entry %s is a symlink to a %d-byte target, more than Linux's limit of %d bytes: no file system can hold it", quoteName(hdr.Name), len(hdr.Linkname), pathMax-1)
	}
	return nil
}

// checkComponents refuses a name with a component longer than NAME_MAX,
// which unpacking fails on (ENAMETOOLONG) and PVE's tar cannot extract.
// A whiteout's own prefix does not count: ".wh." names a file 4 bytes
// shorter.
func checkComponents(name, clean string) error {
	for rest := clean; rest != ""; {
		c := rest
		if i := strings.IndexByte(rest, '/'); i >= 0 {
			c, rest = rest[:i], rest[i+1:]
		} else {
			rest = ""
			c = strings.TrimPrefix(c, ".wh.")
		}
		if len(c) > nameMax {
			return limits.Errorf(ErrHostileLayer, limits.NameLength, int64(len(c)), nameMax, "entry %s has a %d-byte name component, more than Linux's NAME_MAX (%d): no file system can hold it", quoteName(name), len(c), nameMax)
		}
	}
	return nil
}

// pathSet records, for one layer, which whiteouts were applied: a
// whiteout of a path, or an opaque one of a directory, leaves nothing of
// the lower layers under it, so a later whiteout of the same path, or of
// anything under a directory already emptied, has nothing left to do. It
// is a trie of path components, so a lookup costs the path's length.
type pathSet struct {
	children map[string]*pathSet
	// self: the path itself was whited out. desc: everything below it was.
	self, desc bool
}

// applied reports whether the whiteout named target in dir (".wh..opq"
// for an opaque one) has nothing left to do, and records it otherwise.
func (s *pathSet) applied(dir, target string) bool {
	opaque := target == ".wh..opq"
	p := dir
	if !opaque {
		p = join(dir, target)
	}
	n := s
	if p != "." {
		for c := range strings.SplitSeq(p, "/") {
			if n.desc {
				return true // an ancestor was emptied
			}
			if n.children == nil {
				n.children = map[string]*pathSet{}
			}
			next := n.children[c]
			if next == nil {
				next = &pathSet{}
				n.children[c] = next
			}
			n = next
		}
	}
	if n.desc && (opaque || n.self) {
		return true
	}
	n.desc = true
	n.self = n.self || !opaque
	return false
}
