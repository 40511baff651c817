//! Per-class statistics.
