//! The queue of audio waiting to be played to the user (48 kHz), filled by
//! the pipeline and drained one 20 ms frame at a time by the session's paced
//! sender. Audio is tagged with the reply it belongs to, so a barge-in can
//! tell how much of a reply the user actually heard.

use std::collections::VecDeque;
use std::sync::Arc;

use tokio::sync::Notify;

use crate::WIRE_FRAME;

#[derive(Debug)]
struct Chunk {
    reply: u64,
    pcm: Vec<f32>,
    pos: usize,
}

#[derive(Debug, Default)]
pub struct OutQueue {
    chunks: VecDeque<Chunk>,
    /// (reply id, samples of it played so far) for the reply playing now.
    played: (u64, usize),
    /// Told when audio is queued: a sender idle through silence (DTX)
    /// waits on it rather than looking every 20 ms.
    ready: Option<Arc<Notify>>,
    /// Nothing plays while the user may be interrupting; what is queued
    /// waits (see [`OutQueue::set_held`]).
    held: bool,
}

impl OutQueue {
    /// A queue that notifies `ready` whenever audio is queued.
    pub fn with_ready(ready: Arc<Notify>) -> Self {
        Self {
            ready: Some(ready),
            ..Self::default()
        }
    }

    /// Queue audio (any length) for `reply`.
    pub fn push_reply(&mut self, reply: u64, pcm: Vec<f32>) {
        if !pcm.is_empty() {
            self.chunks.push_back(Chunk { reply, pcm, pos: 0 });
            if let Some(ready) = &self.ready {
                ready.notify_one();
            }
        }
    }

    /// Queue audio not tied to a reply (echo, busy line).
    pub fn push(&mut self, pcm: &[f32]) {
        self.push_reply(0, pcm.to_vec());
    }

    /// Hold the playout (the user started speaking over the assistant) or
    /// let it go on from where it stopped. Held, [`OutQueue::pop_frame`]
    /// gives nothing while the queued audio stays, so a cough resumes the
    /// reply where it paused and a barge-in flushes it.
    pub fn set_held(&mut self, held: bool) {
        self.held = held;
        if !held
            && !self.chunks.is_empty()
            && let Some(ready) = &self.ready
        {
            ready.notify_one();
        }
    }

    /// Take one 20 ms frame; `None` when nothing is queued or the playout
    /// is held (send silence). A final partial frame is padded with silence.
    pub fn pop_frame(&mut self) -> Option<Vec<f32>> {
        if self.chunks.is_empty() || self.held {
            return None;
        }
        let mut frame = Vec::with_capacity(WIRE_FRAME);
        while frame.len() < WIRE_FRAME {
            let Some(c) = self.chunks.front_mut() else {
                break;
            };
            let take = (WIRE_FRAME - frame.len()).min(c.pcm.len() - c.pos);
            frame.extend_from_slice(&c.pcm[c.pos..c.pos + take]);
            c.pos += take;
            if self.played.0 == c.reply {
                self.played.1 += take;
            } else {
                self.played = (c.reply, take);
            }
            if c.pos >= c.pcm.len() {
                self.chunks.pop_front();
            }
        }
        frame.resize(WIRE_FRAME, 0.0);
        Some(frame)
    }

    /// Samples of `reply` played so far.
    pub fn played(&self, reply: u64) -> usize {
        if self.played.0 == reply {
            self.played.1
        } else {
            0
        }
    }

    /// The reply that played last and how many of its samples played.
    pub fn progress(&self) -> (u64, usize) {
        self.played
    }

    /// Drop everything queued (barge-in) and end a hold, so the next reply
    /// plays; returns the samples dropped.
    pub fn clear(&mut self) -> usize {
        let dropped = self.queued();
        self.chunks.clear();
        self.held = false;
        dropped
    }

    /// Samples waiting.
    pub fn queued(&self) -> usize {
        self.chunks.iter().map(|c| c.pcm.len() - c.pos).sum()
    }

    pub fn is_empty(&self) -> bool {
        self.chunks.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn frames_pad_and_count_what_was_played() {
        let mut q = OutQueue::default();
        assert!(q.pop_frame().is_none());
        q.push_reply(7, vec![0.5; WIRE_FRAME + 10]);
        q.push_reply(7, vec![0.25; 5]);
        assert_eq!(q.pop_frame().unwrap().len(), WIRE_FRAME);
        assert_eq!(q.played(7), WIRE_FRAME);
        let last = q.pop_frame().unwrap();
        assert_eq!(last.len(), WIRE_FRAME);
        assert_eq!(last[9], 0.5);
        assert_eq!(last[10], 0.25);
        assert_eq!(last[15], 0.0);
        assert_eq!(q.played(7), WIRE_FRAME + 15);
        assert!(q.pop_frame().is_none());
        q.push(&[1.0; 100]);
        assert_eq!(q.clear(), 100);
        assert!(q.is_empty());
        assert_eq!(q.played(7), WIRE_FRAME + 15);
    }

    #[test]
    fn a_held_queue_plays_nothing_and_then_goes_on_where_it_stopped() {
        let mut q = OutQueue::default();
        q.push_reply(3, (0..3 * WIRE_FRAME).map(|i| i as f32).collect());
        assert_eq!(q.pop_frame().unwrap()[0], 0.0);
        q.set_held(true);
        assert!(q.pop_frame().is_none());
        assert!(q.pop_frame().is_none());
        // Still queued, not played: the conversation sees it as playing.
        assert!(!q.is_empty());
        assert_eq!(q.queued(), 2 * WIRE_FRAME);
        assert_eq!(q.played(3), WIRE_FRAME);
        q.set_held(false);
        assert_eq!(q.pop_frame().unwrap()[0], WIRE_FRAME as f32);
        assert_eq!(q.played(3), 2 * WIRE_FRAME);
        // A flush ends a hold: what is queued next plays.
        q.set_held(true);
        q.clear();
        q.push_reply(4, vec![0.5; WIRE_FRAME]);
        assert!(q.pop_frame().is_some());
    }
}
