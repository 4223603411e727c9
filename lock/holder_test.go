package lock

import (
	"context"
	"errors"
	"testing"
	"time"

	"couponsvc/internal/testenv"
)

// Holder tells other processes who holds a lock (the holder info of its Client), agreed by a
// quorum; from a minority of nodes it still answers, not agreed; with no holder it is empty.
func TestHolderInfo(t *testing.T) {
	nodes := testenv.NewRedisNodes(t, 3)
	a := newClient(t, nodes, fastOpts(WithHolderInfo("10.0.0.7:8080"))...)
	b := newClient(t, nodes, fastOpts()...)
	ctx := context.Background()
	if info, agreed, err := b.Mutex("h").Holder(ctx); err != nil || info != "" || agreed {
		t.Fatalf("free lock: holder %q agreed %v err %v", info, agreed, err)
	}
	ca := owned()
	mustLock(t, ca, a.Mutex("h"), 0, 0)
	if info, agreed, err := b.Mutex("h").Holder(ctx); err != nil || info != "10.0.0.7:8080" || !agreed {
		t.Fatalf("held: holder %q agreed %v err %v", info, agreed, err)
	}
	if info, _, _ := a.Mutex("h").Holder(ctx); info != "10.0.0.7:8080" {
		t.Fatalf("the holder's own client: %q", info)
	}
	// Only one node reachable: the holder is still found there, not agreed.
	minority := New(NewNodes([]string{testenv.Addrs(nodes)[0], "127.0.0.1:1", "127.0.0.1:2"}, "", ""), fastOpts()...)
	t.Cleanup(func() { minority.Close() })
	if info, agreed, err := minority.Mutex("h").Holder(ctx); err != nil || info != "10.0.0.7:8080" || agreed {
		t.Fatalf("from one node: holder %q agreed %v err %v", info, agreed, err)
	}
	mustUnlock(t, ca, a.Mutex("h"))
	// Unlock returns once a quorum released the key; the last node may release it a moment
	// later, and until then a minority read still finds the old holder, never agreed.
	if info, agreed, err := b.Mutex("h").Holder(ctx); err != nil || agreed {
		t.Fatalf("released: holder %q agreed %v err %v", info, agreed, err)
	}
	testenv.WaitFor(t, 2*time.Second, "no holder on any node after the release", func() bool {
		info, _, err := b.Mutex("h").Holder(ctx)
		return err == nil && info == ""
	})
	// A holder without info, and spaces in the info do not break the value's format.
	c := newClient(t, nodes, fastOpts(WithHolderInfo("a b"))...)
	cc := owned()
	mustLock(t, cc, c.Mutex("h"), 0, 0)
	if info, _, _ := b.Mutex("h").Holder(ctx); info != "a_b" {
		t.Fatalf("info with a space: %q", info)
	}
	mustUnlock(t, cc, c.Mutex("h"))
	mustLock(t, cc, b.Mutex("h"), 0, 0)
	if info, agreed, _ := a.Mutex("h").Holder(ctx); info != "" || !agreed {
		t.Fatalf("holder without info: %q agreed %v", info, agreed)
	}
	mustUnlock(t, cc, b.Mutex("h"))
	for _, n := range nodes {
		n.Stop(t)
	}
	if _, _, err := b.Mutex("h").Holder(ctx); !errors.Is(err, ErrUnavailable) {
		t.Fatalf("no node: %v", err)
	}
}

// An acquisition that fails while two of three nodes are frozen leaves its SET NX buffered on
// them; they run it when they resume, after the release sent meanwhile. The sweeper sends the
// release again until they answer, so no key outlives their return by more than a few node
// timeouts, and the lock is free for the next taker at once: not after a whole lease.
func TestFailedAcquisitionLeavesNothingBehind(t *testing.T) {
	nodes := testenv.NewRedisNodes(t, 3)
	const lease = 5 * time.Second // long, so a leftover key would show
	c := newClient(t, nodes, WithWatchdogTimeout(lease))
	other := newClient(t, nodes, WithWatchdogTimeout(lease))
	// Connections to every node first, so the frozen nodes have them open (as in a crowd).
	if err := c.Ping(context.Background()); err != nil {
		t.Fatal(err)
	}
	for round := 1; round <= 3; round++ {
		nodes[0].Pause(t)
		nodes[1].Pause(t)
		ctx := owned()
		if err := c.Mutex("blip").TryLock(ctx, 0, 0); !errors.Is(err, ErrUnavailable) {
			t.Fatalf("round %d: acquisition with 2 of 3 nodes frozen: %v", round, err)
		}
		nodes[0].Resume(t)
		nodes[1].Resume(t)
		back := time.Now()
		oc := owned()
		for {
			err := other.Mutex("blip").TryLock(oc, 0, 0)
			if err == nil {
				break
			}
			if time.Since(back) > lease {
				t.Fatalf("round %d: the lock stayed taken %v after the nodes returned: %v", round, lease, err)
			}
			time.Sleep(20 * time.Millisecond)
		}
		if took := time.Since(back); took > time.Second {
			t.Errorf("round %d: the lock was free only %v after the nodes returned; want within 1 s", round, took)
		}
		mustUnlock(t, oc, other.Mutex("blip"))
		testenv.WaitFor(t, 2*time.Second, "no lock key left on any node", func() bool {
			for _, n := range nodes {
				if k, _ := n.Client(t).Exists(context.Background(), "lock:blip").Result(); k != 0 {
					return false
				}
			}
			return true
		})
	}
}
