//! The broker topology as data: every exchange, queue (with its arguments) and binding
//! the hub declares for a prefix and retry schedule. [`super::amqp`] declares it at
//! start-up; [`Topology::definitions`] writes the same thing as a RabbitMQ definitions
//! document (`deploy/rabbitmq/definitions.json`) for operators who pre-provision the
//! broker. One description serves both, so they cannot drift apart.

use std::time::Duration;

use serde_json::{Map, Value, json};

use super::QueueRole;

/// Redeliveries of one message before a quorum queue dead-letters it as poison.
pub const DELIVERY_LIMIT: i64 = 50;

/// Routing key of delivery jobs on the deliveries exchange.
pub const DELIVER_KEY: &str = "deliver";

/// Names and shapes of everything the hub declares.
#[derive(Debug, Clone)]
pub struct Topology {
    pub(super) prefix: String,
    pub(super) retry_delays: Vec<Duration>,
    group_size: u16,
}

/// An exchange type.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ExchangeType {
    /// Routing-key patterns.
    Topic,
    /// Exact routing keys.
    Direct,
}

impl ExchangeType {
    /// The broker's name for it.
    pub fn as_str(self) -> &'static str {
        match self {
            ExchangeType::Topic => "topic",
            ExchangeType::Direct => "direct",
        }
    }
}

/// A durable exchange.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ExchangeSpec {
    /// Name.
    pub name: String,
    /// Type.
    pub kind: ExchangeType,
}

/// A queue argument value, typed as the broker compares them on re-declaration.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ArgValue {
    /// A string.
    Str(String),
    /// A 32-bit integer.
    I32(i32),
    /// A 64-bit integer.
    I64(i64),
}

/// A durable queue, its arguments and its binding.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct QueueSpec {
    /// Name.
    pub name: String,
    /// `x-…` arguments.
    pub args: Vec<(&'static str, ArgValue)>,
    /// The exchange and routing key it is bound with, if any.
    pub binding: Option<(String, String)>,
}

impl Topology {
    /// The topology for a prefix and retry schedule.
    pub fn new(prefix: &str, retry_delays: &[Duration], group_size: u16) -> Self {
        let mut retry_delays = retry_delays.to_vec();
        retry_delays.sort();
        retry_delays.dedup();
        Self {
            prefix: prefix.to_owned(),
            retry_delays,
            group_size,
        }
    }

    fn name(&self, suffix: &str) -> String {
        format!("{}.{suffix}", self.prefix)
    }

    /// Topic exchange of canonical events.
    pub fn events_exchange(&self) -> String {
        self.name("events")
    }
    /// Direct exchange of delivery jobs.
    pub fn deliveries_exchange(&self) -> String {
        self.name("deliveries")
    }
    /// Direct exchange of waiting retries, one routing key per retry queue.
    pub fn retry_exchange(&self) -> String {
        self.name("retry")
    }
    /// The routing key of the retry queue for one delay.
    pub fn retry_key(delay: Duration) -> String {
        format!("{}ms", delay.as_millis())
    }
    /// Dead-letter exchange.
    pub fn dead_letter_exchange(&self) -> String {
        self.name("dlx")
    }
    /// A consumed queue.
    pub fn queue(&self, role: QueueRole) -> String {
        match role {
            QueueRole::Route => self.name("route"),
            QueueRole::Deliver => self.name("deliver"),
        }
    }
    /// The retry queue for one delay.
    pub fn retry_queue(&self, delay: Duration) -> String {
        self.name(&format!("retry.{}", Self::retry_key(delay)))
    }
    /// Poison messages.
    pub fn dead_queue(&self) -> String {
        self.name("dead")
    }
    /// Every queue name (for tests that clean up).
    pub fn all_queues(&self) -> Vec<String> {
        self.queues().into_iter().map(|q| q.name).collect()
    }
    /// Every exchange name.
    pub fn all_exchanges(&self) -> Vec<String> {
        self.exchanges().into_iter().map(|e| e.name).collect()
    }

    /// The exchanges, in declaration order.
    pub fn exchanges(&self) -> Vec<ExchangeSpec> {
        vec![
            ExchangeSpec {
                name: self.events_exchange(),
                kind: ExchangeType::Topic,
            },
            ExchangeSpec {
                name: self.deliveries_exchange(),
                kind: ExchangeType::Direct,
            },
            ExchangeSpec {
                name: self.retry_exchange(),
                kind: ExchangeType::Direct,
            },
            ExchangeSpec {
                name: self.dead_letter_exchange(),
                kind: ExchangeType::Topic,
            },
        ]
    }

    fn quorum(&self) -> Vec<(&'static str, ArgValue)> {
        vec![
            ("x-queue-type", ArgValue::Str("quorum".into())),
            (
                "x-quorum-initial-group-size",
                ArgValue::I32(i32::from(self.group_size)),
            ),
        ]
    }

    /// Quorum arguments plus lossless dead-lettering to `exchange`: the broker keeps a
    /// dead-lettered message until the target queue confirmed it (which needs
    /// reject-publish overflow).
    fn dead_lettering(&self, exchange: String) -> Vec<(&'static str, ArgValue)> {
        let mut args = self.quorum();
        args.extend([
            ("x-dead-letter-exchange", ArgValue::Str(exchange)),
            (
                "x-dead-letter-strategy",
                ArgValue::Str("at-least-once".into()),
            ),
            ("x-overflow", ArgValue::Str("reject-publish".into())),
        ]);
        args
    }

    /// The queues, in declaration order (a queue's dead-letter target comes first).
    pub fn queues(&self) -> Vec<QueueSpec> {
        let mut queues = vec![QueueSpec {
            name: self.dead_queue(),
            args: self.quorum(),
            binding: Some((self.dead_letter_exchange(), "#".into())),
        }];
        for (role, exchange, key) in [
            (QueueRole::Route, self.events_exchange(), "#"),
            (QueueRole::Deliver, self.deliveries_exchange(), DELIVER_KEY),
        ] {
            let mut args = self.dead_lettering(self.dead_letter_exchange());
            args.push(("x-delivery-limit", ArgValue::I64(DELIVERY_LIMIT)));
            queues.push(QueueSpec {
                name: self.queue(role),
                args,
                binding: Some((exchange, key.into())),
            });
        }
        // Retry queues have no consumer: a message waits out its TTL, then is
        // dead-lettered back to the deliveries exchange. They are reached through an
        // exchange of the hub's own, so the broker user needs no rights on the default
        // exchange.
        for delay in &self.retry_delays {
            let mut args = self.dead_lettering(self.deliveries_exchange());
            args.extend([
                (
                    "x-dead-letter-routing-key",
                    ArgValue::Str(DELIVER_KEY.into()),
                ),
                (
                    "x-message-ttl",
                    ArgValue::I64(i64::try_from(delay.as_millis()).unwrap_or(i64::MAX)),
                ),
            ]);
            queues.push(QueueSpec {
                name: self.retry_queue(*delay),
                args,
                binding: Some((self.retry_exchange(), Self::retry_key(*delay))),
            });
        }
        queues
    }

    /// The topology as a RabbitMQ definitions document for one virtual host, to import
    /// with `rabbitmqadmin import` or the management UI.
    pub fn definitions(&self, vhost: &str) -> Value {
        let exchanges: Vec<Value> = self
            .exchanges()
            .into_iter()
            .map(|e| {
                json!({
                    "name": e.name, "vhost": vhost, "type": e.kind.as_str(),
                    "durable": true, "auto_delete": false, "internal": false,
                    "arguments": {}
                })
            })
            .collect();
        let queues = self.queues();
        let bindings: Vec<Value> = queues
            .iter()
            .filter_map(|q| {
                let (exchange, key) = q.binding.as_ref()?;
                Some(json!({
                    "source": exchange, "vhost": vhost, "destination": q.name,
                    "destination_type": "queue", "routing_key": key, "arguments": {}
                }))
            })
            .collect();
        let queues: Vec<Value> = queues
            .into_iter()
            .map(|q| {
                let args: Map<String, Value> = q
                    .args
                    .into_iter()
                    .map(|(k, v)| {
                        let v = match v {
                            ArgValue::Str(s) => Value::from(s),
                            ArgValue::I32(n) => Value::from(n),
                            ArgValue::I64(n) => Value::from(n),
                        };
                        (k.to_owned(), v)
                    })
                    .collect();
                json!({
                    "name": q.name, "vhost": vhost, "durable": true,
                    "auto_delete": false, "arguments": args
                })
            })
            .collect();
        json!({
            "vhosts": [{ "name": vhost }],
            "exchanges": exchanges,
            "queues": queues,
            "bindings": bindings,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::Settings;

    /// `deploy/rabbitmq/definitions.json` is the topology of the default configuration.
    /// Regenerate it with
    /// `RENKEI_WRITE_DEFINITIONS=1 cargo test -p renkei-hub definitions_file`.
    #[test]
    fn definitions_file_matches_the_default_topology() {
        let settings = Settings::load(None).unwrap_or_else(|e| panic!("{e}"));
        let topology = Topology::new(
            &settings.bus.prefix,
            &settings.delivery.retry_schedule,
            settings.bus.quorum_initial_group_size,
        );
        let generated = serde_json::to_string_pretty(&topology.definitions("/"))
            .unwrap_or_else(|e| panic!("{e}"))
            + "\n";
        let path = concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/../deploy/rabbitmq/definitions.json"
        );
        if std::env::var_os("RENKEI_WRITE_DEFINITIONS").is_some() {
            std::fs::write(path, &generated).unwrap_or_else(|e| panic!("{path}: {e}"));
        }
        let committed = std::fs::read_to_string(path).unwrap_or_else(|e| panic!("{path}: {e}"));
        assert_eq!(
            committed, generated,
            "deploy/rabbitmq/definitions.json is out of date; regenerate it (see this test's doc)"
        );
    }

    #[test]
    fn every_dead_letter_target_exists() {
        let t = Topology::new("p", &[Duration::from_secs(5), Duration::from_secs(5)], 1);
        let exchanges = t.all_exchanges();
        let queues = t.queues();
        assert_eq!(
            queues.iter().filter(|q| q.name.contains("retry")).count(),
            1
        );
        for q in &queues {
            for (k, v) in &q.args {
                if *k == "x-dead-letter-exchange" {
                    assert!(
                        matches!(v, ArgValue::Str(e) if exchanges.contains(e)),
                        "{q:?}"
                    );
                }
            }
        }
    }
}
