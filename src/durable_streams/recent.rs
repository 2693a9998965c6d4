//! Answers an isolate keeps for a few seconds by key (the long-poll answers readers who come a
//! little late ask for again), within bounds on their number and their bytes, oldest out first.

use std::collections::{HashMap, VecDeque};
use std::rc::Rc;

/// How long and how much [`Recent`] keeps.
#[derive(Clone, Copy, Debug)]
pub struct Limits {
    /// An answer older than this is gone.
    pub ttl_ms: u64,
    pub entries: usize,
    /// Of all answers together; one answer above a quarter of it is not kept.
    pub bytes: usize,
}

/// Answers by key, oldest first.
pub struct Recent<T> {
    answers: HashMap<String, Kept<T>>,
    order: VecDeque<String>,
    bytes: usize,
    limits: Limits,
}

struct Kept<T> {
    at_ms: u64,
    size: usize,
    answer: Rc<T>,
}

impl<T> Recent<T> {
    pub fn new(limits: Limits) -> Recent<T> {
        Recent {
            answers: HashMap::new(),
            order: VecDeque::new(),
            bytes: 0,
            limits,
        }
    }

    /// The answer kept under `key`, if it is not older than the limit at `now_ms`.
    pub fn get(&mut self, key: &str, now_ms: u64) -> Option<Rc<T>> {
        self.expire(now_ms);
        self.answers.get(key).map(|kept| kept.answer.clone())
    }

    /// Keeps `answer` (of `size` bytes) under `key`, replacing what was there.
    pub fn keep(&mut self, key: &str, answer: Rc<T>, size: usize, now_ms: u64) {
        if size > self.limits.bytes / 4 {
            return;
        }
        self.remove(key);
        self.bytes = self.bytes.saturating_add(size);
        let kept = Kept {
            at_ms: now_ms,
            size,
            answer,
        };
        self.answers.insert(key.to_owned(), kept);
        self.order.push_back(key.to_owned());
        while self.order.len() > self.limits.entries || self.bytes > self.limits.bytes {
            self.drop_oldest();
        }
    }

    /// Drops every answer whose key starts with `prefix`.
    pub fn forget_prefix(&mut self, prefix: &str) {
        let gone: Vec<String> = self
            .order
            .iter()
            .filter(|key| key.starts_with(prefix))
            .cloned()
            .collect();
        for key in gone {
            self.remove(&key);
        }
    }

    /// How many answers are kept, and their bytes.
    pub fn held(&self) -> (usize, usize) {
        (self.answers.len(), self.bytes)
    }

    fn remove(&mut self, key: &str) {
        if let Some(kept) = self.answers.remove(key) {
            self.bytes = self.bytes.saturating_sub(kept.size);
            self.order.retain(|k| k != key);
        }
    }

    fn expire(&mut self, now_ms: u64) {
        while let Some(oldest) = self.order.front() {
            let expired = self
                .answers
                .get(oldest)
                .is_none_or(|kept| now_ms.saturating_sub(kept.at_ms) > self.limits.ttl_ms);
            if !expired {
                break;
            }
            self.drop_oldest();
        }
    }

    fn drop_oldest(&mut self) {
        if let Some(key) = self.order.pop_front() {
            if let Some(kept) = self.answers.remove(&key) {
                self.bytes = self.bytes.saturating_sub(kept.size);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const LIMITS: Limits = Limits {
        ttl_ms: 1_000,
        entries: 3,
        bytes: 400,
    };

    fn kept(recent: &mut Recent<&'static str>, key: &str, now: u64) -> Option<&'static str> {
        recent.get(key, now).map(|answer| *answer)
    }

    #[test]
    fn an_answer_is_kept_for_its_time_and_no_longer() {
        let mut recent = Recent::new(LIMITS);
        recent.keep("a", Rc::new("A"), 10, 0);
        assert_eq!(kept(&mut recent, "a", 1_000), Some("A"));
        assert_eq!(kept(&mut recent, "a", 1_001), None);
        assert_eq!(recent.held(), (0, 0));
    }

    #[test]
    fn the_oldest_go_first_past_the_number_or_the_bytes() {
        let mut recent = Recent::new(LIMITS);
        for (i, key) in ["a", "b", "c", "d"].into_iter().enumerate() {
            recent.keep(key, Rc::new(key), 10, i as u64);
        }
        assert_eq!(kept(&mut recent, "a", 5), None);
        assert_eq!(kept(&mut recent, "d", 5), Some("d"));
        assert_eq!(recent.held(), (3, 30));

        let mut recent = Recent::new(LIMITS);
        for key in ["a", "b", "c"] {
            recent.keep(key, Rc::new(key), 100, 0);
        }
        recent.keep("d", Rc::new("d"), 100, 0);
        recent.keep("e", Rc::new("e"), 100, 0);
        assert_eq!(kept(&mut recent, "a", 0), None);
        assert_eq!(kept(&mut recent, "b", 0), None);
        assert_eq!(recent.held(), (3, 300));
    }

    #[test]
    fn an_answer_too_large_is_not_kept_and_a_key_kept_again_is_replaced() {
        let mut recent = Recent::new(LIMITS);
        recent.keep("big", Rc::new("big"), 101, 0);
        assert_eq!(kept(&mut recent, "big", 0), None);
        recent.keep("a", Rc::new("old"), 50, 0);
        recent.keep("a", Rc::new("new"), 20, 10);
        assert_eq!(kept(&mut recent, "a", 10), Some("new"));
        assert_eq!(recent.held(), (1, 20));
        // Its time runs from when it was kept again.
        assert_eq!(kept(&mut recent, "a", 1_010), Some("new"));
    }

    #[test]
    fn forgetting_a_prefix_drops_its_answers_only() {
        let mut recent = Recent::new(LIMITS);
        recent.keep("/v1/stream/a?offset=1", Rc::new("a1"), 10, 0);
        recent.keep("/v1/stream/ab?offset=1", Rc::new("ab1"), 10, 0);
        recent.keep("/v1/stream/a?offset=2", Rc::new("a2"), 10, 0);
        recent.forget_prefix("/v1/stream/a?");
        assert_eq!(kept(&mut recent, "/v1/stream/a?offset=1", 0), None);
        assert_eq!(kept(&mut recent, "/v1/stream/a?offset=2", 0), None);
        assert_eq!(kept(&mut recent, "/v1/stream/ab?offset=1", 0), Some("ab1"));
        assert_eq!(recent.held(), (1, 10));
    }
}
