package generate

import (
	"context"
	"encoding/json"
	"fmt"
	"os"
	"testing"

	"github.com/nexcage/nexcage/internal/testenv"
)

// TestMain fails the package's tests if any goroutine outlives them (a
// decompressor left open, for one). With NEXCAGE_GENERATE_CHILD set, the
// test binary is instead `generate` run by another user (see
// TestAsOrdinaryUser): it makes the bundle $BUNDLE from $TEMPLATE or
// $ROOTFS and prints the result.
func TestMain(m *testing.M) {
	if os.Getenv("NEXCAGE_GENERATE_CHILD") != "" {
		res, err := Bundle(context.Background(), os.Getenv("BUNDLE"), Options{Template: os.Getenv("TEMPLATE"), Rootfs: os.Getenv("ROOTFS")})
		if err != nil {
			fmt.Fprintln(os.Stderr, err)
			os.Exit(1)
		}
		json.NewEncoder(os.Stdout).Encode(res)
		os.Exit(0)
	}
	testenv.Main(m)
}
