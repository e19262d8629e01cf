//! The proxy: listener, CONNECT interception, the request pipeline, the upstream client.

mod address;
mod admission;
mod body;
mod client;
mod decoded;
mod gateway;
mod h1;
mod identify;
mod interim;
mod peer_uid;
pub(crate) mod pipeline;
mod request_body;
mod respond;
mod rewind;
mod server;
mod target;
mod trailers;
mod transparent;
pub mod upstream;
mod websocket;

pub use admission::{AdmissionPhase, Ask};
pub use gateway::{Gateway, GatewayError, Snapshot};
pub use respond::Deny;
pub use server::{serve, serve_transparent};
pub use upstream::{Resolve, SystemResolver};
