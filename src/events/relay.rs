//! The operator's relay (placeholder: being written).
