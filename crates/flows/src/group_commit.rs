//! Group commit: writes of records that finish at the same time go to the
//! state database in one transaction, one disk sync for all of them. While
//! one write is under way the next items queue; whoever writes next takes
//! every item queued. Each caller still returns only once its own items
//! are written (or their write failed), with that write's result, so a
//! record's durability is what it was with a write of its own.

use std::future::Future;

use tokio::sync::oneshot;

type Queued<T> = (T, oneshot::Sender<Result<(), String>>);

pub struct GroupCommit<T> {
    queued: std::sync::Mutex<Vec<Queued<T>>>,
    writing: tokio::sync::Mutex<()>,
}

impl<T> Default for GroupCommit<T> {
    fn default() -> Self {
        Self {
            queued: std::sync::Mutex::new(Vec::new()),
            writing: tokio::sync::Mutex::new(()),
        }
    }
}

impl<T> std::fmt::Debug for GroupCommit<T> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("GroupCommit")
    }
}

impl<T> GroupCommit<T> {
    /// Write `items`, with whatever else is queued, by `write` (one
    /// transaction); the result of the write that carried them.
    pub async fn commit<F, Fut>(&self, items: Vec<T>, write: F) -> Result<(), String>
    where
        F: FnOnce(Vec<T>) -> Fut,
        Fut: Future<Output = Result<(), String>>,
    {
        let mut answers = Vec::with_capacity(items.len());
        {
            let mut queued = self.queued.lock().unwrap_or_else(|e| e.into_inner());
            for item in items {
                let (tx, rx) = oneshot::channel();
                queued.push((item, tx));
                answers.push(rx);
            }
        }
        {
            // A fair lock: whoever held it before us wrote what was queued
            // then; what is queued now (ours, if not written yet) we write.
            let _writing = self.writing.lock().await;
            let batch = std::mem::take(&mut *self.queued.lock().unwrap_or_else(|e| e.into_inner()));
            if !batch.is_empty() {
                let (items, waiters): (Vec<T>, Vec<_>) = batch.into_iter().unzip();
                let result = write(items).await;
                for waiter in waiters {
                    let _ = waiter.send(result.clone());
                }
            }
        }
        for answer in answers {
            answer
                .await
                .unwrap_or_else(|_| Err("not written".to_string()))?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::sync::{Arc, Mutex};
    use std::time::Duration;

    #[tokio::test]
    async fn writes_that_arrive_together_share_a_commit_and_each_gets_its_result() {
        let commits = Arc::new(GroupCommit::<usize>::default());
        let written = Arc::new(Mutex::new(Vec::new()));
        let writes = Arc::new(AtomicUsize::new(0));
        let tasks: Vec<_> = (0..20)
            .map(|i| {
                let (commits, written, writes) = (commits.clone(), written.clone(), writes.clone());
                tokio::spawn(async move {
                    commits
                        .commit(vec![i], |batch| async move {
                            writes.fetch_add(1, Ordering::SeqCst);
                            // A slow disk sync: the others queue meanwhile.
                            tokio::time::sleep(Duration::from_millis(20)).await;
                            let refused = batch.contains(&13);
                            written.lock().unwrap().extend(batch);
                            if refused {
                                Err("disk full".to_string())
                            } else {
                                Ok(())
                            }
                        })
                        .await
                })
            })
            .collect();
        let mut results = Vec::new();
        for t in tasks {
            results.push(t.await.unwrap());
        }
        let mut all = written.lock().unwrap().clone();
        all.sort();
        assert_eq!(all, (0..20).collect::<Vec<_>>(), "every item written once");
        assert!(writes.load(Ordering::SeqCst) < 20, "no write was shared");
        // Item 13's write failed: its caller (and those written with it) say so.
        assert!(results[13].is_err());
        assert!(results.iter().filter(|r| r.is_ok()).count() >= 1);
    }
}
