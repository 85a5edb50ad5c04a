//! Static files: not written yet.
