//! Test tools, built for the crate's own tests and with the `testkit` feature (integration tests
//! get it through the self dev-dependency in Cargo.toml): never part of what `cargo install` builds.
//!
//! - `core` (with the `testkit` feature only): the core over the fake, built for a test, and the
//!   tars, compressions and images tests put in the fake.
//! - [`fake`]: an in-memory registry behind the `Client` trait, for the core without FUSE or HTTP.
//! - [`faulty`]: a fault-injecting wrapper around any `Client` (the fake or `HttpClient`).
//! - `fixtures` (with the `testkit` feature only): the sample images, pushed to a real registry.
//! - [`paths`]: the core driven by paths (`walk`, `cat`, `ls`), for tests without FUSE.
//! - [`front`]: a fault-injecting HTTP front for a real registry on loopback (also the
//!   `regfs-front` program, for scripts/bench).

#[cfg(feature = "testkit")] // it writes tars (the tar crate is optional)
pub mod core;
pub mod fake;
pub mod faulty;
#[cfg(feature = "testkit")] // its crates (tar, p256) are optional
pub mod fixtures;
pub mod front;
pub mod paths;
