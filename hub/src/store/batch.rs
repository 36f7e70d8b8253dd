//! Group commit: many concurrent callers, one transaction per batch.
//!
//! Each caller hands its request to a committer task and awaits its own result. The
//! committer takes whatever has queued up (at most `max_batch`) and commits it at once,
//! so under load a batch grows by itself while the previous one commits, and an idle
//! hub adds no waiting at all. Rows that every request updates (a participant's
//! sequence counter) are then locked once per batch instead of once per request.

use futures_util::future::BoxFuture;
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

impl<Req: Send + Sync + 'static, Resp: Send + 'static> GroupCommit<Req, Resp> {
    /// Starts the committer task. `commit` must return one response per request, in
    /// order. When a batch fails because the database is unavailable, every request of
    /// it gets the error (they are all retried later). When it fails for any other
    /// reason — one request the database refuses, say — each request is committed again
    /// on its own, so only the bad one fails and the good ones around it go through.
    /// The task ends when the last handle is dropped.
    pub fn spawn<F>(max_batch: usize, commit: F) -> Self
    where
        F: for<'a> Fn(&'a [Req]) -> BoxFuture<'a, Result<Vec<Resp>, StoreError>>
            + Send
            + Sync
            + 'static,
    {
        let max_batch = max_batch.max(1);
        let (queue, mut incoming) = mpsc::channel::<(Req, Reply<Resp>)>(max_batch * 4);
        tokio::spawn(async move {
            let mut batch = Vec::with_capacity(max_batch);
            while incoming.recv_many(&mut batch, max_batch).await > 0 {
                let (requests, replies): (Vec<Req>, Vec<Reply<Resp>>) = batch.drain(..).unzip();
                match answers(&commit, &requests).await {
                    Ok(responses) => {
                        for (reply, response) in replies.into_iter().zip(responses) {
                            let _ = reply.send(Ok(response));
                        }
                    }
                    Err(e) if requests.len() > 1 && !matches!(e, StoreError::Unavailable(_)) => {
                        tracing::warn!(error = %e, batch = requests.len(), "a batch failed; committing its requests one by one");
                        for (request, reply) in requests.iter().zip(replies) {
                            let alone = answers(&commit, std::slice::from_ref(request)).await;
                            let _ = reply.send(alone.and_then(|mut r| {
                                r.pop()
                                    .ok_or_else(|| StoreError::Corrupt("no result".into()))
                            }));
                        }
                    }
                    Err(e) => {
                        for reply in replies {
                            let _ = reply.send(Err(e.clone()));
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

/// One commit, checked to answer every request.
async fn answers<Req, Resp, F>(commit: &F, requests: &[Req]) -> Result<Vec<Resp>, StoreError>
where
    F: for<'a> Fn(&'a [Req]) -> BoxFuture<'a, Result<Vec<Resp>, StoreError>>,
{
    let responses = commit(requests).await?;
    if responses.len() == requests.len() {
        Ok(responses)
    } else {
        Err(StoreError::Corrupt(format!(
            "a batch of {} got {} results",
            requests.len(),
            responses.len()
        )))
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
        let doubler = GroupCommit::spawn(8, move |xs: &[u32]| {
            counted.fetch_add(1, Ordering::Relaxed);
            Box::pin(async move {
                tokio::task::yield_now().await;
                Ok(xs.iter().map(|x| x * 2).collect())
            })
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
        let failing = GroupCommit::spawn(4, |_: &[u32]| {
            Box::pin(async { Err::<Vec<u32>, _>(StoreError::Unavailable("disk full".into())) })
        });
        let err = failing.submit(1).await.err().map(|e| e.to_string());
        assert_eq!(err.as_deref(), Some("database unavailable: disk full"));
    }

    #[tokio::test]
    async fn a_refused_request_fails_alone_and_its_batch_mates_commit() {
        // Any batch holding 13 is refused, as a database refuses a batch with one bad
        // row; the requests are held back until they are all queued, so they share one.
        let gate = Arc::new(tokio::sync::Semaphore::new(0));
        let opened = gate.clone();
        let with_13 = Arc::new(std::sync::Mutex::new(Vec::new()));
        let seen = with_13.clone();
        let refusing = GroupCommit::spawn(16, move |xs: &[u32]| {
            let gate = opened.clone();
            if xs.contains(&13) {
                seen.lock().map(|mut s| s.push(xs.len())).ok();
            }
            Box::pin(async move {
                let _ = gate.acquire().await;
                if xs.contains(&13) {
                    Err(StoreError::Rejected("13 is refused".into()))
                } else {
                    Ok(xs.to_vec())
                }
            })
        });
        let handles: Vec<_> = (10..18u32)
            .map(|i| {
                let r = refusing.clone();
                tokio::spawn(async move { (i, r.submit(i).await) })
            })
            .collect();
        tokio::task::yield_now().await;
        gate.add_permits(1_000);
        for h in handles {
            let (i, got) = h.await.unwrap_or_else(|e| panic!("{e}"));
            match got {
                Ok(v) => assert_eq!(v, i),
                Err(e) => {
                    assert_eq!(i, 13, "{i} failed: {e}");
                    assert!(matches!(e, StoreError::Rejected(_)), "{e}");
                }
            }
        }
        // 13 was first refused together with others, then alone.
        let sizes = with_13.lock().map(|s| s.clone()).unwrap_or_default();
        assert!(sizes.iter().any(|&n| n > 1), "{sizes:?}");
        assert_eq!(sizes.last(), Some(&1), "{sizes:?}");
    }

    #[tokio::test]
    async fn an_unavailable_database_fails_the_whole_batch_without_retrying_it() {
        let calls = Arc::new(AtomicUsize::new(0));
        let counted = calls.clone();
        let down = GroupCommit::spawn(4, move |_: &[u32]| {
            counted.fetch_add(1, Ordering::Relaxed);
            Box::pin(async { Err::<Vec<u32>, _>(StoreError::Unavailable("down".into())) })
        });
        assert!(down.submit(1).await.is_err());
        assert_eq!(calls.load(Ordering::Relaxed), 1);
    }
}
