#!/usr/bin/env python3
"""Convert a CTranslate2 Whisper model (faster-whisper layout) to whisper.cpp's ggml file.

    python3 scripts/ct2_to_ggml.py MODEL_DIR OUT_FILE
    python3 scripts/ct2_to_ggml.py --model-bin model.bin --vocabulary vocabulary.txt OUT_FILE

MODEL_DIR holds `model.bin` (CTranslate2 format version 6, spec WhisperSpec) and
`vocabulary.txt` (one GPT-2 byte-level token a line). The output is the file that
whisper.cpp's loader (and whisper-rs) reads, laid out as whisper.cpp's
`models/convert-pt-to-ggml.py` writes it:

  1. i32 magic 0x67676d6c ("ggml")
  2. 11 x i32 hyper-parameters: n_vocab, n_audio_ctx, n_audio_state, n_audio_head,
     n_audio_layer, n_text_ctx, n_text_state, n_text_head, n_text_layer, n_mels,
     ftype (1 = f16)
  3. mel filterbank: i32 n_mels, i32 n_fft_bins (201), n_mels x 201 f32
     (Slaney-style, as librosa.filters.mel(sr=16000, n_fft=400, n_mels=n_mels))
  4. vocabulary: i32 count, then per token i32 length + raw bytes
  5. tensors until EOF: i32 rank, i32 name length, i32 type (0 f32, 1 f16),
     rank x i32 dims (fastest-varying first), name bytes, data

CTranslate2 fuses self-attention Q/K/V (3d x d) and cross-attention K/V (2d x d);
they are split back. The key bias slices are checked to be zero and dropped
(whisper.cpp has no key bias). 1-D tensors, conv biases (stored n x 1) and both
positional embeddings are written as f32, all other weights as f16.

Python standard library only (numpy is used, if importable, just to speed up an
f32 -> f16 cast for models stored in f32; the result is bit-identical either way).
The output is deterministic: same input files give the same bytes.
"""

from __future__ import annotations

import argparse
import math
import os
import re
import struct
import sys
import time
from array import array

GGML_MAGIC = 0x67676D6C
CT2_DTYPES = {0: ("f32", 4), 1: ("i8", 1), 2: ("i16", 2), 3: ("i32", 4), 4: ("f16", 2), 5: ("bf16", 2)}
FTYPE_F32 = 0
FTYPE_F16 = 1

SAMPLE_RATE = 16000
N_FFT = 400


class ConversionError(Exception):
    """An expected problem with the input files (bad format, unsupported dtype...)."""


# --------------------------------------------------------------------------- CTranslate2 reader


class Var:
    __slots__ = ("name", "shape", "dtype", "data")

    def __init__(self, name: str, shape: tuple, dtype: str, data: bytes):
        self.name = name
        self.shape = shape
        self.dtype = dtype
        self.data = data

    def scalar(self) -> int:
        fmt = {"i8": "<b", "i16": "<h", "i32": "<i", "f32": "<f"}.get(self.dtype)
        if fmt is None or len(self.data) != struct.calcsize(fmt):
            raise ConversionError(f"{self.name}: expected a scalar, got {self.dtype} {self.shape}")
        return struct.unpack(fmt, self.data)[0]


def read_ct2(path: str) -> dict[str, Var]:
    """Read every variable of a CTranslate2 model.bin (format version 6)."""
    with open(path, "rb") as f:
        buf = f.read()
    pos = 0

    def take(n: int) -> bytes:
        nonlocal pos
        if pos + n > len(buf):
            raise ConversionError(f"{path}: truncated file (wanted {n} bytes at offset {pos})")
        b = buf[pos:pos + n]
        pos += n
        return b

    def u8() -> int:
        return take(1)[0]

    def u16() -> int:
        return struct.unpack("<H", take(2))[0]

    def u32() -> int:
        return struct.unpack("<I", take(4))[0]

    def string() -> str:
        n = u16()
        raw = take(n)
        if not raw.endswith(b"\0"):
            raise ConversionError(f"{path}: malformed string at offset {pos - n}")
        return raw[:-1].decode("utf-8")

    version = u32()
    if version < 5 or version > 6:
        raise ConversionError(f"{path}: unsupported CTranslate2 format version {version} (expected 6)")
    spec = string()
    if spec != "WhisperSpec":
        raise ConversionError(f"{path}: model spec is {spec!r}, not WhisperSpec")
    u32()  # spec revision
    count = u32()
    variables: dict[str, Var] = {}
    for _ in range(count):
        name = string()
        rank = u8()
        shape = tuple(u32() for _ in range(rank))
        dtype_id = u8()
        if dtype_id not in CT2_DTYPES:
            raise ConversionError(f"{path}: {name}: unknown dtype id {dtype_id}")
        dtype, itemsize = CT2_DTYPES[dtype_id]
        nbytes = u32()
        n = 1
        for d in shape:
            n *= d
        if nbytes != n * itemsize:
            raise ConversionError(f"{path}: {name}: {nbytes} bytes for shape {shape} {dtype}")
        variables[name] = Var(name, shape, dtype, take(nbytes))
    # aliases (e.g. decoder/projection/weight -> decoder/embeddings/weight) are not needed
    return variables


# --------------------------------------------------------------------------- tensor helpers


def f16_to_f32_bytes(data: bytes) -> bytes:
    n = len(data) // 2
    vals = struct.unpack(f"<{n}e", data)
    out = array("f", vals)
    if sys.byteorder != "little":
        out.byteswap()
    return out.tobytes()


def f32_to_f16_bytes(data: bytes) -> bytes:
    try:
        import numpy as np  # optional, only speeds this up

        return np.frombuffer(data, dtype="<f4").astype("<f2").tobytes()
    except ImportError:
        n = len(data) // 4
        vals = struct.unpack(f"<{n}f", data)
        return struct.pack(f"<{n}e", *vals)


def as_type(var: Var, data: bytes, ftype: int) -> bytes:
    """Return `data` (in var.dtype) converted to ftype's encoding."""
    if var.dtype == "f16":
        return data if ftype == FTYPE_F16 else f16_to_f32_bytes(data)
    if var.dtype == "f32":
        return data if ftype == FTYPE_F32 else f32_to_f16_bytes(data)
    raise ConversionError(
        f"{var.name}: dtype {var.dtype} is not supported (only float16/float32 CTranslate2 models; "
        "int8-quantised models cannot be converted)"
    )


def split_rows(var: Var, parts: int) -> list[bytes]:
    """Split a fused tensor (rows stacked) into `parts` equal row blocks."""
    rows = var.shape[0]
    if rows % parts:
        raise ConversionError(f"{var.name}: {rows} rows cannot be split in {parts}")
    size = len(var.data) // parts
    return [var.data[i * size:(i + 1) * size] for i in range(parts)]


def is_all_zero(var: Var, data: bytes) -> bool:
    itemsize = 2 if var.dtype in ("f16", "bf16", "i16") else 4 if var.dtype in ("f32", "i32") else 1
    if var.dtype in ("f16", "f32", "bf16"):
        # +0.0 or -0.0: every element with its sign bit masked off is zero
        fmt = {2: "H", 4: "I"}[itemsize]
        mask = (1 << (8 * itemsize - 1)) - 1
        return all((v & mask) == 0 for v in array(fmt, data))
    return not any(data)


# --------------------------------------------------------------------------- mel filterbank


def _f32(x: float) -> float:
    return struct.unpack("<f", struct.pack("<f", x))[0]


def mel_filterbank(n_mels: int, sr: int = SAMPLE_RATE, n_fft: int = N_FFT) -> list[list[float]]:
    """librosa.filters.mel(sr=sr, n_fft=n_fft, n_mels=n_mels) (htk=False, norm='slaney'),
    replicated step by step, including its float32 rounding, in plain Python."""
    n_bins = 1 + n_fft // 2
    f_sp = 200.0 / 3
    min_log_hz = 1000.0
    min_log_mel = min_log_hz / f_sp
    logstep = math.log(6.4) / 27.0

    def hz_to_mel(f: float) -> float:
        if f >= min_log_hz:
            return min_log_mel + math.log(f / min_log_hz) / logstep
        return f / f_sp

    def mel_to_hz(m: float) -> float:
        if m >= min_log_mel:
            return min_log_hz * math.exp(logstep * (m - min_log_mel))
        return f_sp * m

    fmax = sr / 2.0
    step = (sr / 2.0) / (n_bins - 1)
    fftfreqs = [k * step for k in range(n_bins)]
    # np.linspace(min_mel, max_mel, n_mels + 2), then back to Hz
    min_mel, max_mel = hz_to_mel(0.0), hz_to_mel(fmax)
    n_pts = n_mels + 2
    delta = (max_mel - min_mel) / (n_pts - 1)
    mels = [min_mel + i * delta for i in range(n_pts)]
    mels[-1] = max_mel
    mel_f = [mel_to_hz(m) for m in mels]
    fdiff = [mel_f[i + 1] - mel_f[i] for i in range(n_pts - 1)]

    weights = []
    for i in range(n_mels):
        enorm = 2.0 / (mel_f[i + 2] - mel_f[i])
        row = []
        for f in fftfreqs:
            lower = -(mel_f[i] - f) / fdiff[i]
            upper = (mel_f[i + 2] - f) / fdiff[i + 1]
            w = _f32(max(0.0, min(lower, upper)))  # stored into a float32 array
            row.append(_f32(w * enorm))  # float32 array *= float64 enorm
        weights.append(row)
    return weights


# --------------------------------------------------------------------------- vocabulary


def _bytes_to_unicode() -> dict[int, str]:
    bs = list(range(ord("!"), ord("~") + 1)) + list(range(ord("¡"), ord("¬") + 1)) + list(range(ord("®"), ord("ÿ") + 1))
    cs = bs[:]
    n = 0
    for b in range(256):
        if b not in bs:
            bs.append(b)
            cs.append(256 + n)
            n += 1
    return dict(zip(bs, (chr(c) for c in cs)))


def read_vocabulary(path: str, n_vocab: int) -> list[bytes]:
    with open(path, "r", encoding="utf-8") as f:
        lines = f.read().split("\n")
    if lines and lines[-1] == "":
        lines.pop()
    if len(lines) != n_vocab:
        raise ConversionError(f"{path}: {len(lines)} tokens, but the model has n_vocab {n_vocab}")
    try:
        eot = lines.index("<|endoftext|>")
    except ValueError:
        raise ConversionError(f"{path}: no <|endoftext|> token") from None
    # whisper.cpp's converter writes the base BPE vocabulary: English-only models
    # (n_vocab 51864) up to and including <|endoftext|>, multilingual ones up to just before it.
    count = eot + 1 if n_vocab < 51865 else eot
    byte_decoder = {c: b for b, c in _bytes_to_unicode().items()}
    tokens = []
    for i, tok in enumerate(lines[:count]):
        if tok.startswith("<|") and tok.endswith("|>"):
            tokens.append(tok.encode("utf-8"))
            continue
        try:
            tokens.append(bytes(byte_decoder[c] for c in tok))
        except KeyError as e:
            raise ConversionError(f"{path}: line {i + 1}: character {e.args[0]!r} is not a GPT-2 byte symbol") from None
    return tokens


# --------------------------------------------------------------------------- conversion


def _layer_count(variables: dict[str, Var], prefix: str) -> int:
    pat = re.compile(re.escape(prefix) + r"/layer_(\d+)/")
    ids = {int(m.group(1)) for name in variables for m in [pat.match(name)] if m}
    if not ids:
        raise ConversionError(f"no {prefix}/layer_N variables")
    if ids != set(range(len(ids))):
        raise ConversionError(f"{prefix} layers are not numbered 0..{len(ids) - 1}: {sorted(ids)}")
    return len(ids)


def convert(model_bin: str, vocabulary: str, out_path: str, log=None) -> dict:
    """Convert; write `out_path`. Returns a summary dict (hparams, tensor count, bytes)."""
    say = log or (lambda msg: None)
    v = read_ct2(model_bin)

    def get(name: str) -> Var:
        if name not in v:
            raise ConversionError(f"{model_bin}: missing variable {name}")
        used.add(name)
        return v[name]

    used: set[str] = set()
    n_vocab, n_text_state = get("decoder/embeddings/weight").shape
    n_audio_ctx, n_audio_state = get("encoder/position_encodings/encodings").shape
    n_text_ctx = get("decoder/position_encodings/encodings").shape[0]
    conv1 = get("encoder/conv1/weight")
    n_mels = conv1.shape[1]
    n_audio_layer = _layer_count(v, "encoder")
    n_text_layer = _layer_count(v, "decoder")
    n_audio_head = get("encoder/num_heads").scalar()
    n_text_head = get("decoder/num_heads").scalar()
    hparams = [
        n_vocab, n_audio_ctx, n_audio_state, n_audio_head, n_audio_layer,
        n_text_ctx, n_text_state, n_text_head, n_text_layer, n_mels, FTYPE_F16,
    ]
    say(
        "hparams: n_vocab=%d n_audio_ctx=%d n_audio_state=%d n_audio_head=%d n_audio_layer=%d "
        "n_text_ctx=%d n_text_state=%d n_text_head=%d n_text_layer=%d n_mels=%d ftype=1" % tuple(hparams[:10])
    )
    tokens = read_vocabulary(vocabulary, n_vocab)
    filters = mel_filterbank(n_mels)

    tensors: list[tuple[str, tuple, int, bytes]] = []  # (name, numpy-order shape, ftype, data)

    def emit(name: str, var: Var, data: bytes | None = None, shape: tuple | None = None, force_f32: bool = False):
        data = var.data if data is None else data
        shape = var.shape if shape is None else shape
        ftype = FTYPE_F32 if (force_f32 or len(shape) < 2) else FTYPE_F16
        tensors.append((name, shape, ftype, as_type(var, data, ftype)))

    def linear(src: str, dst: str, bias: bool = True):
        emit(dst + ".weight", get(src + "/weight"))
        if bias:
            emit(dst + ".bias", get(src + "/bias"))

    def norm(src: str, dst: str):
        emit(dst + ".weight", get(src + "/gamma"))
        emit(dst + ".bias", get(src + "/beta"))

    def fused_qkv(src: str, dst: str):
        w, b = get(src + "/weight"), get(src + "/bias")
        d = w.shape[1]
        if w.shape != (3 * d, d) or b.shape != (3 * d,):
            raise ConversionError(f"{src}: fused QKV has shape {w.shape}/{b.shape}, expected ({3 * d}, {d})")
        wq, wk, wv = split_rows(w, 3)
        bq, bk, bv = split_rows(b, 3)
        if not is_all_zero(b, bk):
            raise ConversionError(f"{src}/bias: the key bias slice is not zero; whisper.cpp has no key bias")
        emit(dst + ".query.weight", w, wq, (d, d))
        emit(dst + ".query.bias", b, bq, (d,))
        emit(dst + ".key.weight", w, wk, (d, d))
        emit(dst + ".value.weight", w, wv, (d, d))
        emit(dst + ".value.bias", b, bv, (d,))

    def fused_kv(src: str, dst: str):
        w, b = get(src + "/weight"), get(src + "/bias")
        d = w.shape[1]
        if w.shape != (2 * d, d) or b.shape != (2 * d,):
            raise ConversionError(f"{src}: fused KV has shape {w.shape}/{b.shape}, expected ({2 * d}, {d})")
        wk, wv = split_rows(w, 2)
        bk, bv = split_rows(b, 2)
        if not is_all_zero(b, bk):
            raise ConversionError(f"{src}/bias: the key bias slice is not zero; whisper.cpp has no key bias")
        emit(dst + ".key.weight", w, wk, (d, d))
        emit(dst + ".value.weight", w, wv, (d, d))
        emit(dst + ".value.bias", b, bv, (d,))

    # Order follows the PyTorch state_dict of openai-whisper, as the official converter writes it.
    emit("encoder.positional_embedding", get("encoder/position_encodings/encodings"), force_f32=True)
    for i in (1, 2):
        emit(f"encoder.conv{i}.weight", get(f"encoder/conv{i}/weight"))
        cb = get(f"encoder/conv{i}/bias")
        emit(f"encoder.conv{i}.bias", cb, shape=(cb.shape[0], 1), force_f32=True)
    for n in range(n_audio_layer):
        s, d = f"encoder/layer_{n}", f"encoder.blocks.{n}"
        fused_qkv(f"{s}/self_attention/linear_0", f"{d}.attn")
        linear(f"{s}/self_attention/linear_1", f"{d}.attn.out")
        norm(f"{s}/self_attention/layer_norm", f"{d}.attn_ln")
        linear(f"{s}/ffn/linear_0", f"{d}.mlp.0")
        linear(f"{s}/ffn/linear_1", f"{d}.mlp.2")
        norm(f"{s}/ffn/layer_norm", f"{d}.mlp_ln")
    norm("encoder/layer_norm", "encoder.ln_post")

    emit("decoder.positional_embedding", get("decoder/position_encodings/encodings"), force_f32=True)
    emit("decoder.token_embedding.weight", get("decoder/embeddings/weight"))
    for n in range(n_text_layer):
        s, d = f"decoder/layer_{n}", f"decoder.blocks.{n}"
        fused_qkv(f"{s}/self_attention/linear_0", f"{d}.attn")
        linear(f"{s}/self_attention/linear_1", f"{d}.attn.out")
        norm(f"{s}/self_attention/layer_norm", f"{d}.attn_ln")
        linear(f"{s}/attention/linear_0", f"{d}.cross_attn.query")
        fused_kv(f"{s}/attention/linear_1", f"{d}.cross_attn")
        linear(f"{s}/attention/linear_2", f"{d}.cross_attn.out")
        norm(f"{s}/attention/layer_norm", f"{d}.cross_attn_ln")
        linear(f"{s}/ffn/linear_0", f"{d}.mlp.0")
        linear(f"{s}/ffn/linear_1", f"{d}.mlp.2")
        norm(f"{s}/ffn/layer_norm", f"{d}.mlp_ln")
    norm("decoder/layer_norm", "decoder.ln")

    # Anything with weights that was not mapped means a layout this converter does not know.
    leftover = [n for n, var in v.items() if n not in used and len(var.data) > 4]
    if leftover:
        raise ConversionError(f"{model_bin}: unmapped variables: {', '.join(sorted(leftover)[:8])}")

    out_dir = os.path.dirname(os.path.abspath(out_path))
    os.makedirs(out_dir, exist_ok=True)
    total = 0
    with open(out_path, "wb") as f:
        def w(b: bytes):
            nonlocal total
            f.write(b)
            total += len(b)

        w(struct.pack("<i", GGML_MAGIC))
        w(struct.pack("<11i", *hparams))
        n_bins = len(filters[0])
        w(struct.pack("<ii", n_mels, n_bins))
        for row in filters:
            w(struct.pack(f"<{n_bins}f", *row))
        w(struct.pack("<i", len(tokens)))
        for tok in tokens:
            w(struct.pack("<i", len(tok)))
            w(tok)
        for name, shape, ftype, data in tensors:
            nb = name.encode("utf-8")
            w(struct.pack("<iii", len(shape), len(nb), ftype))
            w(struct.pack(f"<{len(shape)}i", *reversed(shape)))
            w(nb)
            w(data)
    say(f"wrote {len(tensors)} tensors, {len(tokens)} tokens, {total} bytes")
    return {"hparams": hparams, "tensors": len(tensors), "tokens": len(tokens), "bytes": total}


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description="Convert a CTranslate2 Whisper model to a whisper.cpp ggml file.")
    p.add_argument("model_dir", nargs="?", help="directory with model.bin and vocabulary.txt")
    p.add_argument("out", help="output ggml file (e.g. models/ggml-tiny.en.bin)")
    p.add_argument("--model-bin", help="path to model.bin (instead of MODEL_DIR)")
    p.add_argument("--vocabulary", help="path to vocabulary.txt (instead of MODEL_DIR)")
    a = p.parse_args(argv)
    if a.model_dir:
        model_bin = a.model_bin or os.path.join(a.model_dir, "model.bin")
        vocab = a.vocabulary or os.path.join(a.model_dir, "vocabulary.txt")
    elif a.model_bin and a.vocabulary:
        model_bin, vocab = a.model_bin, a.vocabulary
    else:
        p.error("give MODEL_DIR, or both --model-bin and --vocabulary")
    for path in (model_bin, vocab):
        if not os.path.isfile(path):
            print(f"ct2_to_ggml: error: {path}: no such file", file=sys.stderr)
            return 1
    t0 = time.monotonic()
    tmp = f"{a.out}.tmp-{os.getpid()}"
    try:
        convert(model_bin, vocab, tmp, log=lambda m: print(f"ct2_to_ggml: {m}", file=sys.stderr))
        os.replace(tmp, a.out)
    except ConversionError as e:
        print(f"ct2_to_ggml: error: {e}", file=sys.stderr)
        return 1
    except OSError as e:
        print(f"ct2_to_ggml: error: {e}", file=sys.stderr)
        return 1
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)
    print(f"ct2_to_ggml: {a.out} written in {time.monotonic() - t0:.1f}s", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
