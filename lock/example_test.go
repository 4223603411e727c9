package lock_test

import (
	"context"
	"fmt"

	"couponsvc/internal/testenv"
	"couponsvc/lock"
)

// A lock over three independent Redis nodes, as Redisson's RLock is used: lock with the
// watchdog, reenter, read the fencing token for the storage, unlock.
func Example() {
	var addrs []string
	for range 3 {
		r, err := testenv.StartRedis()
		if err != nil {
			fmt.Println(err)
			return
		}
		defer r.Close()
		addrs = append(addrs, r.Addr)
	}
	client := lock.New(lock.NewNodes(addrs, "", ""))
	defer client.Close()

	ctx := lock.WithOwner(context.Background(), lock.NewOwner())
	m := client.Mutex("coupon:A0001")
	if err := m.Lock(ctx); err != nil { // lease 0: the watchdog renews it while held
		fmt.Println(err)
		return
	}
	_ = m.Lock(ctx) // reentrant, as RLock
	token, _ := m.Fence(ctx)
	fmt.Println("holds:", m.HoldCount(ctx), "fencing token:", token)

	other := lock.WithOwner(context.Background(), lock.NewOwner())
	fmt.Println("another owner's unlock:", m.Unlock(other))

	_ = m.Unlock(ctx)
	_ = m.Unlock(ctx)
	locked, _ := m.IsLocked(ctx)
	fmt.Println("locked after two unlocks:", locked)
	// Output:
	// holds: 2 fencing token: 1
	// another owner's unlock: unlock coupon:A0001: lock: not held by this owner
	// locked after two unlocks: false
}
