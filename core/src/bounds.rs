//! Bounds on configured values, written once beside each config struct and
//! checked by its `validate`, with one message for every refusal:
//!
//! ```text
//! config key `physics.dt` = 2.0: must be at least 0.0001 and at most 0.05 s
//! ```
//!
//! The key is the value's full TOML path, the value is printed as given
//! (NaN and inf included), and the message states the accepted range.
//!
//! ```
//! use cerebellum_core::bounds::Limits;
//! const DT: Limits<f32> = Limits::closed(1e-4, 0.05).unit("s");
//! assert!(DT.check("physics.dt", 0.005).is_ok());
//! let refusal = DT.check("physics.dt", f32::NAN).unwrap_err();
//! assert_eq!(refusal, "config key `physics.dt` = NaN: must be at least 0.0001 and at most 0.05 s");
//! ```

use std::fmt::Debug;

/// A closed, open or half-open interval of accepted values, with a unit for
/// the message. Every bound is finite, so a NaN or an infinity is refused by
/// every `Limits`.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Limits<T> {
    pub lo: T,
    pub hi: T,
    /// `lo` itself is refused.
    pub lo_open: bool,
    /// `hi` itself is refused.
    pub hi_open: bool,
    /// Printed after the range ("s", "m", "px"); empty for plain numbers.
    pub unit: &'static str,
}

impl<T> Limits<T> {
    /// `[lo, hi]`.
    pub const fn closed(lo: T, hi: T) -> Self {
        Self {
            lo,
            hi,
            lo_open: false,
            hi_open: false,
            unit: "",
        }
    }

    /// `(lo, hi]`: e.g. a learning rate, positive and at most 1.
    pub const fn open_closed(lo: T, hi: T) -> Self {
        Self {
            lo,
            hi,
            lo_open: true,
            hi_open: false,
            unit: "",
        }
    }

    /// `[lo, hi)`.
    pub const fn closed_open(lo: T, hi: T) -> Self {
        Self {
            lo,
            hi,
            lo_open: false,
            hi_open: true,
            unit: "",
        }
    }

    /// `(lo, hi)`.
    pub const fn open(lo: T, hi: T) -> Self {
        Self {
            lo,
            hi,
            lo_open: true,
            hi_open: true,
            unit: "",
        }
    }
}

impl<T: Copy> Limits<T> {
    /// The same interval with a unit for the message.
    pub const fn unit(self, unit: &'static str) -> Self {
        Self { unit, ..self }
    }
}

impl<T: PartialOrd + Copy + Debug> Limits<T> {
    /// Whether `value` is accepted (never a NaN).
    pub fn contains(&self, value: T) -> bool {
        let above = if self.lo_open {
            value > self.lo
        } else {
            value >= self.lo
        };
        let below = if self.hi_open {
            value < self.hi
        } else {
            value <= self.hi
        };
        above && below
    }

    /// The accepted range in words: `at least 1 and at most 4096 px`,
    /// `greater than 0 and at most 1`.
    pub fn describe(&self) -> String {
        let lo = if self.lo_open {
            "greater than"
        } else {
            "at least"
        };
        let hi = if self.hi_open { "less than" } else { "at most" };
        let unit = if self.unit.is_empty() {
            String::new()
        } else {
            format!(" {}", self.unit)
        };
        format!("{lo} {:?} and {hi} {:?}{unit}", self.lo, self.hi)
    }

    /// `Ok` when `value` is accepted, else the uniform refusal naming `key`
    /// (its full TOML path), the value and the accepted range.
    pub fn check(&self, key: &str, value: T) -> Result<(), String> {
        if self.contains(value) {
            Ok(())
        } else {
            Err(refusal(key, value, &format!("must be {}", self.describe())))
        }
    }

    /// Each element of `values`, keyed `key[i]`.
    pub fn check_each(&self, key: &str, values: &[T]) -> Result<(), String> {
        values
            .iter()
            .enumerate()
            .try_for_each(|(i, &v)| self.check(&format!("{key}[{i}]"), v))
    }
}

/// The uniform refusal: `config key `{key}` = {value:?}: {why}`.
pub fn refusal(key: &str, value: impl Debug, why: &str) -> String {
    format!("config key `{key}` = {value:?}: {why}")
}

/// Longest accepted name (`check_name`).
pub const MAX_NAME_LEN: usize = 64;

/// A name that becomes one chunk of a zenoh key expression (a camera, a
/// robot id): non-empty, at most `MAX_NAME_LEN` bytes, and none of
/// `/ * $ ? #`, whitespace or control characters.
pub fn check_name(key: &str, name: &str) -> Result<(), String> {
    let bad =
        |c: char| matches!(c, '/' | '*' | '$' | '?' | '#') || c.is_whitespace() || c.is_control();
    if name.is_empty() || name.len() > MAX_NAME_LEN || name.contains(bad) {
        return Err(refusal(
            key,
            name,
            &format!(
                "must be a name of 1 to {MAX_NAME_LEN} bytes without `/`, `*`, `$`, `?`, `#`, \
                 whitespace or control characters (it is a zenoh key chunk)"
            ),
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn intervals_accept_their_inside_and_refuse_nan_and_infinities() {
        let closed = Limits::closed(0.0_f32, 1.0);
        assert!(closed.contains(0.0) && closed.contains(1.0) && closed.contains(0.5));
        let open = Limits::open(0.0_f32, 1.0);
        assert!(!open.contains(0.0) && !open.contains(1.0) && open.contains(0.5));
        assert!(Limits::open_closed(0.0, 1.0).contains(1.0));
        assert!(!Limits::closed_open(0.0, 1.0).contains(1.0));
        for v in [f32::NAN, f32::INFINITY, f32::NEG_INFINITY, -0.1, 1.1] {
            assert!(!closed.contains(v), "{v}");
        }
    }

    #[test]
    fn refusals_name_key_value_and_range() {
        let e = Limits::closed(1usize, 4096)
            .unit("px")
            .check("camera.width", 0)
            .unwrap_err();
        assert_eq!(
            e,
            "config key `camera.width` = 0: must be at least 1 and at most 4096 px"
        );
        let e = Limits::open_closed(0.0_f64, 1.0)
            .check("ppo.learning_rate", 1e30)
            .unwrap_err();
        assert_eq!(
            e,
            "config key `ppo.learning_rate` = 1e30: must be greater than 0.0 and at most 1.0"
        );
        let e = Limits::closed(-1.0_f32, 1.0)
            .check_each("physics.gravity", &[0.0, f32::INFINITY])
            .unwrap_err();
        assert!(e.contains("`physics.gravity[1]` = inf"), "{e}");
    }

    #[test]
    fn names_are_single_key_chunks() {
        for good in ["front", "wrist_cam-2", "arm0.left"] {
            check_name("camera.name", good).unwrap();
        }
        for bad in [
            "",
            "a/b",
            "a*",
            "$x",
            "why?",
            "#1",
            "two words",
            "tab\t",
            &"x".repeat(65),
        ] {
            let e = check_name("camera.name", bad).unwrap_err();
            assert!(e.starts_with("config key `camera.name` = "), "{e}");
        }
    }
}
