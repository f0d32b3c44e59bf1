//! Prompts and the other servers on the NATS (`bus::relay`): this server
//! relays a prompt for a session another server holds, answers the prompts
//! relayed to its own sessions, and delivers the broadcasts others relay.

use std::sync::Arc;
use std::time::Duration;

use super::Hub;
use super::routing::Retry;
use crate::bus::Target;
use crate::bus::relay::{RelayHandler, RelayMiss, RelayRetry, Relayed};
use crate::metrics::Metrics;
use crate::prompt::{DropReason, Prompt, PromptOutcome};

impl Hub {
    /// Ask the server holding session `id` to speak `prompt`; `None` when
    /// none does (or NATS is off).
    pub(super) async fn relay(
        &self,
        id: &str,
        prompt: &Prompt,
        retry: Retry,
    ) -> Option<PromptOutcome> {
        let retry = match retry {
            Retry::Allowed => RelayRetry::Allowed,
            Retry::Last => RelayRetry::Last,
            Retry::No | Retry::Relayed => RelayRetry::No,
        };
        let wait = Duration::from_millis(self.config.limits.prompt_wait_max_ms);
        let outcome = match self.bus.relay_to_session(id, prompt, retry, wait).await {
            Ok(o) => o,
            Err(RelayMiss::NotHeld) => return None,
            // Back to JetStream (`handle` naks it): delivered again, the
            // heard log keeps it from being spoken twice.
            Err(RelayMiss::Lost) => PromptOutcome::Dropped(DropReason::SessionEnded),
        };
        Metrics::inc(&self.metrics.prompts_relayed);
        tracing::info!(session = %id, prompt = %prompt.id, ?outcome, "prompt relayed to the server holding its session");
        Some(outcome)
    }

    /// While session `id` lives, speak the prompts other servers relay to it.
    pub(super) fn serve_relay(self: &Arc<Self>, id: &str) {
        let Some(cancel) = self
            .sessions
            .lock()
            .ok()
            .and_then(|s| s.get(id).map(|e| e.relay.clone()))
        else {
            return;
        };
        let hub = self.clone();
        let sid = id.to_string();
        let handler: RelayHandler = Arc::new(move |r: Relayed| {
            let hub = hub.clone();
            let sid = sid.clone();
            Box::pin(async move {
                let retry = match r.retry {
                    RelayRetry::Allowed => Retry::Allowed,
                    RelayRetry::Last => Retry::Last,
                    RelayRetry::No => Retry::No,
                };
                hub.offer_unheard(&sid, r.prompt, retry).await
            })
        });
        self.bus.serve_session_relay(id, handler, cancel);
    }

    /// The broadcasts other servers relay reach this server's sessions.
    pub fn serve_broadcast_relay(self: &Arc<Self>, cancel: tokio_util::sync::CancellationToken) {
        let hub = self.clone();
        let handler: RelayHandler = Arc::new(move |r: Relayed| {
            let hub = hub.clone();
            Box::pin(async move {
                let out = hub
                    .deliver_with(Target::Broadcast, r.prompt, Retry::Relayed)
                    .await;
                out.first()
                    .map(|d| d.outcome.clone())
                    .unwrap_or(PromptOutcome::Dropped(DropReason::NoSession))
            })
        });
        self.bus.serve_broadcast_relay(handler, cancel);
    }
}
