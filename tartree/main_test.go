package tartree_test

import (
	"testing"

	"github.com/nexcage/nexcage/internal/testenv"
)

func TestMain(m *testing.M) { testenv.Main(m) }
