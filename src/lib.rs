//! Huddle: a horizontally scaled chat server.
//!
//! Identical, stateless nodes keep nothing but their open sockets: rooms,
//! messages, sessions and presence live in Redis, and every room event is
//! broadcast on a per-room Redis pub/sub channel, so a client on any node
//! sees the whole room, in order.
//!
//! A request flows one way:
//!
//! ```text
//! gateway  (HTTP, WebSocket frames, limits, per-connection tasks, local fan-out)
//!   → service  (rules: who may do what, validation, ids, times)
//!     → store  (repository traits; engines: redis, memory)
//!     → bus    (publish room events; receive them into the local fan-out)
//! ```
//!
//! | module | owns |
//! |---|---|
//! | [`config`] | `Config`, the `serve` settings: flags, `HUDDLE_*` variables, defaults, validation |
//! | `app` (crate-internal) | the composition root: builds everything once, handed the event sink |
//! | [`gateway`] | `Gateway` (a node), HTTP routes, WebSocket connections, the hub (local fan-out), drain |
//! | [`protocol`] | client frames ↔ typed requests, reply shapes, event frames |
//! | [`service`] | `RoomService`, `MessageService`, `SessionService`; room subscriptions, typing |
//! | [`store`] | `RoomStore`, `MessageStore`, `SessionStore`, `CacheStore`; Redis and memory engines |
//! | `bus` (crate-internal) | `EventBus`; Redis pub/sub subscriber with gap repair; memory bus |
//! | [`events`] | `EventSink` (the local fan-out) and `EventLog` (raw durable log), below store and bus |
//! | [`layout`] | the Redis key and channel layout, below store and bus |
//! | [`codec`] | the versioned bincode envelope events travel in |
//! | [`model`] | users, rooms, messages, events |
//! | [`error`] | error enums (`StoreError` included), their one mapping to protocol codes, close codes |
//! | [`metrics`] | Prometheus metrics |
//! | [`telemetry`] | logging setup |
//!
//! The modules below the services (store, events, layout, codec, model)
//! stay public for the store conformance suite and the benchmarks; the
//! composition root and the bus are the crate's own. The `huddle` binary
//! (`src/bin/huddle/`) holds what only the command line needs: the
//! subcommands' arguments, `huddle bench` (the load generator) and
//! `huddle health` (the container health check).

pub(crate) mod app;
pub(crate) mod bus;
pub mod codec;
pub mod config;
pub mod error;
pub mod events;
pub mod gateway;
pub mod layout;
pub mod metrics;
pub mod model;
pub mod protocol;
pub mod service;
pub mod store;
pub mod telemetry;

pub use config::Config;
