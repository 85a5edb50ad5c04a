//! HTTP/1.1: not written yet.
