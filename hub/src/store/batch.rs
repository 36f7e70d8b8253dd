//! Group commit: many concurrent callers, one transaction per batch.
//!
//! Each caller hands its request to a committer task and awaits its own result. The
//! committer takes whatever has queued up (at most `max_batch`) and commits it at once,
//! so under load a batch grows by itself while the previous one commits, and an idle
//! hub adds no waiting at all. Rows that every request updates (a participant's
//! sequence counter) are then locked once per batch instead of once per request.

use std::future::Future;

use tokio::sync::{mpsc, oneshot};

use super::StoreError;

type Reply<T> = oneshot::Sender<Result<T, StoreError>>;

/// A handle for submitting requests; cheap to clone.
pub struct GroupCommit<Req, Resp> {
    queue: mpsc::Sender<(Req, Reply<Resp>)>,
}

impl<Req, Resp> Clone for GroupCommit<Req, Resp> {
    fn clone(&self) -> Self {
        Self {
            queue: self.queue.clone(),
        }
    }
}

impl<Req: Send + 'static, Resp: Send + 'static> GroupCommit<Req, Resp> {
    /// Starts the committer task. `commit` must return one response per request, in
    /// order; when it fails, every request of the batch gets the error. The task ends
    /// when the last handle is dropped.
    pub fn spawn<F, Fut>(max_batch: usize, commit: F) -> Self
    where
        F: Fn(Vec<Req>) -> Fut + Send + 'static,
        Fut: Future<Output = Result<Vec<Resp>, StoreError>> + Send,
    {
        let max_batch = max_batch.max(1);
        let (queue, mut incoming) = mpsc::channel::<(Req, Reply<Resp>)>(max_batch * 4);
        tokio::spawn(async move {
            let mut batch = Vec::with_capacity(max_batch);
            while incoming.recv_many(&mut batch, max_batch).await > 0 {
                let (requests, replies): (Vec<Req>, Vec<Reply<Resp>>) = batch.drain(..).unzip();
                let n = requests.len();
                match commit(requests).await {
                    Ok(responses) if responses.len() == n => {
                        for (reply, response) in replies.into_iter().zip(responses) {
                            let _ = reply.send(Ok(response));
                        }
                    }
                    Ok(responses) => {
                        let e = format!("a batch of {n} got {} results", responses.len());
                        for reply in replies {
                            let _ = reply.send(Err(StoreError::Corrupt(e.clone())));
                        }
                    }
                    Err(e) => {
                        for reply in replies {
                            let _ = reply.send(Err(same(&e)));
                        }
                    }
                }
            }
        });
        Self { queue }
    }

    /// Submits one request and waits for its batch to commit.
    pub async fn submit(&self, request: Req) -> Result<Resp, StoreError> {
        let (reply, response) = oneshot::channel();
        self.queue
            .send((request, reply))
            .await
            .map_err(|_| StoreError::Unavailable("the committer has stopped".into()))?;
        response
            .await
            .map_err(|_| StoreError::Unavailable("the committer has stopped".into()))?
    }
}

/// The same error again, for each request of a failed batch.
fn same(e: &StoreError) -> StoreError {
    match e {
        StoreError::Unavailable(m) => StoreError::Unavailable(m.clone()),
        StoreError::Conflict(m) => StoreError::Conflict(m.clone()),
        StoreError::Corrupt(m) => StoreError::Corrupt(m.clone()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;
    use std::sync::atomic::{AtomicUsize, Ordering};

    #[tokio::test]
    async fn concurrent_requests_share_batches_and_get_their_own_answers() {
        let batches = Arc::new(AtomicUsize::new(0));
        let counted = batches.clone();
        let doubler = GroupCommit::spawn(8, move |xs: Vec<u32>| {
            counted.fetch_add(1, Ordering::Relaxed);
            async move {
                tokio::task::yield_now().await;
                Ok(xs.into_iter().map(|x| x * 2).collect())
            }
        });
        let handles: Vec<_> = (0..64u32)
            .map(|i| {
                let d = doubler.clone();
                tokio::spawn(async move { (i, d.submit(i).await) })
            })
            .collect();
        for h in handles {
            let (i, got) = h.await.unwrap_or_else(|e| panic!("{e}"));
            assert_eq!(got.unwrap_or_else(|e| panic!("{e}")), i * 2);
        }
        let n = batches.load(Ordering::Relaxed);
        assert!(
            (8..=64).contains(&n),
            "{n} batches for 64 requests of at most 8"
        );
    }

    #[tokio::test]
    async fn a_failed_batch_fails_each_of_its_requests() {
        let failing = GroupCommit::spawn(4, |_: Vec<u32>| async {
            Err::<Vec<u32>, _>(StoreError::Unavailable("disk full".into()))
        });
        let err = failing.submit(1).await.err().map(|e| e.to_string());
        assert_eq!(err.as_deref(), Some("database unavailable: disk full"));
    }
}
