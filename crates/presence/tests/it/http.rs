//! HTTP tests (filled next).
