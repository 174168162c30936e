//! A minimum transfer rate for request bodies: while the app waits for body data, at
//! least [`MinRate::bytes`] must arrive within every [`MinRate::window`]; otherwise the
//! body fails with [`TooSlow`]. A client trickling its body therefore cannot hold a
//! concurrency slot, or a streamed `/files/*` request (which outlives the request
//! timeout once its response starts), for longer than a window at a time.
//!
//! Only time spent *waiting for the client* counts: a window starts when a read finds
//! no data (`Pending`), and ends as soon as enough bytes arrived. A server that is slow
//! to read is never held against the client.

use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;

use tokio::time::{Instant, Sleep};

/// The rule: `bytes` within every `window` of waiting.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct MinRate {
    /// Bytes that must arrive within each window.
    pub bytes: u64,
    /// The window.
    pub window: Duration,
}

impl Default for MinRate {
    /// 8 KiB every 10 s (≈ 820 bytes/s): far below any real client's rate.
    fn default() -> Self {
        Self {
            bytes: 8 * 1024,
            window: Duration::from_secs(10),
        }
    }
}

/// The body failed the minimum rate.
#[derive(Debug, thiserror::Error)]
#[error("the request body arrived too slowly")]
pub struct TooSlow;

/// The state of one body under a [`MinRate`].
#[derive(Debug)]
pub struct RateCheck {
    rule: MinRate,
    /// The current window (while waiting) and the bytes received within it.
    window: Option<(Pin<Box<Sleep>>, u64)>,
}

impl RateCheck {
    /// No window open yet.
    pub fn new(rule: MinRate) -> Self {
        Self { rule, window: None }
    }

    /// Counts `n` body bytes just received.
    pub fn received(&mut self, n: usize) {
        if let Some((_, got)) = &mut self.window {
            *got = got.saturating_add(n as u64);
            if *got >= self.rule.bytes {
                self.window = None;
            }
        }
    }

    /// The body had no data for now: opens a window if none is open, and fails once the
    /// open one is over (its timer wakes the task then).
    pub fn waiting(&mut self, cx: &mut Context<'_>) -> Result<(), TooSlow> {
        let window = self.rule.window;
        let (deadline, _) = self.window.get_or_insert_with(|| {
            (
                Box::pin(tokio::time::sleep_until(Instant::now() + window)),
                0,
            )
        });
        match deadline.as_mut().poll(cx) {
            Poll::Ready(()) => Err(TooSlow),
            Poll::Pending => Ok(()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cx() -> Context<'static> {
        Context::from_waker(futures_util::task::noop_waker_ref())
    }

    #[tokio::test]
    async fn a_window_opens_on_waiting_and_closes_on_enough_bytes() {
        // A window too long to end during the test: only the bookkeeping is checked.
        let mut check = RateCheck::new(MinRate {
            bytes: 100,
            window: Duration::from_secs(3600),
        });
        check.received(500);
        assert!(
            check.window.is_none(),
            "bytes before any wait open no window"
        );
        assert!(check.waiting(&mut cx()).is_ok());
        check.received(99);
        assert!(check.window.is_some(), "99 of 100 bytes: still waiting");
        assert!(check.waiting(&mut cx()).is_ok());
        check.received(1);
        assert!(check.window.is_none(), "enough bytes close the window");
    }

    #[tokio::test]
    async fn a_window_without_enough_bytes_fails() {
        let mut check = RateCheck::new(MinRate {
            bytes: 100,
            window: Duration::from_millis(20),
        });
        assert!(check.waiting(&mut cx()).is_ok(), "the window opens");
        // Sleeping past the window's end makes it over, however slow the machine.
        tokio::time::sleep(Duration::from_millis(30)).await;
        check.received(99);
        assert!(
            check.waiting(&mut cx()).is_err(),
            "99 of 100 bytes in the window"
        );
    }
}
