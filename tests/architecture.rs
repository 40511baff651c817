//! The crate's import graph has no circle and every arrow points down the data flow (issue 15).
//!
//! The test reads `src/**/*.rs` (not `src/lib.rs`, the root that re-exports everything, nor
//! `src/bin/`, the CLI on top of the library), strips comments, doc comments, string and char
//! literals, and collects every `crate::<name>` path (`use crate::{a, b::C}` groups included) and
//! every `super::` path that climbs to the crate root. Submodule files (`src/plot/*.rs`,
//! `src/features/dir.rs`, `src/findings/studies.rs`) and inline `mod x { .. }` blocks count as
//! their top-level module; a name that is not a module (`crate::Error`) is resolved through
//! lib.rs's `pub use module::{..}` re-exports, and anything else (`crate::prelude`) counts as the
//! root `lib`, which is above every module.
//!
//! It asserts (a) the graph is acyclic (printing a circle if not) and (b) every edge goes to a
//! strictly lower layer of [`LAYERS`], the table of lib.rs's crate docs read bottom-up.

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;

/// The layers, bottom first: a module may use only modules of lower layers. Keep in step with
/// the table "Layers" in src/lib.rs's crate docs.
const LAYERS: &[&[&str]] = &[
    // Leaves: input validation, conventions, threads; numeric kernels.
    &["check", "config", "parallel"],
    &["kernels"],
    &["linalg", "spectral"],
    // Reading data.
    &["features"],
    &["npy", "datasets"],
    // Per-class statistics, and what is computed from them alone.
    &["stats"],
    &["generalized", "tiles", "projection"],
    // Metrics and probes, and their reports as tidy frames.
    &["metrics", "probe"],
    &["tidy"],
    // Streaming files, partial statistics, training.
    &["stream"],
    &["partial", "train"],
    // Intervals, the unconstrained-features model, several seeds.
    &["interval", "ufm"],
    &["study"],
    // Tables, figures.
    &["display"],
    &["plot"],
    // The crate-level error wraps every module's error; only the paper's findings (like a user's
    // notebook) use it.
    &["error"],
    &["findings"],
];

/// Upward edges not yet removed: each is reported by name, the test fails on any other upward
/// edge or circle, and fails when a listed edge is gone, so that this list only shrinks. The graph
/// without them must be acyclic. Empty since issue 15 item 2: every edge points down.
const PENDING: &[(&str, &str)] = &[];

/// Removes `//` and `/* */` comments (doc comments included) and the contents of string, raw
/// string, byte string and char literals; lifetimes (`'a`) are kept.
fn strip(src: &str) -> String {
    let b = src.as_bytes();
    let n = b.len();
    let mut out = String::with_capacity(n);
    let mut i = 0;
    let ident = |c: u8| c.is_ascii_alphanumeric() || c == b'_';
    while i < n {
        let c = b[i];
        if c == b'/' && i + 1 < n && b[i + 1] == b'/' {
            while i < n && b[i] != b'\n' {
                i += 1;
            }
        } else if c == b'/' && i + 1 < n && b[i + 1] == b'*' {
            let mut depth = 0;
            while i < n {
                if b[i] == b'/' && i + 1 < n && b[i + 1] == b'*' {
                    depth += 1;
                    i += 2;
                } else if b[i] == b'*' && i + 1 < n && b[i + 1] == b'/' {
                    depth -= 1;
                    i += 2;
                    if depth == 0 {
                        break;
                    }
                } else {
                    if b[i] == b'\n' {
                        out.push('\n');
                    }
                    i += 1;
                }
            }
            out.push(' ');
        } else if (c == b'r' || c == b'b') && (i == 0 || !ident(b[i - 1])) && {
            // r"..", r#".."#, br".."
            let mut j = i + if c == b'b' && i + 1 < n && b[i + 1] == b'r' {
                2
            } else {
                1
            };
            if c == b'b' && j == i + 1 {
                false
            } else {
                while j < n && b[j] == b'#' {
                    j += 1;
                }
                j < n && b[j] == b'"'
            }
        } {
            let mut j = i + if c == b'b' { 2 } else { 1 };
            let mut hashes = 0;
            while b[j] == b'#' {
                hashes += 1;
                j += 1;
            }
            j += 1; // opening quote
            loop {
                if j >= n {
                    break;
                }
                if b[j] == b'"'
                    && b[j + 1..]
                        .iter()
                        .take(hashes)
                        .filter(|&&h| h == b'#')
                        .count()
                        == hashes
                {
                    j += 1 + hashes;
                    break;
                }
                if b[j] == b'\n' {
                    out.push('\n');
                }
                j += 1;
            }
            out.push_str("\"\"");
            i = j;
        } else if c == b'"' {
            i += 1;
            while i < n && b[i] != b'"' {
                if b[i] == b'\n' {
                    out.push('\n');
                }
                i += if b[i] == b'\\' { 2 } else { 1 };
            }
            i += 1;
            out.push_str("\"\"");
        } else if c == b'\'' {
            // A char literal ('x', '\n', '\u{..}', 'é') or a lifetime ('a).
            let rest = &src[i + 1..];
            let close = if rest.starts_with('\\') {
                rest.get(2..).and_then(|r| r.find('\'')).map(|k| k + 2)
            } else {
                rest.chars().next().and_then(|ch| {
                    let w = ch.len_utf8();
                    rest[w..].starts_with('\'').then_some(w)
                })
            };
            match close {
                Some(k) => {
                    out.push_str("' '");
                    i += 1 + k + 1;
                }
                None => {
                    out.push('\'');
                    i += 1;
                }
            }
        } else {
            let ch = src[i..].chars().next().unwrap();
            out.push(ch);
            i += ch.len_utf8();
        }
    }
    out
}

#[derive(Debug, Clone, PartialEq)]
enum Tok {
    Ident(String),
    /// `::`
    Sep,
    Punct(char),
}

fn tokens(code: &str) -> Vec<Tok> {
    let mut t = Vec::new();
    let mut it = code.char_indices().peekable();
    while let Some((i, c)) = it.next() {
        if c.is_alphabetic() || c == '_' {
            let mut end = i + c.len_utf8();
            while let Some(&(j, d)) = it.peek() {
                if d.is_alphanumeric() || d == '_' {
                    end = j + d.len_utf8();
                    it.next();
                } else {
                    break;
                }
            }
            t.push(Tok::Ident(code[i..end].to_string()));
        } else if c == ':' && it.peek().map(|&(_, d)| d) == Some(':') {
            it.next();
            t.push(Tok::Sep);
        } else if !c.is_whitespace() {
            t.push(Tok::Punct(c));
        }
    }
    t
}

fn ident(t: Option<&Tok>) -> Option<&str> {
    match t {
        Some(Tok::Ident(s)) => Some(s),
        _ => None,
    }
}

/// The names a path reaches right after `crate::` (or a `super::` climbing to the root) starting
/// at token `k`: one name, or the first name of each item of a `{..}` group.
fn first_names(t: &[Tok], k: usize) -> Vec<String> {
    match t.get(k) {
        Some(Tok::Ident(s)) => vec![s.clone()],
        Some(Tok::Punct('{')) => {
            let mut names = Vec::new();
            let mut depth = 0;
            let mut expect = true;
            for tok in &t[k..] {
                match tok {
                    Tok::Punct('{') => {
                        depth += 1;
                        expect = depth == 1;
                    }
                    Tok::Punct('}') => {
                        depth -= 1;
                        if depth == 0 {
                            break;
                        }
                    }
                    Tok::Punct(',') if depth == 1 => expect = true,
                    Tok::Ident(s) if expect && depth == 1 => {
                        names.push(s.clone());
                        expect = false;
                    }
                    _ => {
                        if depth == 1 {
                            expect = false;
                        }
                    }
                }
            }
            names
        }
        _ => Vec::new(),
    }
}

/// Root-level names referenced by one file whose module path is `path` (e.g. `["plot", "tidy"]`).
fn root_refs(code: &str, path: &[String]) -> Vec<String> {
    let t = tokens(code);
    let mut refs = Vec::new();
    // Inline modules: (name, brace depth at which their block opened).
    let mut inline: Vec<(String, usize)> = Vec::new();
    let mut depth = 0usize;
    let mut i = 0;
    while i < t.len() {
        match &t[i] {
            Tok::Punct('{') => depth += 1,
            Tok::Punct('}') => {
                depth = depth.saturating_sub(1);
                if inline.last().is_some_and(|(_, d)| *d == depth) {
                    inline.pop();
                }
            }
            Tok::Ident(m) if m == "mod" => {
                if let (Some(name), Some(Tok::Punct('{'))) = (ident(t.get(i + 1)), t.get(i + 2)) {
                    inline.push((name.to_string(), depth));
                }
            }
            Tok::Ident(c) if c == "crate" => {
                let after_dollar = i > 0 && t[i - 1] == Tok::Punct('$');
                if !after_dollar && t.get(i + 1) == Some(&Tok::Sep) {
                    refs.extend(first_names(&t, i + 2));
                }
            }
            Tok::Ident(s) if s == "super" && (i == 0 || t[i - 1] != Tok::Sep) => {
                // A chain super::super::..: climb from the current module.
                let mut level = path.len() + inline.len();
                let mut k = i;
                while ident(t.get(k)) == Some("super") && t.get(k + 1) == Some(&Tok::Sep) {
                    level = level.saturating_sub(1);
                    k += 2;
                }
                if level == 0 && k > i {
                    refs.extend(first_names(&t, k));
                }
                i = k.max(i + 1);
                continue;
            }
            _ => {}
        }
        i += 1;
    }
    refs
}

/// Top-level module → the top-level modules it uses.
type Graph = BTreeMap<String, BTreeSet<String>>;

fn crate_graph(src: &Path) -> Graph {
    let lib = strip(&std::fs::read_to_string(src.join("lib.rs")).unwrap());
    let lt = tokens(&lib);
    // Modules declared in lib.rs, and names it re-exports at the root (`pub use m::{A, B}`).
    let mut modules = BTreeSet::new();
    let mut reexport = BTreeMap::new();
    let mut depth = 0;
    for (i, tok) in lt.iter().enumerate() {
        match tok {
            Tok::Punct('{') => depth += 1,
            Tok::Punct('}') => depth -= 1,
            Tok::Ident(m) if m == "mod" && depth == 0 => {
                if let Some(name) = ident(lt.get(i + 1)) {
                    modules.insert(name.to_string());
                }
            }
            Tok::Ident(u) if u == "use" && depth == 0 => {
                if let (Some(m), Some(Tok::Sep)) = (ident(lt.get(i + 1)), lt.get(i + 2)) {
                    for name in first_names(&lt, i + 3) {
                        reexport.insert(name, m.to_string());
                    }
                }
            }
            _ => {}
        }
    }
    modules.remove("prelude");
    let mut graph = Graph::new();
    let mut files = Vec::new();
    let mut stack = vec![src.to_path_buf()];
    while let Some(dir) = stack.pop() {
        for e in std::fs::read_dir(&dir).unwrap() {
            let p = e.unwrap().path();
            if p.is_dir() {
                stack.push(p);
            } else if p.extension().is_some_and(|x| x == "rs") {
                files.push(p);
            }
        }
    }
    for file in files {
        let rel: Vec<String> = file
            .strip_prefix(src)
            .unwrap()
            .with_extension("")
            .iter()
            .map(|c| c.to_string_lossy().into_owned())
            .collect();
        if rel == ["lib"] || rel[0] == "bin" {
            continue;
        }
        let mut path = rel.clone();
        if path.last().is_some_and(|l| l == "mod") {
            path.pop();
        }
        let top = path[0].clone();
        let code = strip(&std::fs::read_to_string(&file).unwrap());
        let uses = graph.entry(top.clone()).or_default();
        for name in root_refs(&code, &path) {
            let target = if modules.contains(&name) {
                name
            } else if let Some(m) = reexport.get(&name) {
                m.clone()
            } else if ["self", "super"].contains(&name.as_str()) {
                continue;
            } else {
                "lib".to_string()
            };
            if target != top {
                uses.insert(target);
            }
        }
    }
    for m in modules {
        graph.entry(m).or_default();
    }
    graph
}

/// A circle of the graph, if any (`a → b → … → a`).
fn find_cycle(g: &Graph) -> Option<Vec<String>> {
    fn visit(
        g: &Graph,
        v: &str,
        state: &mut BTreeMap<String, u8>,
        stack: &mut Vec<String>,
    ) -> Option<Vec<String>> {
        state.insert(v.to_string(), 1);
        stack.push(v.to_string());
        for w in g.get(v).into_iter().flatten() {
            match state.get(w.as_str()).copied().unwrap_or(0) {
                1 => {
                    let start = stack.iter().position(|x| x == w).unwrap();
                    let mut c = stack[start..].to_vec();
                    c.push(w.clone());
                    return Some(c);
                }
                0 => {
                    if let Some(c) = visit(g, w, state, stack) {
                        return Some(c);
                    }
                }
                _ => {}
            }
        }
        stack.pop();
        state.insert(v.to_string(), 2);
        None
    }
    let mut state = BTreeMap::new();
    for v in g.keys() {
        if state.get(v.as_str()).copied().unwrap_or(0) == 0 {
            if let Some(c) = visit(g, v, &mut state, &mut Vec::new()) {
                return Some(c);
            }
        }
    }
    None
}

/// Every problem of the graph against the layer table: a circle, a module missing from the
/// table, an edge that does not go to a strictly lower layer.
fn check(g: &Graph, layers: &[&[&str]]) -> Vec<String> {
    let mut problems = Vec::new();
    if let Some(c) = find_cycle(g) {
        problems.push(format!("import circle: {}", c.join(" → ")));
    }
    let layer = |m: &str| layers.iter().position(|l| l.contains(&m));
    for (from, tos) in g {
        let Some(lf) = layer(from) else {
            problems.push(format!("module `{from}` is not in the layer table"));
            continue;
        };
        for to in tos {
            match layer(to) {
                Some(lt) if lt < lf => {}
                Some(lt) => problems.push(format!(
                    "`{from}` (layer {lf}) uses `{to}` (layer {lt}): arrows must point down"
                )),
                None => problems.push(format!(
                    "`{from}` (layer {lf}) uses `{to}`, which is not in the layer table"
                )),
            }
        }
    }
    problems
}

#[test]
fn module_graph_is_acyclic_and_points_down() {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let g = crate_graph(&src);
    // The reading found the modules and some known edges (so an empty graph cannot pass).
    assert!(g.len() >= 20, "{g:?}");
    assert!(g["metrics"].contains("stats"), "{:?}", g["metrics"]);
    assert!(g["plot"].contains("metrics"), "{:?}", g["plot"]);
    let mut edges = String::new();
    for (from, tos) in &g {
        edges += &format!(
            "  {from} → {}\n",
            tos.iter().cloned().collect::<Vec<_>>().join(", ")
        );
    }
    let mut g = g;
    let mut gone = Vec::new();
    for (from, to) in PENDING {
        if !g.get_mut(*from).is_some_and(|t| t.remove(*to)) {
            gone.push(format!("{from} → {to}"));
        }
    }
    assert!(
        gone.is_empty(),
        "remove from PENDING, these edges are gone: {gone:?}"
    );
    let problems = check(&g, LAYERS);
    assert!(
        problems.is_empty(),
        "{}\n\nmodule graph:\n{edges}",
        problems.join("\n")
    );
    if !PENDING.is_empty() {
        eprintln!("pending upward edges (to remove): {PENDING:?}");
    }
}

#[test]
fn lib_docs_list_the_same_layers() {
    // Each layer of LAYERS appears, in order, as a row of the table in lib.rs's crate docs.
    let lib =
        std::fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join("src/lib.rs")).unwrap();
    let rows: Vec<&str> = lib.lines().filter(|l| l.starts_with("//! |")).collect();
    let mut table_layers: Vec<BTreeSet<String>> = rows
        .iter()
        .filter_map(|r| {
            let modules: BTreeSet<String> = r
                .split('|')
                .nth(2)?
                .split(',')
                .filter_map(|m| {
                    let m = m.trim().trim_matches(|c| c == '[' || c == ']' || c == '`');
                    (!m.is_empty() && m.chars().all(|c| c.is_ascii_lowercase() || c == '_'))
                        .then(|| m.to_string())
                })
                .collect();
            (!modules.is_empty()).then_some(modules)
        })
        .collect();
    table_layers.reverse(); // the docs list the top first
    let expected: Vec<BTreeSet<String>> = LAYERS
        .iter()
        .map(|l| l.iter().map(|m| m.to_string()).collect())
        .collect();
    assert_eq!(
        table_layers, expected,
        "lib.rs's layer table differs from LAYERS"
    );
}

#[cfg(test)]
mod checker {
    use super::*;

    fn graph(edges: &[(&str, &str)]) -> Graph {
        let mut g = Graph::new();
        for (a, b) in edges {
            g.entry(a.to_string()).or_default().insert(b.to_string());
            g.entry(b.to_string()).or_default();
        }
        g
    }

    #[test]
    fn a_circle_fails_and_is_printed() {
        // error → metrics → stats → error: the kind of circle issue 15 removed.
        let g = graph(&[
            ("error", "metrics"),
            ("metrics", "stats"),
            ("stats", "error"),
        ]);
        let c = find_cycle(&g).expect("a circle");
        assert_eq!(c.first(), c.last());
        assert_eq!(c.len(), 4, "{c:?}");
        let problems = check(&g, &[&["stats"], &["metrics"], &["error"]]);
        assert!(
            problems.iter().any(|p| p.starts_with("import circle: ")),
            "{problems:?}"
        );
        assert!(
            problems
                .iter()
                .any(|p| p.contains("`stats` (layer 0) uses `error` (layer 2)")),
            "{problems:?}"
        );
    }

    #[test]
    fn an_upward_edge_without_circle_fails() {
        let g = graph(&[("stats", "metrics")]);
        assert_eq!(find_cycle(&g), None);
        let problems = check(&g, &[&["stats"], &["metrics"]]);
        assert_eq!(problems.len(), 1, "{problems:?}");
        // The same graph passes when the table has metrics below stats, and a DAG passes.
        assert!(check(&g, &[&["metrics"], &["stats"]]).is_empty());
        let dag = graph(&[("plot", "metrics"), ("metrics", "stats"), ("plot", "stats")]);
        assert!(check(&dag, &[&["stats"], &["metrics"], &["plot"]]).is_empty());
    }

    #[test]
    fn reads_paths_not_comments_or_strings() {
        let code = r##"
            //! [`crate::plot`] in a doc comment
            /* crate::display /* nested */ crate::probe */
            use crate::{stats::ClassStats, metrics::{self, NcReport}};
            use crate::kernels::add_rows;
            fn f() -> crate::Result<()> { let s = "crate::study"; let r = r#"crate::ufm"#; let c = '"'; let l: &'static str = "x"; crate::interval::t(); Ok(()) }
            mod tests { use super::*; use super::super::features; }
        "##;
        let refs = root_refs(&strip(code), &["probe".to_string()]);
        assert_eq!(
            refs,
            ["stats", "metrics", "kernels", "Result", "interval", "features"],
            "{refs:?}"
        );
        // From a submodule file (src/plot/tidy.rs), `super::` is the parent module, not the root.
        let sub = root_refs(
            &strip("use super::figure::Figure; use super::super::metrics::X;"),
            &["plot".to_string(), "tidy".to_string()],
        );
        assert_eq!(sub, ["metrics"]);
    }
}
