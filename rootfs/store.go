package rootfs

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"sort"
	"strconv"
	"syscall"
	"time"

	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/types"

	"github.com/nexcage/nexcage/internal/atomicfile"
	"github.com/nexcage/nexcage/internal/errkind"
	"github.com/nexcage/nexcage/internal/limits"
)

// Annotations nexcage keeps on the store's index entries. The reference is
// also the standard ref.name, so other OCI tools see it as the tag.
const (
	annotationSourceDigest = "io.nexcage.source-digest"
	annotationPulled       = "io.nexcage.pulled"
	annotationSize         = "io.nexcage.size"
	annotationName         = "io.nexcage.name"
)

// ErrStoreDir means no image store directory could be chosen or created:
// name another one (OpenStore's dir, or NEXCAGE_STORE).
var ErrStoreDir = errors.New("no usable image store directory")

// Store is the content-addressed OCI image layout every stage reads from.
type Store struct {
	Dir string
}

// DefaultStoreDir is $NEXCAGE_STORE, else $XDG_CACHE_HOME/nexcage/store,
// else ~/.cache/nexcage/store.
func DefaultStoreDir() (string, error) {
	if d := os.Getenv("NEXCAGE_STORE"); d != "" {
		return d, nil
	}
	if d := os.Getenv("XDG_CACHE_HOME"); d != "" {
		return filepath.Join(d, "nexcage", "store"), nil
	}
	home, err := os.UserHomeDir()
	if err != nil {
		return "", errkind.Errorf(ErrStoreDir, "no store directory: NEXCAGE_STORE, XDG_CACHE_HOME and HOME are all unset")
	}
	return filepath.Join(home, ".cache", "nexcage", "store"), nil
}

// OpenStore opens the layout at dir, creating it when absent.
func OpenStore(dir string) (*Store, error) {
	s, err := StoreAt(dir)
	if err != nil {
		return nil, err
	}
	return s, s.create()
}

// StoreAt is the store at dir, not created yet if it does not exist:
// reading a store that was never created finds no images, and the first
// Pull creates it once its source has answered. So listing, or a pull
// that fails before anything is fetched, leaves no empty store behind.
func StoreAt(dir string) (*Store, error) {
	abs, err := filepath.Abs(dir)
	if err != nil {
		return nil, err
	}
	return &Store{Dir: abs}, nil
}

// create makes the layout's directories and files where they are missing.
func (s *Store) create() error {
	abs := s.Dir
	if err := os.MkdirAll(filepath.Join(abs, "blobs", "sha256"), 0o755); err != nil {
		return errkind.Errorf(ErrStoreDir, "create the image store %s: %w: choose another directory", abs, err)
	}
	if _, err := os.Stat(filepath.Join(abs, "oci-layout")); errors.Is(err, os.ErrNotExist) {
		if err := atomicfile.WriteFile(filepath.Join(abs, "oci-layout"), []byte(`{"imageLayoutVersion":"1.0.0"}`), 0o644); err != nil {
			return err
		}
	}
	if _, err := os.Stat(filepath.Join(abs, "index.json")); errors.Is(err, os.ErrNotExist) {
		unlock, err := s.lock()
		if err != nil {
			return err
		}
		defer unlock()
		if _, err := os.Stat(filepath.Join(abs, "index.json")); errors.Is(err, os.ErrNotExist) {
			if err := s.writeIndex(&v1.IndexManifest{SchemaVersion: 2, MediaType: types.OCIImageIndex}); err != nil {
				return err
			}
		}
	}
	return nil
}

// Exists reports whether the store was created: it has its oci-layout or
// index.json file.
func (s *Store) Exists() bool {
	for _, f := range []string{"index.json", "oci-layout"} {
		if _, err := os.Lstat(filepath.Join(s.Dir, f)); err == nil {
			return true
		}
	}
	return false
}

// lock serialises index.json updates between processes sharing the store.
// Blobs need no lock: they are written under temporary names and renamed.
func (s *Store) lock() (func(), error) {
	// O_NOFOLLOW: a hostile store's lock symlink must not make us create
	// a file elsewhere (an empty /etc/nologin, as root).
	p := filepath.Join(s.Dir, ".nexcage.lock")
	f, err := os.OpenFile(p, os.O_CREATE|os.O_RDWR|syscall.O_NOFOLLOW|syscall.O_NONBLOCK, 0o644)
	if errors.Is(err, syscall.ELOOP) {
		return nil, fmt.Errorf("lock the image store %s: %s is a symlink, not a lock file: remove it", s.Dir, p)
	}
	if err != nil {
		return nil, fmt.Errorf("lock the image store %s: %w", s.Dir, err)
	}
	if fi, err := f.Stat(); err != nil || !fi.Mode().IsRegular() {
		f.Close()
		return nil, fmt.Errorf("lock the image store %s: %s is not a regular file: remove it", s.Dir, p)
	}
	return s.flock(f, syscall.LOCK_EX)
}

// maxStoreIndexSize bounds the store's own index.json: about half a KiB
// per image, so room for a hundred thousand.
const maxStoreIndexSize = 64 << 20

func (s *Store) readIndex() (*v1.IndexManifest, error) {
	p := filepath.Join(s.Dir, "index.json")
	b, err := limits.ReadFile(p, maxStoreIndexSize, "the store index "+p)
	if errors.Is(err, os.ErrNotExist) && !s.Exists() {
		// Never created (StoreAt): no images yet. A store with its
		// oci-layout but no index.json is damaged, and says so.
		return &v1.IndexManifest{SchemaVersion: 2, MediaType: types.OCIImageIndex}, nil
	}
	if err != nil {
		return nil, fmt.Errorf("read the store index: %w", err)
	}
	im, err := v1.ParseIndexManifest(bytes.NewReader(b))
	if err != nil {
		return nil, fmt.Errorf("the store index %s is corrupt (%v): move it aside and pull your images again (their blobs are reused)", p, err)
	}
	return im, nil
}

func (s *Store) writeIndex(im *v1.IndexManifest) error {
	b, err := json.MarshalIndent(im, "", "  ")
	if err != nil {
		return err
	}
	return atomicfile.WriteFile(filepath.Join(s.Dir, "index.json"), b, 0o644)
}

// BlobPath is where a blob lives in the store.
func (s *Store) BlobPath(h v1.Hash) string {
	return filepath.Join(s.Dir, "blobs", h.Algorithm, h.Hex)
}

// Image is a stored image: one platform of one reference.
type Image struct {
	Ref          string `json:"reference"`
	Digest       string `json:"digest"`
	SourceDigest string `json:"source_digest,omitempty"`
	// Name is the image name a local layout or archive records for the
	// image (localhost/app:tag), when there is one.
	Name     string    `json:"name,omitempty"`
	Platform string    `json:"platform"`
	Size     int64     `json:"size"`
	Pulled   time.Time `json:"pulled"`
}

func imageFromDescriptor(d v1.Descriptor) Image {
	img := Image{
		Ref:          d.Annotations[refNameAnnotation],
		Digest:       d.Digest.String(),
		SourceDigest: d.Annotations[annotationSourceDigest],
		Name:         d.Annotations[annotationName],
		Platform:     platformOf(d.Platform).String(),
	}
	img.Size, _ = strconv.ParseInt(d.Annotations[annotationSize], 10, 64)
	img.Pulled, _ = time.Parse(time.RFC3339, d.Annotations[annotationPulled])
	return img
}

// List returns the stored images sorted by reference and platform.
func (s *Store) List() ([]Image, error) {
	im, err := s.readIndex()
	if err != nil {
		return nil, err
	}
	var out []Image
	for _, d := range im.Manifests {
		out = append(out, imageFromDescriptor(d))
	}
	sort.Slice(out, func(i, j int) bool {
		if out[i].Ref != out[j].Ref {
			return out[i].Ref < out[j].Ref
		}
		return out[i].Platform < out[j].Platform
	})
	return out, nil
}

// Find returns the stored image for ref and platform.
func (s *Store) Find(ref Ref, p Platform) (Image, bool, error) {
	im, err := s.readIndex()
	if err != nil {
		return Image{}, false, err
	}
	for _, d := range im.Manifests {
		if d.Annotations[refNameAnnotation] == ref.String() && p.Matches(platformOf(d.Platform)) {
			img := imageFromDescriptor(d)
			s.touchUse(img.Ref, img.Platform) // the last use Prune's OlderThan reads (use.go)
			return img, true, nil
		}
	}
	return Image{}, false, nil
}

// record adds or replaces the index entry for (ref, platform).
func (s *Store) record(d v1.Descriptor) error {
	unlock, err := s.lock()
	if err != nil {
		return err
	}
	defer unlock()
	im, err := s.readIndex()
	if err != nil {
		return err
	}
	ref, plat := d.Annotations[refNameAnnotation], platformOf(d.Platform)
	kept := im.Manifests[:0]
	for _, old := range im.Manifests {
		if old.Annotations[refNameAnnotation] == ref && platformOf(old.Platform) == plat {
			continue
		}
		kept = append(kept, old)
	}
	im.Manifests = append(kept, d)
	return s.writeIndex(im)
}
