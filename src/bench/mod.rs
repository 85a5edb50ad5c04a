//! The load generator behind `tincan bench`: not written yet.
