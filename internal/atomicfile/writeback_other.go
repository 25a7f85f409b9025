//go:build !linux

package atomicfile

import "os"

// startWriteback is a head start for fsync that only Linux offers.
func startWriteback(*os.File, int64, int64) {}
