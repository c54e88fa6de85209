//! Load drivers and benchmarks; see `src/bin/`.
