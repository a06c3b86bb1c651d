//! The bridge between Cerebellum and robots it reaches over the network.
//!
//! - [`protocol`]: the wire messages, their compact encoding and the checks
//!   every received frame goes through. It builds with `#![no_std]` and
//!   without an allocator (`default-features = false`), so robot firmware
//!   can share it; docs/protocol.md describes the bytes for C firmware.
//! - [`keys`], [`session`]: zenoh key expressions and session setup.
//! - [`client::ZenohRobot`]: a `Robot` reached over zenoh, for the loop.
//! - [`server::RobotServer`]: serves any `Robot` over the protocol as
//!   firmware would (the runtime hands it the simulator for `serve-sim`).
//! - [`operator`]: the operator's side: teleop takeovers and e-stops.
#![cfg_attr(not(feature = "std"), no_std)]

pub mod protocol;

#[cfg(feature = "std")]
pub mod client;
#[cfg(feature = "std")]
pub mod inbox;
#[cfg(feature = "std")]
pub mod keys;
#[cfg(feature = "std")]
pub mod operator;
#[cfg(feature = "std")]
pub mod server;
#[cfg(feature = "std")]
pub mod session;
