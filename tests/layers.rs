//! The crate's folders depend on each other in one direction:
//! foundations → pure cores → credential and inject → configuration →
//! proxy and admin → cli. A `use crate::…` (outside tests) that points up
//! this list, or closes a cycle, fails here with the file that does it.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

/// Each top-level module and its layer; a module may use its own layer's
/// and lower layers' modules, never a higher one's.
const LAYERS: &[(&str, u8)] = &[
    ("decimal", 0),
    ("field", 0),
    ("hex", 0),
    ("agent_env", 0),
    ("provider", 0),
    ("reason", 0),
    ("secret", 0),
    ("stream", 0),
    ("units", 0),
    ("sigv4", 0),
    ("audit", 1),
    ("decode", 1),
    ("policy", 1),
    ("sanitize", 1),
    ("scrub", 1),
    ("task", 1),
    ("approval", 1),
    ("tls", 1),
    ("credential", 2),
    ("inject", 2),
    ("config", 3),
    ("kube", 3),
    ("admin", 4),
    ("proxy", 4),
    ("cli", 5),
];

fn rust_files(dir: &Path, out: &mut Vec<PathBuf>) {
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        if path.is_dir() {
            rust_files(&path, out);
        } else if path.extension().is_some_and(|e| e == "rs") {
            out.push(path);
        }
    }
}

/// The top-level modules `text` names as `crate::<module>` in code (doc
/// comments and tests left out), in every form: a path, `use crate::a::b`,
/// and a group `use crate::{a, b::{c, d}}` over several lines.
fn uses(text: &str) -> BTreeSet<String> {
    let code: String = text
        .split("#[cfg(test)]")
        .next()
        .unwrap_or("")
        .lines()
        .filter(|line| !line.trim_start().starts_with("//"))
        .collect::<Vec<_>>()
        .join("\n");
    let name_of = |s: &str| -> String {
        s.trim_start()
            .chars()
            .take_while(|c| c.is_ascii_alphanumeric() || *c == '_')
            .collect()
    };
    let mut found = BTreeSet::new();
    for (i, _) in code.match_indices("crate::") {
        let rest = &code[i + "crate::".len()..];
        let Some(group) = rest.strip_prefix('{') else {
            found.insert(name_of(rest));
            continue;
        };
        // The first segment of each item at the group's own depth.
        let mut depth = 0;
        let mut item_start = true;
        for (j, c) in group.char_indices() {
            match c {
                '{' => depth += 1,
                '}' if depth == 0 => break,
                '}' => depth -= 1,
                ',' if depth == 0 => item_start = true,
                _ if item_start && !c.is_whitespace() => {
                    found.insert(name_of(&group[j..]));
                    item_start = false;
                }
                _ => {}
            }
        }
    }
    found.remove("");
    found
}

#[test]
fn modules_depend_downwards_only() {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let layer: BTreeMap<&str, u8> = LAYERS.iter().copied().collect();
    let mut files = Vec::new();
    rust_files(&src, &mut files);
    let mut problems = Vec::new();
    let mut edges: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
    for file in files {
        let rel = file.strip_prefix(&src).unwrap();
        let top = rel
            .components()
            .next()
            .unwrap()
            .as_os_str()
            .to_str()
            .unwrap()
            .trim_end_matches(".rs")
            .to_string();
        if matches!(top.as_str(), "lib" | "main") || rel.ends_with("tests.rs") {
            continue;
        }
        let Some(&own) = layer.get(top.as_str()) else {
            problems.push(format!(
                "{}: module {top} has no layer in LAYERS",
                rel.display()
            ));
            continue;
        };
        let text = std::fs::read_to_string(&file).unwrap();
        for used in uses(&text) {
            if used == top || used == "BoxFuture" {
                continue;
            }
            match layer.get(used.as_str()) {
                None => problems.push(format!(
                    "{}: uses crate::{used}, which has no layer",
                    rel.display()
                )),
                Some(&theirs) if theirs > own => problems.push(format!(
                    "{}: {top} (layer {own}) uses {used} (layer {theirs})",
                    rel.display()
                )),
                Some(_) => {
                    edges.entry(top.clone()).or_default().insert(used);
                }
            }
        }
    }
    // Within a layer, no cycles either.
    for (from, tos) in &edges {
        for to in tos {
            let mut seen = BTreeSet::new();
            let mut stack = vec![to.clone()];
            while let Some(at) = stack.pop() {
                if &at == from {
                    problems.push(format!("{from} and {to} use each other"));
                    break;
                }
                if seen.insert(at.clone()) {
                    stack.extend(edges.get(&at).into_iter().flatten().cloned());
                }
            }
        }
    }
    assert!(problems.is_empty(), "{}", problems.join("\n"));
}

#[test]
fn the_scanner_sees_every_form_of_use() {
    let text = "use crate::field::FieldError;\nuse crate::{a, b::c};\n\
                use crate::{\n    d::{e, f::g},\n    h,\n};\n\
                let x = crate::units::parse(1);\n/// [`crate::doc`]\n\
                #[cfg(test)]\nmod tests { use crate::later; }";
    let found: Vec<String> = uses(text).into_iter().collect();
    assert_eq!(found, ["a", "b", "d", "field", "h", "units"]);
}
