package rootfs

import (
	"context"
	"errors"
	"fmt"
	"sync/atomic"
	"testing"
)

// TestEachLayerBoundsAndReportsTheCause: no more than jobs tasks run at
// once, and the error returned is the failure itself, not the
// cancellations it caused in the layers running beside it.
func TestEachLayerBoundsAndReportsTheCause(t *testing.T) {
	var running, most atomic.Int32
	err := eachLayer(context.Background(), 8, 3, func(ctx context.Context, i int) error {
		n := running.Add(1)
		defer running.Add(-1)
		for m := most.Load(); n > m && !most.CompareAndSwap(m, n); m = most.Load() {
		}
		if i == 5 {
			return fmt.Errorf("layer %d: broken", i)
		}
		if i > 5 {
			<-ctx.Done()
			return fmt.Errorf("layer %d: %w", i, ctx.Err())
		}
		return nil
	})
	if err == nil || err.Error() != "layer 5: broken" {
		t.Errorf("error %v, want layer 5's own failure", err)
	}
	if m := most.Load(); m > 3 || m < 1 {
		t.Errorf("%d tasks ran at once, want at most 3", m)
	}

	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	if err := eachLayer(ctx, 4, 2, func(ctx context.Context, i int) error { return ctx.Err() }); !errors.Is(err, context.Canceled) {
		t.Errorf("a cancelled caller: %v, want context.Canceled", err)
	}
	if err := eachLayer(context.Background(), 4, 2, func(context.Context, int) error { return nil }); err != nil {
		t.Errorf("no failure: %v", err)
	}
}
