//! The reward-plugin ABI v1 wire types (postcard), shared by the host and the guest SDK.
