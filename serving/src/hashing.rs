//! A bounded pool for password hashing. An Argon2id hash holds 19 MiB for tens of
//! milliseconds; unbounded, a burst of 200 sign-ups took the process to 1.6 GiB. Here
//! at most `concurrent` hashes run at once, at most `queue` more wait for a slot, and a
//! request beyond that is told to come back (503 with `Retry-After`).

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

use tokio::sync::Semaphore;

pub struct HashingPool {
    slots: Arc<Semaphore>,
    /// Requests running or waiting.
    admitted: AtomicUsize,
    capacity: usize,
}

/// The pool is full: try again shortly.
#[derive(Debug, PartialEq, Eq)]
pub struct Busy;

impl HashingPool {
    pub fn new(concurrent: usize, queue: usize) -> HashingPool {
        HashingPool {
            slots: Arc::new(Semaphore::new(concurrent.max(1))),
            admitted: AtomicUsize::new(0),
            capacity: concurrent.max(1) + queue,
        }
    }

    /// Runs `work` on a blocking thread once a slot is free, or refuses at once when
    /// `capacity` requests are already running or waiting. A panic in `work` is a bug,
    /// not a full pool: it goes on unwinding in the caller (whose request then gets the
    /// panic handler's answer), instead of telling the client to retry.
    pub async fn run<T: Send + 'static>(
        &self,
        work: impl FnOnce() -> T + Send + 'static,
    ) -> Result<T, Busy> {
        let admitted = self.admitted.fetch_add(1, Ordering::AcqRel);
        let _leave = Leave(&self.admitted);
        if admitted >= self.capacity {
            return Err(Busy);
        }
        let slot = self.slots.clone().acquire_owned().await.map_err(|_| Busy)?;
        tokio::task::spawn_blocking(move || {
            let result = work();
            drop(slot);
            result
        })
        .await
        .map_err(|failed| match failed.try_into_panic() {
            Ok(panic) => std::panic::resume_unwind(panic),
            Err(_) => Busy,
        })
    }
}

/// Counts a request out however it leaves (answered, refused, or its client gone).
struct Leave<'a>(&'a AtomicUsize);

impl Drop for Leave<'_> {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::AcqRel);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn refuses_beyond_its_capacity_and_recovers() {
        let pool = Arc::new(HashingPool::new(1, 1));
        let (release, wait) = std::sync::mpsc::channel::<()>();
        let wait = Arc::new(std::sync::Mutex::new(wait));
        let running = {
            let (pool, wait) = (pool.clone(), wait.clone());
            tokio::spawn(async move { pool.run(move || wait.lock().unwrap().recv().is_ok()).await })
        };
        let queued = {
            let pool = pool.clone();
            tokio::spawn(async move { pool.run(|| true).await })
        };
        // Both are admitted once the counter says so; a third is refused.
        while pool.admitted.load(Ordering::Acquire) < 2 {
            tokio::task::yield_now().await;
        }
        assert_eq!(pool.run(|| true).await, Err(Busy));
        release.send(()).unwrap();
        assert_eq!(running.await.unwrap(), Ok(true));
        assert_eq!(queued.await.unwrap(), Ok(true));
        assert_eq!(pool.run(|| 7).await, Ok(7));
        assert_eq!(pool.admitted.load(Ordering::Acquire), 0);
    }

    #[tokio::test]
    async fn a_panic_in_the_work_is_not_reported_as_a_full_pool() {
        let pool = Arc::new(HashingPool::new(1, 0));
        let panicked = {
            let pool = pool.clone();
            tokio::spawn(async move { pool.run(|| -> bool { panic!("bug") }).await })
        };
        assert!(panicked.await.unwrap_err().is_panic());
        // The slot and the count came back.
        assert_eq!(pool.run(|| 7).await, Ok(7));
        assert_eq!(pool.admitted.load(Ordering::Acquire), 0);
    }
}
