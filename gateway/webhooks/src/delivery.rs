//! One event to one endpoint. An attempt that the endpoint accepts (any 2xx) ends it; any other
//! answer, or none in time, schedules the next attempt after a growing delay (the Standard
//! Webhooks schedule: at once, 5 s, 5 min, 30 min, 2 h, 5 h, 10 h, 10 h, with jitter); after
//! the last, the delivery is parked as failed and waits for someone to replay it. An endpoint
//! that answers 410 Gone is not asked again for it.

/// When each attempt is made, counted from the failure of the one before (the first at once).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RetryPolicy {
    /// Delays before attempts 1, 2, ..., in milliseconds; their count is the attempts made.
    pub delays_ms: Vec<u64>,
    /// A delay is moved by up to this share of itself, either way (spreads the retries of
    /// deliveries that failed together).
    pub jitter_percent: u64,
}

/// Attempts one delivery gets at most, whatever the policy says.
pub const ATTEMPTS_MAX: usize = 16;
/// The longest reason kept for the last failure.
pub const REASON_MAX: usize = 256;

impl Default for RetryPolicy {
    fn default() -> Self {
        const SECOND: u64 = 1_000;
        const MINUTE: u64 = 60 * SECOND;
        const HOUR: u64 = 60 * MINUTE;
        RetryPolicy {
            delays_ms: vec![
                0,
                5 * SECOND,
                5 * MINUTE,
                30 * MINUTE,
                2 * HOUR,
                5 * HOUR,
                10 * HOUR,
                10 * HOUR,
            ],
            jitter_percent: 10,
        }
    }
}

impl RetryPolicy {
    /// A policy delivers at least once and at most [`ATTEMPTS_MAX`] times.
    pub fn is_valid(&self) -> bool {
        (1..=ATTEMPTS_MAX).contains(&self.delays_ms.len()) && self.jitter_percent <= 50
    }

    /// The delay before attempt `attempt` (1-based; `None` past the last), moved by `jitter`
    /// (any number: its spread is taken from it).
    fn delay_before(&self, attempt: usize, jitter: u64) -> Option<u64> {
        let base = *self.delays_ms.get(attempt.checked_sub(1)?)?;
        let spread = base / 100 * self.jitter_percent;
        if spread == 0 {
            return Some(base);
        }
        Some(base - spread + jitter % (2 * spread + 1))
    }
}

/// What came of an attempt.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Attempt {
    /// A 2xx answer.
    Accepted,
    /// Another status.
    Answered(u16),
    /// No answer: refused connection, timeout, a broken response.
    Unreachable(String),
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum DeliveryState {
    /// The next attempt is due at `due_ms`.
    Pending {
        due_ms: u64,
    },
    Delivered {
        at_ms: u64,
    },
    /// Every attempt failed (or the endpoint said it is gone): waits for a replay.
    Parked {
        at_ms: u64,
    },
}

/// One event to one endpoint, as stored.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Delivery {
    pub state: DeliveryState,
    /// Attempts made so far (since the last replay).
    pub attempts: u32,
    /// Why the last attempt failed, at most [`REASON_MAX`] bytes.
    pub last_error: Option<String>,
}

impl Delivery {
    /// A delivery whose first attempt is due at once.
    pub fn new(now_ms: u64) -> Delivery {
        Delivery {
            state: DeliveryState::Pending { due_ms: now_ms },
            attempts: 0,
            last_error: None,
        }
    }

    pub fn is_due(&self, now_ms: u64) -> bool {
        matches!(self.state, DeliveryState::Pending { due_ms } if due_ms <= now_ms)
    }

    /// The delivery after an attempt made at `now_ms`. Only a pending delivery is attempted.
    pub fn after(
        &self,
        attempt: &Attempt,
        now_ms: u64,
        jitter: u64,
        policy: &RetryPolicy,
    ) -> Delivery {
        assert!(
            matches!(self.state, DeliveryState::Pending { .. }),
            "only a pending delivery is attempted"
        );
        debug_assert!(policy.is_valid());
        let attempts = self.attempts.saturating_add(1);
        let failure = |reason: String| Some(bounded(reason));
        match attempt {
            Attempt::Accepted => Delivery {
                state: DeliveryState::Delivered { at_ms: now_ms },
                attempts,
                last_error: None,
            },
            Attempt::Answered(410) => Delivery {
                state: DeliveryState::Parked { at_ms: now_ms },
                attempts,
                last_error: failure("410 Gone: the endpoint asked not to be called".into()),
            },
            Attempt::Answered(_) | Attempt::Unreachable(_) => {
                let reason = match attempt {
                    Attempt::Answered(status) => format!("answered {status}"),
                    Attempt::Unreachable(why) => format!("unreachable: {why}"),
                    Attempt::Accepted => unreachable!("handled above"),
                };
                let state = match policy.delay_before(attempts as usize + 1, jitter) {
                    Some(delay) => DeliveryState::Pending {
                        due_ms: now_ms.saturating_add(delay),
                    },
                    None => DeliveryState::Parked { at_ms: now_ms },
                };
                Delivery {
                    state,
                    attempts,
                    last_error: failure(reason),
                }
            }
        }
    }

    /// A parked delivery asked for again: a new round of attempts, the first at once. `None`
    /// for a delivery that is not parked.
    pub fn replay(&self, now_ms: u64) -> Option<Delivery> {
        matches!(self.state, DeliveryState::Parked { .. }).then(|| Delivery {
            state: DeliveryState::Pending { due_ms: now_ms },
            attempts: 0,
            last_error: self.last_error.clone(),
        })
    }
}

fn bounded(mut reason: String) -> String {
    if reason.len() > REASON_MAX {
        let mut end = REASON_MAX;
        while !reason.is_char_boundary(end) {
            end -= 1;
        }
        reason.truncate(end);
    }
    reason
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn failing(policy: &RetryPolicy) -> Vec<Delivery> {
        let mut delivery = Delivery::new(1_000);
        let mut seen = vec![delivery.clone()];
        while let DeliveryState::Pending { due_ms } = delivery.state {
            delivery = delivery.after(&Attempt::Answered(503), due_ms, 0, policy);
            seen.push(delivery.clone());
        }
        seen
    }

    #[test]
    fn retries_follow_the_schedule_then_park() {
        let policy = RetryPolicy {
            jitter_percent: 0,
            ..RetryPolicy::default()
        };
        let seen = failing(&policy);
        let dues: Vec<u64> = seen
            .windows(2)
            .filter_map(|pair| match (&pair[0].state, &pair[1].state) {
                (DeliveryState::Pending { due_ms: a }, DeliveryState::Pending { due_ms: b }) => {
                    Some(b - a)
                }
                _ => None,
            })
            .collect();
        assert_eq!(dues, policy.delays_ms[1..].to_vec());
        let last = seen.last().unwrap();
        assert!(matches!(last.state, DeliveryState::Parked { .. }));
        assert_eq!(last.attempts as usize, policy.delays_ms.len());
        assert_eq!(last.last_error.as_deref(), Some("answered 503"));
    }

    #[test]
    fn an_accepted_attempt_ends_it_and_gone_parks_it() {
        let policy = RetryPolicy::default();
        let failed =
            Delivery::new(0).after(&Attempt::Unreachable("timed out".into()), 0, 7, &policy);
        assert!(!failed.is_due(4_000) && failed.is_due(5_500));
        let done = failed.after(&Attempt::Accepted, 6_000, 0, &policy);
        assert_eq!(done.state, DeliveryState::Delivered { at_ms: 6_000 });
        assert_eq!((done.attempts, done.last_error.clone()), (2, None));
        assert_eq!(done.replay(7_000), None, "a delivered one is not replayed");
        let gone = Delivery::new(0).after(&Attempt::Answered(410), 10, 0, &policy);
        assert_eq!(gone.state, DeliveryState::Parked { at_ms: 10 });
        let again = gone.replay(20).unwrap();
        assert!(again.is_due(20));
        assert_eq!(again.attempts, 0);
    }

    #[test]
    fn reasons_are_bounded_on_a_character_boundary() {
        let long = "é".repeat(REASON_MAX);
        let failed =
            Delivery::new(0).after(&Attempt::Unreachable(long), 0, 0, &RetryPolicy::default());
        let reason = failed.last_error.unwrap();
        assert!(reason.len() <= REASON_MAX && reason.starts_with("unreachable: é"));
    }

    #[test]
    fn policies_are_checked() {
        assert!(RetryPolicy::default().is_valid());
        assert!(!RetryPolicy {
            delays_ms: vec![],
            jitter_percent: 0
        }
        .is_valid());
        assert!(!RetryPolicy {
            delays_ms: vec![0; ATTEMPTS_MAX + 1],
            jitter_percent: 0
        }
        .is_valid());
        assert!(!RetryPolicy {
            delays_ms: vec![0],
            jitter_percent: 51
        }
        .is_valid());
    }

    proptest! {
        /// Whatever the answers and the jitter: attempts never pass the policy's count, a
        /// delay stays within its jitter, and a delivery ends delivered or parked.
        #[test]
        fn every_delivery_ends_within_its_attempts(
            answers in proptest::collection::vec(0u16..600, 1..20),
            jitters in proptest::collection::vec(any::<u64>(), 20),
        ) {
            let policy = RetryPolicy::default();
            let mut delivery = Delivery::new(0);
            let mut now = 0;
            for (n, status) in answers.iter().enumerate() {
                let DeliveryState::Pending { due_ms } = delivery.state else { break };
                now = now.max(due_ms);
                let attempt = if (200..300).contains(status) { Attempt::Accepted } else { Attempt::Answered(*status) };
                let next = delivery.after(&attempt, now, jitters[n], &policy);
                if let DeliveryState::Pending { due_ms } = next.state {
                    let base = policy.delays_ms[next.attempts as usize];
                    prop_assert!(due_ms - now >= base - base / 10 && due_ms - now <= base + base / 10);
                }
                prop_assert!(next.attempts as usize <= policy.delays_ms.len());
                delivery = next;
            }
            if delivery.attempts as usize == policy.delays_ms.len() {
                let pending = matches!(delivery.state, DeliveryState::Pending { .. });
                prop_assert!(!pending, "still pending after every attempt");
            }
        }
    }
}
