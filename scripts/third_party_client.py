#!/usr/bin/env python3
"""A third-party WebRTC client for voxloop: aiortc over WHIP (issue 11, item 2).

It speaks the shared questions to a running server the way a browser would
(real-time 20 ms Opus frames from one microphone track, silence between
utterances), receives the reply audio and the `events` data channel, and
measures voice-to-voice latency per turn as DESIGN.md section 5 defines it:
the send time of the 20 ms frame holding the utterance's last voiced sample to
the arrival of the first voiced reply frame, both on this process's one
monotonic clock, "voiced" = some sample with |x| > 300/32767.

Two receive figures are printed, because a jitter buffer moves the second:
  v2v     the RTP packet's arrival, decoded on arrival (no jitter buffer, as
          `voxloop loadtest` measures);
  v2v_jb  the frame as an aiortc application gets it from the remote track,
          after aiortc's audio jitter buffer (capacity 16, prefetch 4).

Loopback only: ICE gathers 127.0.0.1 alone and no STUN server is used.

Setup (never in the repository):
  python3 -m venv ~/.cache/voxloop/venv-aiortc
  ~/.cache/voxloop/venv-aiortc/bin/pip install -r scripts/third_party_requirements.txt
Run against `voxloop serve` on 127.0.0.1:8080:
  ~/.cache/voxloop/venv-aiortc/bin/python scripts/third_party_client.py --url http://127.0.0.1:8080
"""

import argparse
import array
import asyncio
import fractions
import json
import sys
import time
import urllib.error
import urllib.parse
import urllib.request
from collections import deque
from dataclasses import dataclass, field
from pathlib import Path
from typing import Optional

try:
    import aioice.ice
    import av
    from aiortc import (
        MediaStreamTrack,
        RTCConfiguration,
        RTCPeerConnection,
        RTCSessionDescription,
    )
    from aiortc.mediastreams import MediaStreamError
    from aiortc.rtp import is_rtcp
except ImportError as exc:  # a clear error instead of a traceback
    sys.exit(
        f"error: {exc}. Install the pinned packages in a venv:\n"
        "  python3 -m venv ~/.cache/voxloop/venv-aiortc\n"
        "  ~/.cache/voxloop/venv-aiortc/bin/pip install -r scripts/third_party_requirements.txt"
    )

RATE = 48000
FRAME = 960  # samples in 20 ms
FRAME_S = FRAME / RATE
VOICED = 300  # |s16 sample| above this is voiced (300/32767, DESIGN.md section 5)
QUIET_END_S = 2.0  # received silence after the reply event that ends a turn
# The server stage timings (`timings` event) the summaries show.
STAGES = ("endpoint_ms", "asr_ms", "llm_first_token_ms", "tts_first_audio_ms", "total_ms")
REPO = Path(__file__).resolve().parent.parent


class ClientError(Exception):
    """Anything that stops the run, with a message for the user."""


@dataclass
class Question:
    name: str
    text: str
    pcm: array.array  # 48 kHz mono s16
    last_voiced: int  # index of the last voiced sample


@dataclass
class TurnResult:
    no: int
    name: str
    v2v_ms: Optional[float] = None
    v2v_jb_ms: Optional[float] = None
    transcript: str = ""
    reply: str = ""
    busy: Optional[str] = None
    error: Optional[str] = None
    timings: dict = field(default_factory=dict)
    late_mic_frames: int = 0


# ---------------------------------------------------------------- audio files


def read_questions(tsv: Path, audio_dir: Optional[Path]) -> list[Question]:
    """The `file<TAB>[voice<TAB>]text` list the load tester reads (corpus.rs)."""
    try:
        lines = tsv.read_text(encoding="utf-8").splitlines()
    except OSError as exc:
        raise ClientError(f"cannot read the question list {tsv}: {exc}") from exc
    base = audio_dir or tsv.parent
    out = []
    for line in lines:
        line = line.rstrip()
        if not line or line.startswith("#"):
            continue
        cols = line.split("\t")
        if len(cols) < 2 or cols[0] == "file":
            continue
        pcm = decode_48k_mono(base / cols[0].strip())
        last = last_voiced(pcm)
        if last is None:
            print(f"skipping {cols[0]}: no voiced sample", file=sys.stderr)
            continue
        out.append(Question(cols[0].strip(), cols[-1].strip(), pcm, last))
    if not out:
        raise ClientError(f"no usable questions in {tsv}")
    return out


def decode_48k_mono(path: Path) -> array.array:
    """Decode an audio file to 48 kHz mono s16 with PyAV (aiortc's own dependency)."""
    out = array.array("h")
    try:
        with av.open(str(path)) as container:
            if not container.streams.audio:
                raise ClientError(f"{path}: no audio stream")
            resampler = av.AudioResampler(format="s16", layout="mono", rate=RATE)
            for frame in container.decode(container.streams.audio[0]):
                for f in resampler.resample(frame):
                    out.frombytes(bytes(f.planes[0])[: f.samples * 2])
            for f in resampler.resample(None):
                out.frombytes(bytes(f.planes[0])[: f.samples * 2])
    except (OSError, av.error.FFmpegError) as exc:
        raise ClientError(f"cannot decode {path}: {exc}") from exc
    return out


def last_voiced(pcm: array.array) -> Optional[int]:
    for i in range(len(pcm) - 1, -1, -1):
        if abs(pcm[i]) > VOICED:
            return i
    return None


def is_voiced(s16: bytes) -> bool:
    samples = array.array("h")
    samples.frombytes(s16[: len(s16) // 2 * 2])
    return any(abs(x) > VOICED for x in samples)


# ---------------------------------------------------------------- sending


class Spoken:
    """One utterance on its way out: when its last voiced frame was sent."""

    def __init__(self, question: Question, loop: asyncio.AbstractEventLoop):
        self.question = question
        self.pos = 0
        self.last_voiced_offset: Optional[int] = None  # RTP offset of that frame
        self.last_voiced_sent = loop.create_future()
        self.finished = asyncio.Event()


class Microphone(MediaStreamTrack):
    """A microphone: a 20 ms frame every 20 ms of the monotonic clock, from
    the queued utterance or, with `tail="silence"`, silence in between as a
    browser sends. With `tail="none"` nothing is sent between utterances, as
    from a muted track, a DTX sender or aiortc's MediaPlayer at end of file."""

    kind = "audio"

    def __init__(self, send_clock: "SendClock", tail: str = "silence"):
        super().__init__()
        self._t0: Optional[float] = None
        self._n = 0
        self._queue: deque[Spoken] = deque()
        self._queued = asyncio.Event()
        self._current: Optional[Spoken] = None
        self._send_clock = send_clock
        self._tail = tail
        self.late_frames = 0  # frames handed out more than 10 ms after their time

    def speak(self, question: Question) -> Spoken:
        spoken = Spoken(question, asyncio.get_running_loop())
        self._queue.append(spoken)
        self._queued.set()
        return spoken

    async def recv(self) -> av.AudioFrame:
        if self.readyState != "live":
            raise MediaStreamError
        if self._tail == "none" and self._current is None and not self._queue and self._t0 is not None:
            self._queued.clear()
            await self._queued.wait()
            # Resume on time; the RTP timestamps stay contiguous (PyAV's
            # resampler insists), which the server does not read anyway.
            self._t0 = time.monotonic() - self._n * FRAME_S
        now = time.monotonic()
        if self._t0 is None:
            self._t0 = now
        due = self._t0 + self._n * FRAME_S
        if due > now:
            await asyncio.sleep(due - now)
        elif now - due > 0.010:
            self.late_frames += 1
        pts = self._n * FRAME
        self._n += 1
        if self._current is None and self._queue:
            self._current = self._queue.popleft()
        pcm = array.array("h", bytes(FRAME * 2))
        cur = self._current
        if cur is not None:
            q = cur.question
            chunk = q.pcm[cur.pos : cur.pos + FRAME]
            pcm[: len(chunk)] = chunk
            if cur.pos <= q.last_voiced < cur.pos + FRAME:
                # aiortc's encoder stamps packet n with n * 960 (checked): the
                # send clock reports when this frame's packet leaves.
                cur.last_voiced_offset = pts
                self._send_clock.watch(pts, cur.last_voiced_sent)
            cur.pos += FRAME
            if cur.pos >= len(q.pcm):
                cur.finished.set()
                self._current = None
        frame = av.AudioFrame(format="s16", layout="mono", samples=FRAME)
        frame.planes[0].update(pcm.tobytes())
        frame.sample_rate = RATE
        frame.pts = pts
        frame.time_base = fractions.Fraction(1, RATE)
        return frame


class SendClock:
    """Wraps the DTLS transport's RTP send so a frame's send time is the
    moment its packet was handed to the socket, not when it was encoded."""

    def __init__(self):
        self._origin: Optional[int] = None
        self._watch: dict[int, asyncio.Future] = {}

    def watch(self, offset: int, fut: asyncio.Future) -> None:
        self._watch[offset] = fut

    def install(self, transport) -> None:
        original = transport._send_rtp

        async def send_rtp(data: bytes) -> None:
            await original(data)
            if is_rtcp(data) or len(data) < 12:
                return
            sent = time.monotonic()
            ts = int.from_bytes(data[4:8], "big")
            if self._origin is None:
                self._origin = ts
            fut = self._watch.pop((ts - self._origin) & 0xFFFFFFFF, None)
            if fut is not None and not fut.done():
                fut.set_result(sent)

        transport._send_rtp = send_rtp


# ---------------------------------------------------------------- receiving


class Ear:
    """Voiced reply audio: on RTP arrival (own decoder, no jitter buffer) and
    as the application reads it from aiortc's remote track."""

    def __init__(self):
        self._decoder = av.CodecContext.create("libopus", "r")
        self._decoder.format = "s16"
        self._decoder.layout = "mono"
        self._decoder.sample_rate = RATE
        self.voiced_rx: list[float] = []  # arrival times of voiced packets
        self.voiced_jb: list[float] = []  # times voiced frames left the jitter buffer
        self.last_voiced_rx: Optional[float] = None
        self.packets = 0

    def reset(self) -> None:
        self.voiced_rx.clear()
        self.voiced_jb.clear()

    def install(self, receiver) -> None:
        original = receiver._handle_rtp_packet

        async def handle(packet, arrival_time_ms: int) -> None:
            arrival = time.monotonic()
            self.packets += 1
            try:
                frames = self._decoder.decode(av.Packet(packet.payload))
            except av.error.FFmpegError:
                frames = []
            if any(is_voiced(bytes(f.planes[0])[: f.samples * 2]) for f in frames):
                self.voiced_rx.append(arrival)
                self.last_voiced_rx = arrival
            await original(packet, arrival_time_ms)

        receiver._handle_rtp_packet = handle

    async def drain_track(self, track) -> None:
        while True:
            try:
                frame = await track.recv()
            except MediaStreamError:
                return
            got = time.monotonic()
            nbytes = frame.samples * 2 * len(frame.layout.channels)
            if is_voiced(bytes(frame.planes[0])[:nbytes]):
                self.voiced_jb.append(got)


# ---------------------------------------------------------------- the session


class Client:
    def __init__(self, url: str, connect_timeout: float, tail: str):
        self.url = url.rstrip("/")
        self.connect_timeout = connect_timeout
        self.pc = RTCPeerConnection(RTCConfiguration(iceServers=[]))
        self.send_clock = SendClock()
        self.mic = Microphone(self.send_clock, tail)
        self.ear = Ear()
        self.events: asyncio.Queue = asyncio.Queue()
        self.location: Optional[str] = None
        self.session_id: Optional[str] = None
        self._tasks: list[asyncio.Task] = []

    async def connect(self) -> None:
        transceiver = self.pc.addTransceiver(self.mic, direction="sendrecv")
        channel = self.pc.createDataChannel("events")

        @channel.on("message")
        def on_message(message):
            at = time.monotonic()
            try:
                event = json.loads(message)
            except (TypeError, ValueError):
                print(f"warning: data channel message that is not JSON: {message!r}", file=sys.stderr)
                return
            self.events.put_nowait((at, event))

        @self.pc.on("track")
        def on_track(track):
            if track.kind == "audio":
                self._tasks.append(asyncio.ensure_future(self.ear.drain_track(track)))

        self.ear.install(transceiver.receiver)
        await self.pc.setLocalDescription(await self.pc.createOffer())
        answer = await asyncio.to_thread(self._post_offer, self.pc.localDescription.sdp)
        await self.pc.setRemoteDescription(RTCSessionDescription(sdp=answer, type="answer"))
        self.send_clock.install(transceiver.sender.transport)
        deadline = time.monotonic() + self.connect_timeout
        while self.pc.connectionState != "connected":
            if self.pc.connectionState in ("failed", "closed"):
                raise ClientError(f"WebRTC connection {self.pc.connectionState}")
            if time.monotonic() > deadline:
                raise ClientError(f"not connected after {self.connect_timeout} s")
            await asyncio.sleep(0.05)
        while self.session_id is None:
            left = deadline - time.monotonic()
            if left <= 0:
                raise ClientError("no `session` event on the events data channel")
            try:
                _, event = await asyncio.wait_for(self.events.get(), left)
            except asyncio.TimeoutError:
                continue
            if event.get("type") == "session":
                self.session_id = event.get("id")

    def _post_offer(self, sdp: str) -> str:
        req = urllib.request.Request(
            f"{self.url}/whip",
            data=sdp.encode(),
            headers={"Content-Type": "application/sdp"},
            method="POST",
        )
        try:
            with urllib.request.urlopen(req, timeout=self.connect_timeout) as resp:
                loc = resp.headers.get("Location")
                self.location = urllib.parse.urljoin(f"{self.url}/", loc) if loc else None
                return resp.read().decode()
        except urllib.error.HTTPError as exc:
            body = exc.read().decode(errors="replace")
            raise ClientError(f"WHIP offer refused: HTTP {exc.code}: {body}") from exc
        except (urllib.error.URLError, OSError) as exc:
            raise ClientError(f"cannot reach {self.url}/whip: {exc}") from exc

    def _delete(self) -> None:
        if not self.location:
            return
        req = urllib.request.Request(self.location, method="DELETE")
        try:
            urllib.request.urlopen(req, timeout=5).close()
        except (urllib.error.URLError, OSError):
            pass  # the server ends the session when the peer closes anyway

    async def close(self) -> None:
        await asyncio.to_thread(self._delete)
        await self.pc.close()
        for t in self._tasks:
            t.cancel()


# ---------------------------------------------------------------- one turn


async def run_turn(client: Client, no: int, q: Question, timeout: float) -> TurnResult:
    res = TurnResult(no, q.name)
    while not client.events.empty():  # a late event of the last turn
        client.events.get_nowait()
    client.ear.reset()
    late_before = client.mic.late_frames
    spoken = client.mic.speak(q)
    clip_s = len(q.pcm) / RATE
    try:
        sent = await asyncio.wait_for(asyncio.shield(spoken.last_voiced_sent), clip_s + 5)
    except asyncio.TimeoutError:
        res.error = "the last voiced frame was never sent"
        return res
    transcripts: list[str] = []
    terminal: Optional[float] = None
    listening_after = False
    hard_end = sent + 3 * timeout
    while True:
        now = time.monotonic()
        if now > hard_end:
            res.error = f"turn not over after {3 * timeout:.0f} s"
            break
        try:
            at, ev = await asyncio.wait_for(client.events.get(), 0.02)
        except asyncio.TimeoutError:
            at, ev = None, None
        if ev is not None and at > sent:
            kind = ev.get("type")
            if kind == "transcript":
                transcripts.append(ev.get("text", ""))
            elif kind == "timings":
                res.timings = ev
            elif kind == "reply" and not ev.get("interrupted"):
                res.reply = ev.get("text", "")
                terminal = terminal or at
            elif kind == "busy":
                res.busy = ev.get("reason", "?")
                terminal = terminal or at
            elif kind == "error":
                res.error = f"server error: {ev.get('message')}"
                break
            elif kind == "state" and ev.get("state") == "listening" and terminal:
                listening_after = True
        elif ev is not None and ev.get("type") == "transcript":
            transcripts.append(ev.get("text", ""))  # a cut inside our utterance
        now = time.monotonic()
        began = any(t > sent for t in client.ear.voiced_rx) or terminal is not None
        if not began and now - sent > timeout:
            res.error = f"no reply within {timeout:.0f} s"
            break
        if terminal and spoken.finished.is_set():
            quiet_since = max(terminal, client.ear.last_voiced_rx or terminal)
            if listening_after or now - quiet_since >= QUIET_END_S:
                break
    res.v2v_ms = first_after(client.ear.voiced_rx, sent)
    res.v2v_jb_ms = first_after(client.ear.voiced_jb, sent)
    if res.error is None and res.v2v_ms is None:
        res.error = "reply without voiced audio"
    res.transcript = " ".join(t for t in transcripts if t)
    res.late_mic_frames = client.mic.late_frames - late_before
    return res


def first_after(times: list[float], t0: float) -> Optional[float]:
    return next(((t - t0) * 1000.0 for t in times if t > t0), None)


# ---------------------------------------------------------------- reporting


def percentile(values: list[float], q: float) -> Optional[float]:
    """Linear interpolation between ranks, as `voxloop loadtest` computes it."""
    v = sorted(values)
    if not v:
        return None
    pos = q * (len(v) - 1)
    lo, hi = int(pos), min(int(pos) + 1, len(v) - 1)
    return v[lo] + (v[hi] - v[lo]) * (pos - lo)


def fmt(ms: Optional[float]) -> str:
    return "-" if ms is None else f"{ms:.0f}"


def turn_line(r: TurnResult) -> str:
    t = r.timings
    stages = (
        f"endpoint {fmt(t.get('endpoint_ms'))} asr {fmt(t.get('asr_ms'))} "
        f"llm_first {fmt(t.get('llm_first_token_ms'))} first_sentence {fmt(t.get('first_sentence_ms'))} "
        f"tts_first {fmt(t.get('tts_first_audio_ms'))} total {fmt(t.get('total_ms'))}"
        if t
        else "no timings"
    )
    rest = ""
    if r.v2v_ms is not None and t.get("total_ms") is not None:
        # What the server's own stages do not cover: the way in (network,
        # decode, VAD windows until the silence count starts) and the way out.
        rest = f" outside_server {r.v2v_ms - t['total_ms']:.0f}"
    status = r.error or (f"busy ({r.busy})" if r.busy else "replied")
    return (
        f"turn {r.no:2} {r.name}: v2v {fmt(r.v2v_ms)} ms v2v_jb {fmt(r.v2v_jb_ms)} ms"
        f" | server: {stages}{rest} | {status} | heard {r.transcript!r}"
        f" | reply {r.reply[:60]!r}" + (f" | late mic frames {r.late_mic_frames}" if r.late_mic_frames else "")
    )


def summary(results: list[TurnResult]) -> list[str]:
    ok = [r for r in results if r.error is None and r.busy is None]
    lines = []
    for label, key in (("v2v", "v2v_ms"), ("v2v after aiortc jitter buffer", "v2v_jb_ms")):
        vals = [getattr(r, key) for r in ok if getattr(r, key) is not None]
        lines.append(
            f"third-party {label}: n={len(vals)} p50={fmt(percentile(vals, 0.5))} "
            f"p95={fmt(percentile(vals, 0.95))} max={fmt(max(vals) if vals else None)} ms"
        )
    medians = []
    for key in STAGES:
        vals = [r.timings[key] for r in ok if r.timings.get(key) is not None]
        medians.append(f"{key[:-3]} {fmt(percentile(vals, 0.5))}")
    outside = [r.v2v_ms - r.timings["total_ms"] for r in ok if r.v2v_ms is not None and r.timings.get("total_ms") is not None]
    medians.append(f"outside_server {fmt(percentile(outside, 0.5))}")
    lines.append("third-party stage medians (server timings, ms): " + ", ".join(medians))
    lines.append(
        f"third-party turns: {len(results)}, replied {len(ok)}, busy {sum(1 for r in results if r.busy)}, "
        f"failed {sum(1 for r in results if r.error)}"
    )
    return lines


def stage_row(label: str, turns: list[dict]) -> str:
    """One line of the side-by-side table from turns with `v2v` and `timings`."""
    v2v = [t["v2v"] for t in turns if t["v2v"] is not None]
    outside = [
        t["v2v"] - t["timings"]["total_ms"]
        for t in turns
        if t["v2v"] is not None and t["timings"].get("total_ms") is not None
    ]
    cells = [len(v2v), percentile(v2v, 0.5), percentile(v2v, 0.95)]
    for key in STAGES:
        cells.append(percentile([t["timings"][key] for t in turns if t["timings"].get(key) is not None], 0.5))
    cells.append(percentile(outside, 0.5))
    return f"{label:<22}" + "".join(f"{c if isinstance(c, int) else fmt(c):>10}" for c in cells)


def compare(third_party_json: Path, loadtest_json: Path) -> int:
    """Print this client's run and a `voxloop loadtest` run side by side."""
    try:
        ours = json.loads(third_party_json.read_text())
        lt = json.loads(loadtest_json.read_text())
    except (OSError, ValueError) as exc:
        raise ClientError(f"cannot read the results to compare: {exc}") from exc
    ok = [r for r in ours if r["error"] is None and r["busy"] is None]
    third = [{"q": r["name"], "v2v": r["v2v_ms"], "timings": r["timings"] or {}} for r in ok]
    third_jb = [{"q": r["name"], "v2v": r["v2v_jb_ms"], "timings": r["timings"] or {}} for r in ok]
    loadtest = [
        {"q": t.get("utterance"), "v2v": t.get("voice_to_voice_ms"), "timings": t.get("timings") or {}}
        for t in lt.get("turns", [])
        if t.get("outcome") == "replied"
    ]
    head = ["n", "p50", "p95", "endpoint", "asr", "llm_first", "tts_first", "total", "outside"]
    print(f"{'':<22}" + "".join(f"{h:>10}" for h in head))
    print(stage_row("third-party (aiortc)", third))
    print(stage_row("  after jitter buffer", third_jb))
    print(stage_row("voxloop loadtest", loadtest))
    a = [t["v2v"] for t in third if t["v2v"] is not None]
    b = [t["v2v"] for t in loadtest if t["v2v"] is not None]
    if a and b:
        d50 = percentile(a, 0.5) - percentile(b, 0.5)
        d95 = percentile(a, 0.95) - percentile(b, 0.95)
        print(f"third-party minus loadtest: p50 {d50:+.0f} ms, p95 {d95:+.0f} ms")
    print("(ms; stage columns: medians of the server's `timings`; outside = v2v - total)")
    print("per question (median ms), third-party | loadtest: v2v, endpoint, outside")
    for q in sorted({t["q"] for t in third + loadtest if t["q"]}):
        print(f"  {q:<26} {question_cells(third, q)} | {question_cells(loadtest, q)}")
    return 0


def question_cells(turns: list[dict], q: str) -> str:
    mine = [t for t in turns if t["q"] == q and t["v2v"] is not None]
    v2v = percentile([t["v2v"] for t in mine], 0.5)
    endpoint = percentile([t["timings"]["endpoint_ms"] for t in mine if "endpoint_ms" in t["timings"]], 0.5)
    outside = percentile([t["v2v"] - t["timings"]["total_ms"] for t in mine if t["timings"].get("total_ms")], 0.5)
    return f"n={len(mine)} {fmt(v2v):>5} {fmt(endpoint):>4} {fmt(outside):>4}"


# ---------------------------------------------------------------- main


def loopback_only() -> None:
    """ICE host candidates on 127.0.0.1 alone (aioice leaves loopback out by
    default, and the server's media sockets are on loopback by default)."""
    aioice.ice.get_host_addresses = lambda use_ipv4, use_ipv6: ["127.0.0.1"]


async def run(args: argparse.Namespace) -> int:
    questions = read_questions(args.questions, args.audio_dir)
    loopback_only()
    client = Client(args.url, args.connect_timeout, args.tail)
    results: list[TurnResult] = []
    try:
        started = time.monotonic()
        await client.connect()
        print(f"connected: session {client.session_id} in {(time.monotonic() - started) * 1000:.0f} ms", flush=True)
        await asyncio.sleep(args.think)  # a second of silence first, as a person takes
        for i in range(args.turns):
            q = questions[i % len(questions)]
            r = await run_turn(client, i + 1, q, args.turn_timeout)
            results.append(r)
            print(turn_line(r), flush=True)
            await asyncio.sleep(args.think)
    finally:
        await client.close()
    print(f"rx packets {client.ear.packets}, mic frames late >10 ms: {client.mic.late_frames}")
    for line in summary(results):
        print(line, flush=True)
    if args.json_out:
        args.json_out.write_text(json.dumps([r.__dict__ for r in results], indent=1))
    return 0 if results and all(r.error is None for r in results) else 1


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--url", default="http://127.0.0.1:8080", help="voxloop server, http://127.0.0.1:PORT")
    p.add_argument(
        "--questions",
        type=Path,
        default=REPO / "tests/data/questions.tsv",
        help="file<TAB>[voice<TAB>]text list of the questions (default: the ten shared questions)",
    )
    p.add_argument("--audio-dir", type=Path, help="where the audio files are (default: beside the list)")
    p.add_argument("--turns", type=int, default=10, help="questions to ask, in list order (default 10)")
    p.add_argument("--think", type=float, default=1.5, help="silence between a reply and the next question, s")
    p.add_argument("--turn-timeout", type=float, default=30.0, help="longest wait for a reply to begin, s")
    p.add_argument("--connect-timeout", type=float, default=10.0, help="longest WHIP + ICE + DTLS setup, s")
    p.add_argument(
        "--tail",
        choices=("silence", "none"),
        default="silence",
        help="between utterances send silence (a live microphone, default) or nothing (muted, DTX)",
    )
    p.add_argument("--json-out", type=Path, help="write the per-turn results here")
    p.add_argument(
        "--compare",
        nargs=2,
        type=Path,
        metavar=("THIRD_PARTY_JSON", "LOADTEST_JSON"),
        help="connect to nothing: print a --json-out file and a loadtest.json side by side",
    )
    args = p.parse_args()
    if args.compare:
        try:
            return compare(*args.compare)
        except ClientError as exc:
            print(f"error: {exc}", file=sys.stderr)
            return 2
    host = urllib.parse.urlparse(args.url).hostname
    if host not in ("127.0.0.1", "localhost", "::1"):
        p.error(f"--url must be on loopback, not {host!r}")
    if not 1 <= args.turns <= 100:
        p.error("--turns must be 1..100")
    budget = args.connect_timeout + args.turns * (4 * args.turn_timeout + args.think + 30) + 30
    try:
        return asyncio.run(asyncio.wait_for(run(args), budget))
    except ClientError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    except asyncio.TimeoutError:
        print(f"error: the run took longer than its {budget:.0f} s budget", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    sys.exit(main())
