package rootfs

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"

	"golang.org/x/sys/unix"

	"github.com/nexcage/nexcage/health"
	"github.com/nexcage/nexcage/internal/atomicfile"
	"github.com/nexcage/nexcage/internal/ctxio"
	"github.com/nexcage/nexcage/internal/saferoot"
	"github.com/nexcage/nexcage/progress"
)

// cacheChains verifies the store's cached layer chains (pruneChainsDir):
// each entry's manifest.json reads, and each file it records ("index",
// "data") is a regular file of the recorded size and sha256. A corrupt
// entry fails; Repair removes it (the next build that needs the chain
// flattens its layers again and caches it anew). Good entries share one
// line. Temporary entries are the leftovers check already reports.
//
// This is the hook the build cache's own verification belongs in when it
// knows more of an entry than its manifest says.
func (c *storeCheck) cacheChains(ctx context.Context) error {
	root, err := saferoot.Open(c.s.Dir)
	if err != nil {
		return nil
	}
	defer root.Close()
	f, err := root.OpenFile(pruneChainsDir, unix.O_RDONLY|unix.O_DIRECTORY)
	if errors.Is(err, fs.ErrNotExist) {
		return nil
	}
	if err != nil {
		c.out = append(c.out, c.fail(pruneChainsDir, fmt.Sprintf("not a directory that can be read without following a symlink (%v): no cached chain was checked", err),
			"replace it by a directory, or remove it: the cache is rebuilt by the next builds"))
		return nil
	}
	ents, err := f.ReadDir(-1)
	f.Close()
	if err != nil {
		c.out = append(c.out, c.fail(pruneChainsDir, err.Error(), "check the store's permissions"))
		return nil
	}
	var good, size int64
	for _, e := range ents {
		if err := ctx.Err(); err != nil {
			return err
		}
		if atomicfile.IsTemp(e.Name()) {
			continue
		}
		rel := pruneChainsDir + "/" + e.Name()
		check := "cached chain " + e.Name()
		if len(e.Name()) > 12 {
			check = "cached chain " + e.Name()[:12]
		}
		if !e.IsDir() || !validHex(e.Name(), sha256.Size) {
			c.out = append(c.out, health.Result{Status: health.Warn, Check: rel, Target: c.target,
				Cause: "not a cached chain nexcage writes (bad name, or not a directory)", Fix: "remove it"})
			continue
		}
		n, err := c.s.verifyCachedChain(ctx, root, rel)
		if err == nil {
			good++
			size += n
			continue
		}
		if ctx.Err() != nil {
			return ctx.Err()
		}
		cause := err.Error()
		if !c.opts.Repair {
			c.out = append(c.out, c.failRepair(check, cause, "removes the entry", "the next build that needs it flattens those layers again"))
			continue
		}
		if err := removeStoreTree(c.s.Dir, rel); err != nil {
			c.out = append(c.out, c.fail(check, cause+"; removing it failed: "+err.Error(), "remove "+filepath.Join(c.s.Dir, rel)+" by hand"))
			continue
		}
		c.out = append(c.out, c.repaired(check, cause, "removed the entry: the next build that needs it caches it again"))
	}
	c.out = append(c.out, c.ok(fmt.Sprintf("cached chains: %d intact (%s)", good, progress.HumanBytes(size))))
	return nil
}

// verifyCachedChain checks one entry against its manifest and returns
// the bytes of the files it verified.
func (s *Store) verifyCachedChain(ctx context.Context, root *saferoot.Root, rel string) (int64, error) {
	m, err := s.readCachedChainManifest(root, rel)
	if err != nil {
		return 0, err
	}
	var total int64
	for _, f := range []struct {
		name, sum string
		size      int64
	}{{"index", m.IndexHash, m.IndexSize}, {"data", m.DataHash, m.DataSize}} {
		if f.sum == "" {
			continue // the entry records no such file
		}
		fh, fi, err := root.OpenRegular(rel + "/" + f.name)
		if err != nil {
			return 0, fmt.Errorf("%s: %v", f.name, err)
		}
		if fi.Size() != f.size {
			fh.Close()
			return 0, fmt.Errorf("%s is %d bytes, the manifest says %d", f.name, fi.Size(), f.size)
		}
		h := sha256.New()
		_, err = io.Copy(h, ctxio.Reader{Ctx: ctx, R: fh})
		fh.Close()
		if err != nil {
			return 0, fmt.Errorf("%s: %v", f.name, err)
		}
		if got := hex.EncodeToString(h.Sum(nil)); got != f.sum {
			return 0, fmt.Errorf("%s hashes to sha256:%s, the manifest says sha256:%s: the entry is corrupt", f.name, got, f.sum)
		}
		total += f.size
	}
	return total, nil
}

// removeStoreTree removes the directory rel of the store dir with os.Root,
// which resolves nothing outside it; RemoveAll removes a symlink inside
// the tree, never what it points to.
func removeStoreTree(dir, rel string) error {
	r, err := os.OpenRoot(dir)
	if err != nil {
		return err
	}
	defer r.Close()
	if fi, err := r.Lstat(rel); err != nil || !fi.IsDir() {
		return fmt.Errorf("%s is no longer a directory", rel)
	}
	return r.RemoveAll(rel)
}
