//! Running independent jobs a few at a time: device runs are single-threaded
//! and independent, so `quba eval` keeps one per core busy.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Mutex;

use anyhow::Result;

/// `f` of every item on `jobs` threads; results in input order. After the
/// first failure no new item starts (the runs in flight finish, and their
/// results are kept); the items never started have no result.
pub fn run_all<T: Sync, R: Send>(items: &[T], jobs: usize, f: impl Fn(usize, &T) -> Result<R> + Sync) -> Vec<Option<Result<R>>> {
    let next = AtomicUsize::new(0);
    let slots: Mutex<Vec<Option<Result<R>>>> = Mutex::new((0..items.len()).map(|_| None).collect());
    std::thread::scope(|scope| {
        for _ in 0..jobs.clamp(1, items.len().max(1)) {
            scope.spawn(|| loop {
                let i = next.fetch_add(1, Ordering::SeqCst);
                let Some(item) = items.get(i) else { break };
                let r = f(i, item);
                let failed = r.is_err();
                slots.lock().unwrap()[i] = Some(r);
                if failed {
                    next.store(items.len(), Ordering::SeqCst);
                }
            });
        }
    });
    slots.into_inner().unwrap()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn results_keep_input_order_on_many_threads() {
        let items: Vec<u32> = (0..40).collect();
        let out = run_all(&items, 4, |i, x| {
            // Later items finish first, so completion order is not input order.
            std::thread::sleep(std::time::Duration::from_micros(u64::from(40 - x) * 50));
            Ok((i, x * 2))
        });
        let got: Vec<(usize, u32)> = out.into_iter().map(|r| r.unwrap().unwrap()).collect();
        assert_eq!(got, (0..40).map(|i| (i, i as u32 * 2)).collect::<Vec<_>>());
    }

    #[test]
    fn a_failure_stops_new_work_and_keeps_what_ran() {
        let items: Vec<u32> = (0..10).collect();
        let started = AtomicUsize::new(0);
        let out = run_all(&items, 1, |_, &x| {
            started.fetch_add(1, Ordering::SeqCst);
            if x == 3 {
                anyhow::bail!("item {x} failed")
            }
            Ok(x)
        });
        assert_eq!(started.load(Ordering::SeqCst), 4, "one thread: items 0..=3 ran, then nothing");
        assert!(out[..3].iter().all(|r| matches!(r, Some(Ok(_)))));
        assert_eq!(out[3].as_ref().unwrap().as_ref().unwrap_err().to_string(), "item 3 failed");
        assert!(out[4..].iter().all(Option::is_none));
    }

    #[test]
    fn no_items_no_threads_needed() {
        let out = run_all::<u8, ()>(&[], 8, |_, _| unreachable!());
        assert!(out.is_empty());
    }
}
