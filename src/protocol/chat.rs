//! chat: not written yet.
