package stats

import "testing"

func TestPercentile(t *testing.T) {
	xs := []int{1, 2, 3, 4, 5, 6, 7, 8, 9, 10}
	for _, tc := range []struct {
		p    float64
		want int
	}{{0.5, 5}, {0.95, 10}, {0.99, 10}, {0.1, 1}, {0.11, 2}, {1, 10}, {0, 1}} {
		if got := Percentile(xs, tc.p); got != tc.want {
			t.Errorf("Percentile(1..10, %v) = %d, want %d", tc.p, got, tc.want)
		}
	}
	if got := Percentile([]int(nil), 0.5); got != 0 {
		t.Errorf("no values: %d", got)
	}
	if got := Percentile(Sorted([]int{3, 1, 2}), 0.5); got != 2 {
		t.Errorf("median of 3,1,2: %d", got)
	}
}
