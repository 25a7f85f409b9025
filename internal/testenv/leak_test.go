package testenv

import (
	"testing"
)

// TestMain fails the package's tests if any goroutine outlives them or a
// temporary file is left behind.
func TestMain(m *testing.M) { Main(m) }
