//! The layering of voxloop's top-level modules, checked from the source.
//!
//! Every `crate::…` path in `src/**/*.rs` (comments and literals blanked
//! out first) is an edge from the file's top-level module to the module the
//! path names. Every edge must be in [`ALLOWED`], the one table of the
//! allowed graph; the table must be acyclic; and neither the table nor the
//! code may break the [`INVARIANTS`] ARCHITECTURE.md states. A failure names
//! the file and the edge.
//!
//! `super::` paths are not followed: below a top-level module they stay
//! inside it, and the top-level files do not use `super::` for anything but
//! their own `mod tests`. `main.rs` (the binary, `voxloop::…`) and `lib.rs`
//! (the module list and the crate-root constants) are the edge and the root,
//! not layers. Root items (`crate::FRAME_MS`, …) are allowed everywhere.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

/// Files of the binary (declared in `main.rs`, using `voxloop::…`): the
/// edge, like `main.rs` itself, not layers.
const BINARY_ONLY: &[&str] = &["kb_cli", "models_cli", "speech_cli", "worker_cli"];

/// The allowed graph: each top-level module and what it may import. Leaves
/// first, then upwards; a module may only name modules above it in this list.
const ALLOWED: &[(&str, &[&str])] = &[
    // Leaves: plain types and pure functions every layer shares.
    ("error_code", &[]),
    ("prompt", &[]),
    ("events", &["error_code", "prompt"]),
    ("text", &[]),
    ("config", &[]),
    ("metrics", &["error_code", "events"]),
    ("audio", &[]),
    ("models", &[]),
    ("auth", &[]),
    ("limits", &[]),
    // The knowledge base: documents, chunks, embeddings, the index.
    ("kb", &[]),
    // The conversation itself: stages, engines' types, the speech loop.
    (
        "pipeline",
        &[
            "audio",
            "config",
            "error_code",
            "events",
            "kb",
            "metrics",
            "models",
            "prompt",
            "text",
        ],
    ),
    // The loader of the pipeline's engines (the arrow points down only).
    (
        "engines",
        &["config", "kb", "metrics", "models", "pipeline"],
    ),
    // The network side.
    ("rtc", &["audio", "config", "error_code", "events"]),
    (
        "bus",
        &["config", "error_code", "events", "kb", "metrics", "prompt"],
    ),
    // Inference over NATS: workers serve the engines, servers use them.
    (
        "remote",
        &["audio", "config", "engines", "kb", "metrics", "pipeline"],
    ),
    (
        "hub",
        &[
            "bus",
            "config",
            "error_code",
            "events",
            "metrics",
            "prompt",
            "rtc",
        ],
    ),
    (
        "session",
        &[
            "audio",
            "config",
            "error_code",
            "events",
            "hub",
            "limits",
            "metrics",
            "pipeline",
            "prompt",
            "rtc",
        ],
    ),
    (
        "server",
        &[
            "audio",
            "auth",
            "bus",
            "config",
            "engines",
            "error_code",
            "events",
            "hub",
            "kb",
            "limits",
            "metrics",
            "models",
            "pipeline",
            "prompt",
            "remote",
            "rtc",
            "session",
        ],
    ),
    // Commands and tools on top.
    (
        "converse",
        &[
            "audio",
            "config",
            "engines",
            "error_code",
            "events",
            "metrics",
            "pipeline",
            "prompt",
            "text",
        ],
    ),
    (
        "intent",
        &[
            "bus",
            "config",
            "engines",
            "error_code",
            "events",
            "pipeline",
            "prompt",
            "text",
        ],
    ),
    (
        "client",
        &["audio", "config", "error_code", "events", "rtc"],
    ),
    (
        "loadtest",
        &[
            "audio",
            "client",
            "config",
            "error_code",
            "events",
            "metrics",
            "rtc",
            "text",
        ],
    ),
];

/// The stated invariants: (module, modules it never imports, the rule).
const INVARIANTS: &[(&str, &[&str], &str)] = &[
    (
        "pipeline",
        &["rtc", "server", "bus", "hub", "session", "engines"],
        "pipeline never imports rtc, server, bus, hub or session (nor engines, its loader)",
    ),
    (
        "rtc",
        &["pipeline", "engines", "models"],
        "rtc never imports pipeline, engines or models",
    ),
    (
        "config",
        &[
            "audio", "bus", "client", "converse", "engines", "hub", "intent", "loadtest",
            "metrics", "models", "pipeline", "rtc", "server", "session", "text",
        ],
        "config imports nothing above it",
    ),
    (
        "metrics",
        &[
            "audio", "bus", "client", "config", "converse", "engines", "hub", "intent", "loadtest",
            "models", "pipeline", "rtc", "server", "session", "text",
        ],
        "metrics imports nothing above it (only leaf modules such as events)",
    ),
];

/// Known edges that break the table while a neighbouring change is in
/// flight: (file, module it imports, why). Each is reported, not failed; a
/// stale entry is reported too, so it can be deleted.
const PENDING: &[(&str, &str, &str)] = &[];

/// `src` with comments, string and char literals blanked to spaces (line
/// breaks kept), so only code is searched.
fn code_only(src: &str) -> String {
    let c: Vec<char> = src.chars().collect();
    let mut out = String::with_capacity(src.len());
    let blank = |out: &mut String, ch: char| out.push(if ch == '\n' { '\n' } else { ' ' });
    let ident = |ch: char| ch.is_alphanumeric() || ch == '_';
    let mut i = 0;
    while i < c.len() {
        let next = c.get(i + 1).copied();
        if c[i] == '/' && next == Some('/') {
            while i < c.len() && c[i] != '\n' {
                blank(&mut out, c[i]);
                i += 1;
            }
        } else if c[i] == '/' && next == Some('*') {
            let mut depth = 0;
            while i < c.len() {
                if c[i] == '/' && c.get(i + 1) == Some(&'*') {
                    depth += 1;
                    out.push_str("  ");
                    i += 2;
                } else if c[i] == '*' && c.get(i + 1) == Some(&'/') {
                    depth -= 1;
                    out.push_str("  ");
                    i += 2;
                    if depth == 0 {
                        break;
                    }
                } else {
                    blank(&mut out, c[i]);
                    i += 1;
                }
            }
        } else if c[i] == 'r'
            && (i == 0 || !ident(c[i - 1]))
            && matches!(next, Some('"') | Some('#'))
        {
            // A raw string r"…" or r#"…"#; r#ident is a raw identifier.
            let mut j = i + 1;
            while c.get(j) == Some(&'#') {
                j += 1;
            }
            if c.get(j) != Some(&'"') {
                out.push(c[i]);
                i += 1;
                continue;
            }
            let hashes = j - i - 1;
            let mut k = j + 1;
            while k < c.len() && !(c[k] == '"' && (1..=hashes).all(|h| c.get(k + h) == Some(&'#')))
            {
                k += 1;
            }
            let end = (k + 1 + hashes).min(c.len());
            for &ch in &c[i..end] {
                blank(&mut out, ch);
            }
            i = end;
        } else if c[i] == '"' {
            blank(&mut out, c[i]);
            i += 1;
            while i < c.len() && c[i] != '"' {
                if c[i] == '\\' && i + 1 < c.len() {
                    blank(&mut out, c[i]);
                    i += 1;
                }
                blank(&mut out, c[i]);
                i += 1;
            }
            if i < c.len() {
                blank(&mut out, c[i]);
                i += 1;
            }
        } else if c[i] == '\'' && (next == Some('\\') || c.get(i + 2) == Some(&'\'')) {
            // A char literal ('x', '\n', '\''); a lifetime has no closing quote.
            let mut k = i + 1;
            if c[k] == '\\' {
                k += 2;
            }
            while k < c.len() && c[k] != '\'' {
                k += 1;
            }
            let end = (k + 1).min(c.len());
            for &ch in &c[i..end] {
                blank(&mut out, ch);
            }
            i = end;
        } else {
            out.push(c[i]);
            i += 1;
        }
    }
    out
}

/// The first segments of every `crate::…` path in `code` (a `use
/// crate::{a::b, c}` group gives `a` and `c`), with their line numbers.
fn crate_paths(code: &str) -> Vec<(usize, String)> {
    let mut found = Vec::new();
    let bytes = code.as_bytes();
    let line_of = |pos: usize| code[..pos].matches('\n').count() + 1;
    let mut from = 0;
    while let Some(off) = code[from..].find("crate") {
        let at = from + off;
        from = at + 5;
        let before = at.checked_sub(1).map(|p| bytes[p] as char);
        if before.is_some_and(|b| b.is_alphanumeric() || b == '_' || b == '$') {
            continue;
        }
        let rest = code[from..].trim_start();
        let Some(rest) = rest.strip_prefix("::") else {
            continue;
        };
        let rest = rest.trim_start();
        let first_ident = |s: &str| -> String {
            s.trim_start()
                .chars()
                .take_while(|ch| ch.is_alphanumeric() || *ch == '_')
                .collect()
        };
        if let Some(group) = rest.strip_prefix('{') {
            // Split the group's top level on commas.
            let mut depth = 0;
            let mut item_start = 0;
            for (k, ch) in group.char_indices() {
                match ch {
                    '{' => depth += 1,
                    '}' if depth == 0 => {
                        found.push((line_of(at), first_ident(&group[item_start..k])));
                        break;
                    }
                    '}' => depth -= 1,
                    ',' if depth == 0 => {
                        found.push((line_of(at), first_ident(&group[item_start..k])));
                        item_start = k + 1;
                    }
                    _ => {}
                }
            }
        } else {
            found.push((line_of(at), first_ident(rest)));
        }
    }
    found.retain(|(_, seg)| !seg.is_empty());
    found
}

fn rs_files(dir: &Path, out: &mut Vec<PathBuf>) {
    let mut entries: Vec<_> = std::fs::read_dir(dir)
        .unwrap_or_else(|e| panic!("cannot read {}: {e}", dir.display()))
        .filter_map(Result::ok)
        .map(|e| e.path())
        .collect();
    entries.sort();
    for p in entries {
        if p.is_dir() {
            rs_files(&p, out);
        } else if p.extension().is_some_and(|x| x == "rs") {
            out.push(p);
        }
    }
}

/// One import of a top-level module by another: (from, to) → where.
type Edges = BTreeMap<(String, String), Vec<String>>;

/// The edges between top-level modules in the given (path under src, text)
/// files; `modules` are the top-level module names.
fn edges(files: &[(String, String)], modules: &BTreeSet<String>) -> Edges {
    let mut edges = Edges::new();
    for (rel, text) in files {
        let top = rel.split('/').next().unwrap_or(rel).trim_end_matches(".rs");
        if !modules.contains(top) {
            continue;
        }
        for (line, seg) in crate_paths(&code_only(text)) {
            if seg != top && modules.contains(&seg) {
                edges
                    .entry((top.to_string(), seg))
                    .or_default()
                    .push(format!("{rel}:{line}"));
            }
        }
    }
    edges
}

fn allowed() -> BTreeMap<&'static str, BTreeSet<&'static str>> {
    ALLOWED
        .iter()
        .map(|(m, deps)| (*m, deps.iter().copied().collect()))
        .collect()
}

/// Everything wrong with `edges` against the table and the invariants.
fn violations(edges: &Edges, pending: &[(&str, &str, &str)]) -> Vec<String> {
    let table = allowed();
    let mut out = Vec::new();
    for ((from, to), wheres) in edges {
        let wheres: Vec<&String> = wheres
            .iter()
            .filter(|w| {
                !pending
                    .iter()
                    .any(|(file, m, _)| m == to && w.split(':').next() == Some(*file))
            })
            .collect();
        if wheres.is_empty() {
            continue;
        }
        let at = wheres
            .iter()
            .map(|s| s.as_str())
            .collect::<Vec<_>>()
            .join(", ");
        for (m, never, rule) in INVARIANTS {
            if m == from && never.contains(&to.as_str()) {
                out.push(format!("{from} imports {to} ({at}): breaks \"{rule}\""));
            }
        }
        match table.get(from.as_str()) {
            None => out.push(format!(
                "module {from} is not in the ALLOWED table of tests/layering.rs: add it with its imports"
            )),
            Some(deps) if !deps.contains(to.as_str()) => out.push(format!(
                "{from} imports {to} ({at}), which the ALLOWED table of tests/layering.rs does not allow"
            )),
            Some(_) => {}
        }
    }
    out
}

fn source_files() -> (Vec<(String, String)>, BTreeSet<String>) {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let mut paths = Vec::new();
    rs_files(&src, &mut paths);
    let files: Vec<(String, String)> = paths
        .iter()
        .map(|p| {
            let rel = p
                .strip_prefix(&src)
                .expect("under src")
                .to_string_lossy()
                .replace('\\', "/");
            let text = std::fs::read_to_string(p)
                .unwrap_or_else(|e| panic!("cannot read {}: {e}", p.display()));
            (rel, text)
        })
        .collect();
    let modules = files
        .iter()
        .map(|(rel, _)| rel.split('/').next().unwrap_or(rel).trim_end_matches(".rs"))
        .filter(|m| *m != "lib" && *m != "main" && !BINARY_ONLY.contains(m))
        .map(str::to_string)
        .collect();
    (files, modules)
}

#[test]
fn the_allowed_graph_is_acyclic_and_keeps_the_invariants() {
    // Each module may only import modules listed before it: a topological
    // order, so the table has no cycle.
    let mut seen = BTreeSet::new();
    for (m, deps) in ALLOWED {
        for d in *deps {
            assert!(
                seen.contains(d),
                "ALLOWED lets {m} import {d}, which is not listed before it: a cycle or a wrong order"
            );
        }
        assert!(seen.insert(*m), "{m} is listed twice in ALLOWED");
    }
    let table = allowed();
    for (m, never, rule) in INVARIANTS {
        let deps = table.get(m).expect("invariant names a module in ALLOWED");
        for n in *never {
            assert!(
                !deps.contains(n),
                "ALLOWED lets {m} import {n}: breaks \"{rule}\""
            );
        }
    }
}

#[test]
fn the_code_keeps_the_layering() {
    let (files, modules) = source_files();
    let table = allowed();
    for m in &modules {
        assert!(
            table.contains_key(m.as_str()),
            "top-level module {m} is not in the ALLOWED table of tests/layering.rs: add it with its imports"
        );
    }
    let edges = edges(&files, &modules);
    assert!(
        edges.len() > 20,
        "only {} edges found: is the scanner broken?",
        edges.len()
    );
    for (file, m, why) in PENDING {
        let live = edges
            .iter()
            .any(|((_, to), w)| to == m && w.iter().any(|w| w.split(':').next() == Some(*file)));
        if live {
            eprintln!("pending (allowed for now): {file} imports {m}: {why}");
        } else {
            eprintln!("stale PENDING entry, delete it: {file} imports {m}");
        }
    }
    let bad = violations(&edges, PENDING);
    assert!(
        bad.is_empty(),
        "layering violations:\n  {}",
        bad.join("\n  ")
    );
}

#[test]
fn a_violation_is_caught() {
    let modules: BTreeSet<String> = ["pipeline", "bus", "prompt", "config", "rtc", "metrics"]
        .iter()
        .map(|s| s.to_string())
        .collect();
    let file = |rel: &str, text: &str| (rel.to_string(), text.to_string());
    // Comments, strings and char literals do not count; a grouped use does.
    let clean = [
        file(
            "pipeline/prompts.rs",
            "//! Not `crate::bus`.\nuse crate::prompt::{DropReason, Prompt};\nconst Q: char = '\"';\nconst S: &str = \"crate::bus\";\nconst R: &str = r#\"crate::rtc \"quoted\"\"#;\nfn f<'a>(x: &'a str) -> &'a str { x }\n",
        ),
        file("config.rs", "pub const X: u32 = crate::FRAME_MS;\n"),
    ];
    let e = edges(&clean, &modules);
    assert_eq!(
        e.keys().cloned().collect::<Vec<_>>(),
        vec![("pipeline".to_string(), "prompt".to_string())]
    );
    assert!(violations(&e, &[]).is_empty());

    let bad = [
        file(
            "pipeline/speech.rs",
            "use crate::{\n    config::Config,\n    bus::{DropReason, Prompt},\n};\n",
        ),
        file(
            "config.rs",
            "fn f() { let _ = crate::rtc::RtcSettings::default(); }\n",
        ),
        file("metrics.rs", "use crate::rtc::ErrorCode;\n"),
    ];
    let v = violations(&edges(&bad, &modules), &[]);
    let joined = v.join("\n");
    assert!(
        joined.contains(
            "pipeline imports bus (pipeline/speech.rs:1): breaks \"pipeline never imports"
        ),
        "{joined}"
    );
    assert!(
        joined.contains("config imports rtc (config.rs:1)"),
        "{joined}"
    );
    assert!(joined.contains("metrics imports rtc"), "{joined}");
    // A pending entry excuses exactly its file and module.
    let pending = [("metrics.rs", "rtc", "moving")];
    let v = violations(&edges(&bad, &modules), &pending);
    assert!(!v.join("\n").contains("metrics"), "{v:?}");
    assert!(v.join("\n").contains("config imports rtc"), "{v:?}");
}
