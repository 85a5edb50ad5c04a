//! The model chart as SVG: two panels (throughput, p99 latency) against connections.
