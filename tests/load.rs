//! Load tests (being written).
