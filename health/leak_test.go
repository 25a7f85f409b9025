package health

import (
	"testing"

	"github.com/nexcage/nexcage/internal/testenv"
)

// TestMain fails the package's tests if any goroutine outlives them or a
// temporary file is left behind.
func TestMain(m *testing.M) { testenv.Main(m) }
