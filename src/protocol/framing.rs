//! framing: not written yet.
