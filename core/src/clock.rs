//! The robot clock, injected into the control loop so that one loop runs in
//! simulated time (as fast as the CPU allows, deterministic) or in wall time
//! (holding the period) without a branch in the tick.

use std::time::{Duration, Instant};

/// When the loop's next tick is due.
pub trait Clock {
    /// Time since the clock started, on this clock's time base.
    fn now(&self) -> Duration;

    /// Returns when the next tick is due, and how late this call was for it
    /// (zero when on time).
    fn wait_for_next_tick(&mut self) -> Duration;

    fn period(&self) -> Duration;
}

/// Simulated time: every tick is due at once and time advances by exactly
/// one period per tick.
#[derive(Clone, Debug)]
pub struct SimClock {
    period: Duration,
    now: Duration,
}

impl SimClock {
    pub fn new(period: Duration) -> Self {
        Self {
            period,
            now: Duration::ZERO,
        }
    }
}

impl Clock for SimClock {
    fn now(&self) -> Duration {
        self.now
    }

    fn wait_for_next_tick(&mut self) -> Duration {
        self.now += self.period;
        Duration::ZERO
    }

    fn period(&self) -> Duration {
        self.period
    }
}

/// Wall time at a fixed rate: sleeps most of the way, then spins for the last
/// stretch because OS sleeps overshoot by up to a millisecond.
#[derive(Clone, Debug)]
pub struct WallClock {
    period: Duration,
    start: Instant,
    next_tick: Instant,
    spin: Duration,
}

impl WallClock {
    /// The last `spin` before each tick is busy-waited.
    pub fn new(period: Duration, spin: Duration) -> Self {
        let start = Instant::now();
        Self {
            period,
            start,
            next_tick: start,
            spin,
        }
    }
}

impl Clock for WallClock {
    fn now(&self) -> Duration {
        self.start.elapsed()
    }

    fn wait_for_next_tick(&mut self) -> Duration {
        self.next_tick += self.period;
        let now = Instant::now();
        if now >= self.next_tick {
            let late = now - self.next_tick;
            // A loop that fell behind restarts its schedule from now rather
            // than bursting ticks to catch up.
            if late > self.period {
                self.next_tick = now;
            }
            return late;
        }
        let remaining = self.next_tick - now;
        if remaining > self.spin {
            std::thread::sleep(remaining - self.spin);
        }
        while Instant::now() < self.next_tick {
            std::hint::spin_loop();
        }
        Duration::ZERO
    }

    fn period(&self) -> Duration {
        self.period
    }
}
