//! Model configs and graph builders.
