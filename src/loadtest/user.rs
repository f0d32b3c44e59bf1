//! One virtual user: a real WebRTC client ([`crate::client`]) that connects,
//! speaks a random utterance in real time, waits for the reply to finish (or
//! a timeout), thinks for a random while, and repeats.
//!
//! The microphone is its own task and never stops ([`super::mic`]): between
//! utterances it sends silence every 20 ms, as a browser does, so the server
//! does the same media work per session as for a person. The user loop wakes every 20 ms,
//! takes the received frames (glitch accounting, voiced arrivals) and the
//! data-channel events, and runs the turn's state machine. Latency is measured
//! on this process's monotonic clock: the send time of the frame holding the
//! last voiced sample, to the arrival of the first voiced reply frame
//! (DESIGN.md §5; frames are decoded on arrival, no jitter buffer).

use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use rand::rngs::SmallRng;
use rand::{RngExt, SeedableRng};
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

use super::Mode;
use super::corpus::Utterance;
use super::mic::{MicEvent, microphone};
use super::report::{ErrorKind, Failure, Outcome, SessionRecord, StageTimings, TurnRecord};
use super::stats::GlitchTracker;
use super::{Live, secs_since};
use crate::FRAME_MS;
use crate::audio::VOICED_THRESHOLD;
use crate::client::{Client, ClientOptions, ReceivedFrame};
use crate::events::{Event, State};

/// Without a `listening` event, this much received silence after the reply
/// (and its final event) ends the turn: events are best-effort.
const QUIET_END: Duration = Duration::from_secs(2);
/// How often the user loop looks at received audio and events.
const TICK: Duration = Duration::from_millis(FRAME_MS as u64);

/// What one virtual user does.
#[derive(Debug, Clone)]
pub struct UserConfig {
    pub id: usize,
    pub url: String,
    pub mode: Mode,
    pub corpus: Arc<Vec<Utterance>>,
    pub think: (Duration, Duration),
    pub turn_timeout: Duration,
    /// Turns before hanging up; 0 = until stopped.
    pub max_turns: u32,
    pub late_after: Duration,
    pub connect_timeout: Duration,
    pub seed: u64,
    /// Utterances in corpus order (from the `id`-th) rather than at random.
    pub in_order: bool,
    pub opus_bitrate: i32,
    pub token: Option<String>,
    /// Time zero of the run (turn start times are relative to it).
    pub run_start: Instant,
}

/// How the driver steers a user and hears from it.
#[derive(Clone)]
pub struct Controls {
    /// Finish the turn in progress, start no new one.
    pub stop: CancellationToken,
    /// Give up now (Ctrl-C, or the grace period after `stop` ran out).
    pub abort: CancellationToken,
    pub live: Arc<Live>,
    pub turns: mpsc::UnboundedSender<TurnRecord>,
}

/// Connect, run turns until stopped, hang up. Turn records go to
/// `controls.turns` as they finish; the session's own record is returned.
pub async fn run_user(cfg: UserConfig, controls: Controls) -> SessionRecord {
    let mut record = SessionRecord {
        user: cfg.id,
        t_connect_s: secs_since(cfg.run_start),
        ..SessionRecord::default()
    };
    let opts = ClientOptions {
        // Received audio is only looked at for its level: decoding at
        // 16 kHz halves what a virtual user costs.
        rtc: crate::rtc::RtcSettings {
            decode_rate: crate::PIPELINE_RATE,
            ..Default::default()
        },
        connect_timeout: cfg.connect_timeout,
        opus_bitrate: cfg.opus_bitrate,
        token: cfg.token.clone(),
        ..ClientOptions::default()
    };
    let started = Instant::now();
    let connected = tokio::select! {
        _ = controls.abort.cancelled() => None,
        c = Client::connect(&cfg.url, opts) => Some(c),
    };
    controls.live.attempted.fetch_add(1, Ordering::Relaxed);
    let mut client = match connected {
        None => return record,
        Some(Ok(c)) => c,
        Some(Err(e)) => {
            record.connect_ms = Some(started.elapsed().as_secs_f64() * 1000.0);
            record.error = Some(Failure::new(ErrorKind::Connect, e.to_string()));
            controls
                .live
                .connect_failures
                .fetch_add(1, Ordering::Relaxed);
            return record;
        }
    };
    record.connect_ms = Some(client.connect_time.as_secs_f64() * 1000.0);
    record.connected = true;
    controls.live.sessions_up.fetch_add(1, Ordering::Relaxed);

    let mic_cancel = CancellationToken::new();
    let (clip_tx, clip_rx) = mpsc::channel(1);
    let (mic_tx, mic_rx) = mpsc::unbounded_channel();
    let mic = match client.audio_sender(cfg.opus_bitrate) {
        Ok(s) => Some(tokio::spawn(microphone(
            s,
            clip_rx,
            mic_tx,
            mic_cancel.clone(),
        ))),
        Err(e) => {
            record.error = Some(Failure::new(ErrorKind::Send, e.to_string()));
            None
        }
    };
    let mut user = User {
        client: &mut client,
        mic: mic_rx,
        clips: clip_tx,
        glitches: GlitchTracker::new(cfg.late_after),
        rng: SmallRng::seed_from_u64(
            cfg.seed ^ (cfg.id as u64).wrapping_mul(0x9E37_79B9_7F4A_7C15),
        ),
        cfg: &cfg,
        controls: &controls,
    };
    if mic.is_some() {
        record.error = user.converse(&mut record.turns).await;
    }
    record.glitches = user.glitches.counts();
    record.t_end_s = secs_since(cfg.run_start);
    mic_cancel.cancel();
    if let Some(m) = mic {
        let _ = m.await;
    }
    controls.live.sessions_up.fetch_sub(1, Ordering::Relaxed);
    record.ended_by_server = client.ended();
    client.bye().await;
    record
}

struct User<'a> {
    client: &'a mut Client,
    mic: mpsc::UnboundedReceiver<MicEvent>,
    clips: mpsc::Sender<Arc<Vec<f32>>>,
    glitches: GlitchTracker,
    rng: SmallRng,
    cfg: &'a UserConfig,
    controls: &'a Controls,
}

/// What a turn has seen so far.
#[derive(Debug, Default)]
struct TurnState {
    last_voiced_sent: Option<Instant>,
    speak_done: bool,
    /// The server's transcripts by turn number: a later one for the same
    /// turn (a turn that went on after an early end) replaces the earlier.
    transcripts: Vec<(u64, String)>,
    reply: Option<String>,
    busy: Option<String>,
    server_error: Option<String>,
    timings: Option<StageTimings>,
    /// `thinking` after our last voiced sample: the server took the turn.
    thinking: bool,
    transcript_since_thinking: bool,
    /// When the turn's final event (reply, busy line, echo, error) came.
    terminal: Option<Instant>,
    listening_after_terminal: bool,
    /// The server ended the turn with nothing to say (ASR heard nothing).
    empty: bool,
    voiced_arrivals: Vec<Instant>,
    last_voiced_rx: Option<Instant>,
    /// The first voiced frame after our last voiced sample: the reply began.
    reply_audio: Option<Instant>,
}

impl User<'_> {
    /// Turns until stopped; returns why the session failed, if it did.
    async fn converse(&mut self, turns_done: &mut u32) -> Option<Failure> {
        let mut turn_no = 0u32;
        // A listening user is silent first, so the questions of many users
        // spread out instead of arriving together at the ramp.
        if self.cfg.mode == Mode::Listen {
            let pause = self.think_time();
            if !self.idle(pause).await {
                return None;
            }
        }
        loop {
            if self.controls.stop.is_cancelled() || self.controls.abort.is_cancelled() {
                return None;
            }
            if self.cfg.max_turns > 0 && turn_no >= self.cfg.max_turns {
                return None;
            }
            turn_no += 1;
            let rec = self.turn(turn_no).await;
            let session_error = rec
                .error
                .clone()
                .filter(|f| matches!(f.kind, ErrorKind::SessionEnded | ErrorKind::Send));
            let aborted = rec.outcome == Outcome::Aborted;
            self.controls.live.record(&rec);
            if !aborted {
                *turns_done += 1;
            }
            let _ = self.controls.turns.send(rec);
            if session_error.is_some() || aborted {
                return session_error;
            }
            let think = self.think_time();
            if !self.idle(think).await {
                return None;
            }
        }
    }

    /// A random pause in the think range.
    fn think_time(&mut self) -> Duration {
        let (lo, hi) = self.cfg.think;
        if hi > lo {
            self.rng.random_range(lo..=hi)
        } else {
            lo
        }
    }

    /// Keep reading audio and events for `d`; false if aborted or stopped.
    async fn idle(&mut self, d: Duration) -> bool {
        let until = Instant::now() + d;
        while Instant::now() < until {
            tokio::select! {
                _ = self.controls.abort.cancelled() => return false,
                _ = self.controls.stop.cancelled() => return false,
                _ = tokio::time::sleep(TICK) => {}
            }
            for f in self.client.drain_received() {
                self.glitches
                    .push(f.sequence, f.rtp_timestamp, f.marker, f.arrival);
            }
            while self.client.try_next_event().is_some() {}
            if self.client.ended().is_some() {
                return true; // the next turn reports it
            }
        }
        true
    }

    async fn turn(&mut self, no: u32) -> TurnRecord {
        let utt = {
            let n = self.cfg.corpus.len();
            let i = super::corpus::utterance_index(
                self.cfg.in_order,
                self.cfg.id,
                no,
                n,
                &mut self.rng,
            );
            self.cfg.corpus[i].clone()
        };
        let started = Instant::now();
        let glitches_before = self.glitches.counts();
        let mut rec = TurnRecord {
            user: self.cfg.id,
            turn: no,
            t_start_s: secs_since(self.cfg.run_start),
            sessions: self.controls.live.sessions_up.load(Ordering::Relaxed),
            utterance: utt.name.clone(),
            reference: utt.text.clone(),
            ..TurnRecord::default()
        };
        let mut st = TurnState::default();
        // Anything left from before (a late event, the tail of the last reply) is not this turn's.
        while self.client.try_next_event().is_some() {}
        let finished = if self.clips.send(utt.pcm.clone()).await.is_err() {
            Some((
                Outcome::Failed,
                Some(Failure::new(ErrorKind::Send, "microphone stopped")),
            ))
        } else {
            self.run_turn(&mut st, started).await
        };
        let (outcome, error) = finished.unwrap_or((Outcome::Aborted, None));
        rec.outcome = outcome;
        rec.error = error;
        rec.glitches = self.glitches.counts().since(&glitches_before);
        rec.duration_s = started.elapsed().as_secs_f64();
        rec.voice_to_voice_ms = st.last_voiced_sent.and_then(|sent| {
            st.voiced_arrivals
                .iter()
                .find(|&&a| a > sent)
                .map(|a| a.duration_since(sent).as_secs_f64() * 1000.0)
        });
        if rec.outcome == Outcome::Replied && rec.voice_to_voice_ms.is_none() {
            rec.outcome = Outcome::Failed;
            rec.error = Some(Failure::new(
                ErrorKind::NoAudio,
                "reply without voiced audio",
            ));
        }
        if self.cfg.mode.asks() && !st.transcripts.is_empty() {
            let heard = st
                .transcripts
                .iter()
                .map(|(_, t)| t.as_str())
                .collect::<Vec<_>>()
                .join(" ");
            rec.wer = Some(crate::text::wer(&utt.text, &heard));
            rec.transcript = Some(heard);
        }
        rec.reply = st.reply;
        rec.busy_reason = st.busy;
        rec.timings = st.timings;
        rec
    }

    /// Run the turn's state machine. `None` = aborted.
    async fn run_turn(
        &mut self,
        st: &mut TurnState,
        started: Instant,
    ) -> Option<(Outcome, Option<Failure>)> {
        loop {
            tokio::select! {
                _ = self.controls.abort.cancelled() => return None,
                _ = tokio::time::sleep(TICK) => {}
            }
            let now = Instant::now();
            while let Ok(ev) = self.mic.try_recv() {
                match ev {
                    MicEvent::LastVoiced(t) => st.last_voiced_sent = Some(t),
                    MicEvent::Finished => st.speak_done = true,
                    MicEvent::Failed(e) => {
                        return Some((Outcome::Failed, Some(Failure::new(ErrorKind::Send, e))));
                    }
                }
            }
            let frames = self.client.drain_received();
            self.take_frames(st, &frames);
            while let Some(ev) = self.client.try_next_event() {
                self.on_event(st, &ev, now);
            }
            if let Some(why) = self.client.ended() {
                return Some((
                    Outcome::Failed,
                    Some(Failure::new(ErrorKind::SessionEnded, why)),
                ));
            }
            if let Some(e) = st.server_error.clone() {
                return Some((
                    Outcome::Failed,
                    Some(Failure::new(ErrorKind::ServerError, e)),
                ));
            }
            if st.empty {
                return Some((
                    Outcome::Failed,
                    Some(Failure::new(ErrorKind::NoReply, "the server heard nothing")),
                ));
            }
            let timeout = self.cfg.turn_timeout;
            // The reply began when its audio or its final event came.
            let began = match (st.reply_audio, st.terminal) {
                (Some(a), Some(t)) => Some(a.min(t)),
                (a, t) => a.or(t),
            };
            if let Some(t) = st.terminal
                && st.speak_done
            {
                let quiet_since = st.last_voiced_rx.map_or(t, |v| v.max(t));
                // A reply still playing long after it began is cut short: its
                // latency is known, and the run must go on.
                if st.listening_after_terminal
                    || now.duration_since(quiet_since) >= QUIET_END
                    || began.is_some_and(|b| now.duration_since(b) > timeout * 2)
                {
                    // Frames still in flight when `listening` came.
                    let frames = self.client.drain_received();
                    self.take_frames(st, &frames);
                    let outcome = if st.busy.is_some() {
                        Outcome::Busy
                    } else {
                        Outcome::Replied
                    };
                    return Some((outcome, None));
                }
            }
            // The timeout is for the reply to begin (and, once it has, for
            // it not to stall), not for it to finish playing.
            let waited_from = st.last_voiced_sent.unwrap_or(started);
            let stalled = match began {
                None => now.duration_since(waited_from) > timeout,
                Some(b) => {
                    st.terminal.is_none()
                        && now.duration_since(st.last_voiced_rx.map_or(b, |v| v.max(b))) > timeout
                }
            };
            if stalled {
                let what = if began.is_some() {
                    "the reply stalled for"
                } else {
                    "no reply within"
                };
                return Some((
                    Outcome::Failed,
                    Some(Failure::new(
                        ErrorKind::Timeout,
                        format!("{what} {timeout:?}"),
                    )),
                ));
            }
        }
    }

    fn take_frames(&mut self, st: &mut TurnState, frames: &[ReceivedFrame]) {
        for f in frames {
            self.glitches
                .push(f.sequence, f.rtp_timestamp, f.marker, f.arrival);
            if f.pcm.iter().any(|x| x.abs() > VOICED_THRESHOLD) {
                st.voiced_arrivals.push(f.arrival);
                st.last_voiced_rx = Some(f.arrival);
                if st.reply_audio.is_none() && st.last_voiced_sent.is_some_and(|s| f.arrival > s) {
                    st.reply_audio = Some(f.arrival);
                }
            }
        }
    }

    fn on_event(&self, st: &mut TurnState, ev: &Event, now: Instant) {
        // Events before our last voiced sample went out belong to a turn the
        // server cut inside our utterance (a pause it took for an end): keep
        // its transcript, but only events after it can end this turn.
        let after = st.last_voiced_sent.is_some();
        let conversation = self.cfg.mode.asks();
        match ev {
            Event::Transcript { turn, text, .. } if conversation => {
                match st.transcripts.iter_mut().find(|(t, _)| t == turn) {
                    Some((_, old)) => *old = text.clone(),
                    None => st.transcripts.push((*turn, text.clone())),
                }
                st.transcript_since_thinking = true;
            }
            Event::Timings(t) if conversation && after => {
                st.timings = Some(StageTimings::from(t));
            }
            Event::Reply {
                text,
                interrupted: false,
                ..
            } if conversation && after => {
                st.reply = Some(text.clone());
                st.terminal.get_or_insert(now);
            }
            Event::Busy { reason, .. } if conversation && after => {
                st.busy = Some(reason.as_str().to_string());
                st.terminal.get_or_insert(now);
            }
            Event::Error { message, .. } if after => {
                st.server_error = Some(message.clone());
            }
            Event::State { state, .. } if after => match state {
                State::Thinking => {
                    st.thinking = true;
                    st.transcript_since_thinking = false;
                }
                // The echo pipeline queued our utterance for playback.
                State::Speaking if self.cfg.mode == Mode::Media => {
                    st.terminal.get_or_insert(now);
                }
                State::Listening => {
                    if st.terminal.is_some() {
                        st.listening_after_terminal = true;
                    } else if st.thinking && !st.transcript_since_thinking {
                        st.empty = true;
                    }
                }
                _ => {}
            },
            _ => {}
        }
    }
}
