// Package pipeline chains nexcage's stages into the jobs the nexcage
// command does, for Go programs that want them without the command:
//
//   - Build and BuildAll: an image reference → a Proxmox VE template with
//     its .conf and .json sidecars, pulling as a rootfs.PullPolicy says
//     and skipping a template that is up to date;
//   - Unpack: an image → an OCI runtime bundle, pulling as the policy says;
//   - Deploy: a template file or volume id → a container on a PVE host,
//     validated first and undone on failure;
//   - Create: a named container from a template or an image, built first
//     into a template cache when needed;
//   - ExportOCIArchive: an image → the OCI archive PVE 9.1 imports;
//   - Check and CheckHost: the integrity of templates, bundles, stores,
//     PVE storages and of the host itself.
//
// Every function takes an options struct whose zero value is usable,
// reports progress and warnings through a progress.Reporter of the
// caller's, and returns the stages' typed errors.
package pipeline

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"sync"
	"time"

	"github.com/nexcage/nexcage/convert"
	"github.com/nexcage/nexcage/progress"
	"github.com/nexcage/nexcage/rootfs"
)

// BuildOptions configure Build and BuildAll.
type BuildOptions struct {
	// Convert says what template to write and where (Output, compression,
	// name, process overrides, ...). Its Progress defaults to Progress.
	Convert convert.Options
	// Source says how to reach the image; a zero Platform is this
	// machine's (rootfs.HostPlatform).
	Source rootfs.SourceOptions
	// Pull is when the image is read from its source rather than the
	// store ("" = rootfs.PullMissing).
	Pull rootfs.PullPolicy
	// Force rebuilds a template that is up to date.
	Force bool
	// Staged unpacks the image into a temporary bundle and converts that
	// (the reference path; slower) instead of streaming its layers into
	// the template. Both give the same bytes.
	Staged bool
	// MaxLayerSize and MaxEntries bound what a hostile image may claim
	// (0 = rootfs.DefaultMaxLayerSize, rootfs.DefaultMaxEntries).
	MaxLayerSize int64
	MaxEntries   int64
	// Jobs is how many images BuildAll builds at once (0 = 1).
	Jobs     int
	Progress progress.Reporter
}

// BuildResult is one image's outcome.
type BuildResult struct {
	// Image is the canonical reference (docker://…, oci:/abs/dir:tag), or
	// the argument as given when it is not a reference.
	Image string
	// Result says what was written, or (UpToDate) what is already there.
	Result *convert.Result
	// UpToDate is true when nothing was written: a template of the same
	// source digest and options was there.
	UpToDate bool
	// Seconds is the whole build's wall time; Stages splits it: "flatten"
	// (pull and read the layers, or unpack when staged) and "write" (the
	// template and sidecars).
	Seconds float64
	Stages  map[string]float64
	// Err is this image's failure (BuildAll only; Build returns it).
	Err error
}

// RefError is an image argument that is not an image reference.
type RefError struct {
	Image string
	Err   error
}

func (e *RefError) Error() string { return e.Err.Error() }
func (e *RefError) Unwrap() error { return e.Err }

// Build writes image's template as opts say, unless it is up to date. image
// is a reference rootfs.ParseRef reads (docker://REF or REF, oci:DIR[:TAG],
// oci-archive:FILE[:TAG], docker-archive:FILE[:REF]); one that is not is a
// *RefError. An image the store lacks under rootfs.PullNever is a
// *rootfs.NotStoredError.
func Build(ctx context.Context, store *rootfs.Store, image string, opts BuildOptions) (*BuildResult, error) {
	r := &BuildResult{Image: image, Stages: map[string]float64{}}
	start := time.Now()
	ref, err := rootfs.ParseRef(image)
	if err != nil {
		return r, &RefError{Image: image, Err: err}
	}
	r.Image = ref.String()
	opts = opts.defaults()
	res, fresh, err := build(ctx, store, ref, opts, r.Stages)
	r.Result, r.UpToDate, r.Seconds = res, !fresh && err == nil, time.Since(start).Seconds()
	if err != nil {
		r.Result = nil
	}
	return r, err
}

func (o BuildOptions) defaults() BuildOptions {
	if o.Progress == nil {
		o.Progress = progress.Discard
	}
	if o.Convert.Progress == nil {
		o.Convert.Progress = o.Progress
	}
	if o.Source.Platform == (rootfs.Platform{}) {
		o.Source.Platform = rootfs.HostPlatform()
	}
	return o
}

// BuildAll builds several images, opts.Jobs at a time; one failure does
// not stop the others. Each result's Err is its image's failure. With
// several images each warning is prefixed with its image, and an empty
// Convert.Output is the current directory.
func BuildAll(ctx context.Context, store *rootfs.Store, images []string, opts BuildOptions) []BuildResult {
	opts = opts.defaults()
	if len(images) > 1 && opts.Convert.Output == "" {
		opts.Convert.Output = "./"
	}
	results := make([]BuildResult, len(images))
	sem := make(chan struct{}, max(opts.Jobs, 1))
	var wg sync.WaitGroup
	for i, image := range images {
		wg.Add(1)
		go func() {
			defer wg.Done()
			sem <- struct{}{}
			defer func() { <-sem }()
			o := opts
			if len(images) > 1 {
				name := image
				if ref, err := rootfs.ParseRef(image); err == nil {
					name = ref.String()
				}
				o.Progress = progress.WarnPrefix(opts.Progress, name+": ")
				o.Convert.Progress = o.Progress
			}
			r, err := Build(ctx, store, image, o)
			r.Err = err
			results[i] = *r
		}()
	}
	wg.Wait()
	return results
}

// build builds one image unless its template is up to date; fresh says
// whether anything was written. It records each stage's seconds.
func build(ctx context.Context, store *rootfs.Store, ref rootfs.Ref, opts BuildOptions, stages map[string]float64) (*convert.Result, bool, error) {
	gopts := rootfs.GetOptions{SourceOptions: opts.Source, Pull: opts.Pull, Progress: opts.Progress}
	// Held from the lookup to the last blob read: Prune waits (see Hold).
	release, err := store.Hold()
	if err != nil {
		return nil, false, err
	}
	defer release()
	// Looked up once: for a local source it reads the source's digest.
	img, stored, err := store.Lookup(ctx, ref, gopts)
	if err != nil {
		return nil, false, err
	}
	if !opts.Force {
		digest := func() (string, error) { return currentDigest(ctx, ref, opts, img, stored) }
		if res, ok := convert.UpToDate(opts.Convert, ref.String(), digest); ok {
			opts.Progress.Step("%s: up to date", ref)
			return res, false, nil
		}
	}
	if stored {
		rootfs.ReportStored(opts.Progress, ref, img)
	}
	if opts.Staged {
		if !stored {
			if img, err = store.Pull(ctx, ref, rootfs.PullOptions{SourceOptions: opts.Source, Progress: opts.Progress}); err != nil {
				return nil, false, err
			}
		}
		res, err := buildStaged(ctx, store, img, opts, stages)
		return res, true, err
	}
	start := time.Now()
	// A zstd template's large files are compressed while the layers are
	// still being read, on cores that would otherwise wait for inflate.
	fopts := rootfs.FlattenOptions{Progress: opts.Progress, MaxLayerSize: opts.MaxLayerSize, MaxEntries: opts.MaxEntries, PrecompressLevel: convert.PrecompressLevel(opts.Convert), Clamp: opts.Convert.SourceDateEpoch, Cache: true}
	var f *rootfs.Flattened
	if stored {
		f, err = store.Flatten(ctx, img, fopts)
	} else {
		// Decompress the layers while they download.
		_, f, err = store.PullFlatten(ctx, ref, rootfs.PullOptions{SourceOptions: opts.Source, Progress: opts.Progress}, fopts)
	}
	if err != nil {
		return nil, false, err
	}
	defer f.Close()
	stages["flatten"] = time.Since(start).Seconds()
	start = time.Now()
	res, err := convert.Write(ctx, f.Tree, f.Spec, opts.Convert)
	stages["write"] = time.Since(start).Seconds()
	return res, true, err
}

// currentDigest is the digest a build would use now: the stored image's
// when the pull policy lets it stand (see rootfs.Store.Lookup), else the
// source's.
func currentDigest(ctx context.Context, ref rootfs.Ref, opts BuildOptions, img rootfs.Image, stored bool) (string, error) {
	switch {
	case stored:
		return img.SourceDigest, nil
	case opts.Pull == rootfs.PullNever:
		return "", rootfs.ErrNotFound
	}
	return rootfs.Resolve(ctx, ref, opts.Source)
}

// buildStaged unpacks img into a temporary bundle and converts it.
func buildStaged(ctx context.Context, store *rootfs.Store, img rootfs.Image, opts BuildOptions, stages map[string]float64) (*convert.Result, error) {
	work, err := os.MkdirTemp("", "nexcage-build-")
	if err != nil {
		return nil, fmt.Errorf("cannot create a temporary directory for the staged build (%w): set TMPDIR to a writable directory", err)
	}
	defer rootfs.RemoveBundle(work)
	start := time.Now()
	ures, err := store.Unpack(ctx, img, filepath.Join(work, "bundle"), rootfs.UnpackOptions{Rootless: os.Geteuid() != 0, Progress: opts.Progress, MaxLayerSize: opts.MaxLayerSize, MaxEntries: opts.MaxEntries})
	if err != nil {
		return nil, err
	}
	stages["flatten"] = time.Since(start).Seconds()
	start = time.Now()
	b, err := convert.LoadBundle(ures.Bundle)
	if err != nil {
		return nil, err
	}
	res, err := convert.Convert(ctx, b, opts.Convert)
	stages["write"] = time.Since(start).Seconds()
	return res, err
}
