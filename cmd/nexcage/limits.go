package main

import (
	"fmt"
	"math"
	"strings"

	"github.com/spf13/pflag"

	"github.com/nexcage/nexcage/internal/limits"
	"github.com/nexcage/nexcage/rootfs"
)

// limitFlags registers the bounds on hostile input a user may raise.
func limitFlags(fs *pflag.FlagSet, o *opts) {
	int64Var(fs, &o.maxEntries, "max-entries", rootfs.DefaultMaxEntries, 1, math.MaxInt64, "--max-entries is a number of entries, at least 1", "refuse an image whose layers hold more entries than this, all layers together (each costs memory)")
}

// limitFlag is the flag raising each limit; limits without one are the
// kernel's (PATH_MAX, NAME_MAX, 40 symlinks) or fixed (metadata size).
var limitFlag = map[string]string{
	limits.Entries:   "--max-entries",
	limits.LayerSize: "--max-layer-size",
}

// limitHint adds to a refusal over a limit what the user can do about it:
// the flag that raises it when the running command has that flag, else
// build's (a create or convert of a stored image reads what build writes).
func limitHint(e *env, err error) error {
	le, ok := limits.As(err)
	if !ok {
		return err
	}
	var hint string
	switch flag := limitFlag[le.Limit]; {
	case flag != "":
		if strings.Contains(err.Error(), flag) {
			return err
		}
		if e != nil && e.flags != nil && e.flags.Lookup(strings.TrimPrefix(flag, "--")) != nil {
			hint = fmt.Sprintf("%s limit; if the image is genuine, raise it with %s", le.Limit, flag)
		} else {
			hint = fmt.Sprintf("%s limit; if the image is genuine, run `nexcage build %s N IMAGE` first, which raises it", le.Limit, flag)
		}
	case le.Limit == limits.FreeSpace:
		hint = "free disk space; free some, or point TMPDIR (and --store) at a larger file system"
	default:
		hint = fmt.Sprintf("%s limit, which no real image reaches: the image is broken or hostile", le.Limit)
	}
	return &hinted{err: err, msg: fmt.Sprintf("%v (%s)", err, hint)}
}

type hinted struct {
	err error
	msg string
}

func (h *hinted) Error() string { return h.msg }
func (h *hinted) Unwrap() error { return h.err }
