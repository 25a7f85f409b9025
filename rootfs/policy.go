package rootfs

import (
	"context"
	"errors"
	"fmt"

	"github.com/opencontainers/go-digest"

	"github.com/nexcage/nexcage/progress"
)

// PullPolicy says when a stored image may stand for its reference and
// when the source is read again.
type PullPolicy string

const (
	// PullMissing uses the stored image and pulls only what the store
	// lacks. A local layout or archive, cheap to read, is checked every
	// time: rewritten under the same tag it is a new image, read again.
	// The zero PullPolicy means PullMissing.
	PullMissing PullPolicy = "missing"
	// PullAlways reads the source every time (blobs already stored are
	// not fetched again).
	PullAlways PullPolicy = "always"
	// PullNever uses only the store: an image not in it is a
	// *NotStoredError.
	PullNever PullPolicy = "never"
)

// PullPolicies are the valid policies, PullMissing (the default) first.
var PullPolicies = []PullPolicy{PullMissing, PullAlways, PullNever}

// GetOptions configure Store.Lookup and Store.Get.
type GetOptions struct {
	SourceOptions
	Pull     PullPolicy // "" = PullMissing
	Progress progress.Reporter
}

// NotStoredError is an image the store has not got while the pull policy
// (PullNever) forbids fetching it. errors.Is(err, ErrNotFound) holds.
type NotStoredError struct {
	Ref      Ref
	Platform Platform
	Store    string // the store's directory
}

func (e *NotStoredError) Error() string {
	return fmt.Sprintf("%v: %s (%s) is not in the store %s and the pull policy %q forbids fetching it", ErrNotFound, e.Ref, e.Platform, e.Store, PullNever)
}

// Unwrap makes errors.Is(err, ErrNotFound) hold.
func (e *NotStoredError) Unwrap() error { return ErrNotFound }

// Lookup finds ref in the store; stored is true only when the pull policy
// lets the stored copy stand for ref. Under PullAlways it is never
// looked up; under PullMissing a local layout or archive is resolved
// again, and a copy stored before it was rewritten does not stand (a
// progress step says so); under PullNever an image that is not stored is
// a *NotStoredError.
func (s *Store) Lookup(ctx context.Context, ref Ref, opts GetOptions) (img Image, stored bool, err error) {
	rep := opts.Progress
	if rep == nil {
		rep = progress.Discard
	}
	switch opts.Pull {
	case PullAlways:
		return Image{}, false, nil
	case "", PullMissing, PullNever:
	default:
		return Image{}, false, fmt.Errorf("unknown pull policy %q: use %q, %q or %q", opts.Pull, PullMissing, PullAlways, PullNever)
	}
	img, ok, err := s.Find(ref, opts.Platform)
	switch {
	case err != nil:
		return img, false, err
	case !ok && opts.Pull == PullNever:
		return img, false, &NotStoredError{Ref: ref, Platform: opts.Platform, Store: s.Dir}
	case !ok || opts.Pull == PullNever || !ref.Local():
		return img, ok, nil
	}
	now, err := Resolve(ctx, ref, opts.SourceOptions)
	if err != nil {
		if errors.Is(err, ErrNotFound) {
			return img, true, nil // the source is gone: the stored copy is all there is
		}
		return img, false, err
	}
	if now != img.SourceDigest {
		rep.Step("%s changed since it was stored (%s, now %s): reading it again", ref, shortDigest(digest.Digest(img.SourceDigest)), shortDigest(digest.Digest(now)))
		return img, false, nil
	}
	return img, true, nil
}

// Get returns ref's image as the pull policy says: the stored one when it
// stands for ref (see Lookup; a progress step says it is used), else
// pulled into the store.
func (s *Store) Get(ctx context.Context, ref Ref, opts GetOptions) (Image, error) {
	img, stored, err := s.Lookup(ctx, ref, opts)
	if err != nil {
		return img, err
	}
	if stored {
		ReportStored(opts.Progress, ref, img)
		return img, nil
	}
	return s.Pull(ctx, ref, PullOptions{SourceOptions: opts.SourceOptions, Progress: opts.Progress})
}

// ReportStored is the progress step of a stage that goes on with the
// stored copy of ref that Lookup found.
func ReportStored(rep progress.Reporter, ref Ref, img Image) {
	if rep == nil {
		return
	}
	rep.Step("using %s (%s) from the store", ref, img.Platform)
}
