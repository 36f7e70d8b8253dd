//! Integration tests of the hub's store and bus against real PostgreSQL and RabbitMQ.
//! Each test gets its own database and bus prefix and removes them at the end.

mod api;
mod bus;
mod harness;
mod store;
