//! The Renkei hub: adapters feed canonical events onto the bus; the router decides who
//! receives each (subscription ∩ care relationship ∩ consent); delivery workers push
//! them to webhooks with retries; everything is recorded in a hash-chained audit log.
//!
//! Modules follow the data flow; dependencies point one way:
//! `config`, `audit`, `registry` → `store`, `bus` → `ingest`, `router`, `delivery` →
//! `api` → `app` (process wiring) → `demo` → the `renkei` binary.

pub mod api;
pub mod app;
pub mod audit;
pub mod bus;
pub mod config;
pub mod delivery;
pub mod demo;
pub mod ingest;
pub mod registry;
pub mod router;
pub mod store;
