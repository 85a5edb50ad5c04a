//! echo: not written yet.
