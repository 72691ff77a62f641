//! The simulation's own AMQP-like wire protocol over turmoil TCP.
//!
//! Both the simulated broker and its clients (the sim shell, the service,
//! tests) use it, so it lives beside the broker rather than inside it.

pub mod client;
pub mod codec;
pub mod link;
pub mod method;
pub mod session;

pub use client::{Client, ClientError};
pub use link::{Link, LinkError};
pub use method::{code, ChannelNo, ClientMethod, HeaderValue, Headers, Message, ServerMethod};
