//! The CPU interpreter of the IR: the reference meaning of every op.
