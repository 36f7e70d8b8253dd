//! End-to-end tests: the real `renkei` binary (`$RENKEI_BIN`, else the workspace's
//! debug build) against the real RabbitMQ (`$RENKEI_TEST_AMQP_URL`) and PostgreSQL
//! (`$RENKEI_TEST_DATABASE_URL`). Each test gets its own database, bus prefix and
//! ports, and removes them when it ends, passed or failed. An unreachable service fails
//! the test; nothing is skipped.
//!
//! Build the binary first: `cargo build -p renkei-hub --bin renkei` (deploy/dev/test.sh
//! does), then `cargo nextest run -p renkei-e2e`.

// A failed unwrap on a fixture is a test failure, which is what a test wants.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod admin_api;
mod admission;
mod api_fuzz;
mod audit;
mod checks;
mod cli;
mod consent;
mod control_ids;
mod demo;
mod durability;
mod embedded;
mod fhir;
mod harness;
mod history;
mod mllp;
mod outage;
mod receiver;
mod registry;
mod rejected;
mod relay;
mod sources;
mod spine;
mod ssmix2;
