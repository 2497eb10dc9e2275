package chunk

// slabs boxes decoded scalars into interface values. A slab allocator that built interfaces
// pointing into shared arrays was measured (75 -> 32 allocations per 2 KB record, about 1 µs
// saved) but it depended on the runtime's interface layout through unsafe; decoding is a small
// part of the per-email cost, so the plain, safe boxing is kept.
type slabs struct{}

func (slabs) str(v string) any { return v }

func (slabs) int(v int64) any { return v }

func (slabs) float(v float64) any { return v }
