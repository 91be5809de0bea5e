//! Work that may take its time but must never take a core from the Raft log,
//! heartbeats or the API: moving a component, writing a snapshot. On a 2-core machine
//! such work at normal priority multiplies the latency of every write it overlaps.

/// Runs `f` on a thread of its own, named `name`, at the lowest CPU priority. The future
/// resolves to `f`'s result; dropping it leaves `f` running to its end.
pub fn at_low_priority<T: Send + 'static>(
    name: &'static str,
    f: impl FnOnce() -> T + Send + 'static,
) -> impl std::future::Future<Output = T> {
    let (tx, rx) = tokio::sync::oneshot::channel();
    std::thread::Builder::new()
        .name(name.into())
        .spawn(move || {
            if let Err(e) = rustix::process::setpriority_process(Some(rustix::thread::gettid()), 19)
            {
                tracing::debug!(error = %e, "background work runs at normal priority");
            }
            let _ = tx.send(f());
        })
        .expect("a thread for background work");
    async move {
        rx.await
            .expect("a background thread ends by sending its result")
    }
}
