//! The MLLP listener as a source: `[sources.<name>]` with `type = "mllp"`.

use std::net::SocketAddr;
use std::time::Duration;

use renkei_sdk::source::{RunningSource, Source, SourceContext, SourceError};
use serde::Deserialize;

use crate::listener::{ADAPTER, ListenerOptions, serve};

/// Settings of an MLLP source. Every one but `listen` has a default.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MllpConfig {
    /// Where EHRs connect, e.g. `0.0.0.0:2575`.
    pub listen: SocketAddr,
    /// Largest accepted message; a larger frame is answered `AE` and discarded.
    #[serde(default = "defaults::max_message_bytes")]
    pub max_message_bytes: usize,
    /// A connection that sends nothing for this long is closed.
    #[serde(default = "defaults::idle_timeout", with = "humantime_serde")]
    pub idle_timeout: Duration,
    /// Connections served at once.
    #[serde(default = "defaults::max_connections")]
    pub max_connections: usize,
    /// Connections one sender (an IPv4 address, an IPv6 /64) may hold at once.
    #[serde(default = "defaults::max_connections_per_peer")]
    pub max_connections_per_peer: usize,
    /// A new connection must complete its first message within this long.
    #[serde(default = "defaults::handshake_timeout", with = "humantime_serde")]
    pub handshake_timeout: Duration,
    /// Bytes of unanswered messages all connections may buffer together.
    #[serde(default = "defaults::max_bytes_in_flight")]
    pub max_bytes_in_flight: usize,
    /// How long a message waits for room in `max_bytes_in_flight` before `AR`.
    #[serde(default = "defaults::bytes_in_flight_wait", with = "humantime_serde")]
    pub bytes_in_flight_wait: Duration,
}

mod defaults {
    use std::time::Duration;

    pub(super) fn max_message_bytes() -> usize {
        1024 * 1024
    }
    pub(super) fn idle_timeout() -> Duration {
        Duration::from_secs(600)
    }
    pub(super) fn max_connections() -> usize {
        1024
    }
    pub(super) fn max_connections_per_peer() -> usize {
        64
    }
    pub(super) fn handshake_timeout() -> Duration {
        Duration::from_secs(10)
    }
    pub(super) fn max_bytes_in_flight() -> usize {
        96 * 1024 * 1024
    }
    pub(super) fn bytes_in_flight_wait() -> Duration {
        Duration::from_secs(5)
    }
}

impl MllpConfig {
    /// The settings with every default, listening on `listen`.
    pub fn listening_on(listen: SocketAddr) -> Self {
        Self {
            listen,
            max_message_bytes: defaults::max_message_bytes(),
            idle_timeout: defaults::idle_timeout(),
            max_connections: defaults::max_connections(),
            max_connections_per_peer: defaults::max_connections_per_peer(),
            handshake_timeout: defaults::handshake_timeout(),
            max_bytes_in_flight: defaults::max_bytes_in_flight(),
            bytes_in_flight_wait: defaults::bytes_in_flight_wait(),
        }
    }

    /// Settings that parse but cannot work.
    pub fn validate(&self) -> Result<(), SourceError> {
        if self.max_connections == 0 {
            return Err(SourceError::config("max_connections", "must be at least 1"));
        }
        if self.max_message_bytes < 1024 {
            return Err(SourceError::config(
                "max_message_bytes",
                "must be at least 1024",
            ));
        }
        if self.max_connections_per_peer == 0 {
            return Err(SourceError::config(
                "max_connections_per_peer",
                "must be at least 1",
            ));
        }
        if self.handshake_timeout.is_zero() {
            return Err(SourceError::config(
                "handshake_timeout",
                "must be longer than 0s",
            ));
        }
        if self.max_bytes_in_flight < 2 * self.max_message_bytes {
            return Err(SourceError::config(
                "max_bytes_in_flight",
                "must be at least twice max_message_bytes (a message's buffer may be up to \
                 twice its size while it arrives)",
            ));
        }
        Ok(())
    }
}

/// The MLLP source kind.
pub struct MllpSource;

#[async_trait::async_trait]
impl Source for MllpSource {
    const KIND: &'static str = ADAPTER;
    type Config = MllpConfig;

    fn check(&self, config: &MllpConfig) -> Result<(), SourceError> {
        config.validate()
    }

    async fn build(
        &self,
        config: MllpConfig,
        context: SourceContext,
    ) -> Result<RunningSource, SourceError> {
        let listener = tokio::net::TcpListener::bind(config.listen)
            .await
            .map_err(|e| {
                SourceError::Start(format!(
                    "cannot listen for MLLP on {} (listen): {e}",
                    config.listen
                ))
            })?;
        tracing::info!(source = %context.name, addr = %config.listen, "MLLP listener ready");
        let options = ListenerOptions {
            name: context.name,
            max_message_bytes: config.max_message_bytes,
            idle_timeout: config.idle_timeout,
            handshake_timeout: config.handshake_timeout,
            max_connections: config.max_connections,
            max_connections_per_peer: config.max_connections_per_peer,
            max_bytes_in_flight: config.max_bytes_in_flight,
            bytes_in_flight_wait: config.bytes_in_flight_wait,
            time_window: context.time_window,
        };
        let (sink, shutdown) = (context.sink, context.shutdown);
        Ok(Box::pin(async move {
            serve(listener, sink, options, shutdown).await;
            Ok(())
        }))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_listen_is_required_and_misspelt_settings_are_refused() {
        let config: MllpConfig =
            serde_json::from_value(serde_json::json!({"listen": "127.0.0.1:2575"}))
                .unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(
            config,
            MllpConfig::listening_on("127.0.0.1:2575".parse().unwrap_or_else(|e| panic!("{e}")))
        );
        let misspelt = serde_json::from_value::<MllpConfig>(
            serde_json::json!({"listen": "127.0.0.1:2575", "max_conections": 3}),
        );
        assert!(misspelt.is_err_and(|e| e.to_string().contains("max_conections")));
    }

    #[test]
    fn contradicting_limits_are_refused_naming_the_setting() {
        let mut config =
            MllpConfig::listening_on("127.0.0.1:2575".parse().unwrap_or_else(|e| panic!("{e}")));
        config.max_bytes_in_flight = config.max_message_bytes;
        assert!(matches!(
            config.validate(),
            Err(SourceError::Config { setting, .. }) if setting == "max_bytes_in_flight"
        ));
    }
}
