//! A session's queue of proactive prompts and the rule for when one may be
//! spoken. No IO and no clock of its own: the speech loop passes `now`, so
//! ordering, replacement, expiry and timing are all unit-tested here.
//!
//! Each queued prompt carries a token `T` (in the server, the channel that
//! reports the outcome back to whoever delivered it). Every prompt that goes
//! in comes out exactly once: spoken via [`PromptQueue::pop`], or dropped
//! with a reason from one of the other methods.

use std::collections::{HashSet, VecDeque};
use std::time::Duration;

use time::OffsetDateTime;

use crate::prompt::{DropReason, Prompt};

/// Ids remembered for de-duplication per session.
const SEEN_IDS: usize = 512;

struct Queued<T> {
    prompt: Prompt,
    token: T,
    seq: u64,
}

pub struct PromptQueue<T> {
    items: Vec<Queued<T>>,
    seen: HashSet<String>,
    seen_order: VecDeque<String>,
    max: usize,
    next_seq: u64,
}

impl<T> PromptQueue<T> {
    pub fn new(max: usize) -> Self {
        Self {
            items: Vec::new(),
            seen: HashSet::new(),
            seen_order: VecDeque::new(),
            max: max.max(1),
            next_seq: 0,
        }
    }

    pub fn is_empty(&self) -> bool {
        self.items.is_empty()
    }

    pub fn len(&self) -> usize {
        self.items.len()
    }

    fn remember(&mut self, id: &str) {
        if self.seen.insert(id.to_string()) {
            self.seen_order.push_back(id.to_string());
            while self.seen_order.len() > SEEN_IDS {
                if let Some(old) = self.seen_order.pop_front() {
                    self.seen.remove(&old);
                }
            }
        }
    }

    /// Let `id` be queued again: it was never heard (its synthesis failed),
    /// so a redelivery is a retry, not a duplicate.
    pub fn forget(&mut self, id: &str) {
        if self.seen.remove(id) {
            self.seen_order.retain(|s| s != id);
        }
    }

    /// Queue a prompt. Returns the tokens of prompts that will not be spoken
    /// because of it: the new one itself (duplicate id, expired, or lowest
    /// priority of a full queue), or an older one it replaced.
    pub fn push(&mut self, prompt: Prompt, token: T, now: OffsetDateTime) -> Vec<(T, DropReason)> {
        if self.seen.contains(&prompt.id) {
            return vec![(token, DropReason::Duplicate)];
        }
        if prompt.expired(now) {
            self.remember(&prompt.id);
            return vec![(token, DropReason::Expired)];
        }
        self.remember(&prompt.id);
        let mut dropped = Vec::new();
        if let Some(key) = &prompt.dedupe_key
            && let Some(i) = self
                .items
                .iter()
                .position(|q| q.prompt.dedupe_key.as_ref() == Some(key))
        {
            let old = self.items.remove(i);
            dropped.push((old.token, DropReason::Replaced));
        }
        let seq = self.next_seq;
        self.next_seq += 1;
        self.items.push(Queued { prompt, token, seq });
        if self.items.len() > self.max {
            // Drop the least important: lowest priority, newest among equals.
            if let Some(i) = (0..self.items.len()).min_by_key(|&i| {
                let q = &self.items[i];
                (q.prompt.priority, std::cmp::Reverse(q.seq))
            }) {
                let q = self.items.remove(i);
                dropped.push((q.token, DropReason::QueueFull));
            }
        }
        dropped
    }

    fn head_index(&self) -> Option<usize> {
        (0..self.items.len()).max_by_key(|&i| {
            let q = &self.items[i];
            (q.prompt.priority, std::cmp::Reverse(q.seq))
        })
    }

    /// The prompt that would be spoken next: highest priority, oldest first.
    pub fn head(&self) -> Option<&Prompt> {
        self.head_index().map(|i| &self.items[i].prompt)
    }

    /// Take the next prompt to speak.
    pub fn pop(&mut self) -> Option<(Prompt, T)> {
        let i = self.head_index()?;
        let q = self.items.remove(i);
        Some((q.prompt, q.token))
    }

    /// Put back a prompt whose speaking was cut off before any of it was
    /// heard. It does not keep its old place: it gets a new sequence number,
    /// so it goes behind the prompts of its priority that are queued now
    /// (still ahead of any lower priority). Its id stays remembered, so it is
    /// not refused as its own duplicate.
    pub fn requeue(&mut self, prompt: Prompt, token: T) {
        let seq = self.next_seq;
        self.next_seq += 1;
        self.remember(&prompt.id);
        self.items.push(Queued { prompt, token, seq });
    }

    /// Remove the prompts whose time has passed.
    pub fn expire(&mut self, now: OffsetDateTime) -> Vec<(T, DropReason)> {
        let (gone, keep): (Vec<_>, Vec<_>) = std::mem::take(&mut self.items)
            .into_iter()
            .partition(|q| q.prompt.expired(now));
        self.items = keep;
        gone.into_iter()
            .map(|q| (q.token, DropReason::Expired))
            .collect()
    }

    /// Everything still queued, when the session ends.
    pub fn drain(&mut self) -> Vec<(T, DropReason)> {
        self.items
            .drain(..)
            .map(|q| (q.token, DropReason::SessionEnded))
            .collect()
    }
}

/// What the conversation is doing, as far as prompts care.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Activity {
    /// The user is speaking or their turn has not ended yet.
    pub user_in_turn: bool,
    /// The assistant is thinking or its audio is still playing.
    pub assistant_busy: bool,
    /// Time since the last of either ended.
    pub quiet_for: Duration,
}

/// May the head prompt start now?
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Moment {
    Wait,
    /// Speak now.
    Speak,
    /// Speak now, cutting the assistant's own reply first.
    SpeakOverAssistant,
}

/// The timing rule: never over the user; after `grace` of quiet; an
/// `interrupt` prompt may cut the assistant (not the user) without waiting.
pub fn moment(activity: Activity, grace: Duration, interrupt: bool) -> Moment {
    if activity.user_in_turn {
        return Moment::Wait;
    }
    if activity.assistant_busy {
        return if interrupt {
            Moment::SpeakOverAssistant
        } else {
            Moment::Wait
        };
    }
    if activity.quiet_for >= grace {
        Moment::Speak
    } else {
        Moment::Wait
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn p(id: &str, priority: i32) -> Prompt {
        let mut p = Prompt::new(format!("prompt {id}"));
        p.id = id.into();
        p.priority = priority;
        p
    }

    fn now() -> OffsetDateTime {
        OffsetDateTime::now_utc()
    }

    #[test]
    fn higher_priority_first_then_oldest() {
        let mut q = PromptQueue::new(8);
        assert!(q.push(p("a", 0), 1, now()).is_empty());
        assert!(q.push(p("b", 5), 2, now()).is_empty());
        assert!(q.push(p("c", 5), 3, now()).is_empty());
        assert!(q.push(p("d", 0), 4, now()).is_empty());
        let order: Vec<i32> = std::iter::from_fn(|| q.pop().map(|(_, t)| t)).collect();
        assert_eq!(order, vec![2, 3, 1, 4]);
    }

    #[test]
    fn dedupe_key_replaces_the_older_prompt() {
        let mut q = PromptQueue::new(8);
        let mut a = p("a", 0);
        a.dedupe_key = Some("topic".into());
        let mut b = p("b", 0);
        b.dedupe_key = Some("topic".into());
        assert!(q.push(a, "a", now()).is_empty());
        assert_eq!(q.push(b, "b", now()), vec![("a", DropReason::Replaced)]);
        assert_eq!(q.len(), 1);
        assert_eq!(q.pop().map(|(p, _)| p.id), Some("b".to_string()));
    }

    #[test]
    fn a_repeated_id_is_a_duplicate_even_after_speaking() {
        let mut q = PromptQueue::new(8);
        assert!(q.push(p("a", 0), 1, now()).is_empty());
        assert_eq!(
            q.push(p("a", 0), 2, now()),
            vec![(2, DropReason::Duplicate)]
        );
        let (prompt, tok) = q.pop().expect("queued");
        assert_eq!(tok, 1);
        assert_eq!(
            q.push(prompt.clone(), 3, now()),
            vec![(3, DropReason::Duplicate)]
        );
        // A prompt put back after a cut-off is not a duplicate of itself.
        q.requeue(prompt, 1);
        let (prompt, _) = q.pop().expect("requeued");
        // One never heard (synthesis failed) may come back as a retry.
        q.forget(&prompt.id);
        assert!(q.push(prompt, 4, now()).is_empty());
    }

    #[test]
    fn expired_prompts_leave_with_a_reason() {
        let mut q = PromptQueue::new(8);
        let t0 = now();
        let mut a = p("a", 0);
        a.expires_at = Some(t0 + time::Duration::seconds(5));
        let mut late = p("late", 0);
        late.expires_at = Some(t0 - time::Duration::seconds(1));
        assert!(q.push(a, 1, t0).is_empty());
        assert!(q.push(p("b", 0), 2, t0).is_empty());
        assert_eq!(q.push(late, 3, t0), vec![(3, DropReason::Expired)]);
        assert!(q.expire(t0).is_empty());
        assert_eq!(
            q.expire(t0 + time::Duration::seconds(6)),
            vec![(1, DropReason::Expired)]
        );
        assert_eq!(q.drain(), vec![(2, DropReason::SessionEnded)]);
        assert!(q.is_empty());
    }

    #[test]
    fn a_full_queue_drops_the_least_important() {
        let mut q = PromptQueue::new(2);
        assert!(q.push(p("a", 1), "a", now()).is_empty());
        assert!(q.push(p("b", 2), "b", now()).is_empty());
        assert_eq!(
            q.push(p("c", 0), "c", now()),
            vec![("c", DropReason::QueueFull)]
        );
        assert_eq!(
            q.push(p("d", 3), "d", now()),
            vec![("a", DropReason::QueueFull)]
        );
        assert_eq!(q.head().map(|p| p.id.as_str()), Some("d"));
    }

    #[test]
    fn never_over_the_user_and_only_after_the_grace() {
        let grace = Duration::from_millis(1500);
        let act = |user_in_turn, assistant_busy, quiet_ms| Activity {
            user_in_turn,
            assistant_busy,
            quiet_for: Duration::from_millis(quiet_ms),
        };
        assert_eq!(moment(act(true, false, 9000), grace, false), Moment::Wait);
        assert_eq!(moment(act(true, true, 9000), grace, true), Moment::Wait);
        assert_eq!(moment(act(false, false, 1000), grace, false), Moment::Wait);
        assert_eq!(moment(act(false, false, 1500), grace, false), Moment::Speak);
        assert_eq!(moment(act(false, true, 9000), grace, false), Moment::Wait);
        assert_eq!(
            moment(act(false, true, 0), grace, true),
            Moment::SpeakOverAssistant
        );
    }
}
