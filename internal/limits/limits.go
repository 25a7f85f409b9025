// Package limits bounds the work hostile input can cause: reads capped at
// a size, disk space checked before large writes, and one typed error for
// every refusal, so the command line can name the limit and its flag.
package limits

import (
	"errors"
	"fmt"
	"io"
	"os"

	"github.com/nexcage/nexcage/progress"

	"golang.org/x/sys/unix"
)

// Names of the limits, as Error.Limit carries them.
const (
	Entries      = "entries"         // members in an image's layers, all layers together
	LayerSize    = "layer size"      // file content one layer unpacks to
	MetadataSize = "metadata size"   // a manifest, index or config blob
	BlobSize     = "blob size"       // a blob against its descriptor's size
	ArchiveSize  = "archive size"    // what an archive source holds
	FreeSpace    = "free disk space" // what the file system can still hold
	PathLength   = "path length"     // PATH_MAX, a resolved or link target path
	NameLength   = "name length"     // NAME_MAX, one path component
	SymlinkHops  = "symlink hops"    // symlinks followed resolving one path
)

// MaxMetadata bounds a manifest, index, image or runtime config, or a
// sidecar, as containerd bounds manifests: real ones are a few KiB, and a
// sparse file can claim gigabytes that would be read whole before the
// JSON parser fails.
const MaxMetadata = 4 << 20

// Error is a refusal of input over a limit. Value is what the input has
// or claims (at least that much: reading stops just past Max).
type Error struct {
	Limit      string
	Value, Max int64
	// Msg says what was refused, and why in words a user can act on.
	Msg string
	// Kind, when set, is an older sentinel the refusal also matches with
	// errors.Is (ErrTooLarge, ErrHostileLayer).
	Kind error
}

func (e *Error) Error() string {
	if e.Msg != "" {
		return e.Msg
	}
	return fmt.Sprintf("%d is over the %s limit of %d", e.Value, e.Limit, e.Max)
}

func (e *Error) Unwrap() error { return e.Kind }

// Errorf makes an Error whose message is formatted like fmt.Sprintf.
func Errorf(kind error, limit string, value, max int64, format string, args ...any) error {
	return &Error{Limit: limit, Value: value, Max: max, Msg: fmt.Sprintf(format, args...), Kind: kind}
}

// As returns the Error in err's chain, if any.
func As(err error) (*Error, bool) {
	var le *Error
	ok := errors.As(err, &le)
	return le, ok
}

// ReadAll reads r to its end, refusing more than max bytes; what names the
// content for the message.
func ReadAll(r io.Reader, max int64, what string) ([]byte, error) {
	b, err := io.ReadAll(io.LimitReader(r, max+1))
	if err != nil {
		return nil, err
	}
	if int64(len(b)) > max {
		return nil, Errorf(nil, MetadataSize, int64(len(b)), max, "%s is larger than %s, the most nexcage reads of a manifest, config or other metadata: refusing the rest unread", what, progress.HumanBytes(max))
	}
	return b, nil
}

// ReadFile reads a file of at most max bytes, checking its size before
// reading a byte (a sparse file can claim terabytes).
func ReadFile(path string, max int64, what string) ([]byte, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	if fi, err := f.Stat(); err == nil && fi.Mode().IsRegular() && fi.Size() > max {
		return nil, Errorf(nil, MetadataSize, fi.Size(), max, "%s is %s, more than %s, the most nexcage reads of a manifest, config or other metadata: refusing it unread", what, progress.HumanBytes(fi.Size()), progress.HumanBytes(max))
	}
	return ReadAll(f, max, what)
}

// Available is the space an unprivileged write to dir's file system can
// use.
func Available(dir string) (int64, error) {
	var st unix.Statfs_t
	if err := unix.Statfs(dir, &st); err != nil {
		return 0, err
	}
	return int64(st.Bavail) * int64(st.Bsize), nil
}

// Disk tracks writes to one file system against its free space, asking
// the kernel again only when the writes so far would have used it up: one
// statfs per many files, and a refusal before a write that cannot fit
// rather than ENOSPC halfway through it.
type Disk struct {
	Dir   string
	avail int64 // at the last statfs
	used  int64 // reserved since
	known bool
}

// Reserve accounts n bytes about to be written, and fails with an Error
// when the file system does not have them. A failing statfs is not a
// refusal: the write itself will tell.
func (d *Disk) Reserve(n int64, what string) error {
	if d == nil || d.Dir == "" || n <= 0 {
		return nil
	}
	if d.known && d.used+n <= d.avail {
		d.used += n
		return nil
	}
	avail, err := Available(d.Dir)
	if err != nil {
		return nil
	}
	d.avail, d.used, d.known = avail, 0, true
	if n > avail {
		return Errorf(nil, FreeSpace, n, avail, "%s needs %s but %s has only %s free: refusing it before filling the disk", what, progress.HumanBytes(n), d.Dir, progress.HumanBytes(avail))
	}
	d.used = n
	return nil
}
