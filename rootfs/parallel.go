package rootfs

import (
	"context"
	"errors"
	"sync"
)

// eachLayer runs task for layers 0..n-1, at most jobs at once. The first
// failure cancels the context the others run in, and the error returned
// is the failure of the lowest layer that did not merely see that
// cancellation: what went wrong, not its echoes. When only cancellations
// are left (the caller's context ended), the lowest of them is returned.
func eachLayer(ctx context.Context, n, jobs int, task func(ctx context.Context, i int) error) error {
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	errs := make([]error, n)
	sem := make(chan struct{}, jobs)
	var wg sync.WaitGroup
	for i := range n {
		wg.Add(1)
		go func() {
			defer wg.Done()
			select {
			case sem <- struct{}{}:
			case <-ctx.Done():
				errs[i] = ctx.Err()
				return
			}
			defer func() { <-sem }()
			if err := task(ctx, i); err != nil {
				errs[i] = err
				cancel()
			}
		}()
	}
	wg.Wait()
	for _, err := range errs {
		if err != nil && !errors.Is(err, context.Canceled) {
			return err
		}
	}
	for _, err := range errs {
		if err != nil {
			return err
		}
	}
	return nil
}
