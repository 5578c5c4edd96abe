//! The inbox as `bridge run` and `bridge inbox serve` both start it: bound
//! to its address, its state and processor built from `[inbox]` and the app.

use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;

use anyhow::Context as _;
use bridge_flows::app::App;
use bridge_inbox::{Dispatcher, InboxProcessor, InboxState, ServeOptions};
use tokio::net::TcpListener;

use crate::config::InboxSettings;

/// An inbox listening on its address, not yet serving.
pub struct BoundInbox {
    /// The bound address (the configured port may be 0).
    pub addr: SocketAddr,
    listener: TcpListener,
    state: InboxState,
    processor: InboxProcessor,
    options: ServeOptions,
}

impl BoundInbox {
    /// Binds `settings.listen` for `app`'s pushed flows; `today` fixes the
    /// jobs' date (`None`: the machine's date at each pass).
    pub async fn bind(
        app: &App,
        settings: InboxSettings,
        today: Option<String>,
    ) -> anyhow::Result<Self> {
        let dispatcher = Dispatcher::for_app(app)?;
        let listener = TcpListener::bind(settings.listen)
            .await
            .with_context(|| format!("cannot listen on {} (inbox.listen)", settings.listen))?;
        let addr = listener.local_addr()?;
        let state = InboxState::new(
            app.store.clone(),
            settings.sealer.clone(),
            "",
            settings.max_body_bytes,
        )
        .with_keys(&settings.api_keys)
        .with_body_timeout(settings.body_timeout);
        let processor =
            InboxProcessor::new(app.store.clone(), settings.sealer, Arc::new(dispatcher))
                .with_max_attempts(app.delivery.max_attempts)
                .with_replica(app.replica.clone())
                .with_retry_delay(settings.retry_delay);
        let options = ServeOptions {
            today,
            limits: settings.limits,
            // Often enough that a crashed replica's messages are taken over
            // soon after its claims expire.
            sweep: (app.replica.lease_ttl / 4).max(std::time::Duration::from_millis(200)),
        };
        Ok(Self {
            addr,
            listener,
            state,
            processor,
            options,
        })
    }

    /// Serves until `shutdown` completes.
    pub async fn serve(
        self,
        shutdown: impl Future<Output = ()> + Send + 'static,
    ) -> std::io::Result<()> {
        bridge_inbox::serve(
            self.listener,
            self.state,
            self.processor,
            self.options,
            shutdown,
        )
        .await
    }
}
