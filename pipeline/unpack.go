package pipeline

import (
	"context"

	"github.com/nexcage/nexcage/rootfs"
)

// UnpackOptions configure Unpack.
type UnpackOptions struct {
	// Source and Pull say how image is found, as for Build.
	Source rootfs.SourceOptions
	Pull   rootfs.PullPolicy
	// Unpack says how the bundle is written (Force, Rootless, limits,
	// Progress, which also receives the pull's progress).
	Unpack rootfs.UnpackOptions
}

// Unpack gets image (a reference as Build takes) into the store as
// opts.Pull says and unpacks it into the OCI runtime bundle directory
// bundle. It returns the stored image and what was unpacked.
func Unpack(ctx context.Context, store *rootfs.Store, image, bundle string, opts UnpackOptions) (rootfs.Image, rootfs.UnpackResult, error) {
	ref, err := rootfs.ParseRef(image)
	if err != nil {
		return rootfs.Image{}, rootfs.UnpackResult{}, &RefError{Image: image, Err: err}
	}
	if opts.Source.Platform == (rootfs.Platform{}) {
		opts.Source.Platform = rootfs.HostPlatform()
	}
	// Held from the lookup to the last blob read: Prune waits (see Hold).
	release, err := store.Hold()
	if err != nil {
		return rootfs.Image{}, rootfs.UnpackResult{}, err
	}
	defer release()
	img, err := store.Get(ctx, ref, rootfs.GetOptions{SourceOptions: opts.Source, Pull: opts.Pull, Progress: opts.Unpack.Progress})
	if err != nil {
		return img, rootfs.UnpackResult{}, err
	}
	res, err := store.Unpack(ctx, img, bundle, opts.Unpack)
	return img, res, err
}
