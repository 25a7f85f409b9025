package rootfs

import (
	"github.com/nexcage/nexcage/internal/ctxio"
	"github.com/nexcage/nexcage/internal/errkind"
	"github.com/opencontainers/go-digest"

	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"hash"
	"io"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"time"

	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/types"

	"github.com/nexcage/nexcage/internal/atomicfile"
	"github.com/nexcage/nexcage/internal/limits"
	"github.com/nexcage/nexcage/progress"
)

// PullOptions configure Pull.
type PullOptions struct {
	SourceOptions
	Progress progress.Reporter
	// Jobs is how many blobs download at once (default 3).
	Jobs int

	// onPlan hears the layers and config before any layer is fetched, and
	// tee then receives each layer's compressed bytes as they are stored:
	// PullFlatten decompresses layers while they download.
	onPlan func(layers []v1.Descriptor, rawConfig []byte) error
	tee    func(i int) *teeSink
}

// ErrDigestMismatch means a blob's bytes do not hash to its digest.
var ErrDigestMismatch = errors.New("digest mismatch")

// Pull copies one platform of ref into the store and records it under the
// reference. Blobs already stored are not fetched again. Docker-format
// images are stored with OCI media types, which is all umoci reads.
func (s *Store) Pull(ctx context.Context, ref Ref, opts PullOptions) (Image, error) {
	rep := opts.Progress
	if rep == nil {
		rep = progress.Discard
	}
	src, err := openSource(ctx, ref, opts.SourceOptions)
	if err != nil {
		return Image{}, err
	}
	defer src.Close()
	rep.Step("pulling %s (%s)", ref, src.platform)

	srcManifest, err := src.img.Manifest()
	if err != nil {
		return Image{}, fmt.Errorf("read the manifest of %s: %w", ref, err)
	}
	layers, err := src.img.Layers()
	if err != nil {
		return Image{}, fmt.Errorf("read the layers of %s: %w", ref, err)
	}
	if len(layers) != len(srcManifest.Layers) {
		return Image{}, fmt.Errorf("%s: the manifest lists %d layers but %d could be read", ref, len(srcManifest.Layers), len(layers))
	}

	// Layers first, config and manifest last: a manifest in the store
	// always has all its blobs.
	ociLayers := make([]v1.Descriptor, len(layers))
	var total int64
	for i, d := range srcManifest.Layers {
		mt, err := ociLayerMediaType(d.MediaType)
		if err != nil {
			return Image{}, fmt.Errorf("%s: layer %d (%s): %w", ref, i+1, d.Digest, err)
		}
		ociLayers[i] = v1.Descriptor{MediaType: mt, Size: d.Size, Digest: d.Digest, Annotations: d.Annotations, URLs: d.URLs}
		total += d.Size
	}
	if err := src.checkConfig(src.img); err != nil {
		return Image{}, err
	}
	rawConfig, err := src.img.RawConfigFile()
	if err != nil {
		return Image{}, fmt.Errorf("read the config of %s: %w", ref, err)
	}
	// Created only now that the source has answered: a pull of a
	// mistyped name leaves no empty store behind. Before onPlan, whose
	// flattener locks and looks up its cached chain in the store: two
	// jobs building on one base into a new store must find the same lock.
	if err := s.create(); err != nil {
		return Image{}, err
	}
	if opts.onPlan != nil {
		if err := opts.onPlan(ociLayers, rawConfig); err != nil {
			return Image{}, err
		}
	}
	// Only the network has transient failures worth retrying; a local file
	// that cannot be read will not become readable in a second.
	attempts := 1
	if ref.Transport == TransportDocker {
		attempts = 3
	}
	// Prune waits for the blobs below to be recorded (use.go).
	release, err := s.Hold()
	if err != nil {
		return Image{}, err
	}
	defer release()
	if err := s.fetchLayers(ctx, ref, layers, srcManifest.Layers, opts.Jobs, attempts, opts.tee, rep); err != nil {
		return Image{}, err
	}

	configDesc, err := s.putBytes(rawConfig)
	if err != nil {
		return Image{}, err
	}
	if configDesc.Digest != srcManifest.Config.Digest {
		return Image{}, errkind.Errorf(ErrDigestMismatch, "%s: the image config hashes to %s but the manifest names %s: the source is corrupt", ref, configDesc.Digest, srcManifest.Config.Digest)
	}
	configDesc.MediaType = types.OCIConfigJSON
	total += configDesc.Size

	rawManifest, err := ociManifest(src.img, srcManifest, configDesc, ociLayers)
	if err != nil {
		return Image{}, fmt.Errorf("%s: %w", ref, err)
	}
	manifestDesc, err := s.putBytes(rawManifest)
	if err != nil {
		return Image{}, err
	}
	total += manifestDesc.Size
	manifestDesc.MediaType = types.OCIManifestSchema1
	plat := v1.Platform{OS: src.platform.OS, Architecture: src.platform.Architecture, Variant: src.platform.Variant}
	manifestDesc.Platform = &plat
	manifestDesc.Annotations = map[string]string{
		refNameAnnotation:      ref.String(),
		annotationSourceDigest: src.digest.String(),
		annotationPulled:       time.Now().UTC().Format(time.RFC3339),
		annotationSize:         strconv.FormatInt(total, 10),
	}
	if src.name != "" {
		manifestDesc.Annotations[annotationName] = src.name
	}
	if err := s.record(manifestDesc); err != nil {
		return Image{}, err
	}
	img := imageFromDescriptor(manifestDesc)
	s.touchUse(img.Ref, img.Platform)
	rep.Step("stored %s as %s", ref, img.Digest)
	return img, nil
}

// ociManifest keeps an OCI source manifest byte for byte (so its digest
// stays the one the registry shows) and rewrites a Docker one with OCI media
// types, pointing at the same config and layer bytes.
func ociManifest(img v1.Image, m *v1.Manifest, config v1.Descriptor, layers []v1.Descriptor) ([]byte, error) {
	mt, err := img.MediaType()
	if err != nil {
		return nil, err
	}
	if mt == types.OCIManifestSchema1 && m.Config.MediaType == types.OCIConfigJSON {
		same := true
		for i := range layers {
			if layers[i].MediaType != m.Layers[i].MediaType {
				same = false
			}
		}
		if same {
			return img.RawManifest()
		}
	}
	out := v1.Manifest{
		SchemaVersion: 2,
		MediaType:     types.OCIManifestSchema1,
		Config:        config,
		Layers:        layers,
		Annotations:   m.Annotations,
	}
	return json.Marshal(out)
}

func ociLayerMediaType(mt types.MediaType) (types.MediaType, error) {
	switch mt {
	case types.DockerLayer, types.OCILayer:
		return types.OCILayer, nil
	case types.DockerUncompressedLayer, types.OCIUncompressedLayer:
		return types.OCIUncompressedLayer, nil
	case types.OCILayerZStd:
		return types.OCILayerZStd, nil
	case types.DockerForeignLayer, types.OCIRestrictedLayer, types.OCIUncompressedRestrictedLayer:
		return "", fmt.Errorf("foreign (Windows) layers cannot be used in a Linux container")
	}
	return "", fmt.Errorf("unsupported layer media type %q: nexcage reads tar, tar+gzip and tar+zstd layers", mt)
}

// fetchLayers stores every layer blob not yet in the store, a few at once.
func (s *Store) fetchLayers(ctx context.Context, ref Ref, layers []v1.Layer, descs []v1.Descriptor, jobs, attempts int, tee func(int) *teeSink, rep progress.Reporter) error {
	if jobs <= 0 {
		jobs = 3
	}
	return eachLayer(ctx, len(layers), jobs, func(ctx context.Context, i int) error {
		var sink *teeSink
		if tee != nil {
			sink = tee(i)
		}
		label := fmt.Sprintf("layer %d/%d %s", i+1, len(layers), shortDigest(digest.Digest(descs[i].Digest.String())))
		if err := s.fetchBlob(ctx, layers[i], descs[i], label, attempts, sink, ref.Transport == TransportDocker, rep); err != nil {
			// eachLayer cancels the others: no reader waits for this one.
			return fmt.Errorf("pull %s: layer %d (%s): %w", ref, i+1, descs[i].Digest, err)
		}
		// The slot is the reader's too: layers in flight, and their
		// buffers, stay as few as the downloads.
		sink.waitConsumed(ctx)
		return nil
	})
}

// fetchBlob downloads one layer into the store, retrying transient read
// failures; a digest mismatch is never retried: the source is wrong. A
// sink, when given, gets the layer's bytes as they arrive (or from the
// store, when the blob is there already).
func (s *Store) fetchBlob(ctx context.Context, l v1.Layer, d v1.Descriptor, label string, attempts int, sink *teeSink, sourceVerifies bool, rep progress.Reporter) error {
	if s.hasBlob(d.Digest, d.Size) {
		rep.Bytes(label, d.Size).Done("already stored")
		sink.copyFrom(s.BlobPath(d.Digest))
		return nil
	}
	var err error
	for attempt := 1; attempt <= attempts; attempt++ {
		c := rep.Bytes(label, d.Size)
		err = s.fetchOnce(ctx, l, d, c, sink, sourceVerifies)
		if err == nil {
			c.Done("done")
			sink.close(nil)
			return nil
		}
		c.Done("failed")
		// A retry starts the stream over, which the sink cannot follow.
		sink.close(errPartialStream)
		if errors.Is(err, ErrDigestMismatch) || ctx.Err() != nil {
			return err
		}
		if attempt < attempts {
			rep.Warn("%s: %v; retrying", label, err)
			select {
			case <-time.After(time.Duration(attempt) * time.Second):
			case <-ctx.Done():
				return ctx.Err()
			}
		}
	}
	return err
}

func (s *Store) fetchOnce(ctx context.Context, l v1.Layer, d v1.Descriptor, c progress.Counter, sink *teeSink, sourceVerifies bool) error {
	rc, err := l.Compressed()
	if err != nil {
		return err
	}
	defer rc.Close()
	var r io.Reader = &progress.Reader{R: rc, C: c}
	if sink != nil {
		r = io.TeeReader(r, sink)
	}
	_, err = s.putBlob(ctx, d.Digest, d.Size, r, sourceVerifies)
	// go-containerregistry verifies registry blobs as it reads them; its
	// error type is internal, so recognise it by its words.
	if err != nil && !errors.Is(err, ErrDigestMismatch) && strings.Contains(err.Error(), "error verifying") {
		return errkind.Errorf(ErrDigestMismatch, "the blob does not match its digest (%v): the registry or a proxy serves corrupt data", err)
	}
	return err
}

var errPartialStream = errors.New("the layer download was restarted")

// teeSink feeds a layer's bytes to a reader in another goroutine. Its
// writes never fail: if the reader gives up, the pull goes on regardless,
// and the flattening falls back to reading the stored blob.
type teeSink struct {
	w      *layerPipe
	mu     sync.Mutex
	broken bool
	closed bool
}

func newTeeSink(w *layerPipe) *teeSink { return &teeSink{w: w} }

func (t *teeSink) Write(p []byte) (int, error) {
	t.mu.Lock()
	defer t.mu.Unlock()
	if !t.broken && !t.closed {
		if _, err := t.w.Write(p); err != nil {
			t.broken = true
		}
	}
	return len(p), nil
}

// close ends the stream, with err for the reader when not nil; only the
// first close counts.
func (t *teeSink) close(err error) {
	if t == nil {
		return
	}
	t.mu.Lock()
	defer t.mu.Unlock()
	if !t.closed {
		t.closed = true
		t.w.CloseWrite(err)
	}
}

// waitConsumed returns once the reader is done with the layer.
func (t *teeSink) waitConsumed(ctx context.Context) {
	if t == nil {
		return
	}
	select {
	case <-t.w.consumed():
	case <-ctx.Done():
	}
}

// copyFrom streams a stored blob to the reader.
func (t *teeSink) copyFrom(path string) {
	if t == nil {
		return
	}
	select {
	case <-t.w.consumed():
		t.close(nil) // the reader wants no more of it (a cached layer)
		return
	default:
	}
	f, err := os.Open(path)
	if err != nil {
		t.close(err)
		return
	}
	defer f.Close()
	_, err = io.Copy(t, f)
	t.close(err)
}

// putBlob writes r into the store under want, verifying the digest (and the
// size when known) before the blob becomes visible. sourceVerifies says r
// fails at its end unless its bytes hash to want (go-containerregistry's
// registry blobs do): hashing them again would only cost a build a tenth
// of a second of CPU on a large image.
func (s *Store) putBlob(ctx context.Context, want v1.Hash, size int64, r io.Reader, sourceVerifies bool) (v1.Hash, error) {
	if want.Algorithm != "sha256" {
		return v1.Hash{}, fmt.Errorf("unsupported digest algorithm %q: nexcage verifies sha256 blobs", want.Algorithm)
	}
	f, err := atomicfile.Create(s.BlobPath(want), 0o644)
	if err != nil {
		return v1.Hash{}, err
	}
	defer f.Abort()
	var h hash.Hash
	var w io.Writer = f
	if !sourceVerifies {
		h = sha256.New()
		w = io.MultiWriter(f, h)
	}
	// Never more than the manifest says: a blob is refused as soon as it
	// runs past its size, not after filling the disk. The store's file
	// system must hold it too.
	in := io.Reader(ctxio.Reader{Ctx: ctx, R: r})
	if size >= 0 {
		if err := (&limits.Disk{Dir: filepath.Dir(s.BlobPath(want))}).Reserve(size, "the blob "+want.String()); err != nil {
			return v1.Hash{}, err
		}
		in = io.LimitReader(in, size+1)
	}
	n, err := io.Copy(w, in)
	if err != nil {
		return v1.Hash{}, err
	}
	if size >= 0 && n > size {
		return v1.Hash{}, limits.Errorf(ErrDigestMismatch, limits.BlobSize, n, size, "the blob is larger than the %d bytes the manifest says: the source is corrupt; refusing it before reading the rest", size)
	}
	got := want
	if h != nil {
		got = v1.Hash{Algorithm: "sha256", Hex: hex.EncodeToString(h.Sum(nil))}
	}
	if got != want {
		return v1.Hash{}, errkind.Errorf(ErrDigestMismatch, "the blob hashes to %s, not %s: the source is corrupt or was changed during the pull", got, want)
	}
	if size >= 0 && n != size {
		return v1.Hash{}, errkind.Errorf(ErrDigestMismatch, "the blob is %d bytes, the manifest says %d", n, size)
	}
	return got, f.Commit()
}

// putBytes stores small content (configs, manifests) by its own digest.
func (s *Store) putBytes(b []byte) (v1.Descriptor, error) {
	sum := sha256.Sum256(b)
	h := v1.Hash{Algorithm: "sha256", Hex: hex.EncodeToString(sum[:])}
	if !s.hasBlob(h, int64(len(b))) {
		if err := atomicfile.WriteFile(s.BlobPath(h), b, 0o644); err != nil {
			return v1.Descriptor{}, err
		}
	}
	return v1.Descriptor{Digest: h, Size: int64(len(b))}, nil
}

// hasBlob reports whether the store holds the blob intact. It hashes the
// file: a size check alone would keep serving a corrupt blob forever, and
// a pull is exactly when a user expects damage to be repaired.
func (s *Store) hasBlob(h v1.Hash, size int64) bool {
	// The store is not trusted: no symlink, no FIFO, the exact size.
	f, err := s.openBlobFile(digest.Digest(h.String()), size)
	if err != nil {
		return false
	}
	defer f.Close()
	sum := sha256.New()
	if _, err := io.Copy(sum, f); err != nil {
		return false
	}
	return hex.EncodeToString(sum.Sum(nil)) == h.Hex
}
