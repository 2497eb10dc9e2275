package chunk

// slabs boxes decoded scalars into interface values. A slab allocator that built interfaces
// pointing into shared arrays was measured (75 -> 32 allocations per 2 KB record, about 1 µs
// saved) but it depended on the runtime's interface layout through unsafe; decoding is a small
// part of the per-email cost, so the plain, safe boxing is kept. Boxing each distinct string
// once per Decoder (a map from string to its boxed value; then a 256-entry direct-mapped cache)
// was measured too (issue 22, BenchmarkDecode): 75 -> 40.5 allocations per record, but the
// lookups cost what the allocations saved or more: 5,200 -> 5,600 CPU ns per record where
// values repeat and 5,100 -> 8,300 where they do not (the map); within the noise where they
// repeat and a loss where they do not (the cache). Neither was kept.
type slabs struct{}

func (slabs) str(v string) any { return v }

func (slabs) int(v int64) any { return v }

func (slabs) float(v float64) any { return v }
