//! r1-plugin: the guest SDK for writing r1 reward plugins.
#![no_std]
