package pipeline

import (
	"cmp"
	"context"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"time"

	"github.com/nexcage/nexcage/progress"
	"github.com/nexcage/nexcage/rootfs"
)

// ExportOptions configure ExportOCIArchive.
type ExportOptions struct {
	// Source and Pull say how image is found, as for Build.
	Source rootfs.SourceOptions
	Pull   rootfs.PullPolicy
	// Output is the archive file, or a directory (OutputIsDir) to write
	// NAME_VERSION_ARCH.tar into.
	Output string
	// Name and Version replace the image's in the conventional name
	// (defaults: the reference's short name; its version, else "latest").
	Name, Version string
	// MTime is every member's modification time, fixed so the archive is
	// reproducible (nexcage gives SOURCE_DATE_EPOCH, else the zero time).
	MTime    time.Time
	Progress progress.Reporter
}

// ExportResult is what ExportOCIArchive wrote.
type ExportResult struct {
	Archive string       // absolute path
	Image   rootfs.Image // the stored image it holds
	Size    int64
}

// OutputIsDir is the one rule for an output path: it names a directory
// when it is empty (the current one), ends in / or is an existing
// directory; anything else is a file name.
func OutputIsDir(out string) bool {
	return out == "" || strings.HasSuffix(out, "/") || isDir(out)
}

// ExportOCIArchive writes image (a reference as Build takes) as the
// uncompressed OCI archive PVE 9.1 imports natively, getting it into the
// store first as opts.Pull says.
func ExportOCIArchive(ctx context.Context, store *rootfs.Store, image string, opts ExportOptions) (*ExportResult, error) {
	ref, err := rootfs.ParseRef(image)
	if err != nil {
		return nil, &RefError{Image: image, Err: err}
	}
	if opts.Source.Platform == (rootfs.Platform{}) {
		opts.Source.Platform = rootfs.HostPlatform()
	}
	// Held from the lookup to the last blob read: Prune waits (see Hold).
	release, err := store.Hold()
	if err != nil {
		return nil, err
	}
	defer release()
	img, err := store.Get(ctx, ref, rootfs.GetOptions{SourceOptions: opts.Source, Pull: opts.Pull, Progress: opts.Progress})
	if err != nil {
		return nil, err
	}
	target := opts.Output
	if OutputIsDir(target) {
		name := cmp.Or(opts.Name, ref.ShortName())
		version := cmp.Or(opts.Version, ref.Version(), "latest")
		_, arch, _ := strings.Cut(img.Platform, "/")
		arch, _, _ = strings.Cut(arch, "/")
		target = filepath.Join(target, fmt.Sprintf("%s_%s_%s.tar", name, version, arch))
	}
	size, err := store.ExportOCIArchive(ctx, img, target, opts.MTime)
	if err != nil {
		return nil, err
	}
	abs, err := filepath.Abs(target)
	if err != nil {
		abs = target
	}
	return &ExportResult{Archive: abs, Image: img, Size: size}, nil
}

func isDir(p string) bool {
	fi, err := os.Stat(p)
	return err == nil && fi.IsDir()
}
