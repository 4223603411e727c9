// Package stats holds the one percentile definition the benchmarks, the load-test report and
// the tests use.
package stats

import (
	"cmp"
	"math"
	"slices"
)

// Percentile returns the p-th percentile (0 < p <= 1) of sorted by the nearest-rank method:
// the smallest value with at least p of the values at or below it. 0 for no values.
func Percentile[T cmp.Ordered](sorted []T, p float64) T {
	var zero T
	if len(sorted) == 0 {
		return zero
	}
	rank := int(math.Ceil(p * float64(len(sorted))))
	return sorted[min(max(rank, 1), len(sorted))-1]
}

// Sorted returns a sorted copy of xs.
func Sorted[T cmp.Ordered](xs []T) []T {
	s := slices.Clone(xs)
	slices.Sort(s)
	return s
}
