//! End-to-end tests live in `tests/tests/e2e/` (one test binary); this crate has no library code of its own.
