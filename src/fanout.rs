//! Threads that take parts of a large fan-out.
//!
//! A fan-out writes each recipient's frame itself (`outbox.rs`, "Writing through"), so its
//! cost is its `send()`s, on the thread that runs it. One thread alone reached the last
//! of 19,000 browsers later than the tasks it no longer wakes did (they ran on every
//! worker), so a large fan-out is cut into parts and the others run here, on threads kept
//! for it, one fewer than the runtime's workers. Kept rather than spawned per fan-out: a
//! broadcast storm must not become a thread storm, and their CPU time stays visible in
//! /proc (the load tool reads the live threads).

use std::panic::{AssertUnwindSafe, catch_unwind};
use std::sync::mpsc;
use std::sync::{Mutex, PoisonError};

use tracing::warn;

/// A part of a fan-out, owning what it needs.
pub type Part<T> = Box<dyn FnOnce() -> T + Send>;

type Job = Box<dyn FnOnce() + Send>;

/// The helper threads (possibly none).
#[derive(Debug)]
pub struct Helpers {
    queues: Vec<Mutex<mpsc::Sender<Job>>>,
}

impl Helpers {
    /// Starts up to `n` helper threads (fewer if the system refuses some).
    pub fn start(n: usize) -> Helpers {
        let mut queues = Vec::with_capacity(n);
        for _ in 0..n {
            let (tx, rx) = mpsc::channel::<Job>();
            let started = std::thread::Builder::new()
                .name("pushwire-fanout".into())
                .spawn(move || {
                    // Ends when the registry (and so every sender) is gone.
                    while let Ok(job) = rx.recv() {
                        // A panicking part is a bug; it must not take the helper with it.
                        // Its caller sees no result and logs it.
                        let _ = catch_unwind(AssertUnwindSafe(job));
                    }
                });
            match started {
                Ok(_) => queues.push(Mutex::new(tx)),
                Err(err) => {
                    warn!(%err, "fan-out helper thread not started; fan-outs use fewer threads")
                }
            }
        }
        Helpers { queues }
    }

    /// Runs the first part on this thread and the others on the helpers (a part no helper
    /// can take runs here too); returns each part's result, in order (`None` for a part
    /// that panicked).
    pub fn run<T: Send + 'static>(&self, parts: Vec<Part<T>>) -> Vec<Option<T>> {
        let mut parts = parts.into_iter();
        let Some(first) = parts.next() else {
            return Vec::new();
        };
        let mut waiting = Vec::new();
        for (i, part) in parts.enumerate() {
            let (done, result) = mpsc::sync_channel(1);
            let job: Job = Box::new(move || {
                let _ = done.send(part());
            });
            let queued = match self.queues.get(i % self.queues.len().max(1)) {
                Some(queue) => queue
                    .lock()
                    .unwrap_or_else(PoisonError::into_inner)
                    .send(job)
                    .map_err(|unsent| unsent.0),
                None => Err(job),
            };
            waiting.push(match queued {
                Ok(()) => Ok(result),
                Err(job) => Err((job, result)),
            });
        }
        let mut out = vec![Some(first())];
        for w in waiting {
            let result = match w {
                Ok(result) => result,
                Err((job, result)) => {
                    job();
                    result
                }
            };
            let got = result.recv().ok();
            if got.is_none() {
                warn!("a fan-out part panicked; its counts are lost");
            }
            out.push(got);
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parts_run_on_the_helpers_and_come_back_in_order() {
        let helpers = Helpers::start(2);
        let here = std::thread::current().id();
        let parts: Vec<Part<(usize, bool)>> = (0..5)
            .map(|i| -> Part<(usize, bool)> {
                Box::new(move || (i, std::thread::current().id() == here))
            })
            .collect();
        let got: Vec<_> = helpers.run(parts).into_iter().map(Option::unwrap).collect();
        assert_eq!(got.iter().map(|g| g.0).collect::<Vec<_>>(), [0, 1, 2, 3, 4]);
        assert!(got[0].1, "the first part runs on the caller");
        assert!(got[1..].iter().all(|g| !g.1), "the others on helpers");
    }

    #[test]
    fn a_panicking_part_loses_only_its_result() {
        let helpers = Helpers::start(1);
        let parts: Vec<Part<u8>> = vec![Box::new(|| 1), Box::new(|| panic!("bug")), Box::new(|| 3)];
        assert_eq!(helpers.run(parts), [Some(1), None, Some(3)]);
        let again: Vec<Part<u8>> = vec![Box::new(|| 1), Box::new(|| 2)];
        assert_eq!(
            helpers.run(again),
            [Some(1), Some(2)],
            "the helper survived"
        );
    }

    #[test]
    fn without_helpers_every_part_runs_here() {
        let helpers = Helpers::start(0);
        let parts: Vec<Part<u8>> = vec![Box::new(|| 1), Box::new(|| 2)];
        assert_eq!(helpers.run(parts), [Some(1), Some(2)]);
    }
}
