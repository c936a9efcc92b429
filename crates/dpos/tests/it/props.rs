//! Property tests (placeholder, filled below).
