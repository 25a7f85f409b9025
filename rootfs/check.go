package rootfs

import (
	"bytes"
	"context"
	"crypto/sha256"
	"crypto/sha512"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"github.com/opencontainers/go-digest"
	"hash"
	"io"
	"os"
	"path/filepath"
	"strings"
	"syscall"

	v1 "github.com/google/go-containerregistry/pkg/v1"
	"golang.org/x/sys/unix"

	"github.com/nexcage/nexcage/health"
	"github.com/nexcage/nexcage/internal/atomicfile"
	"github.com/nexcage/nexcage/internal/ctxio"
	"github.com/nexcage/nexcage/internal/saferoot"
	"github.com/nexcage/nexcage/progress"
)

// Check verifies the store: leftovers of interrupted writes, the layout
// files, every blob against its digest, and every index entry's manifest,
// config and layers. Problems are results, not errors; the error is only
// for a cancelled context. With Repair, corrupt blobs and leftovers are
// deleted and index entries whose blobs are gone are dropped under the
// store's lock (the image is pulled again on next use).
func (s *Store) Check(ctx context.Context, opts health.Options) ([]health.Result, error) {
	c := &storeCheck{s: s, opts: opts, target: s.Dir}
	fi, err := os.Stat(s.Dir)
	switch {
	case errors.Is(err, os.ErrNotExist):
		return []health.Result{c.ok("image store: none yet (the first pull creates it)")}, nil
	case err != nil:
		return []health.Result{c.fail("image store", err.Error(), "check the path and its permissions")}, nil
	case !fi.IsDir():
		return []health.Result{c.fail("image store", s.Dir+" is not a directory", "name the store directory instead")}, nil
	}
	c.out = append(c.out, health.Leftovers(s.Dir, atomicfile.IsTemp, true, c.target, "the store", opts)...)
	c.layoutFile()
	im := c.index()
	if err := c.blobs(ctx); err != nil {
		return nil, err
	}
	if im != nil && !c.blobsRefused {
		c.images(im)
	}
	if err := c.cacheChains(ctx); err != nil { // checkcache.go
		return nil, err
	}
	return c.out, nil
}

type storeCheck struct {
	s      *Store
	opts   health.Options
	target string
	out    []health.Result
	// bad holds the blobs that are corrupt (and, with Repair, deleted).
	bad map[v1.Hash]bool
	// blobsRefused: blobs/ is a symlink, so no blob, and no index entry
	// needing one, is judged (or repaired).
	blobsRefused bool
}

func (c *storeCheck) ok(check string) health.Result {
	return health.Result{Status: health.OK, Check: check, Target: c.target}
}

func (c *storeCheck) fail(check, cause, fix string) health.Result {
	return health.Result{Status: health.Fail, Check: check, Target: c.target, Cause: cause, Fix: fix}
}

// failRepair is a failure that a repair fixes, doing what.
func (c *storeCheck) failRepair(check, cause, what, fix string) health.Result {
	r := c.fail(check, cause, fix)
	r.Repair = what
	return r
}

func (c *storeCheck) repaired(check, cause, done string) health.Result {
	return health.Result{Status: health.OK, Check: check, Target: c.target, Cause: cause, Fix: done, Repaired: true}
}

const ociLayoutJSON = `{"imageLayoutVersion":"1.0.0"}`

func (c *storeCheck) layoutFile() {
	const check = "oci-layout"
	p := filepath.Join(c.s.Dir, "oci-layout")
	b, err := os.ReadFile(p)
	var v struct {
		Version string `json:"imageLayoutVersion"`
	}
	cause := ""
	switch {
	case errors.Is(err, os.ErrNotExist):
		cause = "the file is missing"
	case err != nil:
		cause = err.Error()
	case json.Unmarshal(b, &v) != nil || v.Version == "":
		cause = fmt.Sprintf("it is not an OCI layout file: %.60q", b)
	}
	switch {
	case cause == "":
		c.out = append(c.out, c.ok(check+": image layout "+v.Version))
	case c.opts.Repair:
		if err := atomicfile.WriteFile(p, []byte(ociLayoutJSON), 0o644); err != nil {
			c.out = append(c.out, c.fail(check, cause+"; rewriting it failed: "+err.Error(), "write "+ociLayoutJSON+" to "+p))
			return
		}
		c.out = append(c.out, c.repaired(check, cause, "rewrote it as "+ociLayoutJSON))
	default:
		c.out = append(c.out, c.failRepair(check, cause, "rewrites it", ""))
	}
}

func (c *storeCheck) index() *v1.IndexManifest {
	im, err := c.s.readIndex()
	if err != nil {
		c.out = append(c.out, c.fail("index.json", err.Error(), "move index.json aside and pull your images again: their blobs are reused"))
		return nil
	}
	c.out = append(c.out, c.ok(fmt.Sprintf("index.json: %d image(s)", len(im.Manifests))))
	return im
}

// checkHashes are the digest algorithms the store can verify.
var checkHashes = map[string]func() hash.Hash{"sha256": sha256.New, "sha512": sha512.New}

// blobs hashes every blob. A corrupt blob is a failure of its own line;
// the good ones share one line.
//
// Blobs are read and deleted relative to a descriptor of the store, never
// through a symlink: a store whose blobs/ (or a blob) is a symlink would
// otherwise have --repair delete files outside it.
func (c *storeCheck) blobs(ctx context.Context) error {
	c.bad = map[v1.Hash]bool{}
	root := filepath.Join(c.s.Dir, "blobs")
	if fi, err := os.Lstat(root); err == nil && fi.Mode()&os.ModeSymlink != 0 {
		target, _ := os.Readlink(root)
		c.out = append(c.out, c.fail("blobs", fmt.Sprintf("%s is a symlink (to %s), not a directory: nexcage follows no symlink inside a store, so no blob or image was checked or repaired", root, target),
			"replace the symlink by the directory itself, or check the real store"))
		c.blobsRefused = true
		return nil
	}
	store, err := saferoot.Open(c.s.Dir)
	if err != nil {
		c.out = append(c.out, c.fail("blobs", err.Error(), "check the store's permissions"))
		return nil
	}
	defer store.Close()
	algs, err := os.ReadDir(root)
	if err != nil && !errors.Is(err, os.ErrNotExist) {
		c.out = append(c.out, c.fail("blobs", err.Error(), "check the store's permissions"))
		return nil
	}
	var good, size int64
	for _, a := range algs {
		newHash := checkHashes[a.Name()]
		dir := filepath.Join(root, a.Name())
		if !a.IsDir() || atomicfile.IsTemp(a.Name()) {
			continue
		}
		ents, err := os.ReadDir(dir)
		if err != nil {
			c.out = append(c.out, c.fail("blobs/"+a.Name(), err.Error(), "check the store's permissions"))
			continue
		}
		for _, e := range ents {
			if atomicfile.IsTemp(e.Name()) {
				continue // reported as a leftover
			}
			h := v1.Hash{Algorithm: a.Name(), Hex: e.Name()}
			check := "blob " + shortHash(h)
			if newHash == nil || !validHex(e.Name(), newHash().Size()) || !e.Type().IsRegular() {
				c.out = append(c.out, health.Result{Status: health.Warn, Check: "blobs/" + a.Name() + "/" + e.Name(), Target: c.target,
					Cause: "not a blob nexcage can verify (unknown algorithm, bad name or not a regular file)", Fix: "remove it if nothing else uses this layout"})
				continue
			}
			p := filepath.Join(dir, e.Name())
			rel := "blobs/" + a.Name() + "/" + e.Name()
			n, sum, ino, err := hashFile(ctx, store, rel, newHash)
			if err != nil {
				if ctx.Err() != nil {
					return ctx.Err()
				}
				c.out = append(c.out, c.fail(check, err.Error(), "check the store's permissions and disk"))
				continue
			}
			if sum == h.Hex {
				good++
				size += n
				continue
			}
			c.bad[h] = true
			cause := fmt.Sprintf("the content hashes to %s:%s, not %s: the blob is corrupt", h.Algorithm, sum, h)
			if !c.opts.Repair {
				c.out = append(c.out, c.failRepair(check, cause, "deletes it", "the images that need it are pulled again on next use"))
				continue
			}
			// A pull may have replaced the file since it was hashed (it
			// renames a verified blob over it): delete only what was read.
			removed, err := removeIfSame(store, rel, ino)
			switch {
			case err != nil:
				c.out = append(c.out, c.fail(check, cause+"; deleting it failed: "+err.Error(), "delete "+p+" by hand"))
			case !removed:
				delete(c.bad, h)
				c.out = append(c.out, c.ok(check+": a pull replaced the corrupt copy meanwhile"))
			default:
				c.out = append(c.out, c.repaired(check, cause, "deleted it"))
			}
		}
	}
	c.out = append(c.out, c.ok(fmt.Sprintf("blobs: %d match their digests (%s)", good, progress.HumanBytes(size))))
	return nil
}

func validHex(s string, size int) bool {
	if len(s) != 2*size {
		return false
	}
	_, err := hex.DecodeString(s)
	return err == nil && strings.ToLower(s) == s
}

func shortHash(h v1.Hash) string {
	if len(h.Hex) > 12 {
		return h.Algorithm + ":" + h.Hex[:12]
	}
	return h.String()
}

func hashFile(ctx context.Context, store *saferoot.Root, rel string, newHash func() hash.Hash) (int64, string, uint64, error) {
	// O_NONBLOCK: a FIFO swapped in after the listing must not hang the
	// check on open; only a regular file is read.
	f, err := store.OpenFile(rel, syscall.O_RDONLY|syscall.O_NONBLOCK)
	if err != nil {
		return 0, "", 0, err
	}
	defer f.Close()
	var ino uint64
	fi, err := f.Stat()
	if err != nil {
		return 0, "", 0, err
	}
	if !fi.Mode().IsRegular() {
		return 0, "", 0, fmt.Errorf("%s is not a regular file (%s)", rel, fi.Mode().Type())
	}
	if st, ok := fi.Sys().(*syscall.Stat_t); ok {
		ino = st.Ino
	}
	h := newHash()
	n, err := io.Copy(h, ctxio.Reader{Ctx: ctx, R: f})
	if err != nil {
		return 0, "", 0, err
	}
	return n, hex.EncodeToString(h.Sum(nil)), ino, nil
}

// removeIfSame deletes rel if it is still the file (inode) that was read.
func removeIfSame(store *saferoot.Root, rel string, ino uint64) (bool, error) {
	return store.RemoveFile(rel, func(st *unix.Stat_t) bool { return ino == 0 || st.Ino == ino })
}

// entryNeeds is an index entry and the blobs it cannot do without.
type entryNeeds struct {
	desc  v1.Descriptor
	blobs []v1.Descriptor // manifest, config, layers
	why   string          // set when the manifest itself cannot be read
}

func (c *storeCheck) needs(d v1.Descriptor) entryNeeds {
	n := entryNeeds{desc: d, blobs: []v1.Descriptor{d}}
	if !c.present(d) {
		return n
	}
	b, err := c.s.readBlob(digest.Digest(d.Digest.String()), -1, MaxMetadataSize, "the manifest")
	if err != nil {
		n.why = err.Error()
		return n
	}
	m, err := v1.ParseManifest(bytes.NewReader(b))
	if err != nil || m.Config.Digest.Hex == "" {
		n.why = "the manifest is not an image manifest"
		return n
	}
	n.blobs = append(n.blobs, m.Config)
	n.blobs = append(n.blobs, m.Layers...)
	return n
}

// present reports whether a blob is in the store, the right size and not
// known to be corrupt.
func (c *storeCheck) present(d v1.Descriptor) bool {
	if c.bad[d.Digest] {
		return false
	}
	size := d.Size
	if size <= 0 {
		size = -1
	}
	f, err := c.s.openBlobFile(digest.Digest(d.Digest.String()), size)
	if err != nil {
		return false
	}
	f.Close()
	return true
}

// missing lists what an entry lacks, in words.
func (c *storeCheck) missing(n entryNeeds) []string {
	var out []string
	if n.why != "" {
		out = append(out, n.why)
	}
	for i, b := range n.blobs {
		if c.present(b) {
			continue
		}
		what := "the manifest"
		switch {
		case i == 1:
			what = "the config"
		case i > 1:
			what = fmt.Sprintf("layer %d", i-1)
		}
		state := "is missing"
		if c.bad[b.Digest] {
			state = "is corrupt"
			if c.opts.Repair {
				state = "was corrupt and is deleted"
			}
		} else if f, err := c.s.openBlobFile(digest.Digest(b.Digest.String()), -1); err == nil {
			if fi, err := f.Stat(); err == nil && b.Size > 0 && fi.Size() != b.Size {
				state = fmt.Sprintf("is %d bytes, not %d", fi.Size(), b.Size)
			}
			f.Close()
		} else if !errors.Is(err, os.ErrNotExist) {
			state = "is unreadable: " + err.Error()
		}
		out = append(out, fmt.Sprintf("%s %s %s", what, b.Digest, state))
	}
	return out
}

func entryName(d v1.Descriptor) string {
	img := imageFromDescriptor(d)
	name := img.Ref
	if name == "" {
		name = "(no reference) " + d.Digest.String()
	}
	return fmt.Sprintf("image %s (%s)", name, img.Platform)
}

func (c *storeCheck) images(im *v1.IndexManifest) {
	drop := map[string]bool{} // entry keys to drop
	var broken []entryNeeds
	for _, d := range im.Manifests {
		n := c.needs(d)
		miss := c.missing(n)
		if len(miss) == 0 {
			c.out = append(c.out, c.ok(fmt.Sprintf("%s: manifest, config and %d layer(s) present and intact", entryName(d), len(n.blobs)-2)))
			continue
		}
		if !c.opts.Repair {
			ref := imageFromDescriptor(d).Ref
			c.out = append(c.out, c.failRepair(entryName(d), strings.Join(miss, "; "), "drops the entry",
				"pulling "+ref+" then fetches the image again (blobs still stored are reused)"))
			continue
		}
		drop[entryKey(d)] = true
		broken = append(broken, n)
	}
	if len(broken) == 0 {
		return
	}
	dropped, err := c.dropEntries(drop)
	for _, n := range broken {
		miss := strings.Join(c.missing(n), "; ")
		switch {
		case err != nil:
			c.out = append(c.out, c.fail(entryName(n.desc), miss+"; dropping the entry failed: "+err.Error(), "move index.json aside and pull your images again"))
		case dropped[entryKey(n.desc)]:
			c.out = append(c.out, c.repaired(entryName(n.desc), miss, "dropped the index entry: the image is pulled again on next use ("+imageFromDescriptor(n.desc).Ref+")"))
		default:
			// A pull restored it while we looked.
			c.out = append(c.out, c.ok(entryName(n.desc)+": pulled again meanwhile"))
		}
	}
}

func entryKey(d v1.Descriptor) string {
	return d.Annotations[refNameAnnotation] + "\x00" + platformOf(d.Platform).String() + "\x00" + d.Digest.String()
}

// dropEntries removes index entries under the store's lock, re-checking
// each against the disk first: a concurrent pull may have fetched the
// missing blobs again and recorded the image anew.
func (c *storeCheck) dropEntries(keys map[string]bool) (map[string]bool, error) {
	unlock, err := c.s.lock()
	if err != nil {
		return nil, err
	}
	defer unlock()
	im, err := c.s.readIndex()
	if err != nil {
		return nil, err
	}
	dropped := map[string]bool{}
	kept := im.Manifests[:0]
	for _, d := range im.Manifests {
		if keys[entryKey(d)] && len(c.missing(c.needs(d))) > 0 {
			dropped[entryKey(d)] = true
			continue
		}
		kept = append(kept, d)
	}
	if len(dropped) == 0 {
		return dropped, nil
	}
	im.Manifests = kept
	return dropped, c.s.writeIndex(im)
}

// tempDirPrefixes name the scratch directories nexcage makes in the system
// temporary directory: layer spills of build (flatten), extracted
// oci-archive sources, and the staged build's work directory.
var tempDirPrefixes = []string{"nexcage-flatten-", "nexcage-oci-archive-", "nexcage-build-"}

// CheckTempDir reports scratch directories that killed nexcage runs left
// in the temporary directory dir (the ones no running process has open);
// with Repair it removes them.
func CheckTempDir(dir string, opts health.Options) []health.Result {
	match := func(name string) bool {
		for _, p := range tempDirPrefixes {
			if strings.HasPrefix(name, p) {
				return true
			}
		}
		return false
	}
	return health.Leftovers(dir, match, false, dir, "the temporary directory", opts)
}
