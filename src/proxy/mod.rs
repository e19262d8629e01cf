//! The proxy: listener, CONNECT interception, the request pipeline, the upstream client.

mod address;
mod body;
mod gateway;
mod h1;
pub(crate) mod pipeline;
mod rewind;
mod server;
pub mod upstream;

pub use gateway::{Gateway, GatewayError, Snapshot};
pub use server::serve;
pub use upstream::{Resolve, SystemResolver};
