//! r1-backend-cpu: every graph op, forward and backward, on the CPU.
