//! r1-backend-cuda
