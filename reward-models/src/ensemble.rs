//! Ensembles of reward models ("Helping or Herding?", ALGORITHMS.md
//! §3.5): M members that differ in initialisation seed and data order
//! score the same transition; the reward is their mean, median, minimum or
//! mean − λ·std, and the std is reported with it as an alarm for states
//! the members never saw (or a policy gaming one of them).

use serde::{Deserialize, Serialize};

/// How the members' scores become one reward.
#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Aggregate {
    Mean,
    Median,
    /// The most pessimistic member.
    Min,
    /// Mean − λ·std: uncertain states earn less.
    MeanMinusStd {
        lambda: f64,
    },
}

/// An ensemble's answer for one transition.
#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize)]
pub struct EnsembleReward {
    pub reward: f64,
    pub mean: f64,
    /// Population standard deviation of the members' scores.
    pub std: f64,
}

/// Combines the members' scores; `None` when there are none or any is
/// not finite (the component is then missing for this transition, never
/// silently zero).
pub fn aggregate(members: &[f64], how: Aggregate) -> Option<EnsembleReward> {
    if members.is_empty() || members.iter().any(|m| !m.is_finite()) {
        return None;
    }
    let n = members.len() as f64;
    let mean = members.iter().sum::<f64>() / n;
    let std = (members.iter().map(|m| (m - mean).powi(2)).sum::<f64>() / n).sqrt();
    let reward = match how {
        Aggregate::Mean => mean,
        Aggregate::Median => {
            let mut sorted = members.to_vec();
            sorted.sort_by(f64::total_cmp);
            let mid = sorted.len() / 2;
            if sorted.len() % 2 == 1 {
                sorted[mid]
            } else {
                0.5 * (sorted[mid - 1] + sorted[mid])
            }
        }
        Aggregate::Min => members.iter().copied().fold(f64::INFINITY, f64::min),
        Aggregate::MeanMinusStd { lambda } => mean - lambda * std,
    };
    Some(EnsembleReward { reward, mean, std })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_aggregate_by_hand() {
        let members = [1.0, 2.0, 4.0, 5.0];
        // mean 3, deviations ±2, ±1 → variance (4+1+1+4)/4 = 2.5
        let mean = aggregate(&members, Aggregate::Mean).unwrap();
        assert_eq!(mean.reward, 3.0);
        assert!((mean.std - 2.5f64.sqrt()).abs() < 1e-12);
        assert_eq!(aggregate(&members, Aggregate::Median).unwrap().reward, 3.0);
        assert_eq!(
            aggregate(&[3.0, 1.0, 2.0], Aggregate::Median)
                .unwrap()
                .reward,
            2.0
        );
        assert_eq!(aggregate(&members, Aggregate::Min).unwrap().reward, 1.0);
        let cautious = aggregate(&members, Aggregate::MeanMinusStd { lambda: 2.0 }).unwrap();
        assert!((cautious.reward - (3.0 - 2.0 * 2.5f64.sqrt())).abs() < 1e-12);
    }

    #[test]
    fn agreeing_members_have_no_spread() {
        let r = aggregate(&[0.7; 5], Aggregate::MeanMinusStd { lambda: 1.0 }).unwrap();
        assert_eq!((r.reward, r.std), (0.7, 0.0));
    }

    #[test]
    fn a_missing_or_non_finite_member_makes_the_reward_missing() {
        assert_eq!(aggregate(&[], Aggregate::Mean), None);
        assert_eq!(aggregate(&[1.0, f64::NAN], Aggregate::Mean), None);
        assert_eq!(aggregate(&[1.0, f64::INFINITY], Aggregate::Min), None);
    }

    #[test]
    fn aggregates_read_from_config() {
        let how: Aggregate = serde_json::from_str(r#"{"mean_minus_std":{"lambda":0.5}}"#).unwrap();
        assert_eq!(how, Aggregate::MeanMinusStd { lambda: 0.5 });
        let how: Aggregate = serde_json::from_str(r#""median""#).unwrap();
        assert_eq!(how, Aggregate::Median);
    }
}
